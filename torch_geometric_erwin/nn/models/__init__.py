"""Models: Erwin, Erwin NSA and the MPNN baseline."""

from torch_geometric_erwin.nn.models.base import BallTreeModel
from torch_geometric_erwin.nn.models.erwin import Erwin, ErwinStage
from torch_geometric_erwin.nn.models.erwin_nsa import ErwinNSA, ErwinNSABlock
from torch_geometric_erwin.nn.models.mpnn import MPNN
from torch_geometric_erwin.nn.models.presets import PRESETS

__all__ = ["BallTreeModel", "Erwin", "ErwinStage", "ErwinNSA", "ErwinNSABlock", "MPNN", "PRESETS"]
