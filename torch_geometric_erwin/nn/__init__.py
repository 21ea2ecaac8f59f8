"""Layers and models: ball attention, Erwin blocks, ball pooling, the MPNN embedding, Erwin NSA."""

from torch_geometric_erwin.nn.ball_attention import (BallAttention, BallGeometry, attention_backend,
                                                     set_attention_backend)
from torch_geometric_erwin.nn.embedding import ErwinEmbedding
from torch_geometric_erwin.nn.erwin_block import ErwinBlock
from torch_geometric_erwin.nn.graph import knn_graph, radius_graph
from torch_geometric_erwin.nn.nsa_conv import ErwinNSAConv
from torch_geometric_erwin.nn.pooling import BallPooling, BallUnpooling
from torch_geometric_erwin.nn.rms_norm import RMSNorm
from torch_geometric_erwin.nn.swiglu import SwiGLU
from torch_geometric_erwin.nn.models import MPNN, Erwin, ErwinNSA

__all__ = [
    "BallAttention",
    "BallGeometry",
    "BallPooling",
    "BallUnpooling",
    "Erwin",
    "ErwinBlock",
    "ErwinEmbedding",
    "ErwinNSA",
    "ErwinNSAConv",
    "MPNN",
    "RMSNorm",
    "SwiGLU",
    "attention_backend",
    "knn_graph",
    "radius_graph",
    "set_attention_backend",
]
