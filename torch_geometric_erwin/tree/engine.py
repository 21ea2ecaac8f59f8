"""Selects the ball-tree engine: the compiled C++ extension, or pure PyTorch.

Set the environment variable ``TORCH_GEOMETRIC_ERWIN_ENGINE=torch`` to force the
PyTorch engine (``=cpp`` makes a missing extension an error instead of a
warning). Both engines return identical trees.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from torch_geometric_erwin import ops
from torch_geometric_erwin.tree import torch_engine

ENV_VAR = "TORCH_GEOMETRIC_ERWIN_ENGINE"
_NOT_BUILT = "the C++ extension is not built (torch_geometric_erwin._C)"


def cpp_available() -> bool:
    """Whether the C++ engine is built (:func:`torch_geometric_erwin.ops.available`)."""
    return ops.available("tree")


def _default_engine() -> str:
    choice = os.environ.get(ENV_VAR, "").strip().lower()
    if choice not in ("", "cpp", "torch"):
        raise ValueError(f"{ENV_VAR} must be 'cpp' or 'torch', got {choice!r}")
    if choice == "torch":
        return "torch"
    if not cpp_available():
        if choice == "cpp":
            raise ImportError(f"{ENV_VAR}=cpp but {_NOT_BUILT}")
        warnings.warn(
            "torch_geometric_erwin: the C++ ball-tree engine is not built; "
            "using the slower pure-PyTorch engine (same results). "
            "Reinstall with a C++ compiler available to build it.", RuntimeWarning, stacklevel=2)
        return "torch"
    return "cpp"


_ENGINE = _default_engine()


def engine_name() -> str:
    """The engine :func:`build_ball_tree` uses by default: ``'cpp'`` or ``'torch'``."""
    return _ENGINE


def partition(pos: Tensor, node_ptr: Tensor, slot_ptr: Tensor, block_size: int,
              engine: str | None = None) -> tuple[Tensor, Tensor]:
    """Assign the points of each graph to the slots of its ball tree.

    Graph ``g`` owns points ``node_ptr[g]:node_ptr[g+1]`` and slots
    ``slot_ptr[g]:slot_ptr[g+1]`` (at least as many slots as points, a multiple
    of ``block_size``, or a power of two). Inputs are validated by the caller.

    Args:
        pos: ``[N, D]`` float32 or float64 (any device and layout; the C++ engine works on
            a contiguous host copy, or on ``pos`` itself when it is one). The split
            rule orders float32 keys exactly as their float64 values, and
            spreads are differenced in float64 by both engines.
        node_ptr: ``[B + 1]`` int64, CPU.
        slot_ptr: ``[B + 1]`` int64, CPU.
        block_size: power of two; nodes spanning several blocks are split
            block-proportionally, nodes within a block by halving.
        engine: ``'cpp'``, ``'torch'`` or ``None`` for :func:`engine_name`.

    Returns:
        ``index`` ``[S]`` int64 (slot -> point) and ``mask`` ``[S]`` bool (True
        on the first slot of each point, False on padding duplicates).
    """
    engine = engine or _ENGINE
    if engine == "cpp":
        if not cpp_available():
            raise ImportError(f"engine='cpp' but {_NOT_BUILT}")
        return ops.partition(pos.detach().cpu(), node_ptr, slot_ptr, int(block_size))
    if engine == "torch":
        return torch_engine.partition(pos.detach().cpu().double(), node_ptr, slot_ptr, int(block_size))
    raise ValueError(f"engine must be 'cpp' or 'torch', got {engine!r}")


# Helpers of the build path: each is one pass in C++ when the extension is built, where the
# torch and numpy fallbacks below take several passes and calls (which, at a few thousand
# points per graph, cost as much as the tree itself).

def all_finite(pos: Tensor) -> bool:
    """Whether a floating tensor has no NaN or Inf entry."""
    if cpp_available() and pos.dtype in (torch.float32, torch.float64) and pos.device.type == "cpu":
        return ops.all_finite(pos)
    # A sum is finite only if every entry is (NaN and Inf propagate): one reduction instead of
    # an elementwise mask, and the exact test only where the sum is not finite.
    return math.isfinite(float(pos.detach().sum())) or bool(torch.isfinite(pos).all())


#: What :func:`batch_ptr` found (the codes the C++ helper returns).
BATCH_OK, BATCH_NEGATIVE, BATCH_UNSORTED = 0, 1, 2


def batch_ptr(batch: np.ndarray) -> Tuple[int, Optional[Tensor]]:
    """``(BATCH_OK, node_ptr)`` of an int64 batch vector, ``[B + 1]`` with ``B`` its last id plus
    one; or ``(BATCH_NEGATIVE, None)`` if an id is negative, else ``(BATCH_UNSORTED, None)`` if the
    ids are not sorted."""
    if cpp_available():
        return ops.batch_ptr(batch)
    if batch.size == 0:
        return BATCH_OK, torch.zeros(1, dtype=torch.long)
    unsorted = bool((batch[1:] < batch[:-1]).any())
    if batch[0] < 0 or (unsorted and bool((batch < 0).any())):  # sorted: the first is the least
        return BATCH_NEGATIVE, None
    if unsorted:
        return BATCH_UNSORTED, None
    # graph g starts at the first node with id >= g (empty graphs included)
    return BATCH_OK, torch.from_numpy(np.searchsorted(batch, np.arange(batch[-1] + 2)).astype(np.int64))


def slot_ptr(node_ptr: Tensor, padding: str, grain: int) -> Tensor:
    """``[B + 1]`` slot offsets: per graph the next power of two (at least ``grain``, a power of
    two) for ``padding='pow2'``, or the next multiple of ``grain``; none for an empty graph."""
    if cpp_available():
        return ops.slot_ptr(node_ptr, padding == "pow2", grain)
    num_nodes = np.diff(node_ptr.numpy())
    if padding == "pow2":
        _, bits = np.frexp(np.maximum(num_nodes - 1, 0))  # bit length of n - 1, exact below 2^53
        slots = np.maximum(np.left_shift(1, bits.astype(np.int64)), grain)
    else:
        slots = (num_nodes + grain - 1) // grain * grain
    slots = np.where(num_nodes > 0, slots, 0)
    return torch.from_numpy(np.concatenate([np.zeros(1, np.int64), np.cumsum(slots, dtype=np.int64)]))
