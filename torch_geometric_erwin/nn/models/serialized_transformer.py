r"""A serialized point transformer in the spirit of Point Transformer v3 (Wu et al., CVPR 2024)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from einops import rearrange
from torch import Tensor, nn
from torch_geometric.data.data import BaseData
from torch_geometric.utils import scatter

from torch_geometric_erwin.nn.models._baseline import (check_inputs, mlp, optional_out_channels, positive_int,
                                                       positive_ints, preset, reset_module, unpack)
from torch_geometric_erwin.nn.models.curve_order import CURVES, serialization_order
from torch_geometric_erwin.tree import build_ball_tree

#: Orders a block can attend in: the curves, and ``"tree"``, the ball tree's leaf order (the
#: ablation: Erwin's partition with PTv3's patches).
ORDERS = (*CURVES, "tree")


def _ptv3(enc_channels, enc_depths, enc_num_heads, dec_channels, dec_depths, dec_num_heads, patch_size,
          dimensionality=3):
    return dict(enc_channels=list(enc_channels), enc_depths=list(enc_depths), enc_num_heads=list(enc_num_heads),
                dec_channels=list(dec_channels), dec_depths=list(dec_depths), dec_num_heads=list(dec_num_heads),
                strides=[2] * (len(enc_channels) - 1), patch_size=patch_size, dimensionality=dimensionality)


_MD = dict(enc_depths=(2, 2, 2, 6, 2), enc_num_heads=(2, 4, 8, 16, 32), dec_depths=(2, 2, 2, 2),
           dec_num_heads=(4, 4, 8, 16), patch_size=128)

#: The Point Transformer v3 configurations of the Erwin paper's comparisons (Appendix C):
#: ``cosmology-small`` Table 5; ``shapenet-small`` Table 6; ``md-<size>`` Table 7. The tables give
#: channel ranges ("24-384"); we read them as doubling per level with PTv3's decoder pattern (the
#: first two decoder levels equal), and "16-192"/"16-96" (MD small, not a doubling) as
#: (16, 32, 64, 128, 192)/(16, 32, 64, 96): ours. Pooling strides 2 everywhere (Table 5).
PRESETS = {
    "cosmology-small": _ptv3((32, 64, 128, 256), (2, 2, 6, 2), (2, 4, 8, 16), (64, 64, 128), (2, 2, 2),
                             (2, 4, 8), 64),
    "shapenet-small": _ptv3((24, 48, 96, 192, 384), (2, 2, 2, 2, 2), (2, 4, 8, 16, 32), (48, 48, 96, 192),
                            (2, 2, 2, 2), (4, 4, 8, 16), 256),
    "md-small": _ptv3(enc_channels=(16, 32, 64, 128, 192), dec_channels=(16, 32, 64, 96), **_MD),
    "md-medium": _ptv3(enc_channels=(24, 48, 96, 192, 384), dec_channels=(48, 48, 96, 192), **_MD),
    "md-large": _ptv3(enc_channels=(64, 128, 256, 512, 1024), dec_channels=(64, 128, 256, 512), **_MD),
}

#: Width multiplier of ``cosmology-small`` per size, for experiments without a preset (ours).
SIZES = {"small": 1, "medium": 2, "large": 4}


def size_config(size: str) -> dict:
    """Table 5's configuration with every width times :data:`SIZES`\\ ``[size]`` (ours)."""
    scale = SIZES[size]
    config = dict(PRESETS["cosmology-small"])
    config["enc_channels"] = [c * scale for c in config["enc_channels"]]
    config["dec_channels"] = [c * scale for c in config["dec_channels"]]
    return config


@dataclass
class Patches:
    r"""One order of one level, cut into patches: node ``i`` sits in slot ``slot[i]`` of a layout in
    which every graph's run of slots is padded to a multiple of the patch size.

    Attributes:
        order: ``[N]`` node indices along the order, graph by graph.
        slot: ``[N]`` slot of every node.
        valid: ``[S / P, P]`` True on the slots that hold a node.
        offset: ``[N, D]`` every node's position minus its patch's centroid.
    """

    order: Tensor
    slot: Tensor
    valid: Tensor
    offset: Tensor

    @classmethod
    def build(cls, order: Tensor, pos: Tensor, batch: Tensor, num_graphs: int, patch_size: int) -> "Patches":
        counts = torch.bincount(batch, minlength=num_graphs)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        padded = (counts + patch_size - 1) // patch_size * patch_size
        padded_ptr = torch.cat([padded.new_zeros(1), padded.cumsum(0)])
        graph = batch[order]
        slot = torch.empty_like(order)
        slot[order] = padded_ptr[graph] + torch.arange(order.numel(), device=order.device) - ptr[graph]
        num_slots = int(padded_ptr[-1])
        valid = torch.zeros(num_slots, dtype=torch.bool, device=order.device)
        valid[slot] = True
        patch = slot // patch_size
        centroid = scatter(pos, patch, dim=0, dim_size=num_slots // patch_size, reduce="mean")
        return cls(order, slot, valid.view(-1, patch_size), pos - centroid[patch])


class SerializedAttention(nn.Module):
    r"""Multi-head self-attention inside fixed-size patches of a serialization order:

    .. math::
        x'_i = W_o \operatorname{softmax}\Big(\frac{Q x_i (K x_{\mathcal{P}(i)})^\top}{\sqrt{d}}
            \Big) V x_{\mathcal{P}(i)}

    with :math:`\mathcal{P}(i)` the real points of :math:`i`'s patch (padding masked).

    Shapes: ``forward(x [N, C], patches) -> [N, C]`` in node order.
    """

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads = {num_heads} must divide channels = {channels}")
        self.channels, self.num_heads = channels, num_heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_module(self)

    def forward(self, x: Tensor, patches: Patches) -> Tensor:
        num_patches, patch_size = patches.valid.shape
        slots = x.new_zeros(num_patches * patch_size, 3 * self.channels)
        slots[patches.slot] = self.qkv(x)
        q, k, v = rearrange(slots, "(p s) (three h d) -> three p h s d", s=patch_size, three=3, h=self.num_heads)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=patches.valid[:, None, None, :])
        return self.proj(rearrange(out, "p h s d -> (p s) (h d)")[patches.slot])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, num_heads={self.num_heads})"


class SerializedBlock(nn.Module):
    r"""Pre-norm block on one order's patches:

    .. math::
        x &\leftarrow x + W_p (p - \bar p_{\mathcal{P}}) \qquad
            \text{(positional encoding relative to the patch centroid)} \\
        x &\leftarrow x + \mathrm{Attn}(\mathrm{LN}(x)), \qquad
        x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x)).

    Shapes: ``forward(x [N, C], patches) -> [N, C]``.
    """

    def __init__(self, channels: int, num_heads: int, mlp_ratio: int, dimensionality: int):
        super().__init__()
        self.position = nn.Linear(dimensionality, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.attention = SerializedAttention(channels, num_heads)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = mlp([channels, mlp_ratio * channels, channels])

    def reset_parameters(self) -> None:
        reset_module(self)

    def forward(self, x: Tensor, patches: Patches) -> Tensor:
        x = x + self.position(patches.offset.to(x.dtype))
        x = x + self.attention(self.norm1(x), patches)
        return x + self.mlp(self.norm2(x))


class SerializedPooling(nn.Module):
    r"""Merge every ``stride`` consecutive points of a graph along an order:
    :math:`h_c = \mathrm{GELU}(\mathrm{LN}(\max_{i \in c} W x_i))`, :math:`p_c = \mathrm{mean}_{i \in c}\, p_i`.

    Shapes: ``forward(x [N, C], cluster [N], num_clusters) -> [N', C']``.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.lin = nn.Linear(in_channels, out_channels)
        self.norm = nn.LayerNorm(out_channels)

    def reset_parameters(self) -> None:
        reset_module(self)

    def forward(self, x: Tensor, cluster: Tensor, num_clusters: int) -> Tensor:
        pooled = scatter(self.lin(x), cluster, dim=0, dim_size=num_clusters, reduce="max")
        return nn.functional.gelu(self.norm(pooled))


class SerializedUnpooling(nn.Module):
    r"""Back to the finer level: :math:`h_i = \mathrm{GELU}(\mathrm{LN}(W h_{c(i)})) +
    \mathrm{GELU}(\mathrm{LN}(W_s\, \mathrm{skip}_i))`.

    Shapes: ``forward(x [N', C'], skip [N, C_s], cluster [N]) -> [N, C]``.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.lin = nn.Linear(in_channels, out_channels)
        self.norm = nn.LayerNorm(out_channels)
        self.lin_skip = nn.Linear(skip_channels, out_channels)
        self.norm_skip = nn.LayerNorm(out_channels)

    def reset_parameters(self) -> None:
        reset_module(self)

    def forward(self, x: Tensor, skip: Tensor, cluster: Tensor) -> Tensor:
        up = nn.functional.gelu(self.norm(self.lin(x)))[cluster]
        return up + nn.functional.gelu(self.norm_skip(self.lin_skip(skip)))


class SerializedTransformer(nn.Module):
    r"""A serialized point transformer after Point Transformer v3 (Wu et al., CVPR 2024, Sec. 3-4).

    Every level orders its points along space-filling curves (:data:`ORDERS`; block
    :math:`i` of a level uses ``orders[i % len(orders)]``), cuts each graph's run into
    patches of ``patch_size`` points (the last one padded and masked) and applies
    :class:`SerializedBlock`\ s; between levels :class:`SerializedPooling` merges
    ``strides[l]`` consecutive points of the first order, and the decoder
    (:class:`SerializedUnpooling` with the encoder's skips, then blocks) returns to the
    input points:

    .. math::
        h^{(0)} &= \mathrm{GELU}(\mathrm{LN}(W_{\mathrm{in}} x)) \\
        h^{(l)} &= \mathrm{Blocks}^{enc}_l(h^{(l)}), \quad
            h^{(l+1)} = \mathrm{Pool}_l(h^{(l)}) \\
        h^{(l)} &= \mathrm{Blocks}^{dec}_l\big(\mathrm{Unpool}_l(h^{(l+1)}, h^{(l)})\big),
            \quad l = L-2..0.

    Deviations from PTv3 (ours): no sparse convolution (the stem is a linear layer and
    the conditional positional encoding a linear map of the offset to the patch
    centroid), curves on a per-graph :math:`2^{16}`-cell grid instead of a fixed grid
    size, pooling of consecutive points instead of grid cells, and a fixed order
    cycle (no order shuffling). ``orders=["tree"]`` attends in the ball tree's leaf
    order (:func:`~torch_geometric_erwin.tree.build_ball_tree`) instead, with the same
    patches: the ablation of Erwin's partition against curves.

    Args:
        in_channels: node input features :math:`F`.
        enc_channels, enc_depths, enc_num_heads: per level (``L`` entries).
        dec_channels, dec_depths, dec_num_heads: per decoder level, finest first
            (``L - 1`` entries).
        strides: pooling stride after every level but the last (``L - 1`` entries).
        patch_size: points per patch (one for all levels, or one per level).
        orders: order names, cycled over each level's blocks.
            (default: ``["z", "z-trans", "hilbert", "hilbert-trans"]``, PTv3's)
        mlp_ratio: block MLP width / channels. (default: ``4``)
        out_channels: if given, a final ``Linear(dec_channels[0], out_channels)``.
        dimensionality: :math:`D`. (default: ``3``)

    Shapes:
        ``forward(x [N, F], pos [N, D], batch [N]?, edge_index?) -> [N, out_channels]`` (or
        ``[N, dec_channels[0]]``) in the input node order, or ``forward(data)``; ``edge_index`` is checked and
        not used (the model builds its own neighbourhoods).
    """

    def __init__(self, in_channels: int, enc_channels: Sequence[int] = (32, 64, 128, 256),
                 enc_depths: Sequence[int] = (2, 2, 6, 2), enc_num_heads: Sequence[int] = (2, 4, 8, 16),
                 dec_channels: Sequence[int] = (64, 64, 128), dec_depths: Sequence[int] = (2, 2, 2),
                 dec_num_heads: Sequence[int] = (2, 4, 8), strides: Sequence[int] = (2, 2, 2),
                 patch_size: Union[int, Sequence[int]] = 64,
                 orders: Union[str, Sequence[str]] = ("z", "z-trans", "hilbert", "hilbert-trans"),
                 mlp_ratio: int = 4, out_channels: Optional[int] = None, dimensionality: int = 3):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("mlp_ratio", mlp_ratio),
                            ("dimensionality", dimensionality)):
            positive_int(name, value)
        enc_channels = positive_ints("enc_channels", enc_channels)
        levels = len(enc_channels)
        if not levels:
            raise ValueError("enc_channels must not be empty")
        enc_depths = positive_ints("enc_depths", enc_depths, levels)
        enc_num_heads = positive_ints("enc_num_heads", enc_num_heads, levels)
        dec_channels = positive_ints("dec_channels", dec_channels, levels - 1)
        dec_depths = positive_ints("dec_depths", dec_depths, levels - 1)
        dec_num_heads = positive_ints("dec_num_heads", dec_num_heads, levels - 1)
        strides = positive_ints("strides", strides, levels - 1)
        patch_size = positive_ints("patch_size", [patch_size] * levels if not isinstance(patch_size, Sequence)
                                   else patch_size, levels)
        if isinstance(orders, str):
            orders = [orders]
        if not orders or any(order not in ORDERS for order in orders):
            raise ValueError(f"orders must be a non-empty list of {ORDERS}, got {orders!r}")
        self.in_channels, self.dimensionality, self.mlp_ratio = in_channels, dimensionality, mlp_ratio
        self.enc_channels, self.enc_depths, self.enc_num_heads = enc_channels, enc_depths, enc_num_heads
        self.dec_channels, self.dec_depths, self.dec_num_heads = dec_channels, dec_depths, dec_num_heads
        self.strides, self.patch_size, self.orders = strides, patch_size, list(orders)
        head = optional_out_channels(out_channels)
        width = dec_channels[0] if levels > 1 else enc_channels[0]
        self.out_channels = width if head is None else head

        self.stem = nn.Linear(in_channels, enc_channels[0])
        self.stem_norm = nn.LayerNorm(enc_channels[0])
        self.encoder = nn.ModuleList(
            nn.ModuleList(SerializedBlock(enc_channels[l], enc_num_heads[l], mlp_ratio, dimensionality)
                          for _ in range(enc_depths[l])) for l in range(levels))
        self.pool = nn.ModuleList(SerializedPooling(enc_channels[l], enc_channels[l + 1]) for l in range(levels - 1))
        coarse = [*dec_channels[1:], enc_channels[-1]]
        self.unpool = nn.ModuleList(SerializedUnpooling(coarse[l], enc_channels[l], dec_channels[l])
                                    for l in range(levels - 1))
        self.decoder = nn.ModuleList(
            nn.ModuleList(SerializedBlock(dec_channels[l], dec_num_heads[l], mlp_ratio, dimensionality)
                          for _ in range(dec_depths[l])) for l in range(levels - 1))
        self.head = None if head is None else nn.Linear(width, head)
        self.reset_parameters()

    @classmethod
    def from_preset(cls, name: str, in_channels: int, **overrides) -> "SerializedTransformer":
        """The configuration ``name`` of :data:`PRESETS` (``"shapenet-small"``) with any argument overridden."""
        return cls(in_channels, **preset(PRESETS, name, **overrides))

    def reset_parameters(self) -> None:
        reset_module(self)

    def _order(self, name: str, pos: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        if name != "tree":
            return serialization_order(pos, batch, name, num_graphs)
        tree = build_ball_tree(pos, batch)
        return tree.index[tree.mask]

    @torch.compiler.disable
    def _patches(self, pos: Tensor, batch: Tensor, num_graphs: int, level: int) -> List[Patches]:
        return [Patches.build(self._order(name, pos, batch, num_graphs), pos, batch, num_graphs,
                              self.patch_size[level]) for name in self.orders]

    @staticmethod
    def _clusters(order: Tensor, batch: Tensor, num_graphs: int, stride: int) -> Tuple[Tensor, Tensor, int]:
        """Every node's cluster (``stride`` consecutive nodes of ``order`` per graph), the clusters'
        graph ids and their number."""
        counts = torch.bincount(batch, minlength=num_graphs)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        pooled = (counts + stride - 1) // stride
        pooled_ptr = torch.cat([pooled.new_zeros(1), pooled.cumsum(0)])
        graph = batch[order]
        cluster = torch.empty_like(order)
        cluster[order] = pooled_ptr[graph] + (torch.arange(order.numel(), device=order.device) - ptr[graph]) // stride
        num_clusters = int(pooled_ptr[-1])
        return cluster, torch.repeat_interleave(torch.arange(num_graphs, device=batch.device), pooled), num_clusters

    def forward(self, x: Union[Tensor, BaseData], pos: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, edge_index: Optional[Tensor] = None) -> Tensor:
        x, pos, batch, edge_index = unpack(x, pos, batch, edge_index)
        batch, num_graphs = check_inputs(x, pos, batch, edge_index, self.in_channels, self.dimensionality,
                                         self.stem.weight.dtype)
        pos = pos.detach().to(torch.promote_types(pos.dtype, torch.float32))
        h = nn.functional.gelu(self.stem_norm(self.stem(x)))
        levels = len(self.enc_channels)
        skips, clusters, level_patches = [], [], []
        for level in range(levels):
            patches = self._patches(pos, batch, num_graphs, level)
            level_patches.append(patches)
            for index, block in enumerate(self.encoder[level]):
                h = block(h, patches[index % len(patches)])
            if level < levels - 1:
                cluster, batch, num_clusters = self._clusters(patches[0].order, batch, num_graphs,
                                                              self.strides[level])
                skips.append(h)
                clusters.append(cluster)
                h = self.pool[level](h, cluster, num_clusters)
                pos = scatter(pos, cluster, dim=0, dim_size=num_clusters, reduce="mean")
        for level in reversed(range(levels - 1)):
            h = self.unpool[level](h, skips[level], clusters[level])
            patches = level_patches[level]
            for index, block in enumerate(self.decoder[level]):
                h = block(h, patches[index % len(patches)])
        return h if self.head is None else self.head(h)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"enc_channels={self.enc_channels}, dec_channels={self.dec_channels}, "
                f"patch_size={self.patch_size}, orders={self.orders}, dimensionality={self.dimensionality})")


__all__ = ["ORDERS", "PRESETS", "Patches", "SIZES", "SerializedAttention", "SerializedBlock",
           "SerializedPooling", "SerializedTransformer", "SerializedUnpooling", "size_config"]
