r"""PointNet++ (Qi, Yi, Su, Guibas; NeurIPS 2017) for node-level outputs, without torch-cluster."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.data.data import BaseData
from torch_geometric.nn import PointNetConv
from torch_geometric.utils import scatter

from torch_geometric_erwin.nn.graph import knn_graph, radius_graph
from torch_geometric_erwin.nn.models._baseline import (check_inputs, mlp, optional_out_channels, positive_int,
                                                       positive_ints, preset, reset_module, unpack)
from torch_geometric_erwin.tree.neighbour_search import PAIRS_PER_CHUNK

#: FPS starting points: each graph's first node, or its node farthest from the graph's centroid
#: (which does not depend on the node order).
FPS_STARTS = ("first", "farthest")

#: PointNet++ configurations. ``md-<size>``: the Erwin paper's molecular-dynamics baseline
#: (Table 7: hidden 64/128/196, 2 MLP layers) with the Erwin reference code's levels (FPS ratios
#: 0.5, 0.25, 0.125 of the previous level; radii 0.2, 0.4, 0.8; interpolation k = 32, 16, 8, which we
#: read finest level first; mean aggregation).
PRESETS = {
    f"md-{size}": dict(hidden_channels=hidden, mlp_layers=2, ratios=[0.5, 0.25, 0.125], radii=[0.2, 0.4, 0.8],
                       interpolation_k=[32, 16, 8], aggr="mean", dimensionality=3)
    for size, hidden in (("small", 64), ("medium", 128), ("large", 196))
}

#: Hidden width per size for experiments without a preset (the MD values of Table 7).
SIZES = {"small": 64, "medium": 128, "large": 196}


def _graph_layout(batch: Tensor, num_graphs: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Node counts ``[B]``, offsets ``[B + 1]`` and every node's index inside its graph ``[N]``."""
    counts = torch.bincount(batch, minlength=num_graphs)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    local = torch.arange(batch.numel(), device=batch.device) - ptr[batch]
    return counts, ptr, local


def farthest_point_sampling(pos: Tensor, batch: Optional[Tensor] = None, ratio: float = 0.5,
                            start: str = "first", num_graphs: Optional[int] = None) -> Tensor:
    r"""Exact farthest point sampling of every graph of a batch (PointNet++, Sec. 3.2).

    Graph :math:`b` with :math:`n_b` nodes gets :math:`\lceil r\, n_b \rceil` samples:
    the start node, then repeatedly the node whose distance to the samples so far is
    largest, :math:`s_{k+1} = \arg\max_i \min_{j \le k} \lVert p_i - p_{s_j} \rVert`
    (ties to the lowest index). All graphs advance together: the loop runs over the
    sample count of the largest graph, never over graphs or nodes.

    Args:
        pos: ``[N, D]`` positions.
        batch: ``[N]`` sorted graph ids, or None for one graph.
        ratio: fraction of every graph's nodes to keep, in ``(0, 1]``.
        start: ``"first"``: every graph starts from its first node (deterministic, like
            ``torch_cluster.fps(random_start=False)``); ``"farthest"``: from its node
            farthest from the graph's centroid, so that the samples do not depend on the
            node order (up to ties).
        num_graphs: number of graphs (default: ``batch.max() + 1``).

    Returns: ``[S]`` node indices, graph by graph, each graph's in sampling order.
    """
    if not (isinstance(ratio, (int, float)) and 0.0 < ratio <= 1.0):
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    if start not in FPS_STARTS:
        raise ValueError(f"start must be one of {FPS_STARTS}, got {start!r}")
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    pos = pos.detach()
    counts, ptr, local = _graph_layout(batch, num_graphs)
    samples = torch.minimum(torch.ceil(counts.double() * ratio).long(), counts)
    largest = int(counts.max()) if counts.numel() else 0
    dense = pos.new_zeros(num_graphs, largest, pos.shape[1])
    dense[batch, local] = pos
    # -inf marks the slots beyond a graph's nodes and the nodes already taken: never the argmax
    # while a node of the graph is left
    distance = pos.new_full((num_graphs, largest), -math.inf)
    distance[batch, local] = math.inf
    if start == "first":
        current = torch.zeros(num_graphs, dtype=torch.long, device=pos.device)
    else:
        centroid = scatter(pos, batch, dim=0, dim_size=num_graphs, reduce="mean")
        spread = (dense - centroid[:, None]).square().sum(-1).masked_fill(distance == -math.inf, -math.inf)
        current = spread.argmax(dim=1)
    rows = torch.arange(num_graphs, device=pos.device)
    steps = int(samples.max()) if samples.numel() else 0
    chosen = torch.empty(num_graphs, steps, dtype=torch.long, device=pos.device)
    for step in range(steps):
        chosen[:, step] = current
        distance[rows, current] = -math.inf
        gap = (dense - dense[rows, current][:, None]).square().sum(-1)
        distance = torch.where(distance > gap, gap, distance)
        current = distance.argmax(dim=1)
    keep = torch.arange(steps, device=pos.device)[None, :] < samples[:, None]
    return (chosen + ptr[:-1, None])[keep]


def knn_between(pos_query: Tensor, batch_query: Tensor, pos_key: Tensor, batch_key: Tensor, k: int,
                num_graphs: int) -> Tuple[Tensor, Tensor]:
    r"""The ``k`` nearest keys of every query in its own graph (exact, ties to the lower index).

    Compares every query with every key of its graph, in chunks of queries; keys and
    queries sorted by graph.

    Returns: ``index [Nq, k']`` (key indices) and ``squared_distance [Nq, k']`` with
    :math:`k' = \min(k, \text{largest graph's key count})`; columns beyond a graph's key
    count have distance ``inf``.
    """
    key_counts, key_ptr, _ = _graph_layout(batch_key, num_graphs)
    take = min(k, int(key_counts.max()))
    key_ptr_list = key_ptr.tolist()
    rows_per_chunk = max(1, PAIRS_PER_CHUNK // max(int(key_counts.max()), 1))
    indices, distances = [], []
    for start in range(0, pos_query.shape[0], rows_per_chunk):
        stop = min(pos_query.shape[0], start + rows_per_chunk)
        first, last = int(batch_query[start]), int(batch_query[stop - 1])
        lo, hi = key_ptr_list[first], key_ptr_list[last + 1]
        distance = torch.cdist(pos_query[start:stop], pos_key[lo:hi],
                               compute_mode="donot_use_mm_for_euclid_dist").square()
        distance = distance.masked_fill(batch_query[start:stop, None] != batch_key[None, lo:hi], math.inf)
        if hi - lo < take:
            distance = nn.functional.pad(distance, (0, take - (hi - lo)), value=math.inf)
        value, index = distance.topk(take, dim=1, largest=False, sorted=True)
        indices.append((index + lo).clamp_max(max(pos_key.shape[0] - 1, 0)))
        distances.append(value)
    return torch.cat(indices), torch.cat(distances)


def knn_interpolate(x: Tensor, pos_x: Tensor, pos_y: Tensor, batch_x: Tensor, batch_y: Tensor, k: int,
                    num_graphs: int) -> Tensor:
    r"""Inverse-distance interpolation (PointNet++, eq. 2 with :math:`p = 2`):

    .. math::
        f(y) = \frac{\sum_{i \in \mathrm{kNN}(y)} w_i f(x_i)}{\sum_{i} w_i}, \qquad
        w_i = 1 / \max(\lVert y - x_i \rVert^2, 10^{-16}),

    over the ``k`` nearest ``x`` of ``y``'s graph (PyG's ``knn_interpolate``, without
    torch-cluster). Shapes: ``x [Nx, C]`` -> ``[Ny, C]``."""
    index, distance = knn_between(pos_y.detach(), batch_y, pos_x.detach(), batch_x, k, num_graphs)
    weight = 1.0 / distance.clamp_min(1e-16)  # inf distance (no such neighbour) -> weight 0
    weight = (weight / weight.sum(dim=1, keepdim=True)).to(x.dtype)
    return torch.einsum("nk,nkc->nc", weight, x[index])


class PointNet2(nn.Module):
    r"""PointNet++ for per-node outputs (Qi et al. 2017, Sec. 3.2-3.4, the segmentation network).

    Set abstraction, level :math:`l = 1..L`: farthest point sampling keeps
    :math:`\lceil r_l n \rceil` centres :math:`c` of the previous level's points, each
    groups its neighbours :math:`\mathcal{N}(c)` (within ``radii[l]``, at most
    ``num_neighbors``, or the ``num_neighbors`` nearest; the centre included), and

    .. math::
        h^{(l)}_c = \operatorname{aggr}_{j \in \mathcal{N}(c)}
            \mathrm{MLP}_l\big([h^{(l-1)}_j,\; p_j - p_c]\big) \qquad \text{(PointNetConv)}

    Feature propagation, :math:`l = L..1`: every point of level :math:`l - 1` interpolates
    level :math:`l` from its ``interpolation_k[l-1]`` nearest points there
    (:func:`knn_interpolate`) and concatenates its own skip features,
    :math:`h^{(l-1)} \leftarrow \mathrm{MLP}'_l([\mathrm{interp}(h^{(l)}), h^{(l-1)}])`.
    Widths double per level (:math:`C, 2C, 4C, \dots`); MLPs are Linear-SiLU with a
    final LayerNorm, as in the Erwin reference's PointNet++.

    Geometry enters only as relative positions (the reference also feeds the raw
    coordinates to the last skip; we do not, so the model is translation invariant).
    With ``fps_start="farthest"`` the sampling, and so the output, does not depend on
    the node order (up to ties in distances). The neighbour searches are the package's
    :func:`~torch_geometric_erwin.nn.knn_graph`/:func:`~torch_geometric_erwin.nn.radius_graph`
    (torch-cluster when installed) and :func:`knn_between`.

    Args:
        in_channels: node input features :math:`F`.
        hidden_channels: :math:`C`, the width of level 0. (default: ``64``)
        out_channels: if given, a final ``Linear(C, out_channels)``.
        dimensionality: :math:`D`. (default: ``3``)
        ratios: FPS ratio of every level, relative to the previous one.
            (default: ``[0.5, 0.25, 0.125]``)
        radii: ball-query radius of every level, or None to group the
            ``num_neighbors`` nearest points (scale-free; ours). (default: None)
        num_neighbors: group size (the cap under a radius). (default: ``32``)
        interpolation_k: neighbours of every propagation step, finest first
            (default: ``[3, 3, 3]``, the paper's :math:`k = 3`).
        mlp_layers: linear layers per MLP. (default: ``2``)
        aggr: aggregation of the groups, ``"max"`` (the paper's) or ``"mean"`` (the
            Erwin reference's). (default: ``"max"``)
        fps_start: see :func:`farthest_point_sampling`. (default: ``"farthest"``)

    Shapes:
        ``forward(x [N, F], pos [N, D], batch [N]?, edge_index?) -> [N, out_channels]`` (or ``[N, C]``)
        in the input node order, or ``forward(data)``; ``edge_index`` is checked and
        not used (the model builds its own neighbourhoods).
    """

    def __init__(self, in_channels: int, hidden_channels: int = 64, out_channels: Optional[int] = None,
                 dimensionality: int = 3, ratios: Sequence[float] = (0.5, 0.25, 0.125),
                 radii: Optional[Sequence[float]] = None, num_neighbors: int = 32,
                 interpolation_k: Optional[Sequence[int]] = None, mlp_layers: int = 2, aggr: str = "max",
                 fps_start: str = "farthest"):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                            ("dimensionality", dimensionality), ("num_neighbors", num_neighbors),
                            ("mlp_layers", mlp_layers)):
            positive_int(name, value)
        if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence) or not ratios:
            raise TypeError(f"ratios must be a non-empty list of floats, got {ratios!r}")
        for ratio in ratios:
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
                raise ValueError(f"ratios must hold fractions in (0, 1], got {list(ratios)}")
        levels = len(ratios)
        if radii is not None:
            if isinstance(radii, (str, bytes)) or not isinstance(radii, Sequence) or len(radii) != levels:
                raise ValueError(f"radii must be None or a list of {levels} radii (one per ratio), got {radii!r}")
            for radius in radii:
                if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < radius < math.inf:
                    raise ValueError(f"radii must hold positive finite radii, got {list(radii)}")
        interpolation_k = positive_ints("interpolation_k", [3] * levels if interpolation_k is None
                                        else interpolation_k, levels)
        if aggr not in ("max", "mean", "sum"):
            raise ValueError(f"aggr must be 'max', 'mean' or 'sum', got {aggr!r}")
        if fps_start not in FPS_STARTS:
            raise ValueError(f"fps_start must be one of {FPS_STARTS}, got {fps_start!r}")
        self.in_channels, self.hidden_channels, self.dimensionality = in_channels, hidden_channels, dimensionality
        self.ratios = [float(r) for r in ratios]
        self.radii = None if radii is None else [float(r) for r in radii]
        self.num_neighbors, self.interpolation_k = num_neighbors, interpolation_k
        self.mlp_layers, self.aggr, self.fps_start = mlp_layers, aggr, fps_start
        head = optional_out_channels(out_channels)
        self.out_channels = hidden_channels if head is None else head
        widths = [hidden_channels * 2 ** level for level in range(levels + 1)]
        self.encoder = mlp([in_channels] + [hidden_channels] * mlp_layers, nn.SiLU, final_norm=True)
        self.down = nn.ModuleList(
            PointNetConv(mlp([widths[l] + dimensionality] + [widths[l + 1]] * mlp_layers, nn.SiLU, final_norm=True),
                         add_self_loops=False, aggr=aggr) for l in range(levels))
        self.up = nn.ModuleList(
            mlp([widths[l + 1] + widths[l]] + [widths[l]] * mlp_layers, nn.SiLU, final_norm=True)
            for l in range(levels))
        self.head = None if head is None else nn.Linear(hidden_channels, head)
        self.reset_parameters()

    @classmethod
    def from_preset(cls, name: str, in_channels: int, **overrides) -> "PointNet2":
        """The configuration ``name`` of :data:`PRESETS` (``"md-small"``) with any argument overridden."""
        return cls(in_channels, **preset(PRESETS, name, **overrides))

    def reset_parameters(self) -> None:
        reset_module(self)

    def group(self, pos: Tensor, batch: Tensor, centres: Tensor, level: int) -> Tensor:
        """``[2, E]`` edges from the points of a level (row 0) to the centres sampled from them
        (row 1, indices into ``centres``), the centre itself included."""
        if self.radii is None:
            edges = knn_graph(pos, self.num_neighbors, batch, loop=True)
        else:
            edges = radius_graph(pos, self.radii[level], batch, loop=True, max_num_neighbors=self.num_neighbors)
        centre_of = torch.full((pos.shape[0],), -1, dtype=torch.long, device=pos.device)
        centre_of[centres] = torch.arange(centres.numel(), device=pos.device)
        target = centre_of[edges[1]]
        keep = target >= 0
        return torch.stack([edges[0][keep], target[keep]])

    def forward(self, x: Union[Tensor, BaseData], pos: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, edge_index: Optional[Tensor] = None) -> Tensor:
        x, pos, batch, edge_index = unpack(x, pos, batch, edge_index)
        batch, num_graphs = check_inputs(x, pos, batch, edge_index, self.in_channels, self.dimensionality,
                                         self.encoder[0].weight.dtype)
        pos = pos.detach().to(torch.promote_types(pos.dtype, torch.float32))
        h = self.encoder(x)
        stack = [(h, pos, batch)]
        for level, conv in enumerate(self.down):
            centres = farthest_point_sampling(pos, batch, self.ratios[level], self.fps_start, num_graphs)
            edges = self.group(pos, batch, centres, level)
            pos_c, batch_c = pos[centres], batch[centres]
            h = conv((h, None), (pos.to(h.dtype), pos_c.to(h.dtype)), edges)
            pos, batch = pos_c, batch_c
            stack.append((h, pos, batch))
        for level in reversed(range(len(self.down))):
            skip, pos_f, batch_f = stack[level]
            h = knn_interpolate(h, pos, pos_f, batch, batch_f, self.interpolation_k[level], num_graphs)
            h = self.up[level](torch.cat([h, skip], dim=-1))
            pos, batch = pos_f, batch_f
        return h if self.head is None else self.head(h)

    def __repr__(self) -> str:
        grouping = f"radii={self.radii}" if self.radii is not None else "knn"
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"hidden_channels={self.hidden_channels}, ratios={self.ratios}, {grouping}, "
                f"num_neighbors={self.num_neighbors}, aggr={self.aggr}, dimensionality={self.dimensionality})")


def size_config(size: str) -> dict:
    """The generic :data:`SIZES` entry ``size`` as :class:`PointNet2` arguments (kNN grouping)."""
    return dict(hidden_channels=SIZES[size])


__all__ = ["FPS_STARTS", "PRESETS", "PointNet2", "SIZES", "farthest_point_sampling", "knn_between",
           "knn_interpolate", "size_config"]
