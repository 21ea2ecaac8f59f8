"""Process-group helpers for ``torchrun`` (DDP: nccl on GPU, gloo on CPU)."""
from __future__ import annotations

import collections
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


#: The tensors of the most recent collectives. gloo's worker threads release a finished collective's
#: tensors themselves; when a worker holds the last reference to a tensor made in Python, releasing it
#: needs the GIL. A process group destroyed at that moment (its destructor joins the workers while
#: holding the GIL, e.g. when DDP's reducer is freed) then deadlocks: this hung two-process runs at
#: exit. Keeping the tensors referenced here means a worker never frees the last reference.
_RECENT_COLLECTIVES: collections.deque = collections.deque(maxlen=64)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size`` and its ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes in place (no-op on one process)."""
        if self.enabled:
            _RECENT_COLLECTIVES.append(tensor)
            dist.all_reduce(tensor)
        return tensor


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (CUDA if available, else CPU) or any ``torch.device`` string."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available; use --device cpu")
    return resolved


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1).

    Uses nccl with one GPU per process (``LOCAL_RANK``) when the device is CUDA, gloo otherwise.
    Without ``torchrun`` it returns a single-process context on ``device``. Collectives time out
    after ``ERWIN_DIST_TIMEOUT`` seconds (default 1800), so a lost rank ends the run with an error.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world_size == 1:
        return DistributedContext(0, 1, resolved)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    if resolved.type != "cuda" and os.environ.get("MASTER_ADDR") in LOOPBACK:
        # gloo binds to the interface of the machine's hostname by default; on hosts whose hostname does
        # not resolve to a reachable address the ranks then wait on each other forever.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("ERWIN_DIST_TIMEOUT", "1800")))
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo", timeout=timeout)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), resolved)


def destroy_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()  # no rank tears down while another still waits on a collective
        dist.destroy_process_group()
