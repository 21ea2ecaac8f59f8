r"""Transolver (Wu et al., ICML 2024): physics-attention over learned slices, batched over graphs."""
from __future__ import annotations

from typing import Optional, Union

import torch
from einops import rearrange
from torch import Tensor, nn
from torch_geometric.data.data import BaseData

from torch_geometric_erwin.nn.models._baseline import (check_inputs, mlp, optional_out_channels, positive_int,
                                                       preset, reset_module, unpack)

#: Transolver configurations per experiment. The four PDE benchmarks: the Erwin reference code's
#: Transolver settings for them (128 channels, 64 slices, 8 heads, 8 layers, MLP ratio 1, 2 for
#: plasticity; /work/shared/reference: "Transolver preset"). ``shapenet-small``: the Transolver
#: paper's ShapeNet-Car model as we read it (256 channels, 32 slices, 8 heads, 8 layers) - ours
#: where the paper is not explicit. ``<task>-medium``/``-large`` entries do not exist: the
#: command line scales the generic sizes (:data:`SIZES`) instead.
PRESETS = {
    **{f"{task}-small": dict(hidden_channels=128, num_layers=8, num_heads=8, num_slices=64, mlp_ratio=1,
                             dimensionality=2) for task in ("airfoil", "pipe", "elasticity")},
    "plasticity-small": dict(hidden_channels=128, num_layers=8, num_heads=8, num_slices=64, mlp_ratio=2,
                             dimensionality=2),
    "shapenet-small": dict(hidden_channels=256, num_layers=8, num_heads=8, num_slices=32, mlp_ratio=2,
                           dimensionality=3),
}

#: Generic sizes for experiments without a preset (ours): hidden channels, layers, heads, slices.
SIZES = {"small": (128, 8, 8, 64), "medium": (192, 8, 8, 64), "large": (256, 8, 8, 64)}

#: Added to the slice mass before dividing (the official code's epsilon): an empty slice gives a
#: zero token instead of NaN.
SLICE_EPS = 1e-5


class SliceLayout:
    """Where every node of a batch sits in a ``[B, N_max]`` grid of its graph's rows (built once per
    forward pass and shared by the layers). When every graph has ``N_max`` nodes (one graph, or
    graphs of one size) the grid is a view of the sorted rows: no copy, no padding."""

    def __init__(self, batch: Tensor, num_graphs: int):
        counts = torch.bincount(batch, minlength=num_graphs)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self.batch, self.num_graphs = batch, num_graphs
        self.local = torch.arange(batch.numel(), device=batch.device) - ptr[batch]
        self.width = int(counts.max()) if counts.numel() else 0
        # each graph has at most width nodes and they sum to N: all have width exactly when this holds
        self.full = self.width * num_graphs == batch.numel()

    def dense(self, values: Tensor) -> Tensor:
        """``[N, ...]`` -> ``[B, N_max, ...]``, zero rows beyond each graph's nodes."""
        if self.full:
            return values.reshape(self.num_graphs, self.width, *values.shape[1:])
        out = values.new_zeros(self.num_graphs, self.width, *values.shape[1:])
        return out.index_put((self.batch, self.local), values)

    def nodes(self, values: Tensor) -> Tensor:
        """``[B, N_max, ...]`` -> ``[N, ...]``."""
        if self.full:
            return values.reshape(-1, *values.shape[2:])
        return values[self.batch, self.local]


def slice_tokens(weights: Tensor, features: Tensor, layout: SliceLayout) -> Tensor:
    r"""Slice tokens :math:`z_{b,m} = \sum_{n \in b} w_{nm} f_n / (\sum_{n \in b} w_{nm} + \epsilon)`
    of every graph and head: ``weights [N, H, M]``, ``features [N, H, d]`` -> ``[B, H, M, d]``.

    The sums are matrix products over each graph's rows of a ``[B, N_max]`` grid, whose rows
    beyond a graph's nodes are zero and add nothing (exact; equal-size graphs fill it)."""
    weights = layout.dense(weights)
    total = torch.einsum("bnhm,bnhd->bhmd", weights, layout.dense(features))
    return total / (weights.sum(dim=1).unsqueeze(-1) + SLICE_EPS)


def deslice_tokens(weights: Tensor, tokens: Tensor, layout: SliceLayout) -> Tensor:
    r"""Back to the nodes, :math:`x'_n = \sum_m w_{nm} z'_{b(n), m}`: ``weights [N, H, M]``,
    ``tokens [B, H, M, d]`` -> ``[N, H, d]``."""
    return layout.nodes(torch.einsum("bnhm,bhmd->bnhd", layout.dense(weights), tokens))


class PhysicsAttention(nn.Module):
    r"""Physics-attention (Transolver, Sec. 3.1, eqs. 1-4), per head :math:`h` with width
    :math:`d = C / H`:

    .. math::
        w_{n} &= \operatorname{softmax}_m\big(W_s\, (W_x x_n)^{(h)} / \tau^{(h)}\big) \in \mathbb{R}^M
            &\text{(slice weights)} \\
        z_{b,m} &= \frac{\sum_{n \in b} w_{nm} (W_f x_n)^{(h)}}{\sum_{n \in b} w_{nm}}
            &\text{(slice tokens of graph } b) \\
        z'_b &= \operatorname{softmax}\big(Q z_b (K z_b)^\top / \sqrt{d}\big)\, V z_b
            &\text{(attention among the } M \text{ tokens)} \\
        x'_n &= W_o \big[\textstyle\sum_m w_{nm} z'_{b(n),m}\big]_{h=1..H} &\text{(deslice)}

    Every graph of a batch gets its own :math:`M` tokens (sums over its own nodes, see
    :func:`slice_tokens`), and attention runs on ``[B, H, M, d]``: any graph sizes, and a
    graph's output does not depend on the others of its batch.

    Transolver++ (Luo et al., 2025, "eidetic states") options:

    * ``adaptive_temperature``: a per-point temperature
      :math:`\tau_n = \max(\tau_0 + W_\tau (W_x x_n)^{(h)}, 0.01)` (the floor is ours);
    * ``gumbel``: Gumbel-softmax slicing, :math:`w_n = \operatorname{softmax}\big((W_s (W_x x_n)^{(h)}
      - \log(-\log \epsilon_n)) / \tau_n\big)` with :math:`\epsilon_n \sim U(0, 1)^M`, in
      training only (evaluation is deterministic: ours).

    Args:
        channels: :math:`C`.
        num_heads: :math:`H` (divides :math:`C`).
        num_slices: :math:`M`.
        adaptive_temperature, gumbel: the Transolver++ options above.
        dropout: dropout of the token attention and the output.

    Shapes: ``forward(x [N, C], layout) -> [N, C]`` with a :class:`SliceLayout` of the batch.
    """

    def __init__(self, channels: int, num_heads: int = 8, num_slices: int = 64,
                 adaptive_temperature: bool = False, gumbel: bool = False, dropout: float = 0.0):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads = {num_heads} must divide channels = {channels}")
        self.channels, self.num_heads, self.num_slices = channels, num_heads, num_slices
        self.head_dim = channels // num_heads
        self.adaptive_temperature, self.gumbel, self.dropout = adaptive_temperature, gumbel, dropout
        self.in_x = nn.Linear(channels, channels)
        self.in_f = nn.Linear(channels, channels)
        self.slice = nn.Linear(self.head_dim, num_slices)
        self.temperature = nn.Parameter(torch.empty(num_heads, 1, 1))
        self.temperature_proj = nn.Linear(self.head_dim, 1) if adaptive_temperature else None
        self.q = nn.Linear(self.head_dim, self.head_dim, bias=False)
        self.k = nn.Linear(self.head_dim, self.head_dim, bias=False)
        self.v = nn.Linear(self.head_dim, self.head_dim, bias=False)
        self.out = nn.Linear(channels, channels)
        self.out_dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_module(self)
        nn.init.orthogonal_(self.slice.weight)  # the official code's: distinct slices from the start
        nn.init.constant_(self.temperature, 0.5)

    def slice_weights(self, x: Tensor) -> Tensor:
        """``[N, H, M]`` slice weights of every node and head."""
        x_mid = rearrange(self.in_x(x), "n (h d) -> n h d", h=self.num_heads)
        logits = self.slice(x_mid)
        temperature = self.temperature.squeeze(-1)  # [H, 1]
        if self.temperature_proj is not None:
            temperature = (temperature + self.temperature_proj(x_mid)).clamp_min(0.01)
        if self.gumbel and self.training:
            uniform = torch.rand_like(logits).clamp(1e-10, 1.0 - 1e-7)
            logits = logits - torch.log(-torch.log(uniform))
        return torch.softmax(logits / temperature, dim=-1)

    def forward(self, x: Tensor, layout: SliceLayout) -> Tensor:
        weights = self.slice_weights(x)
        features = rearrange(self.in_f(x), "n (h d) -> n h d", h=self.num_heads)
        tokens = slice_tokens(weights, features, layout)  # [B, H, M, d]
        tokens = nn.functional.scaled_dot_product_attention(
            self.q(tokens), self.k(tokens), self.v(tokens), dropout_p=self.dropout if self.training else 0.0)
        out = deslice_tokens(weights, tokens, layout)
        return self.out_dropout(self.out(rearrange(out, "n h d -> n (h d)")))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, num_heads={self.num_heads}, "
                f"num_slices={self.num_slices}, adaptive_temperature={self.adaptive_temperature}, "
                f"gumbel={self.gumbel})")


class TransolverBlock(nn.Module):
    r"""Pre-norm block: :math:`x \leftarrow x + \mathrm{PhysicsAttn}(\mathrm{LN}(x))`,
    :math:`x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))` with a GELU MLP of width
    ``mlp_ratio * C``.

    Shapes: ``forward(x [N, C], layout) -> [N, C]``.
    """

    def __init__(self, channels: int, num_heads: int, num_slices: int, mlp_ratio: int = 1,
                 adaptive_temperature: bool = False, gumbel: bool = False, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.attention = PhysicsAttention(channels, num_heads, num_slices, adaptive_temperature, gumbel, dropout)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = mlp([channels, mlp_ratio * channels, channels])

    def reset_parameters(self) -> None:
        reset_module(self)
        self.attention.reset_parameters()

    def forward(self, x: Tensor, layout: SliceLayout) -> Tensor:
        x = x + self.attention(self.norm1(x), layout)
        return x + self.mlp(self.norm2(x))


class Transolver(nn.Module):
    r"""Transolver (Wu, Luo, Wang, Wang, Long; ICML 2024, Sec. 3 and Fig. 3), for batches of
    point clouds or meshes of any sizes.

    .. math::
        h^{(0)}_n &= \mathrm{MLP}\big([x_n, p_n]\big) + \mathbf{c} \qquad
            \text{(preprocess, and the learned placeholder } \mathbf{c}\text{)} \\
        h^{(l)} &= \mathrm{TransolverBlock}_l\big(h^{(l-1)}\big), \quad l = 1..L \\
        y_n &= W_{\mathrm{out}}\, \mathrm{LN}\big(h^{(L)}_n\big)

    with the physics-attention of :class:`PhysicsAttention` in every block. The
    positions enter as features (the official code's ``preprocess``: the model is
    permutation equivariant, not translation invariant); ``use_pos=False`` drops
    them, as the Erwin reference's Transolver does. The Transolver++ options
    ``adaptive_temperature`` and ``gumbel`` (Luo et al., 2025) switch on its
    eidetic states in every layer.

    Args:
        in_channels: node input features :math:`F`.
        hidden_channels: :math:`C`. (default: ``256``)
        num_layers: :math:`L`. (default: ``8``)
        num_heads: :math:`H`. (default: ``8``)
        num_slices: :math:`M`. (default: ``32``)
        out_channels: if given, a final ``Linear(C, out_channels)``; else the
            normalised :math:`C` features are returned.
        dimensionality: :math:`D` of ``pos``. (default: ``3``)
        mlp_ratio: block MLP width / :math:`C`. (default: ``1``)
        use_pos: feed the positions to the preprocess MLP. (default: :obj:`True`)
        adaptive_temperature, gumbel: Transolver++ slicing. (default: :obj:`False`)
        dropout: attention and output dropout. (default: ``0``)

    Shapes:
        ``forward(x [N, F], pos [N, D], batch [N]?, edge_index?) -> [N, out_channels]`` (or
        ``[N, C]``) in the input node order, or ``forward(data)``; ``edge_index`` is checked and
        not used (physics-attention needs no graph).
    """

    def __init__(self, in_channels: int, hidden_channels: int = 256, num_layers: int = 8, num_heads: int = 8,
                 num_slices: int = 32, out_channels: Optional[int] = None, dimensionality: int = 3,
                 mlp_ratio: int = 1, use_pos: bool = True, adaptive_temperature: bool = False,
                 gumbel: bool = False, dropout: float = 0.0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                            ("num_layers", num_layers), ("num_heads", num_heads), ("num_slices", num_slices),
                            ("dimensionality", dimensionality), ("mlp_ratio", mlp_ratio)):
            positive_int(name, value)
        if hidden_channels % num_heads:
            raise ValueError(f"num_heads = {num_heads} must divide hidden_channels = {hidden_channels}")
        for name, value in (("use_pos", use_pos), ("adaptive_temperature", adaptive_temperature),
                            ("gumbel", gumbel)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_channels, self.hidden_channels, self.num_layers = in_channels, hidden_channels, num_layers
        self.num_heads, self.num_slices, self.mlp_ratio = num_heads, num_slices, mlp_ratio
        self.dimensionality, self.use_pos = dimensionality, use_pos
        self.adaptive_temperature, self.gumbel = adaptive_temperature, gumbel
        head = optional_out_channels(out_channels)
        self.out_channels = hidden_channels if head is None else head
        self.preprocess = mlp([in_channels + (dimensionality if use_pos else 0), 2 * hidden_channels,
                               hidden_channels])
        self.placeholder = nn.Parameter(torch.empty(hidden_channels))
        self.blocks = nn.ModuleList(
            TransolverBlock(hidden_channels, num_heads, num_slices, mlp_ratio, adaptive_temperature, gumbel,
                            float(dropout)) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_channels)
        self.head = None if head is None else nn.Linear(hidden_channels, head)
        self.reset_parameters()

    @classmethod
    def from_preset(cls, name: str, in_channels: int, **overrides) -> "Transolver":
        """The configuration ``name`` of :data:`PRESETS` (``"airfoil-small"``) with any argument overridden."""
        return cls(in_channels, **preset(PRESETS, name, **overrides))

    def reset_parameters(self) -> None:
        reset_module(self.preprocess)
        # the official code's placeholder: uniform in [0, 1/C)
        nn.init.uniform_(self.placeholder, 0.0, 1.0 / self.hidden_channels)
        for block in self.blocks:
            block.reset_parameters()
        self.norm.reset_parameters()
        if self.head is not None:
            reset_module(self.head)

    def forward(self, x: Union[Tensor, BaseData], pos: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, edge_index: Optional[Tensor] = None) -> Tensor:
        x, pos, batch, edge_index = unpack(x, pos, batch, edge_index)
        batch, num_graphs = check_inputs(x, pos, batch, edge_index, self.in_channels, self.dimensionality,
                                         self.placeholder.dtype)
        features = torch.cat([x, pos.to(x.dtype)], dim=-1) if self.use_pos else x
        h = self.preprocess(features) + self.placeholder
        layout = SliceLayout(batch, num_graphs)
        for block in self.blocks:
            h = block(h, layout)
        h = self.norm(h)
        return h if self.head is None else self.head(h)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"hidden_channels={self.hidden_channels}, num_layers={self.num_layers}, "
                f"num_heads={self.num_heads}, num_slices={self.num_slices}, dimensionality={self.dimensionality}"
                + (", adaptive_temperature=True" if self.adaptive_temperature else "")
                + (", gumbel=True" if self.gumbel else "") + ")")


def size_config(size: str) -> dict:
    """The generic :data:`SIZES` entry ``size`` as :class:`Transolver` arguments."""
    hidden, layers, heads, slices = SIZES[size]
    return dict(hidden_channels=hidden, num_layers=layers, num_heads=heads, num_slices=slices)


__all__ = ["PhysicsAttention", "PRESETS", "SIZES", "SliceLayout", "Transolver", "TransolverBlock", "deslice_tokens",
           "size_config", "slice_tokens"]
