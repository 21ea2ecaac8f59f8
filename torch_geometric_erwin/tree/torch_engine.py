"""Pure-PyTorch ball-tree engine.

Produces exactly the same slot assignment as the C++ engine in ``csrc/`` (the
tests compare them element by element), level-synchronously: every tree node
of one depth is split in the same handful of tensor operations, so there is no
Python loop over graphs, nodes or points, only over the ``log2(slots)`` depths.

Both engines order the points of a node by the key ``(coordinate along the
split dimension, node id)``. The node id breaks ties, which makes the result
a pure function of the input, independent of thread count or sort algorithm.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _split_sizes(num_points: Tensor, num_slots: Tensor, block_size: int):
    """How many points and slots the left child of each node receives.

    Inside a block (``num_slots <= block_size``) this is the paper's rule: the
    left child gets ``floor(n / 2)`` points and half of the slots. Above the
    block size a node spans ``k = num_slots / block_size`` blocks; the left
    child gets ``floor(k / 2)`` blocks and the matching share of the points,
    ``floor(n * floor(k / 2) / k)``, which is again ``floor(n / 2)`` whenever
    ``k`` is even.
    """
    blocks = torch.clamp(num_slots // block_size, min=1)
    left_blocks = blocks // 2
    above = num_slots > block_size
    left_points = torch.where(above, num_points * left_blocks // blocks, num_points // 2)
    left_slots = torch.where(above, left_blocks * block_size, num_slots // 2)
    return left_points, left_slots


def _sort_within_segments(order: Tensor, key: Tensor, segment: Tensor) -> Tensor:
    """Reorder ``order`` so that each segment is sorted by ``(key, node id)``."""
    by_id = torch.argsort(order, stable=True)
    by_key = by_id[torch.argsort(key[by_id], stable=True)]
    by_segment = by_key[torch.argsort(segment[by_key], stable=True)]
    return order[by_segment]


def partition(pos: Tensor, node_ptr: Tensor, slot_ptr: Tensor, block_size: int):
    """Ball-tree slot assignment for a ragged batch (see :func:`engine.partition`)."""
    num_points_total, dim = pos.shape
    num_slots_total = int(slot_ptr[-1])
    index = torch.empty(num_slots_total, dtype=torch.long)
    mask = torch.zeros(num_slots_total, dtype=torch.bool)

    order = torch.arange(num_points_total)
    seg_points = node_ptr[1:] - node_ptr[:-1]
    seg_slots = slot_ptr[1:] - slot_ptr[:-1]
    seg_start = node_ptr[:-1].clone()
    seg_slot_start = slot_ptr[:-1].clone()
    keep = seg_points > 0
    seg_points, seg_slots = seg_points[keep], seg_slots[keep]
    seg_start, seg_slot_start = seg_start[keep], seg_slot_start[keep]

    while seg_points.numel() > 0:
        leaf = seg_points == 1
        if bool(leaf.any()):
            # A single point fills all slots of its node; the first one is real.
            leaf_slots = seg_slots[leaf]
            first = seg_slot_start[leaf]
            offsets = torch.arange(int(leaf_slots.sum())) - torch.repeat_interleave(
                torch.cumsum(leaf_slots, 0) - leaf_slots, leaf_slots)
            index[torch.repeat_interleave(first, leaf_slots) + offsets] = torch.repeat_interleave(
                order[seg_start[leaf]], leaf_slots)
            mask[first] = True
            inner = ~leaf
            seg_points, seg_slots = seg_points[inner], seg_slots[inner]
            seg_start, seg_slot_start = seg_start[inner], seg_slot_start[inner]
            if seg_points.numel() == 0:
                break

        # Gather the points of the remaining nodes, segment by segment.
        num_segments = seg_points.numel()
        segment = torch.repeat_interleave(torch.arange(num_segments), seg_points)
        within = torch.arange(segment.numel()) - torch.repeat_interleave(
            torch.cumsum(seg_points, 0) - seg_points, seg_points)
        positions = torch.repeat_interleave(seg_start, seg_points) + within
        members = order[positions]
        coords = pos[members]

        # Dimension of largest spread per node (first one on ties).
        expand = segment.unsqueeze(1).expand(-1, dim)
        high = torch.full((num_segments, dim), -torch.inf, dtype=pos.dtype).scatter_reduce(
            0, expand, coords, "amax")
        low = torch.full((num_segments, dim), torch.inf, dtype=pos.dtype).scatter_reduce(
            0, expand, coords, "amin")
        split_dim = torch.argmax(high - low, dim=1)
        key = coords.gather(1, split_dim[segment].unsqueeze(1)).squeeze(1)

        order[positions] = _sort_within_segments(members, key, segment)

        left_points, left_slots = _split_sizes(seg_points, seg_slots, block_size)
        seg_start = torch.stack([seg_start, seg_start + left_points], 1).flatten()
        seg_slot_start = torch.stack([seg_slot_start, seg_slot_start + left_slots], 1).flatten()
        seg_points = torch.stack([left_points, seg_points - left_points], 1).flatten()
        seg_slots = torch.stack([left_slots, seg_slots - left_slots], 1).flatten()

    return index, mask
