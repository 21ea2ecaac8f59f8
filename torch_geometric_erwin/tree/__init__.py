"""Ball trees: the batched engine (C++ or pure PyTorch) and its Python face."""

from torch_geometric_erwin.tree.engine import engine_name
from torch_geometric_erwin.tree.rotation import rotation_matrix
from torch_geometric_erwin.tree.ball_tree import BallTree, build_ball_tree, granularity

__all__ = ["BallTree", "build_ball_tree", "granularity", "rotation_matrix", "engine_name"]
