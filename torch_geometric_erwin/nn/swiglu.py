r"""The SwiGLU feed-forward layer of Erwin's blocks."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from torch_geometric_erwin.nn.init import reset_linear


class SwiGLU(nn.Module):
    r"""Gated feed-forward layer (Shazeer, 2020) used in every Erwin block:

    .. math::
        \mathrm{SwiGLU}(x) = W_3 \big( W_2 x \odot \mathrm{SiLU}(W_1 x) \big)

    Args:
        channels (int): input and output width :math:`C`.
        hidden_channels (int): width of the gated hidden layer (``mlp_ratio * C``).

    Shapes: ``[*, C] -> [*, C]``.
    """

    def __init__(self, channels: int, hidden_channels: int):
        super().__init__()
        self.channels, self.hidden_channels = channels, hidden_channels
        self.w1 = nn.Linear(channels, hidden_channels)
        self.w2 = nn.Linear(channels, hidden_channels)
        self.w3 = nn.Linear(hidden_channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.w1, self.w2, self.w3):
            reset_linear(lin)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(self.w2(x) * F.silu(self.w1(x)))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, hidden_channels={self.hidden_channels})"
