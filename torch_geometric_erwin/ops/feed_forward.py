r"""The SwiGLU feed-forward layer, :math:`W_3 (W_2 x \odot \mathrm{SiLU}(W_1 x))`, written out for
the CPU as the custom ops ``erwin::swiglu`` (inference) and ``erwin::swiglu_train``.

The two input projections are one GEMM with the stacked weight ``w12`` :math:`[W_1; W_2]`; the
gated product is formed one block of rows at a time, so that it stays in the caches and never
exists for all rows at once. Autograd of the composite layer keeps four ``[S, hidden]`` tensors
and takes several more in the backward pass; ``erwin::swiglu_train`` keeps only the ``[S, 2 hidden]``
pre-activations, and its backward pass forms the gated product again per block (the five
elementwise passes in one C++ kernel, ``csrc/swiglu.h``, in float32).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from torch_geometric_erwin.ops._extension import arrays, available, extension

#: Bytes of gate and value pre-activations per block of rows.
BLOCK_BYTES = 4 * 2**20


def _row_blocks(rows: int, hidden: int, element_size: int, buffers: int, like: Tensor):
    """Slices of ``rows`` with at most :data:`BLOCK_BYTES` of ``[rows, 2 * hidden]`` pre-activations
    each, and ``buffers`` scratch tensors of one block's ``[rows, hidden]``, reused by every block (a
    fresh temporary per block would be page-faulted in again whenever the allocator returned it)."""
    step = max(1, min(rows, BLOCK_BYTES // (2 * hidden * element_size)))
    scratch = like.new_empty(buffers, step, hidden).unbind(0)
    for start in range(0, rows, step):
        block = slice(start, min(start + step, rows))
        yield block, [buffer[:block.stop - block.start] for buffer in scratch]


def _forward(x: Tensor, w12: Tensor, b12: Tensor, w3: Tensor, b3: Tensor, gate_value=None) -> Tensor:
    hidden = w3.shape[1]
    out = x.new_empty(x.shape[0], w3.shape[0])
    for rows, (gated,) in _row_blocks(x.shape[0], hidden, x.element_size(), 1, x):
        block = gate_value[rows] if gate_value is not None else torch.addmm(b12, x[rows], w12.t())
        gate, value = block.split(hidden, dim=1)
        torch.ops.aten.silu.out(gate, out=gated).mul_(value)
        torch.addmm(b3, gated, w3.t(), out=out[rows])
    return out


@torch.library.custom_op("erwin::swiglu", mutates_args=(), device_types="cpu")
def swiglu(x: Tensor, w12: Tensor, b12: Tensor, w3: Tensor, b3: Tensor) -> Tensor:
    """SwiGLU of the rows of ``x [S, C]`` (float32 or float64) with ``w12 [2 hidden, C]``, ``b12``,
    ``w3 [C_out, hidden]``, ``b3``, without autograd."""
    return _forward(x.contiguous(), w12, b12, w3, b3)


@swiglu.register_fake
def _(x, w12, b12, w3, b3):
    return x.new_empty(x.shape[0], w3.shape[0])


@torch.library.custom_op("erwin::swiglu_train", mutates_args=(), device_types="cpu")
def swiglu_train(x: Tensor, w12: Tensor, b12: Tensor, w3: Tensor, b3: Tensor) -> Tuple[Tensor, Tensor]:
    """:func:`swiglu` and the pre-activations ``[S, 2 hidden]`` its backward pass reads (one GEMM
    for all rows)."""
    x = x.contiguous()
    gate_value = torch.addmm(b12, x, w12.t())
    return _forward(x, w12, b12, w3, b3, gate_value), gate_value


@swiglu_train.register_fake
def _(x, w12, b12, w3, b3):
    return x.new_empty(x.shape[0], w3.shape[0]), x.new_empty(x.shape[0], w12.shape[0])


@torch.library.custom_op("erwin::swiglu_backward", mutates_args=(), device_types="cpu")
def swiglu_backward(x: Tensor, w12: Tensor, w3: Tensor, gate_value: Tensor,
                    grad_out: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`swiglu_train` for ``x, w12, b12, w3, b3`` given that of its output."""
    hidden = w3.shape[1]
    x, grad_out = x.contiguous(), grad_out.contiguous()
    grad_gate_value = torch.empty_like(gate_value)
    grad_w3 = torch.zeros_like(w3)
    fused = x.dtype == torch.float32 and available("swiglu", x.dtype)
    for rows, (gated, grad_gated) in _row_blocks(x.shape[0], hidden, x.element_size(), 2, x):
        torch.mm(grad_out[rows], w3, out=grad_gated)
        if fused:
            extension().swiglu_backward(*arrays(gate_value[rows], grad_gated, gated, grad_gate_value[rows]),
                                        torch.get_num_threads())
        else:
            gate, value = gate_value[rows].split(hidden, dim=1)
            grad_gate, grad_value = grad_gate_value[rows].split(hidden, dim=1)
            torch.ops.aten.silu.out(gate, out=gated)
            torch.mul(grad_gated, gated, out=grad_value)
            gated.mul_(value)
            torch.ops.aten.silu_backward.grad_input(grad_gated.mul_(value), gate, grad_input=grad_gate)
        grad_w3.addmm_(grad_out[rows].t(), gated)
    return (grad_gate_value.mm(w12), grad_gate_value.t().mm(x), grad_gate_value.sum(0), grad_w3,
            grad_out.sum(0))


@swiglu_backward.register_fake
def _(x, w12, w3, gate_value, grad_out):
    return (torch.empty_like(x), torch.empty_like(w12), w12.new_empty(w12.shape[0]), torch.empty_like(w3),
            w3.new_empty(w3.shape[0]))


def _setup_context(ctx, inputs, output):
    x, w12, _, w3, _ = inputs
    ctx.save_for_backward(x, w12, w3, output[1])
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_out, _grad_gate_value):
    return swiglu_backward(*ctx.saved_tensors, grad_out)


swiglu_train.register_autograd(_backward, setup_context=_setup_context)
