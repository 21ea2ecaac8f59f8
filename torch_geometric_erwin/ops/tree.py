r"""The C++ ball-tree engine (``csrc/ball_tree.h``) and exact neighbour search
(``csrc/neighbour_search.h``) as the custom ops ``erwin::partition`` and
``erwin::neighbour_search``, and the one-pass host helpers of the build path.

The ops take CPU tensors (their callers in :mod:`torch_geometric_erwin.tree` bring inputs to the
host and validate them); their outputs' sizes depend on the data, which their fake
implementations declare as dynamic sizes.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from torch_geometric_erwin.ops._extension import extension


@torch.library.custom_op("erwin::partition", mutates_args=(), device_types="cpu")
def partition(pos: Tensor, node_ptr: Tensor, slot_ptr: Tensor, block_size: int) -> Tuple[Tensor, Tensor]:
    """Ball-tree slots of the graphs ``node_ptr`` of float32/float64 ``pos [N, D]`` in the slot
    ranges ``slot_ptr``: ``index [S]`` (slot -> point) and ``mask [S]`` (True on a point's first
    slot)."""
    index, mask = extension().partition(pos.numpy(force=True), node_ptr.numpy(), slot_ptr.numpy(), block_size)
    return torch.from_numpy(index), torch.from_numpy(mask)


@partition.register_fake
def _(pos, node_ptr, slot_ptr, block_size):
    slots = torch.library.get_ctx().new_dynamic_size()
    return pos.new_empty(slots, dtype=torch.long), pos.new_empty(slots, dtype=torch.bool)


@torch.library.custom_op("erwin::neighbour_search", mutates_args=(), device_types="cpu")
def neighbour_search(pos: Tensor, node_ptr: Tensor, count: int, radius_sq: float, loop: bool) -> Tensor:
    """Per node of float32/float64 ``pos [N, D]``, up to ``count`` nearest nodes of its graph with
    squared distance at most ``radius_sq``, ties by index: ``edge_index [2, E]`` (row 0 the
    neighbour, row 1 the centre, by centre then neighbour index)."""
    return torch.from_numpy(extension().neighbour_search(pos.numpy(force=True), node_ptr.numpy(), count, radius_sq,
                                                          loop, torch.get_num_threads()))


@neighbour_search.register_fake
def _(pos, node_ptr, count, radius_sq, loop):
    return pos.new_empty(2, torch.library.get_ctx().new_dynamic_size(), dtype=torch.long)


def all_finite(values: Tensor) -> bool:
    """Whether a float32/float64 CPU tensor has no NaN or Inf entry, in one pass."""
    return extension().all_finite(values.numpy(force=True))


def batch_ptr(batch: np.ndarray) -> Tuple[int, Optional[Tensor]]:
    """``(0, node_ptr)`` of a sorted, non-negative int64 batch vector, else ``(1, None)`` for a
    negative id or ``(2, None)`` for unsorted ids."""
    status, ptr = extension().batch_ptr(batch)
    return status, None if ptr is None else torch.from_numpy(ptr)


def slot_ptr(node_ptr: Tensor, pow2: bool, grain: int) -> Tensor:
    """Slot offsets of the graphs ``node_ptr``: powers of two or multiples of ``grain``."""
    return torch.from_numpy(extension().slot_ptr(node_ptr.numpy(), pow2, grain))
