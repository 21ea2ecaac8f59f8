r"""Exact neighbour search in a batch of point clouds: the C++ k-d trees of
``csrc/neighbour_search.h``, or a pure-PyTorch k-d tree giving identical edges.

For every node :math:`q` of graph :math:`g` the result is fixed by the data, not by
either tree: among the nodes :math:`j` of :math:`g` (:math:`q` itself only with
``loop``) with

.. math::
    d^2(q, j) = \sum_{d=1}^{D} \bigl(p_{j,d} - p_{q,d}\bigr)^2 \le \rho,

summed in float64 over the dimensions in order, the ``count`` smallest by the key
:math:`(d^2, j)`: at equal squared distances the lower node index wins. Edges are
returned as ``[2, E]`` int64, row 0 the neighbour (source), row 1 the centre
(target), grouped by centre in ascending order and by neighbour index within a
centre. The squared distance comes from coordinate differences, never from
:math:`|a|^2 + |b|^2 - 2ab`, whose cancellation would reorder close neighbours.

The engine is chosen as for the ball trees (:mod:`~torch_geometric_erwin.tree.engine`,
``TORCH_GEOMETRIC_ERWIN_ENGINE=torch|cpp``).

The PyTorch search builds a k-d tree level by level (every node of a depth split
at its median along its widest dimension with two stable sorts), with leaves of
``max(8, count + 1)`` to twice as many points. Each query first takes the ``count``-th smallest
:math:`d^2` within its own leaf as an upper bound (or :math:`\rho` when the leaf
holds fewer candidates), descends all the trees at once keeping every (query,
node) pair whose box is within that bound, and finally ranks the points of the
surviving leaves. There is no Python loop over points or nodes, only over the
tree depth and over chunks of queries, and memory stays linear in the number of
points (chunks shrink when their candidates would exceed :data:`PAIRS_PER_CHUNK`).

Limits of the PyTorch search: its bound comes from one leaf, so a query near a
leaf boundary, data whose neighbours lie far apart compared with the leaves
(strongly clustered clouds, where a leaf spans several clusters), or many
dimensions (:math:`D \gtrsim 6`, where boxes overlap every query's ball) keep
many leaves and approach the quadratic cost of comparing all pairs, though never
its memory. It is a few to tens of times slower than the C++ search.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from torch_geometric_erwin.tree import engine as _engine

#: Candidate (query, point) pairs the PyTorch search holds at once.
PAIRS_PER_CHUNK = 1 << 22
#: Nodes of the PyTorch k-d tree of at least twice this many points are split.
MIN_LEAF = 8


def radius_sq_bound(radius: float) -> float:
    """The largest float64 :math:`\\rho` with :math:`\\sqrt{\\rho} \\le r` (rounded), so that
    :math:`d^2 \\le \\rho` is exactly ``sqrt(d2) <= radius``, the test on float64 distances."""
    if math.isinf(radius):
        return math.inf
    bound = radius * radius
    while math.sqrt(bound) > radius:
        bound = math.nextafter(bound, -math.inf)
    while math.sqrt(math.nextafter(bound, math.inf)) <= radius:
        bound = math.nextafter(bound, math.inf)
    return bound


def neighbour_search(pos: Tensor, node_ptr: Tensor, count: int, radius_sq: float, loop: bool,
                     engine: Optional[str] = None) -> Tensor:
    """Up to ``count`` nearest nodes of each node's graph with :math:`d^2 \\le` ``radius_sq``.

    Args:
        pos: ``[N, D]`` finite positions (any floating dtype and device; searched on the CPU).
        node_ptr: ``[B + 1]`` int64 CPU offsets of the graphs.
        count: positive int.
        radius_sq: bound on the squared distance (``math.inf`` for k nearest neighbours).
        loop: a node may be its own neighbour.
        engine: ``'cpp'``, ``'torch'`` or ``None`` for :func:`~torch_geometric_erwin.tree.engine_name`.
    Inputs are validated by the caller.

    Returns: ``edge_index`` ``[2, E]`` int64 on the CPU, row 0 the neighbour, row 1 the centre.
    """
    engine = engine or _engine.engine_name()
    pos = pos.detach()
    if pos.dtype not in (torch.float32, torch.float64):
        pos = pos.double()
    largest = int(node_ptr.diff().max()) if node_ptr.numel() > 1 else 0
    count = max(1, min(count, largest))
    if engine == "cpp":
        if _engine._C is None:
            raise ImportError(f"the C++ engine is not built: {_engine._import_error}")
        return torch.from_numpy(_engine._C.neighbour_search(pos.numpy(force=True), node_ptr.numpy(), count,
                                                            float(radius_sq), bool(loop), torch.get_num_threads()))
    if engine == "torch":
        return _torch_search(pos.cpu().double(), node_ptr, count, float(radius_sq), bool(loop))
    raise ValueError(f"engine must be 'cpp' or 'torch', got {engine!r}")


def _squared_distance(points: Tensor, queries: Tensor) -> Tensor:
    """``[..., D]`` pairs -> ``[...]`` squared distances, summed over the dimensions in order
    (as the C++ search sums them, so both give the same float64 values)."""
    total = torch.zeros(points.shape[:-1], dtype=points.dtype)
    for d in range(points.shape[-1]):
        diff = points[..., d] - queries[..., d]
        total = total + diff * diff
    return total


def _box_squared_distance(low: Tensor, high: Tensor, queries: Tensor) -> Tensor:
    """Lower bound on the squared distance from each query to the points of a box, summed like
    :func:`_squared_distance` from gaps no larger than any point's difference, so never above it."""
    total = torch.zeros(queries.shape[:-1], dtype=queries.dtype)
    for d in range(queries.shape[-1]):
        below, above = low[..., d] - queries[..., d], queries[..., d] - high[..., d]
        gap = torch.where(below > 0, below, torch.where(above > 0, above, torch.zeros_like(below)))
        total = total + gap * gap
    return total


class _KdTree:
    """k-d trees of all graphs, built level-synchronously. ``order`` maps tree positions to node
    indices; node ``i`` covers positions ``begin[i]:end[i]``, has box ``low[i], high[i]`` and
    children ``left[i], right[i]`` (-1 for a leaf); ``leaf_of[p]`` is the leaf of position ``p``.
    Nodes of at least ``2 * min_leaf`` points are split, so every leaf of a graph of at least
    ``min_leaf`` points holds ``min_leaf`` to ``leaf_size = 2 * min_leaf - 1``."""

    def __init__(self, pos: Tensor, node_ptr: Tensor, min_leaf: int) -> None:
        leaf_size = 2 * min_leaf - 1
        num_points = pos.shape[0]
        self.order = torch.arange(num_points)
        sizes = node_ptr.diff()
        self.root = torch.full((sizes.numel(),), -1, dtype=torch.long)
        graphs = (sizes > 0).nonzero().flatten()
        self.root[graphs] = torch.arange(graphs.numel())
        begin, end = node_ptr[:-1][graphs], node_ptr[1:][graphs]
        begins, ends, lows, highs, lefts, rights = [], [], [], [], [], []
        count = 0
        while begin.numel():
            ids = torch.arange(count, count + begin.numel())
            count += begin.numel()
            node_of, positions = _expand(begin, end)
            points = pos[self.order[positions]]
            index = node_of[:, None].expand_as(points)
            low = torch.full((begin.numel(), pos.shape[1]), math.inf, dtype=pos.dtype)
            high = torch.full_like(low, -math.inf)
            low.scatter_reduce_(0, index, points, "amin")
            high.scatter_reduce_(0, index, points, "amax")
            split = (end - begin) > leaf_size
            left, right = torch.full_like(begin, -1), torch.full_like(begin, -1)
            num_split = int(split.sum())
            left[split] = count + torch.arange(num_split)
            right[split] = count + num_split + torch.arange(num_split)
            begins.append(begin), ends.append(end), lows.append(low), highs.append(high)
            lefts.append(left), rights.append(right)
            # sort the points of every node to split by the coordinate of its widest dimension
            dim = (high - low).argmax(dim=1)  # the first of equal spreads, as in C++
            inside = split[node_of]
            positions, node_of = positions[inside], node_of[inside]
            key = points[inside].gather(1, dim[node_of][:, None]).squeeze(1)
            by_key = torch.sort(key, stable=True).indices
            by_node = by_key[torch.sort(node_of[by_key], stable=True).indices]
            self.order[positions] = self.order[positions[by_node]]
            mid = begin[split] + (end[split] - begin[split]) // 2
            begin = torch.cat([begin[split], mid])
            end = torch.cat([mid, end[split]])
        self.begin, self.end = torch.cat(begins), torch.cat(ends)
        self.low, self.high = torch.cat(lows), torch.cat(highs)
        self.left, self.right = torch.cat(lefts), torch.cat(rights)
        self.points = pos[self.order]
        leaves = (self.left < 0).nonzero().flatten()
        leaf, positions = _expand(self.begin[leaves], self.end[leaves])
        self.leaf_of = torch.empty(num_points, dtype=torch.long)
        self.leaf_of[positions] = leaves[leaf]
        self.position_of = torch.empty(num_points, dtype=torch.long)
        self.position_of[self.order] = torch.arange(num_points)
        self.leaf_size = leaf_size


def _expand(begin: Tensor, end: Tensor):
    """(segment, position) of every position of the segments ``begin[i]:end[i]``."""
    sizes = end - begin
    segment = torch.repeat_interleave(torch.arange(begin.numel()), sizes)
    starts = torch.cumsum(sizes, 0) - sizes
    return segment, begin[segment] + torch.arange(int(sizes.sum())) - starts[segment]


def _candidates(tree: _KdTree, query: Tensor, begin: Tensor, end: Tensor, width: int, radius_sq: float,
                loop: bool):
    """For each query and range of tree positions ``begin:end`` (at most ``width`` long): the
    positions ``[P, width]`` (padded with ``begin``) and their squared distances to the query, inf
    where not a candidate (padding, the query itself without ``loop``, or beyond ``radius_sq``)."""
    slots = begin[:, None] + torch.arange(width)
    valid = slots < end[:, None]
    slots = torch.where(valid, slots, begin[:, None])
    d2 = _squared_distance(tree.points[slots], tree.points[tree.position_of[query]][:, None, :])
    if not loop:
        valid &= tree.order[slots] != query[:, None]
    valid &= d2 <= radius_sq
    return slots, d2.masked_fill(~valid, math.inf)


def _search_chunk(tree: _KdTree, node_ptr: Tensor, graph: Tensor, query: Tensor, count: int, radius_sq: float,
                  loop: bool, budget: int) -> Optional[Tensor]:
    """Edges of the queries (ascending node indices) of graphs ``graph``, or None when their
    candidate pairs would exceed ``budget``."""
    # Upper bound on each query's count-th key: its count-th candidate among the 2 count + 1 tree
    # positions around its own (near it in space, as tree order is); inf where there are too few
    # candidates (graphs of at most count points, sparse radius queries).
    width = 2 * count + 1
    low, high = node_ptr[graph], node_ptr[graph + 1]
    start = torch.minimum(tree.position_of[query] - count, high - width).maximum(low)
    _, around = _candidates(tree, query, start, torch.minimum(start + width, high), width, radius_sq, loop)
    bound = around.sort(dim=1).values[:, count - 1].clamp(max=radius_sq)
    here = tree.points[tree.position_of[query]]
    pair_query, node = torch.arange(query.numel()), tree.root[graph]
    kept_query, kept_leaf = [], []
    while node.numel():
        near = _box_squared_distance(tree.low[node], tree.high[node], here[pair_query]) <= bound[pair_query]
        pair_query, node = pair_query[near], node[near]
        is_leaf = tree.left[node] < 0
        kept_query.append(pair_query[is_leaf]), kept_leaf.append(node[is_leaf])
        if sum(q.numel() for q in kept_query) * tree.leaf_size > budget and query.numel() > 1:
            return None
        inner = ~is_leaf
        pair_query = pair_query[inner].repeat(2)
        node = torch.cat([tree.left[node[inner]], tree.right[node[inner]]])
    pair_query, leaf = torch.cat(kept_query), torch.cat(kept_leaf)
    slots, d2 = _candidates(tree, query[pair_query], tree.begin[leaf], tree.end[leaf], tree.leaf_size,
                            radius_sq, loop)
    d2 = d2.masked_fill(d2 > bound[pair_query][:, None], math.inf)
    pair_query = pair_query[:, None].expand_as(d2)
    finite = torch.isfinite(d2)
    pair_query, source, d2 = pair_query[finite], tree.order[slots[finite]], d2[finite]
    # rank by (query, d2, source) with stable sorts, keep the first `count` of every query
    by_source = torch.sort(source, stable=True).indices
    by_d2 = by_source[torch.sort(d2[by_source], stable=True).indices]
    ranked = by_d2[torch.sort(pair_query[by_d2], stable=True).indices]
    pair_query, source = pair_query[ranked], source[ranked]
    sizes = torch.bincount(pair_query, minlength=query.numel())
    first = torch.cumsum(sizes, 0) - sizes
    rank = torch.arange(pair_query.numel()) - first[pair_query]
    keep = rank < count
    pair_query, source = pair_query[keep], source[keep]
    # by centre, then by neighbour index
    by_source = torch.sort(source, stable=True).indices
    ordered = by_source[torch.sort(pair_query[by_source], stable=True).indices]
    return torch.stack([source[ordered], query[pair_query[ordered]]])


def _torch_search(pos: Tensor, node_ptr: Tensor, count: int, radius_sq: float, loop: bool) -> Tensor:
    tree = _KdTree(pos, node_ptr, MIN_LEAF)
    num_points = pos.shape[0]
    node_graph = torch.repeat_interleave(torch.arange(node_ptr.numel() - 1), node_ptr.diff())
    pieces = []
    start, chunk = 0, max(1, PAIRS_PER_CHUNK // (2 * count + 1 + 32 * tree.leaf_size))
    while start < num_points:
        stop = min(num_points, start + chunk)
        query = torch.arange(start, stop)
        edges = _search_chunk(tree, node_ptr, node_graph[query], query, count, radius_sq, loop, PAIRS_PER_CHUNK)
        if edges is None:  # too many candidates: retry with half the queries
            chunk = max(1, chunk // 2)
            continue
        pieces.append(edges)
        start = stop
    return torch.cat(pieces, dim=1) if pieces else torch.empty(2, 0, dtype=torch.long)
