r"""The SwiGLU feed-forward layer of Erwin's blocks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_geometric_erwin import ops
from torch_geometric_erwin.nn.cpu_path import takes_cpu_path
from torch_geometric_erwin.nn.init import reset_linear


class SwiGLU(nn.Module):
    r"""Gated feed-forward layer (Shazeer, 2020) used in every Erwin block:

    .. math::
        \mathrm{SwiGLU}(x) = W_3 \big( W_2 x \odot \mathrm{SiLU}(W_1 x) \big)

    :math:`W_1` and :math:`W_2` are stored stacked, as the one projection ``w12``
    (:math:`[W_1; W_2]`, ``[2 hidden, C]``) that the kernels read; state dicts with the separate
    ``w1`` and ``w2`` of earlier versions and of the reference code load unchanged.

    Args:
        channels (int): input and output width :math:`C`.
        hidden_channels (int): width of the gated hidden layer (``mlp_ratio * C``).

    Shapes: ``[*, C] -> [*, C]``.

    Kernels: on CPU in float32/float64 (outside autocast) the layer runs the ops
    :func:`torch_geometric_erwin.ops.swiglu` and :func:`~torch_geometric_erwin.ops.swiglu_train`,
    which form the gated product block by block of rows and keep only the pre-activations for the
    backward pass; elsewhere it is the composite of its linear maps.
    """

    _version = 2

    def __init__(self, channels: int, hidden_channels: int):
        super().__init__()
        self.channels, self.hidden_channels = channels, hidden_channels
        self.w12 = nn.Linear(channels, 2 * hidden_channels)
        self.w3 = nn.Linear(hidden_channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.w12, self.w3):
            reset_linear(lin)

    def forward(self, x: Tensor) -> Tensor:
        if not takes_cpu_path(x, self.w3.weight):
            gate, value = self.w12(x).chunk(2, dim=-1)
            return self.w3(value * F.silu(gate))
        rows = x.reshape(-1, self.channels)
        args = (rows, self.w12.weight, self.w12.bias, self.w3.weight, self.w3.bias)
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            out, _ = ops.swiglu_train(*args)
        else:
            out = ops.swiglu(*args)
        return out.view(*x.shape[:-1], self.channels)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # version 1 (and the reference code) kept W_1 and W_2 as separate linear maps
        for name in ("weight", "bias"):
            w1, w2 = f"{prefix}w1.{name}", f"{prefix}w2.{name}"
            if w1 in state_dict and w2 in state_dict:
                state_dict[f"{prefix}w12.{name}"] = torch.cat([state_dict.pop(w1), state_dict.pop(w2)])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, hidden_channels={self.hidden_channels})"
