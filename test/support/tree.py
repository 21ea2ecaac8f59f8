"""An independent, slow, recursive statement of the tree contract, used by the tree tests.

It re-derives what every node of a ball tree must contain from the paper's split rule
(largest spread, ties to the first dimension; median split with floor(n/2) points to
the left; keys ordered by (coordinate, node id)) and checks a built tree against it.
"""
from __future__ import annotations

import numpy as np
import torch


def expected_left(num_points: int, num_slots: int, block: int):
    """(points, slots) of the left child, pow2 halving or block-proportional above block."""
    if num_slots > block:
        blocks = num_slots // block
        return num_points * (blocks // 2) // blocks, (blocks // 2) * block
    return num_points // 2, num_slots // 2


def check_node(pos: np.ndarray, index: np.ndarray, mask: np.ndarray, lo: int, num_slots: int,
               block: int, ids: np.ndarray) -> None:
    """Check slots [lo, lo + num_slots) hold exactly ``ids`` and split them as the rule says."""
    slots = index[lo:lo + num_slots]
    real = slots[mask[lo:lo + num_slots]]
    assert sorted(real.tolist()) == sorted(ids.tolist()), "a subtree holds the wrong nodes"
    if len(ids) == 1:
        assert (slots == ids[0]).all() and mask[lo] and not mask[lo + 1:lo + num_slots].any()
        return
    points = pos[ids]
    spread = points.max(0) - points.min(0)
    dim = int(np.argmax(spread))  # first maximum, as the rule breaks ties
    order = np.lexsort((ids, points[:, dim]))  # by coordinate, then node id
    left_points, left_slots = expected_left(len(ids), num_slots, block)
    left_ids, right_ids = ids[order[:left_points]], ids[order[left_points:]]
    check_node(pos, index, mask, lo, left_slots, block, left_ids)
    check_node(pos, index, mask, lo + left_slots, num_slots - left_slots, block, right_ids)


def check_split_rule(pos: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, slot_ptr: torch.Tensor,
                     node_ptr: torch.Tensor, block: int) -> None:
    """Every graph's slots form the tree the split rule prescribes for its nodes."""
    pos, index, mask = pos.double().cpu().numpy(), index.cpu().numpy(), mask.cpu().numpy()
    for graph in range(len(slot_ptr) - 1):
        lo, hi = int(slot_ptr[graph]), int(slot_ptr[graph + 1])
        ids = np.arange(int(node_ptr[graph]), int(node_ptr[graph + 1]))
        if len(ids):
            check_node(pos, index, mask, lo, hi - lo, block, ids)
        else:
            assert hi == lo


def rotated_level_positions(pos: torch.Tensor, tree, angle: float):
    """Per level, the rotated tree-ordered positions the rotated partition is built on."""
    from torch_geometric_erwin.tree import rotation_matrix
    from torch_geometric_erwin.tree.rotation import rotate

    leaves = rotate(pos[tree.index], rotation_matrix(angle, pos.shape[1], dtype=pos.dtype))
    levels = []
    for level in range(len(tree.ball_sizes)):
        levels.append(leaves)
        if level < len(tree.strides):
            leaves = leaves.view(-1, tree.strides[level], leaves.shape[1]).mean(1)
    return levels
