r"""RMSNorm of rows, :math:`y = x / \sqrt{\frac{1}{C}\sum_c x_c^2 + \epsilon} \odot w`, in the C++
kernels of ``csrc/rms_norm.h`` as the custom op ``erwin::rms_norm``: one pass over the rows in
each direction (PyTorch's composite form makes about ten), keeping each row's
:math:`1 / \mathrm{RMS}` for the backward pass."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from torch_geometric_erwin.ops._extension import arrays, extension


@torch.library.custom_op("erwin::rms_norm", mutates_args=(), device_types="cpu")
def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
    """RMSNorm of the float32 rows of ``x [R, C]`` with ``weight [C]``; returns ``y`` and the rows'
    inverse RMS ``[R]``."""
    x = x.contiguous()
    y, inverse_rms = torch.empty_like(x), x.new_empty(x.shape[0])
    extension().rms_norm_forward(*arrays(x, weight.contiguous()), eps, *arrays(y, inverse_rms),
                                 torch.get_num_threads())
    return y, inverse_rms


@rms_norm.register_fake
def _(x, weight, eps):
    return torch.empty_like(x), x.new_empty(x.shape[0])


@torch.library.custom_op("erwin::rms_norm_backward", mutates_args=(), device_types="cpu")
def rms_norm_backward(x: Tensor, weight: Tensor, inverse_rms: Tensor, grad_y: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradients of :func:`rms_norm` for ``x`` and ``weight`` given that of ``y``."""
    x, weight = x.contiguous(), weight.contiguous()
    grad_x, grad_weight = torch.empty_like(x), torch.empty_like(weight)
    extension().rms_norm_backward(*arrays(x, weight, inverse_rms.contiguous(), grad_y.contiguous(), grad_x,
                                          grad_weight), torch.get_num_threads())
    return grad_x, grad_weight


@rms_norm_backward.register_fake
def _(x, weight, inverse_rms, grad_y):
    return torch.empty_like(x), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, weight, _ = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_y, _grad_inverse_rms):
    return (*rms_norm_backward(*ctx.saved_tensors, grad_y), None)


rms_norm.register_autograd(_backward, setup_context=_setup_context)
