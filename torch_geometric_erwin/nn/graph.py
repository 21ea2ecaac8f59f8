r"""Radius and k-nearest-neighbour graphs for the MPNN embedding.

The search is exact and deterministic, the same on every machine: per node, among
the nodes of its graph, the nearest by squared distance (summed in float64 from
coordinate differences), ties broken by the lower node index. It runs on k-d trees,
in C++ when the extension is built and else in pure PyTorch (same edges, slower;
``TORCH_GEOMETRIC_ERWIN_ENGINE=torch|cpp`` chooses as for the ball trees), see
:mod:`torch_geometric_erwin.tree.neighbour_search`. Positions on another device
are searched on the CPU and the edges moved back, except CUDA tensors when
``torch-cluster`` is installed, which then builds the graph on the GPU (its radius
graph keeps an arbitrary subset of at most ``max_num_neighbors`` neighbours, and its
order of edges differs).

Edges follow PyG's ``source_to_target`` convention: ``edge_index[0]`` is the
neighbour (source), ``edge_index[1]`` the centre node (target); they are grouped by
centre in ascending order, and by neighbour index within a centre.
"""
from __future__ import annotations

import importlib
import math
from typing import Optional

from torch import Tensor

from torch_geometric_erwin.tree.neighbour_search import neighbour_search, radius_sq_bound
from torch_geometric_erwin.checks import check_int, check_pos, check_real, node_ptr_from


def _torch_cluster(pos: Tensor):
    if pos.device.type != "cuda":
        return None
    try:
        return importlib.import_module("torch_cluster")
    except ImportError:
        return None


def _check(pos: Tensor, batch: Optional[Tensor]) -> Tensor:
    check_pos(pos)
    return node_ptr_from(pos.shape[0], batch, None)


def knn_graph(pos: Tensor, k: int, batch: Optional[Tensor] = None, loop: bool = False) -> Tensor:
    r"""The :math:`k`-nearest-neighbour graph of every graph of the batch.

    Args:
        pos: ``[N, D]`` positions.
        k: neighbours per node (fewer in graphs with at most ``k`` nodes).
        batch: ``[N]`` sorted graph id per node, or None for one graph.
        loop: count the node itself as one of its neighbours (torch-cluster's ``loop=True``).

    Returns: ``edge_index`` ``[2, E]``, row 0 the neighbour, row 1 the centre.
    """
    check_int("k", k)
    ptr = _check(pos, batch)
    cluster = _torch_cluster(pos)
    if cluster is not None:
        return cluster.knn_graph(pos, k, batch, loop=loop)
    return neighbour_search(pos, ptr, k, math.inf, loop).to(pos.device)


def radius_graph(pos: Tensor, r: float, batch: Optional[Tensor] = None, loop: bool = False,
                 max_num_neighbors: int = 32) -> Tensor:
    r"""Edges between nodes of the same graph closer than ``r``.

    Args:
        pos: ``[N, D]`` positions.
        r: radius: edges join nodes at a distance :math:`\le r`.
        batch: ``[N]`` sorted graph id per node, or None for one graph.
        loop: include self-loops.
        max_num_neighbors: at most this many neighbours per node: the nearest ones
            (ties by index). torch-cluster (CUDA only) keeps an arbitrary subset, so
            the two agree only when no node has more neighbours.

    Returns: ``edge_index`` ``[2, E]``, row 0 the neighbour, row 1 the centre.
    """
    check_real("r", r, positive=True)
    check_int("max_num_neighbors", max_num_neighbors)
    ptr = _check(pos, batch)
    cluster = _torch_cluster(pos)
    if cluster is not None:
        return cluster.radius_graph(pos, float(r), batch, loop=loop, max_num_neighbors=max_num_neighbors)
    return neighbour_search(pos, ptr, max_num_neighbors, radius_sq_bound(float(r)), loop).to(pos.device)
