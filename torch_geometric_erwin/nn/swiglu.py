r"""The SwiGLU feed-forward layer of Erwin's blocks."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_geometric_erwin.nn.cpu_path import _C, arrays, blocks, takes_cpu_path
from torch_geometric_erwin.nn.init import reset_linear

#: Bytes of gate and value pre-activations per block of rows in the CPU path.
_BLOCK_BYTES = 4 * 2**20


def _row_blocks(rows: int, hidden: int, element_size: int, buffers: int, like: Tensor):
    """Slices of ``rows`` with at most :data:`_BLOCK_BYTES` of ``[rows, 2 * hidden]`` pre-activations
    each, and ``buffers`` scratch tensors of one block's ``[rows, hidden]``, reused by every block (a
    fresh temporary per block would be page-faulted in again whenever the allocator returned it)."""
    step = max(1, min(rows, _BLOCK_BYTES // (2 * hidden * element_size)))
    scratch = like.new_empty(buffers, step, hidden).unbind(0)
    for block in blocks(rows, step):
        yield block, [buffer[:block.stop - block.start] for buffer in scratch]


def _swiglu_forward(x: Tensor, w12: Tensor, b12: Tensor, w3: Tensor, b3: Tensor,
                    keep_pre_activations: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """The layer on ``x [S, C]`` block by block; with ``keep_pre_activations`` it also returns the
    ``[S, 2 * hidden]`` pre-activations (one GEMM for all rows) that the backward pass needs."""
    hidden = w3.shape[1]
    gate_value = torch.addmm(b12, x, w12.t()) if keep_pre_activations else None
    out = x.new_empty(x.shape[0], w3.shape[0])
    for rows, (gated,) in _row_blocks(x.shape[0], hidden, x.element_size(), 1, x):
        block = gate_value[rows] if keep_pre_activations else torch.addmm(b12, x[rows], w12.t())
        gate, value = block.split(hidden, dim=1)
        torch.ops.aten.silu.out(gate, out=gated).mul_(value)
        torch.addmm(b3, gated, w3.t(), out=out[rows])
    return out, gate_value


class _SwiGLUFunction(torch.autograd.Function):
    r"""SwiGLU with its gradients written out, the CPU training path.

    Autograd of the composite layer keeps four ``[S, hidden]`` tensors (:math:`W_1x`,
    :math:`\mathrm{SiLU}(W_1x)`, :math:`W_2x` and their product) and takes several more, fresh, in
    the backward pass. Here the two input projections are one GEMM whose ``[S, 2 hidden]`` output
    is all that is kept; the gated product is formed (and, in the backward pass, formed again) one
    block of rows at a time, so it stays in the caches and never exists for all rows at once.
    Inputs: ``x [S, C]``, ``w12 [2 hidden, C]`` (:math:`W_1` over :math:`W_2`), ``b12``, ``w3``, ``b3``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w12: Tensor, b12: Tensor, w3: Tensor, b3: Tensor) -> Tensor:
        out, gate_value = _swiglu_forward(x, w12, b12, w3, b3, keep_pre_activations=True)
        ctx.save_for_backward(x, w12, w3, gate_value)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, w12, w3, gate_value = ctx.saved_tensors
        hidden = w3.shape[1]
        grad_out = grad_out.contiguous()
        grad_gate_value = torch.empty_like(gate_value)
        grad_w3 = torch.zeros_like(w3)
        fused = _C is not None and x.dtype == torch.float32
        for rows, (gated, grad_gated) in _row_blocks(x.shape[0], hidden, x.element_size(), 2, x):
            torch.mm(grad_out[rows], w3, out=grad_gated)
            if fused:  # csrc/swiglu.h: the five elementwise passes below in one
                _C.swiglu_backward(*arrays(gate_value[rows], grad_gated, gated, grad_gate_value[rows]),
                                   torch.get_num_threads())
            else:
                gate, value = gate_value[rows].split(hidden, dim=1)
                grad_gate, grad_value = grad_gate_value[rows].split(hidden, dim=1)
                torch.ops.aten.silu.out(gate, out=gated)
                torch.mul(grad_gated, gated, out=grad_value)
                gated.mul_(value)
                torch.ops.aten.silu_backward.grad_input(grad_gated.mul_(value), gate, grad_input=grad_gate)
            grad_w3.addmm_(grad_out[rows].t(), gated)
        grad_x = grad_gate_value.mm(w12) if ctx.needs_input_grad[0] else None
        return (grad_x, grad_gate_value.t().mm(x), grad_gate_value.sum(0), grad_w3, grad_out.sum(0))


class SwiGLU(nn.Module):
    r"""Gated feed-forward layer (Shazeer, 2020) used in every Erwin block:

    .. math::
        \mathrm{SwiGLU}(x) = W_3 \big( W_2 x \odot \mathrm{SiLU}(W_1 x) \big)

    Args:
        channels (int): input and output width :math:`C`.
        hidden_channels (int): width of the gated hidden layer (``mlp_ratio * C``).

    Shapes: ``[*, C] -> [*, C]``.

    Kernels: on CPU in float32/float64 (outside autocast and ``torch.compile``) the layer runs
    :math:`W_1` and :math:`W_2` as one GEMM and forms the gated product block by block of rows,
    with its own backward pass (:class:`_SwiGLUFunction`); elsewhere it is the composite of
    :class:`~torch.nn.Linear` layers.
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
        if not takes_cpu_path(x, self.w3.weight):
            return self.w3(self.w2(x) * F.silu(self.w1(x)))
        rows = x.reshape(-1, self.channels)
        w12 = torch.cat([self.w1.weight, self.w2.weight])
        b12 = torch.cat([self.w1.bias, self.w2.bias])
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            out = _SwiGLUFunction.apply(rows, w12, b12, self.w3.weight, self.w3.bias)
        else:
            out, _ = _swiglu_forward(rows, w12, b12, self.w3.weight, self.w3.bias, keep_pre_activations=False)
        return out.view(*x.shape[:-1], self.channels)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, hidden_channels={self.hidden_channels})"
