r"""Radius and k-nearest-neighbour graphs for the MPNN embedding.

``torch-cluster`` is used when it is installed; otherwise an exact built-in
search gives the same edges (up to the order of neighbours at exactly equal
distance, which the built-in search breaks by node index). The built-in search
compares every node with every node of its graph, in chunks of queries so memory
stays bounded: fine for graphs up to some :math:`10^5` nodes; install
torch-cluster for larger ones.

Edges follow PyG's ``source_to_target`` convention: ``edge_index[0]`` is the
neighbour (source), ``edge_index[1]`` the centre node (target).
"""
from __future__ import annotations

import importlib
import math
from typing import Optional

import torch
from torch import Tensor

from torch_geometric_erwin.tree.validation import check_pos, node_ptr_from

#: Distances computed per chunk of queries in the built-in search.
PAIRS_PER_CHUNK = 1 << 22


def _torch_cluster():
    try:
        return importlib.import_module("torch_cluster")
    except ImportError:
        return None


def _check(pos: Tensor, batch: Optional[Tensor]) -> Tensor:
    check_pos(pos)
    return node_ptr_from(pos.shape[0], batch, None).to(pos.device)


def _neighbours(pos: Tensor, ptr: Tensor, loop: bool, count: int, radius: float) -> Tensor:
    """Up to ``count`` nearest nodes of the same graph within ``radius`` (exclusive of the node itself
    unless ``loop``), nearest first, ties by index. Returns ``[2, E]``."""
    num_nodes = pos.shape[0]
    node_graph = torch.repeat_interleave(torch.arange(ptr.numel() - 1, device=pos.device), ptr.diff())
    largest = int(ptr.diff().max())
    rows_per_chunk = max(1, PAIRS_PER_CHUNK // max(largest, 1))
    sources, targets = [], []
    for start in range(0, num_nodes, rows_per_chunk):
        stop = min(num_nodes, start + rows_per_chunk)
        lo, hi = int(ptr[node_graph[start]]), int(ptr[node_graph[stop - 1] + 1])
        queries = torch.arange(start, stop, device=pos.device)
        dist = torch.cdist(pos[start:stop].double(), pos[lo:hi].double(),
                           compute_mode="donot_use_mm_for_euclid_dist")
        keys = torch.arange(lo, hi, device=pos.device)
        excluded = node_graph[start:stop, None] != node_graph[None, lo:hi]
        if not loop:
            excluded |= queries[:, None] == keys[None, :]
        dist = dist.masked_fill(excluded | (dist > radius), math.inf)
        # the `take` nearest keys, ties at the cut broken by the lower node index, so the edges do not
        # depend on the chunking: everything closer than the take-th distance, then equals in index order
        take = min(count, hi - lo)
        cut = dist.topk(take, dim=1, largest=False).values[:, -1:]
        closer = dist < cut
        tied = (dist == cut) & torch.isfinite(dist)
        chosen = closer | (tied & (tied.cumsum(dim=1) <= take - closer.sum(dim=1, keepdim=True)))
        row, column = chosen.nonzero(as_tuple=True)
        sources.append(column + lo)
        targets.append(queries[row])
    if not sources:
        return torch.empty(2, 0, dtype=torch.long, device=pos.device)
    return torch.stack([torch.cat(sources), torch.cat(targets)])


def knn_graph(pos: Tensor, k: int, batch: Optional[Tensor] = None, loop: bool = False) -> Tensor:
    r"""The :math:`k`-nearest-neighbour graph of every graph of the batch.

    Args:
        pos: ``[N, D]`` positions.
        k: neighbours per node (fewer in graphs with at most ``k`` nodes).
        batch: ``[N]`` sorted graph id per node, or None for one graph.
        loop: count the node itself as one of its neighbours (torch-cluster's ``loop=True``).

    Returns: ``edge_index`` ``[2, E]``, row 0 the neighbour, row 1 the centre.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    ptr = _check(pos, batch)
    cluster = _torch_cluster()
    if cluster is not None:
        return cluster.knn_graph(pos, k, batch, loop=loop)
    return _neighbours(pos, ptr, loop, k, math.inf)


def radius_graph(pos: Tensor, r: float, batch: Optional[Tensor] = None, loop: bool = False,
                 max_num_neighbors: int = 32) -> Tensor:
    r"""Edges between nodes of the same graph closer than ``r``.

    Args:
        pos: ``[N, D]`` positions.
        r: radius.
        batch: ``[N]`` sorted graph id per node, or None for one graph.
        loop: include self-loops.
        max_num_neighbors: at most this many neighbours per node. The built-in
            search keeps the nearest ones; torch-cluster keeps an arbitrary
            subset, so the two agree only when no node has more neighbours.

    Returns: ``edge_index`` ``[2, E]``, row 0 the neighbour, row 1 the centre.
    """
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 or not math.isfinite(r):
        raise ValueError(f"r must be a positive finite radius, got {r!r}")
    if isinstance(max_num_neighbors, bool) or not isinstance(max_num_neighbors, int) or max_num_neighbors < 1:
        raise ValueError(f"max_num_neighbors must be a positive int, got {max_num_neighbors!r}")
    ptr = _check(pos, batch)
    cluster = _torch_cluster()
    if cluster is not None:
        return cluster.radius_graph(pos, float(r), batch, loop=loop, max_num_neighbors=max_num_neighbors)
    return _neighbours(pos, ptr, loop, max_num_neighbors, float(r))
