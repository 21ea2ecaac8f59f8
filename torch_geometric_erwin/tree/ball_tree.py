"""The Python face of the ball-tree engine: :class:`BallTree` and :func:`build_ball_tree`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from torch_geometric_erwin.tree import engine
from torch_geometric_erwin.tree.rotation import rotate as rotate_points
from torch_geometric_erwin.tree.rotation import rotation_matrix
from torch_geometric_erwin.tree.validation import (check_ball_config, check_permutation, check_pos, granularity,
                                                   node_ptr_from)

PADDINGS = ("pow2", "compact")

#: Attribute names the tree transforms attach to a ``Data`` object. ``tree_index``
#: contains "index", so PyG's collation offsets it by each graph's node count;
#: the rotated permutations are offset in :meth:`BallTree.from_data` instead.
INDEX_KEY, MASK_KEY, ROTATED_PREFIX = "tree_index", "tree_mask", "tree_rotated_"


def _ptr(counts: Tensor) -> Tensor:
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


@dataclass
class BallTree:
    r"""Ball trees of a batch of graphs, in the reference layout.

    Graph :math:`g` owns slots ``ptr[g]:ptr[g+1]``; balls of size :math:`b_l` at
    level :math:`l` are contiguous runs of :math:`b_l` slots of that level, where
    level :math:`l` has :math:`S / \prod_{j<l} s_j` slots (pooling groups of
    ``strides[l]`` consecutive slots lead from level :math:`l` to :math:`l+1`).

    Attributes:
        index: ``[S]`` int64, slot -> node (the reference's ``tree_idx``).
            Padding slots repeat a node of the same leaf.
        mask: ``[S]`` bool, True on exactly one slot per node (``tree_mask``).
        ptr: ``[B + 1]`` int64, slot offsets of the graphs at level 0.
        node_ptr: ``[B + 1]`` int64, node offsets of the graphs.
        rotated: one ``[S_l]`` int64 permutation of the level-``l`` slots per level
            (``tree_idx_rot``), empty when built without rotation.
        ball_sizes, strides: the configuration the tree was padded for (or None).
        padding: ``"pow2"`` or ``"compact"``.
    """

    index: Tensor
    mask: Tensor
    ptr: Tensor
    node_ptr: Tensor
    rotated: List[Tensor] = field(default_factory=list)
    ball_sizes: Optional[Tuple[int, ...]] = None
    strides: Optional[Tuple[int, ...]] = None
    padding: str = "pow2"

    @property
    def num_graphs(self) -> int:
        return self.ptr.numel() - 1

    @property
    def num_slots(self) -> int:
        return self.index.numel()

    @property
    def num_nodes(self) -> int:
        return int(self.node_ptr[-1])

    def pooling_factor(self, level: int) -> int:
        """Slots of level 0 per slot of ``level`` (product of the earlier strides)."""
        return math.prod((self.strides or ())[:level])

    def level_ptr(self, level: int = 0) -> Tensor:
        """``[B + 1]`` slot offsets of the graphs at ``level``."""
        return self.ptr // self.pooling_factor(level)

    def slot_batch(self, level: int = 0) -> Tensor:
        """``[S_l]`` graph id of every slot at ``level``."""
        counts = self.level_ptr(level).diff()
        return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)

    def node_slots(self) -> Tensor:
        """``[N]`` int64: the slot that holds each node (the one ``mask`` marks), so that
        ``features[tree.node_slots()]`` brings tree-ordered rows back to the input node order."""
        slots = torch.arange(self.num_slots, device=self.index.device)
        return torch.empty_like(self.index[:self.num_nodes]).index_copy_(0, self.index[self.mask],
                                                                          slots[self.mask])

    def check(self, node_ptr: Optional[Tensor] = None) -> None:
        """Raise :class:`ValueError` unless the tree is one the models can run on: ``index`` maps
        every slot to a node of the slot's own graph, ``mask`` marks exactly one slot per node, and
        every ``rotated`` entry permutes its level's slots within each graph. The models read and
        write rows through these, so a tree given by hand or read off data is checked before use
        (:math:`O(S)`); a malformed one would mix graphs or leave rows unwritten. ``node_ptr``: the
        graphs' node offsets of the input, which the tree's must equal."""
        if node_ptr is not None and not torch.equal(node_ptr.cpu(), self.node_ptr.cpu()):
            raise ValueError(f"the tree's graphs (node offsets {self.node_ptr.tolist()[:8]}) do not match "
                             f"the input's ({node_ptr.tolist()[:8]}): build the tree with the same batch")
        index, mask, num_nodes = self.index, self.mask, self.num_nodes
        if index.dtype != torch.long or index.dim() != 1 or mask.shape != index.shape or mask.dtype != torch.bool:
            raise ValueError("tree.index must be a 1-D int64 tensor and tree.mask a bool tensor of its shape")
        if int(self.ptr[-1]) != index.numel():
            raise ValueError(f"tree.ptr ends at {int(self.ptr[-1])} but the tree has {index.numel()} slots")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_nodes):
            raise ValueError(f"tree.index must hold node indices in [0, {num_nodes})")
        if not bool((torch.bincount(index[mask], minlength=num_nodes) == 1).all()):
            raise ValueError("tree.mask must mark exactly one slot of every node")
        node_graph = torch.repeat_interleave(torch.arange(self.num_graphs), self.node_ptr.cpu().diff())
        if not torch.equal(node_graph.to(index.device)[index], self.slot_batch(0).to(index.device)):
            raise ValueError("tree.index maps slots to nodes of other graphs")
        for level, permutation in enumerate(self.rotated):
            slot_batch = self.slot_batch(level).to(permutation.device)
            check_permutation(f"tree.rotated[{level}]", permutation, slot_batch.numel())
            if not torch.equal(slot_batch[permutation], slot_batch):
                raise ValueError(f"tree.rotated[{level}] moves slots between graphs")

    def to(self, device) -> "BallTree":
        return replace(self, index=self.index.to(device), mask=self.mask.to(device),
                       ptr=self.ptr.to(device), node_ptr=self.node_ptr.to(device),
                       rotated=[r.to(device) for r in self.rotated])

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_graphs={self.num_graphs}, num_nodes={self.num_nodes}, "
                f"num_slots={self.num_slots}, levels={len(self.rotated) or None}, "
                f"ball_sizes={self.ball_sizes}, strides={self.strides}, padding='{self.padding}')")

    def local_rotations(self) -> "BallTree":
        """The same tree with each graph's rotated permutations starting at 0."""
        local = []
        for level, permutation in enumerate(self.rotated):
            level_ptr = self.level_ptr(level)
            local.append(permutation - torch.repeat_interleave(level_ptr[:-1], level_ptr.diff()))
        return replace(self, rotated=local)

    def attach(self, data) -> None:
        """Store the tree on ``data`` as the transforms' attributes.

        ``rotated`` must hold per-graph (local) permutations, see :meth:`local_rotations`.
        """
        setattr(data, INDEX_KEY, self.index)
        setattr(data, MASK_KEY, self.mask)
        for level, permutation in enumerate(self.rotated):
            setattr(data, f"{ROTATED_PREFIX}{level}", permutation)

    @classmethod
    def from_data(cls, data, ball_sizes=None, strides=None, padding: str = "pow2") -> "BallTree":
        """Rebuild the batched tree from the attributes the transforms attached.

        Works for one ``Data`` and for a collated ``Batch``: ``tree_index`` was
        offset by PyG's collation, the per-graph ``tree_rotated_<l>`` permutations
        are offset here by each graph's slot offset at that level.
        """
        ball_sizes, strides = check_ball_config(ball_sizes, strides)
        index = getattr(data, INDEX_KEY)
        mask = getattr(data, MASK_KEY)
        num_nodes = data.num_nodes
        batch = getattr(data, "batch", None)
        node_ptr = node_ptr_from(num_nodes, batch, None)
        if index.dim() != 1 or mask.shape != index.shape or mask.dtype != torch.bool:
            raise ValueError("tree_index and tree_mask must be 1-D tensors of equal length (mask bool)")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_nodes):
            raise ValueError("tree_index points outside the graph's nodes")
        node_graph = torch.repeat_interleave(torch.arange(node_ptr.numel() - 1), node_ptr.diff())
        counts = torch.bincount(node_graph[index.cpu()], minlength=node_ptr.numel() - 1)
        ptr = _ptr(counts)
        if int(mask.sum()) != num_nodes:
            raise ValueError(f"tree_mask marks {int(mask.sum())} slots but there are {num_nodes} nodes")
        levels = sorted(int(key[len(ROTATED_PREFIX):]) for key in data.keys()
                        if key.startswith(ROTATED_PREFIX))
        if levels != list(range(len(levels))):
            raise ValueError(f"rotated tree levels must be 0..L-1, found {levels}")
        rotated = []
        for level in levels:
            local = getattr(data, f"{ROTATED_PREFIX}{level}")
            if local.numel() == 0 or index.numel() % local.numel():
                raise ValueError(f"tree_rotated_{level} has {local.numel()} entries, which does not "
                                 f"divide the {index.numel()} tree slots")
            factor = index.numel() // local.numel()
            if bool((ptr % factor).any()):
                raise ValueError(f"tree_rotated_{level} does not match the graphs' slot counts")
            level_counts = counts // factor
            offsets = torch.repeat_interleave(_ptr(level_counts)[:-1], level_counts).to(local.device)
            rotated.append(local + offsets)
        if ball_sizes is not None:
            grain = granularity(ball_sizes, strides)
            if bool((counts % grain).any()):
                raise ValueError(
                    f"the attached trees have {counts.tolist()[:8]} slots per graph, which are not multiples of "
                    f"{grain} (ball_sizes={list(ball_sizes)}, strides={list(strides)}): build them with "
                    "BallTreeTransform(ball_sizes=..., strides=...) matching the model")
            if rotated and len(rotated) != len(ball_sizes):
                raise ValueError(f"the data carries {len(rotated)} rotated levels but the model has "
                                 f"{len(ball_sizes)}: use RotatedTreeTransform with the model's ball_sizes")
        device = index.device
        return cls(index=index, mask=mask, ptr=ptr.to(device), node_ptr=node_ptr.to(device),
                   rotated=rotated, ball_sizes=ball_sizes, strides=strides, padding=padding)


def _padded_positions(pos: Tensor) -> Tensor:
    """Positions in a dtype the rotation is computed in (the input's, at least float32)."""
    return pos if pos.dtype in (torch.float32, torch.float64) else pos.float()


def rotated_partitions(pos: Tensor, tree: BallTree, angle: float,
                       engine_name: Optional[str] = None) -> List[Tensor]:
    r"""Rotated re-partitions of ``tree``, one permutation per level (eq. 11).

    The tree-ordered leaves (padding duplicates included) are rotated by
    ``angle`` degrees (:func:`rotation_matrix`), and at every level the
    level's points are re-partitioned with the same split rule into balls of
    that level's size; between levels the rotated points are mean-pooled in
    groups of ``strides[l]`` consecutive slots of the original tree, as the
    model pools positions.
    """
    if tree.ball_sizes is None:
        raise ValueError("rotated partitions need ball_sizes (one ball size per level)")
    work = _padded_positions(pos.detach()).cpu()
    matrix = rotation_matrix(angle, work.shape[1], dtype=work.dtype)
    leaves = rotate_points(work[tree.index.cpu()], matrix)
    ptr = tree.ptr.cpu()
    rotated = []
    for level, ball_size in enumerate(tree.ball_sizes):
        level_ptr = ptr // tree.pooling_factor(level)
        permutation, _ = engine.partition(leaves.contiguous(), level_ptr, level_ptr, ball_size,
                                          engine_name)
        rotated.append(permutation.to(pos.device))
        if level < len(tree.strides):
            leaves = leaves.view(-1, tree.strides[level], leaves.shape[1]).mean(1)
    return rotated


def build_ball_tree(pos: Tensor, batch: Optional[Tensor] = None, *, ptr: Optional[Tensor] = None,
                    ball_sizes: Optional[Sequence[int]] = None, strides: Optional[Sequence[int]] = None,
                    rotate: float = 0.0, padding: str = "pow2", engine_name: Optional[str] = None) -> BallTree:
    r"""Build the ball trees of a batch of point clouds (paper, Alg. 1 and Sec. 3.2).

    Each node of a tree is split along the dimension of largest spread
    (``max - min``; the first such dimension on ties) at the median: the left
    child gets :math:`\lfloor n/2 \rfloor` points and half of the slots. Each
    graph's tree is completed to a perfect binary tree by repeating the point
    of single-point leaves; ``mask`` marks the repeats (the reference layout:
    ``N = 5`` gives slots ``[1,1, 4,4, 2,2, 0,3]`` for suitable positions).
    Points that tie on the split coordinate are ordered by node index, so the
    result is deterministic.

    Args:
        pos: ``[N, D]`` floating positions, finite, any ``D >= 1``.
        batch: ``[N]`` sorted graph id of every node (PyG's ``batch``), or None.
        ptr: ``[B + 1]`` node offsets per graph, instead of ``batch``.
        ball_sizes: ball size per level (powers of two). Graphs are padded to at
            least :func:`granularity` slots, so no ball or pooling group at any
            level spans two graphs, and small graphs still fit.
        strides: pooling stride after each level but the last (powers of two),
            ``len(ball_sizes) - 1`` entries.
        rotate: angle in degrees of the rotated trees; ``0`` for none.
        padding: ``"pow2"`` (the reference: next power of two, at least the
            granularity) or ``"compact"`` (the next multiple of the granularity:
            a 5000-point cloud at granularity 512 uses 5120 slots instead of
            8192). Compact trees split nodes that span ``k`` blocks of
            granularity size block-proportionally, ``floor(k/2)`` blocks and
            ``floor(n floor(k/2) / k)`` points to the left, which is the median
            split whenever ``k`` is even; inside a block the split rule is the
            paper's.
        engine_name: ``'cpp'``, ``'torch'`` or None for the default engine.

    Returns:
        A :class:`BallTree` whose tensors are on ``pos.device``.
    """
    check_pos(pos)
    ball_sizes, strides = check_ball_config(ball_sizes, strides)
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if isinstance(rotate, bool) or not isinstance(rotate, (int, float)) or not math.isfinite(rotate):
        raise TypeError(f"rotate must be a finite angle in degrees, got {rotate!r}")
    if rotate != 0 and ball_sizes is None:
        raise ValueError("rotate != 0 needs ball_sizes: rotated trees are built per level")
    node_ptr = node_ptr_from(pos.shape[0], batch, ptr)

    grain = granularity(ball_sizes, strides)
    slot_ptr = engine.slot_ptr(node_ptr, padding, grain)
    index, mask = engine.partition(_padded_positions(pos), node_ptr, slot_ptr, grain, engine_name)
    tree = BallTree(index=index, mask=mask, ptr=slot_ptr, node_ptr=node_ptr,
                    ball_sizes=ball_sizes, strides=strides, padding=padding)
    if rotate != 0:
        tree.rotated = rotated_partitions(pos, tree, float(rotate), engine_name)
    return tree if pos.device == index.device else tree.to(pos.device)
