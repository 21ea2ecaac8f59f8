r"""Ball attention: multi-head self-attention inside balls of a ball tree (Erwin, eqs. 8-10)."""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from torch_geometric_erwin import ops
from torch_geometric_erwin.ops._extension import table as capability_table
from torch_geometric_erwin.nn.cpu_path import blocks, takes_cpu_path, takes_kernel_path
from torch_geometric_erwin.nn.init import reset_linear
from torch_geometric_erwin.checks import check_int, check_tensor, is_power_of_two

try:
    from torch.nn.attention.flex_attention import flex_attention
except ImportError:  # torch < 2.5
    flex_attention = None

#: Names of the attention backends (see :class:`BallAttention`).
ATTENTION_BACKENDS = ("auto", "math", "sdpa", "flex", "kernel", "blocked")

#: The backend that :func:`attention_backend` imposes on every ball attention, or None.
_backend_override: Optional[str] = None

#: ``torch.compile(flex_attention)``, made on the first flex call outside the CPU.
_compiled_flex = None


class BallGeometry:
    r"""What ball attention needs of the positions of one tree order, computed once.

    Every block of a U-Net level attends in the same balls (or the same rotated
    balls), so :class:`~torch_geometric_erwin.nn.Erwin` builds this once per
    level and order and hands it to each block.

    Attributes:
        rel_pos: ``[S, D]`` position of every slot relative to its ball's centre
            (eq. 9): :math:`p_i - \frac{1}{m}\sum_{j \in B} p_j`, or the mean of the ball's
            real slots when a mask says which they are.
        distance: ``[S / m, m, m]`` pairwise distances inside every ball (eq. 10),
            :math:`\lVert r_i - r_j \rVert` of ``rel_pos``, formed on first use and then kept. The
            C++ kernel forms each ball's distances from ``rel_pos`` as it goes, so on its path
            this tensor (``4 m`` bytes per slot: 512 at ball size 128) never exists.
        ball_size: :math:`m`.
    """

    def __init__(self, rel_pos: Tensor, ball_size: int):
        self.rel_pos, self.ball_size = rel_pos, ball_size
        self._distance: Optional[Tensor] = None

    @property
    def distance(self) -> Tensor:
        if self._distance is None:
            offsets = rearrange(self.rel_pos.detach(), "(n m) d -> n m d", m=self.ball_size)
            # from differences, not cdist's default matrix-product formula |a|² + |b|² - 2ab, which loses
            # to cancellation about 1e-3 of the distances in a unit ball and more in balls far from the
            # origin (and is slower at ball sizes like 128)
            with torch.no_grad():
                self._distance = torch.cdist(offsets, offsets, compute_mode="donot_use_mm_for_euclid_dist")
        return self._distance

    @classmethod
    @torch.no_grad()
    def from_pos(cls, pos: Tensor, ball_size: int, mask: Optional[Tensor] = None) -> "BallGeometry":
        """Geometry of balls of ``ball_size`` contiguous slots of ``pos`` ``[S, D]`` (in float32 at
        least: half-precision positions are promoted). ``mask`` ``[S]`` (bool, True on real slots)
        takes each centre over the ball's real slots only, so padding duplicates do not pull it
        towards the points they copy (a ball without real slots keeps the plain mean)."""
        dtype = torch.promote_types(pos.dtype, torch.float32)
        balls = rearrange(pos.detach().to(dtype), "(n m) d -> n m d", m=ball_size)
        if mask is None:
            centre = reduce(balls, "n m d -> n 1 d", "mean")
        else:
            weight = rearrange(mask, "(n m) -> n m 1", m=ball_size).to(dtype)
            weight = torch.where(weight.sum(1, keepdim=True) > 0, weight, torch.ones_like(weight))
            centre = (balls * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True)
        return cls(rearrange(balls - centre, "n m d -> (n m) d"), ball_size)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(slots={self.rel_pos.shape[0]}, ball_size={self.ball_size}, "
                f"distance={'formed' if self._distance is not None else 'not formed'})")


def _check_backend(backend: str) -> str:
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, ATTENTION_BACKENDS))}, got {backend!r}")
    return backend


@contextlib.contextmanager
def attention_backend(backend: str) -> Iterator[None]:
    """Within the ``with`` block, every :class:`BallAttention` runs ``backend`` (one of
    :data:`ATTENTION_BACKENDS`; ``"auto"`` restores each layer's own choice) whatever its own
    :attr:`BallAttention.backend` says. Not thread-local: it is meant for benchmarks and tests."""
    global _backend_override
    previous, _backend_override = _backend_override, _check_backend(backend)
    try:
        yield
    finally:
        _backend_override = previous


def set_attention_backend(module: nn.Module, backend: str) -> nn.Module:
    """Sets :attr:`BallAttention.backend` of every ball attention in ``module`` (a layer, a block,
    :class:`~torch_geometric_erwin.nn.Erwin` or :class:`~torch_geometric_erwin.nn.ErwinNSA`);
    returns ``module``."""
    _check_backend(backend)
    layers = [layer for layer in module.modules() if isinstance(layer, BallAttention)]
    if not layers:
        raise ValueError(f"module has no BallAttention to set a backend on ({type(module).__name__})")
    for layer in layers:
        layer.backend = backend
    return module


def flex_supported(x: Tensor, head_width: int, ball_size: int) -> bool:
    """Whether ``"auto"`` picks flex attention for input ``x``: outside the CPU (where torch's
    flex attention has no backward pass) in float32, float16 or bfloat16, with head widths and
    balls of at least 16 and head widths a power of two (the tile sizes of its Triton kernels)."""
    return (flex_attention is not None and x.device.type != "cpu"
            and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
            and head_width >= 16 and is_power_of_two(head_width) and ball_size >= 16)


def _distance_bias(sigma: Tensor, distance: Tensor, hidden: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    r"""The ``[n, h, m, m]`` bias :math:`\sigma_h D` with hidden keys at :math:`-\infty` (SDPA's
    ``attn_mask`` and the math path)."""
    bias = rearrange(sigma, "h -> 1 h 1 1") * rearrange(distance, "n i j -> n 1 i j")
    if hidden is not None:
        bias = bias.masked_fill(hidden, float("-inf"))
    return bias.to(dtype)


def _math_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """Softmax attention written out in PyTorch operations, differentiated by autograd."""
    scores = torch.einsum("nhie,nhje->nhij", q, k) * q.shape[-1] ** -0.5 + bias
    return torch.einsum("nhij,nhje->nhie", scores.softmax(dim=-1), v)


def flex_score_mod(sigma: Tensor, rel_pos: Tensor, hidden: Optional[Tensor]):
    r"""The ``score_mod(score, b, h, i, j)`` of ball attention's flex backend: ``score`` plus
    :math:`\sigma_h \lVert p_{b,i} - p_{b,j} \rVert` from ``rel_pos [n, m, D]`` (``sigma [h]``),
    :math:`-\infty` where ``hidden [n, m]`` hides key ``j`` of ball ``b``. Indices may be tensors
    that broadcast together (flex attention calls it on scalars under ``vmap``)."""
    dimensionality = rel_pos.shape[-1]

    def distance_bias(score, b, h, i, j):
        squares = sum((rel_pos[b, i, c] - rel_pos[b, j, c]).square() for c in range(dimensionality))
        return score + (sigma[h] * squares.sqrt()).to(score.dtype)

    if hidden is None:
        return distance_bias

    def masked_distance_bias(score, b, h, i, j):
        return torch.where(hidden[b, j], float("-inf"), distance_bias(score, b, h, i, j))

    return masked_distance_bias


def _flex_ball_attention(q: Tensor, k: Tensor, v: Tensor, sigma: Tensor, rel_pos: Tensor,
                         hidden: Optional[Tensor]) -> Tensor:
    r"""Ball attention by :func:`torch.nn.attention.flex_attention.flex_attention`, balls as the
    batch dimension (sequences of :math:`m`): the ``score_mod`` adds :math:`\sigma_h
    \lVert p_i - p_j \rVert` from the ball's positions ``rel_pos [n, m, D]`` and hides the keys of
    ``hidden [n, m]``, inside the kernel, so that no ``[n, h, m, m]`` bias exists. Gradients reach
    ``sigma`` as a captured tensor. Outside the CPU the call is compiled (once per process; an
    outer ``torch.compile`` traces it in place); on the CPU it runs torch's eager implementation,
    forward only."""
    score_mod = flex_score_mod(sigma, rel_pos, hidden)
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, score_mod=score_mod)
    if q.device.type == "cpu":
        with warnings.catch_warnings():  # torch warns that the eager form is unfused: it is, on purpose
            warnings.simplefilter("ignore", UserWarning)
            return flex_attention(q, k, v, score_mod=score_mod)
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex(q, k, v, score_mod=score_mod)


#: Bytes of attention scores per block of balls in the CPU training path.
_BLOCK_BYTES = 4 * 2**20


def _ball_blocks(n: int, h: int, m: int, element_size: int):
    """``(balls, rows)`` slices of blocks of whole balls: ``balls`` of the ``n`` balls, ``rows`` of
    the ``n * h`` (ball, head) pairs, with at most :data:`_BLOCK_BYTES` of ``[m, m]`` scores each."""
    for balls in blocks(n, max(1, _BLOCK_BYTES // (h * m * m * element_size))):
        yield balls, slice(balls.start * h, balls.stop * h)


class _BallAttentionFunction(torch.autograd.Function):
    r"""Attention with the distance bias, :math:`\mathrm{softmax}(QK^\top/\sqrt{d_h} + \sigma_h D) V`
    per ball and head, with its gradients for :math:`Q, K, V, \sigma` written out (not for :math:`D`).

    This is the CPU training path. SDPA's fused CPU kernel takes no gradient for a bias, so with a
    trainable :math:`\sigma` it falls back to its unfused path, which materialises several
    ``[n, h, m, m]`` tensors per call. Here both passes work through blocks of whole balls (a few
    MB of scores each), so that every pass over a block's scores hits the caches: the forward pass
    fills one tensor per block (bias, then scores, then probabilities, in place), which the
    backward pass reads, and the backward pass's temporaries are a block's size. As single
    ``[n, h, m, m]`` tensors (tens of MB) they would be fresh memory, page-faulted in on every
    call. The gradient of :math:`\sigma` is a dot product per ball and head. Shapes: ``q, k, v [n, h, m, e]``
    (contiguous), ``sigma [h]``, ``distance [n, m, m]``, ``hidden [n, 1, 1, m]`` (bool, keys to
    hide) or None.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, sigma: Tensor, distance: Tensor,
                hidden: Optional[Tensor]) -> Tensor:
        n, h, m, e = q.shape
        scale = e ** -0.5
        sigma_heads = sigma.view(1, h, 1, 1)
        out = q.new_empty(n * h, m, e)
        q_rows, k_rows, v_rows = (t.view(n * h, m, e) for t in (q, k, v))
        # one tensor of probabilities per block: a single [n h, m, m] buffer would be larger than
        # what glibc serves from its heap (32 MiB), mapped afresh and page-faulted in on every call
        probabilities = []
        for balls, rows in _ball_blocks(n, h, m, q.element_size()):
            block = q.new_empty(rows.stop - rows.start, m, m)
            torch.mul(sigma_heads, distance[balls].unsqueeze(1), out=block.view(-1, h, m, m))
            if hidden is not None:
                block.view(-1, h, m, m).masked_fill_(hidden[balls], float("-inf"))
            block.baddbmm_(q_rows[rows], k_rows[rows].transpose(1, 2), alpha=scale)
            torch.softmax(block, dim=-1, out=block)
            torch.bmm(block, v_rows[rows], out=out[rows])
            probabilities.append(block)
        out = out.view(n, h, m, e)
        ctx.save_for_backward(q, k, v, distance, out, *probabilities)
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, distance, out, *probabilities = ctx.saved_tensors
        n, h, m, e = q.shape
        grad_out = grad_out.contiguous()
        # softmax backward: dS = P * (dP - rowsum(dP * P)), and rowsum(dP * P) = rowsum(dO * O)
        delta = (grad_out * out).sum(dim=-1).view(n * h, m, 1)
        grad_out, q, k, v = (t.view(n * h, m, e) for t in (grad_out, q, k, v))
        grad_q, grad_k, grad_v = (torch.empty_like(t) for t in (q, k, v))
        grad_sigma = q.new_zeros(h) if ctx.needs_input_grad[3] else None
        scratch = q.new_empty(max((len(probs) for probs in probabilities), default=0), m, m)
        for (balls, rows), probs in zip(_ball_blocks(n, h, m, q.element_size()), probabilities):
            torch.bmm(probs.transpose(1, 2), grad_out[rows], out=grad_v[rows])
            grad_scores = torch.bmm(grad_out[rows], v[rows].transpose(1, 2), out=scratch[:len(probs)])
            grad_scores.sub_(delta[rows]).mul_(probs)
            torch.bmm(grad_scores, k[rows], out=grad_q[rows]).mul_(ctx.scale)
            torch.bmm(grad_scores.transpose(1, 2), q[rows], out=grad_k[rows]).mul_(ctx.scale)
            if grad_sigma is not None:
                # in place, as grad_scores is no longer needed (a bmm with one column is 3x slower)
                pairs = rearrange(grad_scores, "(b h) i j -> b h (i j)", h=h)
                grad_sigma += pairs.mul_(rearrange(distance[balls], "b i j -> b 1 (i j)")).sum(2).sum(0)
        return (*(t.view(n, h, m, e) for t in (grad_q, grad_k, grad_v)), grad_sigma, None, None)


class BallAttention(nn.Module):
    r"""Ball multi-head self-attention (BMSA, Erwin eqs. 8-10).

    The slots are cut into balls of ``ball_size`` contiguous slots (the leaves
    of one ball of the tree); every slot attends to the slots of its ball:

    .. math::
        X_B &\leftarrow X_B + \mathrm{PE}(P_B - \bar{p}_B) \qquad \text{(eq. 9)} \\
        \mathrm{BMSA}(X_B) &= W_O \,\mathrm{softmax}\Big(
            \frac{Q_B K_B^\top}{\sqrt{d_h}} + \sigma_h D_B\Big) V_B \qquad \text{(eqs. 8, 10)}

    with :math:`\mathrm{PE}` a linear map of the position relative to the
    ball's centre, :math:`D_B` the matrix of pairwise distances in the ball and
    one learnable :math:`\sigma_h` per head, initialised near :math:`-1` so the
    bias favours near neighbours. This is the reference parametrisation; the
    paper writes the bias as :math:`-\sigma^2 D_B`, the case
    :math:`\sigma_h \le 0`.

    Args:
        channels (int): width :math:`C` (divisible by ``num_heads``).
        num_heads (int): attention heads.
        ball_size (int): slots per ball :math:`m` (a power of two).
        dimensionality (int): :math:`D` of the positions. (default: ``3``)
        backend (str): the attention backend, one of :data:`ATTENTION_BACKENDS`
            (see below). (default: ``"auto"``)

    Shapes:
        ``forward(x [S, C], pos [S, D], key_mask [S]? , geometry?) -> [S, C]``,
        with :math:`S` a multiple of ``ball_size``. ``key_mask`` (bool) hides
        keys (tree padding) from the other slots of their ball and leaves them
        out of the ball's centre (eq. 9); a ball without any visible key attends
        to all of its slots. ``geometry`` is the
        :class:`BallGeometry` of ``pos``, when the caller has it already.

    Backends (``backend``, or :func:`set_attention_backend` on a model, or
    the :func:`attention_backend` context manager, which overrides every
    layer), all with the distance bias and the same padding semantics:

    * ``"auto"`` (default): on CPU in float32 (outside autocast), with head
      widths :math:`C / h` of 4, 8, 16, 32 or 64 and ``ball_size`` a multiple of 4
      (``ops.capabilities()["ball_attention"]``), ``"kernel"`` (a custom op, kept in
      ``torch.compile``'s graph); other CPU training in float32 or float64 outside
      ``torch.compile`` ``"blocked"``; other CPU work ``"sdpa"``. Elsewhere
      (CUDA) ``"flex"`` where :func:`flex_supported`, else ``"sdpa"``.
    * ``"kernel"``: the C++ kernels of ``csrc/ball_attention.h``
      (:func:`torch_geometric_erwin.ops.ball_attention`: no ``[n, h, m, m]`` tensor is
      stored; the backward pass recomputes the probabilities). CPU, float32.
    * ``"blocked"``: a written-out attention in PyTorch with its own backward
      pass, in blocks of balls (:class:`_BallAttentionFunction`; SDPA's CPU
      fused kernel has no gradient for the bias). CPU, float32 or float64,
      outside ``torch.compile``.
    * ``"flex"``: :func:`~torch.nn.attention.flex_attention.flex_attention`
      with the bias computed from the positions in its ``score_mod``
      (:func:`_flex_ball_attention`): no bias tensor. Compiled outside the CPU;
      on the CPU forward only (torch has no CPU backward pass for it).
    * ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention`
      with the bias as a float ``attn_mask`` (on CUDA the memory-efficient
      kernel, which also differentiates the bias).
    * ``"math"``: softmax attention written out in PyTorch operations,
      differentiated by autograd; any device, the reference for the others.

    A backend asked for where it cannot run raises a ``ValueError`` saying why.

    The projection ``in_proj`` holds :math:`W_Q, W_K, W_V` with its rows in ``(three h e)``
    order, so that every head's Q, K and V are runs of :math:`e` channels that the kernels read in
    place; state dicts with the reference's ``qkv`` (rows interleaved as ``(h e three)``) load
    unchanged.
    """

    _version = 2

    def __init__(self, channels: int, num_heads: int, ball_size: int, dimensionality: int = 3,
                 backend: str = "auto"):
        super().__init__()
        for name, value in (("channels", channels), ("num_heads", num_heads), ("ball_size", ball_size),
                            ("dimensionality", dimensionality)):
            check_int(name, value)
        if channels % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide channels ({channels})")
        if not is_power_of_two(ball_size):
            raise ValueError(f"ball_size must be a power of two, got {ball_size}")
        self.channels, self.num_heads, self.ball_size = channels, num_heads, ball_size
        self.dimensionality = dimensionality
        self.backend = backend
        self.pos_proj = nn.Linear(dimensionality, channels)
        self.in_proj = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.sigma = nn.Parameter(torch.empty(num_heads))
        self.reset_parameters()

    @property
    def backend(self) -> str:
        """The attention backend this layer runs when no :func:`attention_backend` overrides it."""
        return self._backend

    @backend.setter
    def backend(self, backend: str) -> None:
        self._backend = _check_backend(backend)

    def reset_parameters(self) -> None:
        for lin in (self.pos_proj, self.in_proj, self.proj):
            reset_linear(lin)
        with torch.no_grad():
            self.sigma.copy_(-1.0 + 0.01 * torch.randn(self.num_heads))

    def forward(self, x: Tensor, pos: Optional[Tensor] = None, key_mask: Optional[Tensor] = None,
                geometry: Optional[BallGeometry] = None) -> Tensor:
        check_tensor("x", x, ("num_slots", self.channels))
        num_slots = x.shape[0]
        if num_slots % self.ball_size:
            raise ValueError(f"x must have a multiple of ball_size={self.ball_size} rows (whole balls), "
                             f"got {num_slots}")
        if key_mask is not None:
            check_tensor("key_mask", key_mask, (num_slots,), dtype=torch.bool)
        if geometry is None:
            if pos is None:
                raise ValueError("BallAttention needs pos or geometry")
            check_tensor("pos", pos, (num_slots, self.dimensionality), floating=True)
            geometry = BallGeometry.from_pos(pos, self.ball_size, key_mask)
        elif geometry.rel_pos.shape[0] != num_slots or geometry.ball_size != self.ball_size:
            raise ValueError(f"geometry describes {geometry.rel_pos.shape[0]} slots in balls of "
                             f"{geometry.ball_size}, but x has {num_slots} and ball_size is {self.ball_size}")
        x = x + self.pos_proj(geometry.rel_pos.to(x.dtype))
        qkv = self.in_proj(x)
        hidden = None
        if key_mask is not None:
            hidden = rearrange(~key_mask, "(n m) -> n 1 1 m", m=self.ball_size)
            hidden = hidden & ~hidden.all(dim=-1, keepdim=True)
        backend = self.backend_for(qkv)
        if backend == "kernel":
            out, _ = ops.ball_attention(qkv, self.sigma, geometry.rel_pos.to(qkv.dtype), self.ball_size, hidden)
            return self.proj(out)
        q, k, v = rearrange(qkv, "(n m) (three h e) -> three n h m e",
                            m=self.ball_size, h=self.num_heads, three=3).contiguous().unbind(0)
        if backend == "blocked":
            out = _BallAttentionFunction.apply(q, k, v, self.sigma, geometry.distance.to(q.dtype), hidden)
        elif backend == "flex":
            out = _flex_ball_attention(q, k, v, self.sigma,
                                       rearrange(geometry.rel_pos, "(n m) d -> n m d", m=self.ball_size),
                                       None if hidden is None else rearrange(hidden, "n 1 1 m -> n m"))
        else:
            bias = _distance_bias(self.sigma, geometry.distance, hidden, q.dtype)
            out = (_math_attention(q, k, v, bias) if backend == "math"
                   else F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
        return self.proj(rearrange(out, "n h m e -> (n m) (h e)"))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # version 1 (and the reference code) kept the projection as `qkv` with its rows in the
        # interleaved (h e three) order
        for name in ("weight", "bias"):
            old = f"{prefix}qkv.{name}"
            if old in state_dict:
                state_dict[f"{prefix}in_proj.{name}"] = rearrange(
                    state_dict.pop(old), "(h e three) ... -> (three h e) ...", h=self.num_heads, three=3)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def backend_for(self, qkv: Tensor) -> str:
        """The backend that :meth:`forward` runs on the projections ``qkv`` (of the input's device
        and dtype), under the current autocast, compile and grad modes."""
        backend = _backend_override if _backend_override not in (None, "auto") else self.backend
        head_width = self.channels // self.num_heads
        table = capability_table("ball_attention")
        kernel = (takes_kernel_path(qkv, self.sigma, "ball_attention")
                  and self.ball_size % table["ball_size_multiple"] == 0 and head_width in table["head_widths"])
        blocked = takes_cpu_path(qkv, self.sigma) and not torch.compiler.is_compiling()
        training = torch.is_grad_enabled() and (qkv.requires_grad or self.sigma.requires_grad)
        if backend == "auto":
            if qkv.device.type != "cpu":
                return "flex" if flex_supported(qkv, head_width, self.ball_size) else "sdpa"
            if kernel:
                return "kernel"
            return "blocked" if blocked and torch.is_grad_enabled() else "sdpa"
        if backend == "kernel" and not kernel:
            raise ValueError(f"backend='kernel' needs float32 CPU inputs and parameters outside autocast, the C++ "
                             f"extension built, and a ball_size and head width it is compiled for "
                             f"(ops.capabilities()['ball_attention']: {table or 'not built'}); got ball_size "
                             f"{self.ball_size}, head width {head_width} and {qkv.dtype} on {qkv.device}: "
                             f"choose another backend")
        if backend == "blocked" and not blocked:
            raise ValueError(f"backend='blocked' needs float32 or float64 CPU inputs and parameters of the same "
                             f"dtype outside autocast and torch.compile, got {qkv.dtype} on {qkv.device}: "
                             f"choose another backend")
        if backend == "flex":
            if flex_attention is None:
                raise ValueError("backend='flex' needs torch.nn.attention.flex_attention (torch >= 2.5)")
            if qkv.device.type == "cpu" and training:
                raise ValueError("backend='flex' cannot train on the CPU (torch's flex_attention has no CPU "
                                 "backward pass): run it under torch.no_grad() or choose another backend")
        return backend

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, num_heads={self.num_heads}, "
                f"ball_size={self.ball_size}, dimensionality={self.dimensionality}"
                + ("" if self.backend == "auto" else f", backend={self.backend!r}") + ")")
