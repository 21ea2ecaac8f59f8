r"""The embedding's messages summed per target (Erwin eq. 14),

.. math::
    s_i = \sum_{j \to i} \mathrm{LN}\big(\mathrm{GELU}((W_s h)_j + (W_t h + b)_i + W_p (p_j - p_i))\big),

in the C++ kernels of ``csrc/edge_messages.h`` as the custom op ``erwin::edge_messages``: each
target sums its messages in the caches, so no ``[E, C]`` tensor is formed, and the backward pass
forms them again. The edges come grouped by target (``source``, ``target``, ``offset``,
``target_ptr``, as the kNN and radius builders return them) and, for the backward pass, grouped by
source as well (the same four with ``_by_source``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from torch_geometric_erwin.ops._extension import arrays, extension


@torch.library.custom_op("erwin::edge_messages", mutates_args=(), device_types="cpu")
def edge_messages(per_source: Tensor, per_target: Tensor, offset_weight: Tensor, weight: Tensor, bias: Tensor,
                  eps: float, source: Tensor, target: Tensor, offset: Tensor, target_ptr: Tensor,
                  source_by_source: Optional[Tensor], target_by_source: Optional[Tensor],
                  offset_by_source: Optional[Tensor], source_ptr: Optional[Tensor]) -> Tensor:
    """The summed messages ``[N, C]`` of float32 per-node terms ``per_source`` :math:`W_s h` and
    ``per_target`` :math:`W_t h + b` ``[N, C]``, ``offset_weight`` :math:`W_p^\\top` ``[D, C]`` and
    the LayerNorm's ``weight``, ``bias``, ``eps``. The edges grouped by source are needed only by
    the backward pass (None without autograd)."""
    inputs = [t.contiguous() for t in (per_source, per_target, offset_weight, weight, bias)]
    summed = torch.empty_like(inputs[0])
    extension().edge_messages_forward(*arrays(*inputs), eps, *arrays(source, target, offset, target_ptr, summed),
                                      torch.get_num_threads())
    return summed


@edge_messages.register_fake
def _(per_source, per_target, offset_weight, weight, bias, eps, *edges):
    return torch.empty_like(per_source)


@torch.library.custom_op("erwin::edge_messages_backward", mutates_args=(), device_types="cpu")
def edge_messages_backward(per_source: Tensor, per_target: Tensor, offset_weight: Tensor, weight: Tensor,
                           bias: Tensor, eps: float, source: Tensor, target: Tensor, offset: Tensor,
                           target_ptr: Tensor, source_by_source: Tensor, target_by_source: Tensor,
                           offset_by_source: Tensor, source_ptr: Tensor,
                           grad_summed: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`edge_messages` for its five tensor inputs given that of the sums."""
    inputs = [t.contiguous() for t in (per_source, per_target, offset_weight, weight, bias)]
    grad_summed = grad_summed.contiguous()
    (nodes, channels), dims = grad_summed.shape, offset.shape[1]
    grad_per_source, grad_per_target = torch.empty_like(grad_summed), torch.empty_like(grad_summed)
    grad_parts = grad_summed.new_empty(nodes, (1 + dims) * channels)
    extension().edge_messages_backward(
        *arrays(*inputs), eps, *arrays(source, target, offset, target_ptr, source_by_source, target_by_source,
                                       offset_by_source, source_ptr, grad_summed, grad_per_source, grad_per_target,
                                       grad_parts), torch.get_num_threads())
    parts = grad_parts.sum(0)
    grad_weight, grad_offset_weight = parts[:channels].clone(), parts[channels:]  # outputs may not alias
    # every edge into node i adds grad_summed[i] to the LayerNorm's bias
    grad_bias = target_ptr.diff().to(grad_summed.dtype) @ grad_summed
    return grad_per_source, grad_per_target, grad_offset_weight.view(dims, channels), grad_weight, grad_bias


@edge_messages_backward.register_fake
def _(per_source, per_target, offset_weight, weight, bias, *rest):
    return (torch.empty_like(per_source), torch.empty_like(per_target), torch.empty_like(offset_weight),
            torch.empty_like(weight), torch.empty_like(bias))


def _setup_context(ctx, inputs, output):
    *tensors, eps = inputs[:6]
    ctx.save_for_backward(*tensors, *inputs[6:])
    ctx.eps = eps


def _backward(ctx, grad_summed):
    per_source, per_target, offset_weight, weight, bias, *edges = ctx.saved_tensors
    if edges[4] is None:
        raise RuntimeError("erwin::edge_messages was called without the edges grouped by source, which its "
                           "backward pass needs: pass source_by_source, target_by_source, offset_by_source "
                           "and source_ptr when gradients are required")
    grads = edge_messages_backward(per_source, per_target, offset_weight, weight, bias, ctx.eps, *edges, grad_summed)
    return (*grads, None) + (None,) * 8


edge_messages.register_autograd(_backward, setup_context=_setup_context)
