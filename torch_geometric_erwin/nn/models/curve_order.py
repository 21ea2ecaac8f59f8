r"""Space-filling-curve orders of point clouds (the serialization of Point Transformer v3).

Positions are quantised per graph onto a :math:`2^k`-cell grid per axis spanning the graph's
bounding box (its longest side), then ordered along a Z-order (Morton) or Hilbert curve. The
Hilbert code is Skilling's transpose algorithm ("Programming the Hilbert curve", AIP Conf. Proc.
707, 2004), which holds in any dimension.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor
from torch_geometric.utils import scatter

#: Curves :func:`serialization_order` knows; ``-trans`` swaps the first two axes first (PTv3's
#: ``z-trans``/``hilbert-trans``).
CURVES = ("z", "z-trans", "hilbert", "hilbert-trans")


def grid_bits(dimensionality: int) -> int:
    """Bits per axis: 16 (PTv3's default depth) while ``D * bits`` fits an int64 code."""
    return max(1, min(16, 62 // dimensionality))


def quantize(pos: Tensor, batch: Tensor, num_graphs: int, bits: int) -> Tensor:
    r"""``[N, D]`` int64 grid cells :math:`\lfloor (p - \min_b) / \mathrm{extent}_b \cdot (2^k - 1) \rfloor`
    with :math:`\mathrm{extent}_b` the longest side of graph :math:`b`'s bounding box: translation
    and scale invariant, and independent of the other graphs of the batch."""
    pos = pos.detach().double()
    low = scatter(pos, batch, dim=0, dim_size=num_graphs, reduce="min")
    high = scatter(pos, batch, dim=0, dim_size=num_graphs, reduce="max")
    extent = (high - low).amax(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    cells = (pos - low[batch]) / extent[batch, None] * float(2 ** bits - 1)
    return cells.floor().clamp(0, 2 ** bits - 1).long()


def morton_code(cells: Tensor, bits: int) -> Tensor:
    """``[N]`` Z-order codes of ``[N, D]`` cells: the bits of the axes interleaved, most significant
    first, axis 0 leading."""
    dims = cells.shape[1]
    code = torch.zeros(cells.shape[0], dtype=torch.long, device=cells.device)
    for bit in reversed(range(bits)):
        for axis in range(dims):
            code = (code << 1) | ((cells[:, axis] >> bit) & 1)
    return code


def hilbert_code(cells: Tensor, bits: int) -> Tensor:
    """``[N]`` Hilbert codes of ``[N, D]`` cells (Skilling's AxesToTranspose, then the transposed
    bits interleaved); consecutive codes are cells one step apart."""
    axes = [cells[:, axis].clone() for axis in range(cells.shape[1])]
    dims = len(axes)
    q = 1 << (bits - 1)
    while q > 1:  # inverse undo
        p = q - 1
        for i in range(dims):
            hit = (axes[i] & q) != 0
            if i == 0:
                axes[0] = torch.where(hit, axes[0] ^ p, axes[0])
                continue
            t = (axes[0] ^ axes[i]) & p
            axes[0] = torch.where(hit, axes[0] ^ p, axes[0] ^ t)
            axes[i] = torch.where(hit, axes[i], axes[i] ^ t)
        q >>= 1
    for i in range(1, dims):  # Gray encode
        axes[i] = axes[i] ^ axes[i - 1]
    t = torch.zeros_like(axes[0])
    q = 1 << (bits - 1)
    while q > 1:
        t = torch.where((axes[-1] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    axes = [axis ^ t for axis in axes]
    code = torch.zeros_like(axes[0])
    for bit in reversed(range(bits)):
        for axis in axes:
            code = (code << 1) | ((axis >> bit) & 1)
    return code


def serialization_order(pos: Tensor, batch: Optional[Tensor], curve: str, num_graphs: Optional[int] = None,
                        bits: Optional[int] = None) -> Tensor:
    """``[N]`` node indices sorted graph by graph along ``curve`` (one of :data:`CURVES`); nodes in
    one grid cell keep their index order."""
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {CURVES}, got {curve!r}")
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1
    dims = pos.shape[1]
    bits = grid_bits(dims) if bits is None else bits
    cells = quantize(pos, batch, num_graphs, bits)
    if curve.endswith("-trans") and dims >= 2:
        cells = cells[:, [1, 0, *range(2, dims)]]
    code = morton_code(cells, bits) if curve.startswith("z") else hilbert_code(cells, bits)
    order = torch.argsort(code, stable=True)
    return order[torch.argsort(batch[order], stable=True)]


__all__: List[str] = ["CURVES", "grid_bits", "hilbert_code", "morton_code", "quantize", "serialization_order"]
