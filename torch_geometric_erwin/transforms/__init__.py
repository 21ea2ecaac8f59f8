"""PyG transforms that attach ball trees (and neighbour graphs) to ``Data`` objects."""

from torch_geometric_erwin.transforms.ball_tree import BallTreeTransform
from torch_geometric_erwin.transforms.graph_config import graph_transform_from_config
from torch_geometric_erwin.transforms.knn_graph import KNNGraphTransform
from torch_geometric_erwin.transforms.radius_graph import RadiusGraphTransform
from torch_geometric_erwin.transforms.rotated_tree import RotatedTreeTransform

__all__ = ["BallTreeTransform", "KNNGraphTransform", "RadiusGraphTransform", "RotatedTreeTransform",
           "graph_transform_from_config"]
