"""Models: Erwin, Erwin NSA and the baselines of the paper's comparisons (MPNN, Transolver, PointNet++,
a serialized point transformer after PTv3)."""

from torch_geometric_erwin.nn.models.base import BallTreeModel
from torch_geometric_erwin.nn.models.erwin import Erwin, ErwinStage
from torch_geometric_erwin.nn.models.erwin_nsa import ErwinNSA, ErwinNSABlock
from torch_geometric_erwin.nn.models.mpnn import MPNN
from torch_geometric_erwin.nn.models.pointnet2 import PointNet2, farthest_point_sampling
from torch_geometric_erwin.nn.models.presets import PRESETS
from torch_geometric_erwin.nn.models.serialized_transformer import SerializedTransformer
from torch_geometric_erwin.nn.models.transolver import PhysicsAttention, Transolver

__all__ = ["BallTreeModel", "Erwin", "ErwinStage", "ErwinNSA", "ErwinNSABlock", "MPNN", "PRESETS",
           "PhysicsAttention", "PointNet2", "SerializedTransformer", "Transolver", "farthest_point_sampling"]
