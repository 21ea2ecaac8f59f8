r"""RMSNorm, the normalisation of Erwin's blocks, with a C++ path on CPU."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from torch_geometric_erwin.nn.cpu_path import _C, arrays, takes_kernel_path


class _KernelRMSNormFunction(torch.autograd.Function):
    r"""RMSNorm of the rows of ``x [S, C]`` with ``weight [C]`` in the C++ kernels of
    ``csrc/rms_norm.h`` (float32 CPU), which keep each row's :math:`1 / \mathrm{RMS}` for the backward
    pass."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        x, weight = x.contiguous(), weight.contiguous()
        y, inverse_rms = torch.empty_like(x), x.new_empty(x.shape[0])
        _C.rms_norm_forward(*arrays(x, weight), eps, *arrays(y, inverse_rms), torch.get_num_threads())
        ctx.save_for_backward(x, weight, inverse_rms)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, weight, inverse_rms = ctx.saved_tensors
        grad_x, grad_weight = torch.empty_like(x), torch.empty_like(weight)
        _C.rms_norm_backward(*arrays(x, weight, inverse_rms, grad_y.contiguous(), grad_x, grad_weight),
                             torch.get_num_threads())
        return grad_x, grad_weight, None


class RMSNorm(nn.RMSNorm):
    r""":class:`torch.nn.RMSNorm` (Zhang & Sennrich, 2019) over the last dimension,

    .. math::
        y = \frac{x}{\sqrt{\frac{1}{C}\sum_c x_c^2 + \epsilon}} \odot w,

    with the same arguments and state, that on CPU in float32 (outside autocast and
    ``torch.compile``, with a weight) runs the C++ kernels of ``csrc/rms_norm.h``: one pass over
    the rows in each direction, where PyTorch's composite form makes about ten.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.weight is None or x.shape[-1:] != self.weight.shape or not takes_kernel_path(x, self.weight):
            return super().forward(x)
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        rows = x.reshape(-1, x.shape[-1])
        return _KernelRMSNormFunction.apply(rows, self.weight, eps).view(x.shape)
