r"""Batch normalisation whose batch is the rows of all ranks together."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from torch_geometric_erwin.distributed.comm import all_reduce_sum, world


class ShardedBatchNorm(nn.Module):
    r"""Runs a :class:`~torch.nn.BatchNorm1d` as if the rows of every rank of ``group`` were one batch.

    In training mode (or without running statistics) the mean and the biased variance are taken
    over the :math:`n = \sum_r n_r` rows of all ranks, in two passes as BatchNorm does,

    .. math::
        \mu = \frac{1}{n} \sum_r \sum_{i} x_{ri}, \qquad
        \sigma^2 = \frac{1}{n} \sum_r \sum_i (x_{ri} - \mu)^2, \qquad
        y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,

    through differentiable all-reduces (:class:`~torch_geometric_erwin.distributed.comm.AllReduceSum`),
    so outputs and gradients equal those of the single-process layer on the concatenated rows. The
    running statistics are updated as :class:`~torch.nn.BatchNorm1d` updates them (unbiased variance,
    ``momentum`` or the cumulative average when it is None), identically on every rank. In eval mode
    with running statistics the wrapped layer runs locally. Every rank must hold the same number of
    rows (the sharded tree gives each rank the same slot count), which lets :math:`n` be known without
    a collective.

    Args:
        norm (torch.nn.BatchNorm1d): the layer whose parameters and buffers are used (not copied).
        group: the process group (``None``: the default one).

    Shapes: ``forward(x [n_r, C]) -> [n_r, C]``.
    """

    def __init__(self, norm: nn.BatchNorm1d, group=None):
        super().__init__()
        if not isinstance(norm, nn.BatchNorm1d):
            raise TypeError(f"norm must be a torch.nn.BatchNorm1d, got {type(norm).__name__}")
        # kept out of the module tree: the parameters belong to the wrapped model
        self.__dict__["norm"] = norm
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        norm = self.norm
        if not norm.training and norm.running_mean is not None:
            return norm(x)
        _, world_size = world(self.group)
        count = x.shape[0] * world_size
        mean = all_reduce_sum(x.sum(0), self.group) / count
        centred = x - mean
        var = all_reduce_sum((centred * centred).sum(0), self.group) / count
        if norm.training and norm.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count)
        y = centred * torch.rsqrt(var + norm.eps)
        return y * norm.weight + norm.bias if norm.affine else y

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: int) -> None:
        norm = self.norm
        norm.num_batches_tracked.add_(1)
        factor = (1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum)
        unbiased = var * (count / max(count - 1, 1))
        norm.running_mean.mul_(1 - factor).add_(mean.to(norm.running_mean.dtype), alpha=factor)
        norm.running_var.mul_(1 - factor).add_(unbiased.to(norm.running_var.dtype), alpha=factor)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.norm!r})"
