"""Layers and models: ball attention, Erwin blocks, ball pooling, the MPNN embedding, Erwin NSA, and the
baselines (MPNN, Transolver, PointNet++, the serialized transformer)."""

from torch_geometric_erwin.nn.ball_attention import (BallAttention, BallGeometry, attention_backend,
                                                     set_attention_backend)
from torch_geometric_erwin.nn.embedding import ErwinEmbedding
from torch_geometric_erwin.nn.erwin_block import ErwinBlock
from torch_geometric_erwin.nn.graph import knn_graph, radius_graph
from torch_geometric_erwin.nn.nsa_conv import ErwinNSAConv
from torch_geometric_erwin.nn.pooling import BallPooling, BallUnpooling
from torch_geometric_erwin.nn.rms_norm import RMSNorm
from torch_geometric_erwin.nn.swiglu import SwiGLU
from torch_geometric_erwin.nn.models import (MPNN, BallTreeModel, Erwin, ErwinNSA, PhysicsAttention, PointNet2,
                                             SerializedTransformer, Transolver, farthest_point_sampling)

__all__ = [
    "BallAttention",
    "BallGeometry",
    "BallPooling",
    "BallTreeModel",
    "BallUnpooling",
    "Erwin",
    "ErwinBlock",
    "ErwinEmbedding",
    "ErwinNSA",
    "ErwinNSAConv",
    "MPNN",
    "PhysicsAttention",
    "PointNet2",
    "RMSNorm",
    "SerializedTransformer",
    "SwiGLU",
    "Transolver",
    "farthest_point_sampling",
    "attention_backend",
    "knn_graph",
    "radius_graph",
    "set_attention_backend",
]
