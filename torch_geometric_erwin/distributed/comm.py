r"""Collectives with autograd, and agreement checks that fail on every rank together.

Every function takes a ``group`` (``None``: the default process group). The tensors handed to a
collective are kept referenced for a while (see
:data:`torch_geometric_erwin.training.distributed._RECENT_COLLECTIVES`), which avoids a gloo
shutdown deadlock.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from torch_geometric_erwin.training.distributed import _RECENT_COLLECTIVES


def world(group=None) -> tuple:
    """``(rank, world_size)`` of this process in ``group``; raises unless a process group is up."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("torch_geometric_erwin.distributed needs an initialised process group: call "
                           "torch.distributed.init_process_group('gloo' or 'nccl') first (torchrun sets the "
                           "environment it reads)")
    return dist.get_rank(group), dist.get_world_size(group)


def all_to_all(x: Tensor, send_counts: Sequence[int], recv_counts: Sequence[int], group=None) -> Tensor:
    """Rows ``x`` ``[sum(send_counts), ...]`` split by destination rank; returns the rows received,
    ``[sum(recv_counts), ...]``, ordered by source rank (no autograd)."""
    x = x.contiguous()
    out = x.new_empty((sum(recv_counts),) + tuple(x.shape[1:]))
    _RECENT_COLLECTIVES.extend((x, out))
    dist.all_to_all_single(out, x, list(recv_counts), list(send_counts), group=group)
    return out


class AllToAll(torch.autograd.Function):
    r""":func:`all_to_all` with autograd: the gradient of the rows received is sent back along the
    same routes, i.e. the backward pass is the all-to-all with the counts swapped."""

    @staticmethod
    def forward(ctx, x: Tensor, send_counts: List[int], recv_counts: List[int], group) -> Tensor:
        """The rows received, ``[sum(recv_counts), ...]``."""
        ctx.send_counts, ctx.recv_counts, ctx.group = send_counts, recv_counts, group
        return all_to_all(x, send_counts, recv_counts, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        """The gradient of the rows sent: ``grad`` sent back along the same routes."""
        return all_to_all(grad, ctx.recv_counts, ctx.send_counts, ctx.group), None, None, None


class AllReduceSum(torch.autograd.Function):
    r"""The sum of ``x`` over the ranks, on every rank. Each rank's result feeds that rank's part of
    the loss :math:`\mathcal{L} = \sum_r \mathcal{L}_r`, so the gradient with respect to every input is
    the sum over ranks of the gradients of the results: the backward pass is again an all-reduce."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        """The sum of ``x`` over the ranks."""
        ctx.group = group
        out = x.clone()
        _RECENT_COLLECTIVES.append(out)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        """The sum of ``grad`` over the ranks."""
        grad = grad.clone()
        _RECENT_COLLECTIVES.append(grad)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def all_reduce_sum(x: Tensor, group=None) -> Tensor:
    """Differentiable sum of ``x`` over the ranks of ``group`` (:class:`AllReduceSum`)."""
    return AllReduceSum.apply(x, group)


def agree(error: Optional[str], fingerprint, group=None, what: str = "input") -> None:
    """Raise the same :class:`ValueError` on every rank of ``group`` if any rank found an ``error``
    (a message, or None) or if the ranks' ``fingerprint``\\ s (any picklable value that must be equal
    on all ranks) differ. One ``all_gather_object``: a rank with bad input fails with the others
    instead of leaving them waiting in the next collective."""
    rank, world_size = world(group)
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, (error, fingerprint), group=group)
    errors = [(r, message) for r, (message, _) in enumerate(gathered) if message is not None]
    if errors:
        raise ValueError("; ".join(f"rank {r}: {message}" for r, message in errors))
    reference = gathered[0][1]
    differing = [r for r, (_, value) in enumerate(gathered) if value != reference]
    if differing:
        fields = ""
        if isinstance(reference, dict):
            keys = sorted({key for r in differing for key, value in gathered[r][1].items()
                           if reference.get(key) != value})
            fields = f" (differing: {', '.join(keys)})"
        raise ValueError(f"the ranks were given different {what}: rank(s) {differing} differ from rank 0{fields}; "
                         "every rank must pass the same cloud, tree and model configuration")
