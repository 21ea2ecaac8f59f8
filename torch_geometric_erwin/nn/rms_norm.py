r"""RMSNorm, the normalisation of Erwin's blocks, with a C++ path on CPU."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from torch_geometric_erwin import ops
from torch_geometric_erwin.nn.cpu_path import takes_kernel_path


class RMSNorm(nn.RMSNorm):
    r""":class:`torch.nn.RMSNorm` (Zhang & Sennrich, 2019) over the last dimension,

    .. math::
        y = \frac{x}{\sqrt{\frac{1}{C}\sum_c x_c^2 + \epsilon}} \odot w,

    with the same arguments and state, that on CPU in float32 (outside autocast, with a weight)
    runs the op :func:`torch_geometric_erwin.ops.rms_norm`: one pass over the rows in each
    direction, where PyTorch's composite form makes about ten.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.weight is None or x.shape[-1:] != self.weight.shape or not takes_kernel_path(x, self.weight,
                                                                                              "rms_norm"):
            return super().forward(x)
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        y, _ = ops.rms_norm(x.reshape(-1, x.shape[-1]), self.weight, eps)
        return y.view(x.shape)
