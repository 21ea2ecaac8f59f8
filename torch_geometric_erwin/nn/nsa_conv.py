r"""Ball-tree native sparse attention (Erwin NSA, Lapautre et al. 2025, Sec. 4.1)."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from torch_geometric_erwin.nn.ball_attention import BallAttention, BallGeometry
from torch_geometric_erwin.nn.init import reset_linear
from torch_geometric_erwin.checks import MAX_GRANULARITY, is_power_of_two

BRANCHES = ("compressed", "selected", "local")

#: Default queries per chunk of the compressed and selected branches. On the MD preset, 1024 put
#: ErwinNSA's peak training memory at 1.8x Erwin's; 256 keeps it below Erwin's at the same speed.
QUERY_CHUNK_SIZE = 256


class NSABranches(NamedTuple):
    """The three branch outputs of :class:`ErwinNSAConv` before gating.

    ``compressed``, ``selected``, ``local``: ``[S, C]`` each; ``gates``:
    ``[S, 3, H]`` sigmoid gates in the order of :data:`BRANCHES`;
    ``selection``: ``[S, G, k]`` global compressed-ball ids selected by each
    query for each key/value group; ``selection_mask``: ``[S, G, k]`` True where
    the slot holds a real selection (a graph with fewer than ``k`` selectable
    balls fills the rest with masked slots).
    """

    compressed: Tensor
    selected: Tensor
    local: Tensor
    gates: Tensor
    selection: Tensor
    selection_mask: Tensor


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _power_of_two(name: str, value) -> int:
    _positive_int(name, value)
    if not is_power_of_two(value):
        raise ValueError(f"{name} must be a power of two, got {value}")
    if value > MAX_GRANULARITY:  # the trees' limit (see MAX_GRANULARITY): no graph could hold one ball
        raise ValueError(f"{name} must be at most {MAX_GRANULARITY} (2**30), got {value}")
    return value


class BallCompression(nn.Module):
    r"""Learned, position-aware pooling of the keys (or values) of each ball.

    For a ball :math:`\mathcal{B}` of :math:`l` consecutive tree leaves with
    key vectors :math:`k_t \in \mathbb{R}^{d}` and positions :math:`p_t`,

    .. math::
        \tilde{k}_{\mathcal{B}} = W_2\,\mathrm{GELU}\big(W_1 [\,m_t k_t \,\|\,
        m_t (p_t - c_{\mathcal{B}})\,]_{t=1..l} + b_1\big) + b_2,
        \qquad c_{\mathcal{B}} = \frac{\sum_t m_t p_t}{\sum_t m_t},

    where :math:`m_t \in \{0, 1\}` masks tree padding slots. The MLP is shared
    by the key/value groups (applied to each group's :math:`d`-wide keys).

    Args:
        ball_size: :math:`l`, leaves per compressed ball.
        head_dim: :math:`d`.
        dimensionality: :math:`D` of the positions.
        hidden: hidden width of the MLP (default :math:`l \cdot d`).

    Shapes: ``forward(k [S, G, d], pos [S, D], mask [S]) -> [S / l, G, d]``.
    """

    def __init__(self, ball_size: int, head_dim: int, dimensionality: int = 3, hidden: Optional[int] = None):
        super().__init__()
        self.ball_size = ball_size
        self.head_dim = head_dim
        self.dimensionality = dimensionality
        hidden = ball_size * head_dim if hidden is None else _positive_int("compress_hidden", hidden)
        self.mlp = nn.Sequential(nn.Linear(ball_size * (head_dim + dimensionality), hidden), nn.GELU(),
                                 nn.Linear(hidden, head_dim))

    def reset_parameters(self) -> None:
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                reset_linear(layer)

    def forward(self, k: Tensor, rel_pos: Tensor, leaf_mask: Tensor) -> Tensor:
        # the mask is in the positions' dtype (float64 positions are kept), the keys in the model's
        keys = rearrange(k, "(n t) g e -> n g t e", t=self.ball_size) * leaf_mask[:, None, :, None].to(k.dtype)
        features = torch.cat([rearrange(keys, "n g t e -> n g (t e)"),
                              rel_pos.unsqueeze(1).expand(-1, keys.shape[1], -1).to(keys.dtype)], dim=-1)
        return self.mlp(features)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(ball_size={self.ball_size}, head_dim={self.head_dim})"


def ball_geometry(pos: Tensor, mask: Tensor, ball_size: int):
    """Per-ball leaf mask ``[n, l]`` (float), flattened relative positions ``[n, l*D]`` and validity ``[n]``."""
    leaf_mask = rearrange(mask, "(n t) -> n t", t=ball_size).to(pos.dtype)
    points = rearrange(pos, "(n t) d -> n t d", t=ball_size)
    count = leaf_mask.sum(1, keepdim=True)
    centre = (points * leaf_mask[..., None]).sum(1) / count.clamp(min=1)
    rel_pos = (points - centre[:, None]) * leaf_mask[..., None]
    return leaf_mask, rearrange(rel_pos, "n t d -> n (t d)"), count.squeeze(1) > 0


class NSAGeometry(NamedTuple):
    """What :class:`ErwinNSAConv` reads of the slots' positions, formed once per tree order and shared by
    every block of a model (:meth:`ErwinNSAConv.geometry`).

    ``local``: the local branch's :class:`~torch_geometric_erwin.nn.BallGeometry` (None when the local
    module is not a :class:`~torch_geometric_erwin.nn.BallAttention`); ``leaf_mask`` ``[n, l]``,
    ``rel_pos`` ``[n, l * D]`` and ``ball_valid`` ``[n]``: the compressed balls' (:func:`ball_geometry`).
    """

    local: Optional[BallGeometry]
    leaf_mask: Tensor
    rel_pos: Tensor
    ball_valid: Tensor


class ErwinNSAConv(nn.Module):
    r"""Native sparse attention over the leaves of a ball tree (Erwin NSA).

    Three branches see the tree-ordered leaves of each graph and are mixed by
    per-head sigmoid gates computed from the query features:

    .. math::
        y_i = \sum_{b \in \{\mathrm{cmp},\,\mathrm{slc},\,\mathrm{loc}\}}
        \big(g^b_i \otimes \mathbf{1}_{C/H}\big) \odot y^b_i, \qquad
        g^b_{i} = \sigma(W_g x_i + b_g)^b \in (0, 1)^H,

    where the gate :math:`g^b_{i,h}` scales the :math:`h`-th of :math:`H`
    equal channel groups of branch :math:`b`'s output.

    1. **Compressed** (:math:`y^{\mathrm{cmp}}`): the keys/values of every ball
       of ``compress_ball_size`` leaves are pooled by :class:`BallCompression`
       (which sees the leaves' positions relative to the ball centre) into
       :math:`\tilde{k}_j, \tilde{v}_j`; every query attends to all compressed
       balls of its own graph,
       :math:`o^{\mathrm{cmp}}_{h,i} = \sum_j \mathrm{softmax}_j(q_{h,i}^\top \tilde{k}_j/\sqrt{d})\,\tilde{v}_j`.
    2. **Selected** (:math:`y^{\mathrm{slc}}`): the importance of ball :math:`j`
       for query :math:`i` and key/value group :math:`g` is
       :math:`\sum_{h \in g} \mathrm{softmax}_j(q_{h,i}^\top \tilde{k}_j/\sqrt{d})`;
       the ``num_selected`` most important balls of the query's graph are kept,
       except the balls that overlap the query's own local ball (that region
       is covered exactly by the local branch), and the query attends with
       full softmax attention to every (real) leaf of the selected balls.
    3. **Local** (:math:`y^{\mathrm{loc}}`): the ``local`` module, Erwin's ball
       attention over balls of ``local_ball_size`` leaves.

    Gates start at :math:`\sigma(-2) \approx 0.12` for the compressed and
    selected branches and :math:`\sigma(2) \approx 0.88` for the local one.
    Nothing crosses graphs; tree padding slots are never keys of the
    compressed or selected branch (``mask_padding=False`` gives the
    reference's semantics, where padding duplicates are ordinary leaves).
    Queries are processed in chunks of whole ``max(local, compress)`` regions;
    with autograd each chunk is recomputed in the backward pass, so memory
    grows as :math:`O(S \cdot (n_c + k\,l + m))` for :math:`S` slots,
    :math:`n_c` compressed balls per graph (see ``docs/nsa.md``).

    Args:
        channels: :math:`C`.
        num_heads: :math:`H` query heads of the compressed/selected branches
            (and number of gate groups; must divide ``channels``).
        local: module with ``forward(x [S, C], pos [S, D], mask [S]) -> [S, C]``
            computing ball attention over balls of ``local_ball_size`` leaves.
        compress_ball_size: :math:`l`, leaves per compressed (and selectable) ball.
        local_ball_size: :math:`m`, leaves per local ball.
        num_selected: :math:`k`, balls selected per query and group.
        head_dim: :math:`d` (default ``channels // num_heads``).
        num_kv_heads: :math:`G` key/value groups (must divide ``num_heads``).
        dimensionality: :math:`D`.
        compress_hidden: hidden width of the compression MLP (default :math:`l\,d`).
        query_chunk_size: queries per chunk (rounded to whole regions).
        checkpoint: recompute each chunk in backward (bounded memory).
        mask_padding: exclude tree padding slots from the keys.

    Shapes: ``forward(x [S, C], pos [S, D], batch [S] | ptr [B+1], mask [S]) -> [S, C]``
    with ``x``/``pos`` in (possibly rotated) tree order and every graph's slot
    count a multiple of ``max(local_ball_size, compress_ball_size)``.
    """

    def __init__(self, channels: int, num_heads: int, local: nn.Module, compress_ball_size: int,
                 local_ball_size: int, num_selected: int, head_dim: Optional[int] = None,
                 num_kv_heads: int = 1, dimensionality: int = 3, compress_hidden: Optional[int] = None,
                 query_chunk_size: int = QUERY_CHUNK_SIZE, checkpoint: bool = True, mask_padding: bool = True):
        super().__init__()
        self.channels = _positive_int("channels", channels)
        self.num_heads = _positive_int("num_heads", num_heads)
        if channels % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide channels ({channels})")
        if not isinstance(local, nn.Module):
            raise TypeError(f"local must be an nn.Module (the local ball attention), got {type(local).__name__}")
        self.compress_ball_size = _power_of_two("compress_ball_size", compress_ball_size)
        self.local_ball_size = _power_of_two("local_ball_size", local_ball_size)
        self.num_selected = _positive_int("num_selected", num_selected)
        self.head_dim = channels // num_heads if head_dim is None else _positive_int("head_dim", head_dim)
        self.num_kv_heads = _positive_int("num_kv_heads", num_kv_heads)
        if num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})")
        self.dimensionality = _positive_int("dimensionality", dimensionality)
        self.query_chunk_size = _positive_int("query_chunk_size", query_chunk_size)
        self.checkpoint = bool(checkpoint)
        self.mask_padding = bool(mask_padding)
        self.region_size = max(self.local_ball_size, self.compress_ball_size)

        inner, kv_inner = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(channels, inner, bias=False)
        self.kv_proj = nn.Linear(channels, 2 * kv_inner, bias=False)
        self.compress_k = BallCompression(compress_ball_size, self.head_dim, dimensionality, compress_hidden)
        self.compress_v = BallCompression(compress_ball_size, self.head_dim, dimensionality, compress_hidden)
        self.out_compressed = nn.Linear(inner, channels)
        self.out_selected = nn.Linear(inner, channels)
        self.local = local
        self.gate = nn.Linear(channels, len(BRANCHES) * num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the reference's model-wide initialisation (truncated normal, std 0.02, zero bias), then the gates'
        for lin in (self.q_proj, self.kv_proj, self.out_compressed, self.out_selected, self.gate):
            reset_linear(lin)
        self.compress_k.reset_parameters()
        self.compress_v.reset_parameters()
        if hasattr(self.local, "reset_parameters"):
            self.local.reset_parameters()
        self.reset_gates()

    @torch.no_grad()
    def reset_gates(self) -> None:
        """Zero gate weights, biases (-2, -2, +2): the local branch starts dominant."""
        self.gate.weight.zero_()
        bias = torch.tensor([-2.0, -2.0, 2.0]).repeat_interleave(self.num_heads)
        self.gate.bias.copy_(bias.to(self.gate.bias))

    # ------------------------------------------------------------------ checks
    def _slot_ptr(self, x: Tensor, pos: Tensor, batch: Optional[Tensor], ptr: Optional[Tensor]) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape [num_slots, {self.channels}], got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        num_slots = x.shape[0]
        if not isinstance(pos, Tensor) or pos.shape != (num_slots, self.dimensionality):
            raise ValueError(f"pos must have shape [{num_slots}, {self.dimensionality}], got "
                             f"{tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__}")
        if not pos.is_floating_point():
            raise TypeError(f"pos must be floating point, got {pos.dtype}")
        if batch is not None and ptr is not None:
            raise ValueError("give batch or ptr, not both")
        if ptr is None:
            if batch is None:
                ptr = torch.tensor([0, num_slots], device=x.device)
            else:
                if batch.shape != (num_slots,) or batch.dtype not in (torch.int32, torch.int64):
                    raise ValueError(f"batch must be an integer tensor of shape [{num_slots}]")
                if num_slots and bool((batch.diff() < 0).any()):
                    raise ValueError("batch must be sorted (slots of a graph are contiguous)")
                counts = torch.bincount(batch, minlength=int(batch.max()) + 1 if num_slots else 0)
                ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        if ptr.dim() != 1 or ptr.numel() < 2 or int(ptr[0]) != 0 or int(ptr[-1]) != num_slots:
            raise ValueError(f"ptr must be 1-D slot offsets from 0 to {num_slots}")
        if bool((ptr.diff() < 0).any()) or bool((ptr % self.region_size).any()):
            raise ValueError(f"every graph's slot count must be a multiple of {self.region_size} "
                             "(max of local_ball_size and compress_ball_size): build the tree with "
                             "ball_sizes=[max(local_ball_size, compress_ball_size)]")
        return ptr.to(device=x.device, dtype=torch.long)

    # ---------------------------------------------------------------- branches
    def _key_mask(self, mask: Optional[Tensor], num_slots: int, device: torch.device) -> Tensor:
        if mask is None:
            return torch.ones(num_slots, dtype=torch.bool, device=device)
        if mask.shape != (num_slots,) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape [{num_slots}]")
        return mask if self.mask_padding else torch.ones_like(mask)

    def geometry(self, pos: Tensor, mask: Optional[Tensor] = None) -> NSAGeometry:
        """The balls' geometry of slots at ``pos`` ``[S, D]`` (tree order) with real slots ``mask``: what
        :meth:`branches` would form, for a model to form once and give every block."""
        key_mask = self._key_mask(mask, pos.shape[0], pos.device)
        with torch.no_grad():
            compressed = ball_geometry(pos.detach(), key_mask, self.compress_ball_size)
        local = (BallGeometry.from_pos(pos, self.local.ball_size, key_mask) if isinstance(self.local, BallAttention)
                 else None)
        return NSAGeometry(local, *compressed)

    def branches(self, x: Tensor, pos: Tensor, batch: Optional[Tensor] = None, *,
                 ptr: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                 geometry: Optional[NSAGeometry] = None) -> NSABranches:
        """All three branch outputs, the gates and the selection (see :class:`NSABranches`);
        ``geometry`` is :meth:`geometry` of ``pos`` and ``mask``, formed here if not given."""
        ptr = self._slot_ptr(x, pos, batch, ptr)
        key_mask = self._key_mask(mask, x.shape[0], x.device)
        if geometry is None:
            geometry = self.geometry(pos, mask)
        local = (self.local(x, key_mask=key_mask, geometry=geometry.local) if geometry.local is not None
                 else self.local(x, pos, key_mask))
        q = rearrange(self.q_proj(x), "s (h e) -> s h e", h=self.num_heads)
        k, v = rearrange(self.kv_proj(x), "s (two g e) -> two s g e", two=2, g=self.num_kv_heads)
        k_c = self.compress_k(k, geometry.rel_pos, geometry.leaf_mask)
        v_c = self.compress_v(v, geometry.rel_pos, geometry.leaf_mask)
        o_cmp, o_slc, selection, selection_mask = self._global_attention(
            q, k, v, k_c, v_c, ptr, geometry.leaf_mask > 0, geometry.ball_valid)
        gates = rearrange(torch.sigmoid(self.gate(x)), "s (b h) -> s b h", b=len(BRANCHES))
        return NSABranches(self.out_compressed(rearrange(o_cmp, "s h e -> s (h e)")),
                           self.out_selected(rearrange(o_slc, "s h e -> s (h e)")),
                           local, gates, selection, selection_mask)

    def forward(self, x: Tensor, pos: Tensor, batch: Optional[Tensor] = None, *,
                ptr: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                geometry: Optional[NSAGeometry] = None) -> Tensor:
        out = self.branches(x, pos, batch, ptr=ptr, mask=mask, geometry=geometry)
        stacked = rearrange(torch.stack([out.compressed, out.selected, out.local], dim=1),
                            "s b (h c) -> s b h c", h=self.num_heads)
        mixed = (stacked * out.gates.unsqueeze(-1).to(stacked.dtype)).sum(1)
        return rearrange(mixed, "s h c -> s (h c)")

    def _global_attention(self, q: Tensor, k: Tensor, v: Tensor, k_c: Tensor, v_c: Tensor, ptr: Tensor,
                          leaf_balls: Tensor, ball_valid: Tensor):
        """Compressed and selected attention, chunked over whole query regions."""
        l, region = self.compress_ball_size, self.region_size
        num_regions = q.shape[0] // region
        with torch.no_grad():
            ball_ptr = ptr // l
            balls_per_graph = ball_ptr.diff()
            max_balls = int(balls_per_graph.max())
            region_graph = torch.repeat_interleave(torch.arange(balls_per_graph.numel(), device=q.device),
                                                   ptr.diff() // region)
            region_in_graph = torch.arange(num_regions, device=q.device) - ptr[region_graph] // region
            region_ptr = torch.stack([ball_ptr[region_graph], balls_per_graph[region_graph], region_in_graph], 1)

        q_regions = rearrange(q * self.head_dim ** -0.5, "(r t) (g h) e -> r t g h e", t=region,
                              g=self.num_kv_heads)
        k_balls = rearrange(k, "(n t) g e -> (n g) (t e)", t=l)
        v_balls = rearrange(v, "(n t) g e -> (n g) (t e)", t=l)
        per_chunk = max(1, self.query_chunk_size // region)
        use_checkpoint = self.checkpoint and torch.is_grad_enabled() and num_regions > per_chunk
        outputs = []
        for start in range(0, num_regions, per_chunk):
            part = slice(start, start + per_chunk)
            args = (q_regions[part], region_ptr[part], max_balls, ball_valid, k_c, v_c, k_balls, v_balls,
                    leaf_balls)
            if use_checkpoint:
                outputs.append(activation_checkpoint(self._chunk, *args, use_reentrant=False))
            else:
                outputs.append(self._chunk(*args))
        o_cmp, o_slc, selection, selection_mask = (torch.cat(parts) for parts in zip(*outputs))
        return (rearrange(o_cmp, "r t g h e -> (r t) (g h) e"), rearrange(o_slc, "r t g h e -> (r t) (g h) e"),
                rearrange(selection, "r t g k -> (r t) g k"), rearrange(selection_mask, "r t g k -> (r t) g k"))

    @staticmethod
    def _key_bias(valid: Tensor, dtype: torch.dtype) -> Tensor:
        """Additive logit bias: 0 on valid keys, the dtype's minimum elsewhere."""
        return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill_(~valid, torch.finfo(dtype).min)

    def _candidates(self, region_ptr: Tensor, max_balls: int, ball_valid: Tensor):
        """Per region: its graph's compressed ball ids ``[r, n]``, which are real keys, which are selectable."""
        first, count, region_in_graph = region_ptr.unbind(1)
        local_ball = torch.arange(max_balls, device=region_ptr.device)
        key_valid = local_ball < count[:, None]
        ball_ids = torch.where(key_valid, first[:, None] + local_ball, 0)
        key_valid &= ball_valid[ball_ids]
        own = (local_ball * self.compress_ball_size // self.region_size)[None, :] == region_in_graph[:, None]
        return ball_ids, key_valid, key_valid & ~own

    def _chunk(self, q: Tensor, region_ptr: Tensor, max_balls: int, ball_valid: Tensor, k_c: Tensor,
               v_c: Tensor, k_balls: Tensor, v_balls: Tensor, leaf_balls: Tensor):
        regions, size, groups, heads, dim = q.shape
        dtype = q.dtype
        with torch.no_grad():
            ball_ids, key_valid, selectable = self._candidates(region_ptr, max_balls, ball_valid)
        # compressed branch: each region's queries against all compressed balls of its graph
        q_c = rearrange(q, "r t g h e -> (r g) (t h) e")
        k_sel = rearrange(k_c[ball_ids], "r n g e -> (r g) e n")
        v_sel = rearrange(v_c[ball_ids], "r n g e -> (r g) n e")
        bias = rearrange(self._key_bias(key_valid, dtype), "r n -> r 1 n").repeat_interleave(groups, 0)
        probs = torch.softmax(torch.baddbmm(bias, q_c, k_sel), dim=-1)
        o_cmp = rearrange(torch.bmm(probs.to(v_sel.dtype), v_sel), "(r g) (t h) e -> r t g h e",
                          g=groups, h=heads)

        # selection: top-k balls per query and key/value group (not differentiable)
        with torch.no_grad():
            importance = reduce(probs.detach().float(), "(r g) (t h) n -> r t g n", "sum", g=groups, h=heads)
            importance.masked_fill_(~selectable[:, None, None, :], -1.0)
            top = min(self.num_selected, ball_ids.shape[1])
            local_sel = importance.topk(top, dim=-1).indices
            sel_mask = torch.gather(selectable[:, None, None, :].expand_as(importance), -1, local_sel)
            selection = torch.gather(ball_ids[:, None, None, :].expand(-1, size, groups, -1), -1, local_sel)
            union, chosen = self._region_union(local_sel, sel_mask, ball_ids.shape[1])
        # the selected branch, in the cheaper of two equal forms: per region, all queries against the
        # union of the balls they selected (one key gather per region, dense GEMMs; best when nearby
        # queries select much the same balls), or per query against its own k balls
        arange_groups = torch.arange(groups, device=q.device)
        if self._prefer_union(union.shape[1], top, heads, dim):
            with torch.no_grad():
                union_ids = torch.gather(ball_ids, 1, union)
                visible = rearrange(chosen[..., None] & leaf_balls[union_ids][:, None, None],
                                    "r t g u l -> (r g) t 1 (u l)")
            rows = rearrange(union_ids[:, None, :] * groups + arange_groups[:, None], "r g u -> (r g) u")
            out = self._selected_attention(rearrange(q, "r t g h e -> (r g) t h e"), rows, visible, k_balls, v_balls)
            o_slc = rearrange(out, "(r g) t h e -> r t g h e", g=groups)
        else:
            with torch.no_grad():
                visible = rearrange(leaf_balls[selection] & sel_mask[..., None], "r t g k l -> (r t g) 1 1 (k l)")
            rows = rearrange(selection * groups + arange_groups[:, None], "r t g k -> (r t g) k")
            out = self._selected_attention(rearrange(q, "r t g h e -> (r t g) 1 h e"), rows, visible, k_balls, v_balls)
            o_slc = rearrange(out, "(r t g) 1 h e -> r t g h e", t=size, g=groups)
        return o_cmp, o_slc, selection, sel_mask

    @staticmethod
    def _prefer_union(width: int, top: int, heads: int, dim: int) -> bool:
        """Per query, the union form computes ``width * l * heads`` logits (several passes each:
        bias, softmax, its backward); the per-query form gathers ``top * l`` keys and values of
        width ``dim`` (plain copies, about half as costly per number on CPU) and computes
        ``top * l * heads`` logits. Measured on the NSA presets: the union wins on MD (width 31
        of 32 balls, 8 heads), the per-query form on cosmology and ShapeNet (widths 120-170)."""
        return width * heads <= top * (dim + heads)

    @classmethod
    def _selected_attention(cls, q: Tensor, rows: Tensor, visible: Tensor, k_balls: Tensor, v_balls: Tensor):
        """Softmax attention of ``q`` ``[b, t, h, e]`` (scaled) to every leaf of the balls ``rows``
        ``[b, m]`` (rows of ``k_balls``/``v_balls``: ball id * groups + group), query row ``t`` seeing
        the leaves ``visible[b, t, 0]`` ``[b, t, 1, m * l]``; rows that see none give 0."""
        batch, size, heads, dim = q.shape
        # embedding lookups: same gather as index_select, with a much faster backward on CPU
        keys = rearrange(F.embedding(rows, k_balls), "b m (l e) -> b (m l) e", e=dim)
        values = rearrange(F.embedding(rows, v_balls), "b m (l e) -> b (m l) e", e=dim)
        logits = torch.bmm(rearrange(q, "b t h e -> b (t h) e"), keys.transpose(1, 2))
        logits.view(batch, size, heads, -1).add_(cls._key_bias(visible, q.dtype))
        out = torch.bmm(torch.softmax(logits, dim=-1).to(values.dtype), values)
        return rearrange(out, "b (t h) e -> b t h e", h=heads) * visible.any(-1, keepdim=True)

    @staticmethod
    def _region_union(local_sel: Tensor, sel_mask: Tensor, num_balls: int):
        """The balls selected by any query of each region, padded to the largest union of the chunk.

        Args: ``local_sel`` ``[r, t, g, k]`` positions in the region's candidate list (of
        ``num_balls``), ``sel_mask`` the real selections among them.
        Returns: ``union`` ``[r, u]`` candidate positions (a region with a smaller union is padded
        with other candidates) and ``chosen`` ``[r, t, g, u]``, whether each query selected each
        entry (never a padding one).
        """
        regions = local_sel.shape[0]
        per_query = torch.zeros(*local_sel.shape[:-1], num_balls, dtype=torch.bool, device=local_sel.device)
        per_query.scatter_(-1, local_sel, sel_mask)
        in_union = reduce(per_query, "r t g n -> r n", "max")
        width = max(1, int(in_union.sum(1).max()))
        # stable sort puts each region's union first, in ball order
        union = torch.sort(in_union.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :width]
        real = torch.gather(in_union, 1, union)
        chosen = torch.gather(per_query, -1, union[:, None, None, :].expand(regions, *per_query.shape[1:3], width))
        return union, chosen & real[:, None, None, :]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, num_heads={self.num_heads}, "
                f"num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
                f"compress_ball_size={self.compress_ball_size}, local_ball_size={self.local_ball_size}, "
                f"num_selected={self.num_selected}, mask_padding={self.mask_padding})")
