"""The layers of torch_geometric_erwin.nn against direct, loop-based implementations of the paper's equations."""
import math

import pytest
import torch
from einops import rearrange

from torch_geometric_erwin import ops
from torch_geometric_erwin.nn import ball_attention, embedding
from torch_geometric_erwin.ops import _extension, feed_forward as swiglu_ops
from torch_geometric_erwin.nn import (BallAttention, BallGeometry, BallPooling, BallUnpooling, ErwinBlock,
                                      ErwinEmbedding, RMSNorm, SwiGLU, knn_graph, radius_graph)


def dense_ball_attention(layer, x, pos, key_mask=None):
    """Eqs. 8-10 written per ball and per head with explicit loops; hidden keys (padding) leave the
    ball's centre too, unless the ball has no visible key."""
    m, heads = layer.ball_size, layer.num_heads
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], m):
        p = pos[start:start + m]
        visible = key_mask[start:start + m] if key_mask is not None else torch.ones(m, dtype=torch.bool)
        centre = p[visible].mean(0) if visible.any() else p.mean(0)
        h = x[start:start + m] + layer.pos_proj(p - centre)
        qkv = layer.in_proj(h).view(m, 3, heads, -1)
        heads_out = []
        for head in range(heads):
            q, k, v = qkv[:, 0, head], qkv[:, 1, head], qkv[:, 2, head]
            dist = ((p[:, None] - p[None]) ** 2).sum(-1).sqrt()
            logits = q @ k.T / math.sqrt(q.shape[1]) + layer.sigma[head] * dist
            if key_mask is not None and key_mask[start:start + m].any():
                logits = logits.masked_fill(~key_mask[start:start + m][None], -math.inf)
            heads_out.append(torch.softmax(logits, -1) @ v)
        out[start:start + m] = layer.proj(torch.cat(heads_out, dim=1))
    return out


def test_ball_attention_matches_the_equations():
    torch.manual_seed(0)
    layer = BallAttention(12, num_heads=3, ball_size=8, dimensionality=2)
    with torch.no_grad():
        layer.sigma.copy_(torch.tensor([-1.5, 0.3, -0.2]))
    x, pos = torch.randn(32, 12), torch.randn(32, 2)
    torch.testing.assert_close(layer(x, pos), dense_ball_attention(layer, x, pos), atol=1e-5, rtol=1e-4)
    geometry = BallGeometry.from_pos(pos, 8)
    torch.testing.assert_close(layer(x, geometry=geometry), layer(x, pos))


def test_ball_attention_key_mask_hides_padding_keys():
    torch.manual_seed(1)
    layer = BallAttention(8, num_heads=2, ball_size=4, dimensionality=3)
    x, pos = torch.randn(12, 8), torch.randn(12, 3)
    key_mask = torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0], dtype=torch.bool)
    out = layer(x, pos, key_mask)
    torch.testing.assert_close(out, dense_ball_attention(layer, x, pos, key_mask), atol=1e-5, rtol=1e-4)
    assert torch.isfinite(out).all()  # the second ball has no visible key and attends to all of its slots


def test_ball_attention_never_mixes_balls_and_sigma_gets_gradients():
    torch.manual_seed(2)
    layer = BallAttention(8, num_heads=2, ball_size=4)
    x = torch.randn(16, 8, requires_grad=True)
    pos = torch.randn(16, 3)
    layer(x, pos)[5].sum().backward()
    touched = x.grad.abs().sum(1) > 0
    assert touched[4:8].all() and not touched[:4].any() and not touched[8:].any()
    assert layer.sigma.grad is not None and layer.sigma.grad.abs().sum() > 0


@pytest.mark.parametrize("block_bytes", [1, 3 * 16 * 16 * 4, 2**30])
def test_ball_attention_training_path_matches_autograd_of_the_equations(monkeypatch, block_bytes):
    """The CPU training path (written-out forward and backward, in blocks of balls: one ball per
    block, blocks of 2 balls and 1 left over, or all at once) gives the outputs and gradients of
    autograd through the equations, padding keys hidden, sigma included."""
    monkeypatch.setattr(ball_attention, "_BLOCK_BYTES", block_bytes)
    calls, ball_blocks = [], ball_attention._ball_blocks
    monkeypatch.setattr(ball_attention, "_ball_blocks", lambda *args: calls.append(args) or ball_blocks(*args))
    torch.manual_seed(4)
    layer = BallAttention(12, num_heads=3, ball_size=16, dimensionality=3).double()
    x, pos = torch.randn(80, 12, dtype=torch.float64), torch.randn(80, 3, dtype=torch.float64)
    key_mask = torch.rand(80) > 0.3
    key_mask[16:32] = False  # a ball without visible keys attends to all of its slots
    weights = torch.randn(80, 12, dtype=torch.float64)
    grads = []
    for forward in (lambda xs: layer(xs, pos, key_mask), lambda xs: dense_ball_attention(layer, xs, pos, key_mask)):
        layer.zero_grad()
        xs = x.clone().requires_grad_()
        out = forward(xs)
        (out * weights).sum().backward()
        grads.append((out.detach(), xs.grad, layer.sigma.grad.clone(), layer.in_proj.weight.grad.clone()))
    assert len(calls) == 2  # the layer took the written-out path, forward and backward
    for ours, dense in zip(*grads):
        torch.testing.assert_close(ours, dense)


needs_kernels = pytest.mark.skipif(not ops.available("ball_attention"), reason="C++ extension not built")


def random_attention_inputs(balls, heads, ball_size, head_width, dtype=torch.float32, seed=0, on_a_line=False):
    """q, k, v, sigma, positions (relative to the ball's centre) and hidden keys of random balls;
    one ball hides all of its keys (and so attends to all of them), the others a random ~30 %.
    ``on_a_line``: positions at multiples of 1/8 on the first axis, whose distances every dtype
    represents exactly (so that a large ``sigma`` compares the kernels, not distance rounding)."""
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(balls, heads, ball_size, head_width, generator=generator, dtype=dtype) for _ in range(3))
    sigma = -torch.rand(heads, generator=generator, dtype=dtype) - 0.5
    pos = torch.randn(balls, ball_size, 3, generator=generator, dtype=dtype)
    if on_a_line:
        pos = torch.zeros_like(pos)
        pos[..., 0] = torch.randint(-64, 64, (balls, ball_size), generator=generator).to(dtype) / 8
        return q, k, v, sigma, pos, _hidden_keys(balls, ball_size, generator)
    return q, k, v, sigma, pos - pos.mean(1, keepdim=True), _hidden_keys(balls, ball_size, generator)


def _hidden_keys(balls, ball_size, generator):
    hidden = torch.rand(balls, 1, 1, ball_size, generator=generator) < 0.3
    hidden[0] = True
    return hidden & ~hidden.all(dim=-1, keepdim=True)


class SlabKernels:
    """The C++ kernels (which read the projection's ``qkv [(n m), (three h e)]`` slab and write
    ``[(n m), (h e)]`` rows) on head-major ``q, k, v [n, h, m, e]``, like :class:`_BallAttentionFunction`."""

    @staticmethod
    def apply(q, k, v, sigma, rel_pos, hidden):
        qkv = rearrange(torch.stack([q, k, v]), "three n h m e -> (n m) (three h e)")
        out, _ = ops.ball_attention(qkv, sigma, rearrange(rel_pos, "n m d -> (n m) d"), q.shape[2], hidden)
        return rearrange(out, "(n m) (h e) -> n h m e", m=q.shape[2], h=q.shape[1])


class WrittenOut:
    """The written-out PyTorch path on the same inputs, the distances from the positions."""

    @staticmethod
    def apply(q, k, v, sigma, rel_pos, hidden):
        distance = (rel_pos[:, :, None] - rel_pos[:, None]).norm(dim=-1)
        return ball_attention._BallAttentionFunction.apply(q, k, v, sigma, distance, hidden)


def attention_values_and_gradients(function, inputs, grad_out):
    q, k, v, sigma, rel_pos, hidden = inputs
    leaves = [t.clone().requires_grad_() for t in (q, k, v, sigma)]
    out = function.apply(*leaves, rel_pos, hidden)
    out.backward(grad_out)
    return [out.detach()] + [t.grad for t in leaves]


@needs_kernels
@pytest.mark.parametrize("head_width", ops.capabilities().get("ball_attention", {}).get("head_widths", []))
@pytest.mark.parametrize("ball_size", [4, 32])
def test_ball_attention_kernels_match_the_pytorch_path_in_float64(head_width, ball_size):
    """The C++ kernels' outputs and gradients (q, k, v, sigma; hidden keys, and a ball that hides all
    of its keys) against the written-out PyTorch path in float64."""
    inputs = random_attention_inputs(3, 2, ball_size, head_width)
    grad_out = torch.randn(inputs[0].shape)
    kernel = attention_values_and_gradients(SlabKernels, inputs, grad_out)
    inputs64 = [t.double() if t.is_floating_point() else t for t in inputs]
    exact = attention_values_and_gradients(WrittenOut, inputs64, grad_out.double())
    for ours, expected in zip(kernel, exact):
        torch.testing.assert_close(ours.double(), expected, atol=1e-5, rtol=1e-4)


@needs_kernels
def test_ball_attention_kernels_do_not_depend_on_the_thread_count_and_keep_extremes():
    """Bit-identical results for 1 and 2 threads; a bias of -1e4 per unit distance (probabilities
    that underflow to 0 but for the nearest keys) stays exact; a NaN query spoils its own ball only."""
    inputs = list(random_attention_inputs(4, 2, 16, 8, seed=1, on_a_line=True))
    inputs[3] = torch.tensor([-1e4, -0.5])
    grad_out = torch.randn(inputs[0].shape)
    threads = torch.get_num_threads()
    try:
        runs = []
        for count in (1, 2):
            torch.set_num_threads(count)
            runs.append(attention_values_and_gradients(SlabKernels, inputs, grad_out))
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*runs):
        assert torch.equal(one, two)
    inputs64 = [t.double() if t.is_floating_point() else t for t in inputs]
    exact = attention_values_and_gradients(WrittenOut, inputs64, grad_out.double())
    for ours, expected in zip(runs[0][:4], exact[:4]):
        torch.testing.assert_close(ours.double(), expected, atol=1e-5, rtol=1e-4)
    q = inputs[0].clone()
    q[2, 1, 5, 0] = float("nan")
    with torch.no_grad():
        out = SlabKernels.apply(q, *inputs[1:])
    assert out[2, 1, 5].isnan().all() and not out[[0, 1, 3]].isnan().any() and not out[2, 0].isnan().any()


@needs_kernels
def test_ball_attention_takes_the_kernels_where_they_apply(monkeypatch):
    calls = []
    for name, (owner, attribute) in {"kernel": (ops, "ball_attention"),
                                     "blocked": (ball_attention._BallAttentionFunction, "apply")}.items():
        monkeypatch.setattr(owner, attribute, lambda *args, name=name, apply=getattr(owner, attribute):
                            calls.append(name) or apply(*args))
    x, pos = torch.randn(16, 12), torch.randn(16, 3)
    for heads, dtype, grad in ((3, torch.float32, False), (3, torch.float32, True), (2, torch.float32, True),
                               (3, torch.float64, True)):
        layer = BallAttention(12, num_heads=heads, ball_size=8).to(dtype)
        with torch.set_grad_enabled(grad):
            layer(x.to(dtype), pos.to(dtype))
    # head width 4 (12 / 3) in float32, with and without autograd; width 6 and float64 are PyTorch's
    assert calls == ["kernel", "kernel", "blocked", "blocked"]
    with pytest.raises(ValueError, match="head width"):
        _extension.extension().ball_attention_forward(*_extension.arrays(
            torch.empty(4, 18), torch.ones(1), torch.zeros(4, 3)), 4, *_extension.arrays(
            None, torch.empty(4, 6), torch.empty(1, 1, 4)), 1)


def test_attention_and_swiglu_training_paths_take_zero_rows():
    x = torch.randn(0, 8, requires_grad=True)
    attention, mlp = BallAttention(8, num_heads=2, ball_size=4), SwiGLU(8, 16)
    (attention(x, torch.randn(0, 3)).sum() + mlp(x).sum()).backward()
    assert x.grad.shape == (0, 8)
    assert torch.equal(attention.sigma.grad, torch.zeros(2)) and torch.equal(mlp.w3.bias.grad, torch.zeros(8))


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=10, num_heads=4, ball_size=8), "divide"),
    (dict(channels=8, num_heads=2, ball_size=6), "power of two"),
    (dict(channels=8, num_heads=0, ball_size=8), "num_heads"),
])
def test_ball_attention_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BallAttention(**kwargs)


def test_ball_attention_bad_shapes():
    layer = BallAttention(8, 2, 4)
    with pytest.raises(ValueError, match="multiple of ball_size"):
        layer(torch.randn(6, 8), torch.randn(6, 3))
    with pytest.raises(ValueError, match="pos"):
        layer(torch.randn(8, 8), torch.randn(8, 2))


X, POS = torch.randn(8, 8), torch.randn(8, 3)
EDGES = torch.tensor([[0, 1, 2], [1, 2, 0]])


@pytest.mark.parametrize("call, error, message", [
    (lambda: BallAttention(8, 2, 4)(X[:, :6], POS), ValueError, r"x must have shape \[num_slots, 8\], got \[8, 6\]"),
    (lambda: BallAttention(8, 2, 4)(X, POS, key_mask=torch.ones(4, dtype=torch.bool)), ValueError,
     r"key_mask must have shape \[8\], got \[4\]"),
    (lambda: BallAttention(8, 2, 4)(X, POS, key_mask=torch.ones(8)), TypeError, "key_mask must have dtype torch.bool"),
    (lambda: BallAttention(8, 2, 4)(X, POS.long()), TypeError, "pos must be floating point"),
    (lambda: BallAttention(8, 2, 4)(X, geometry=BallGeometry.from_pos(POS[:4], 4)), ValueError,
     "geometry describes 4 slots"),
    (lambda: ErwinBlock(8, 2, 4)(X[:, :6], POS), ValueError, r"x must have shape \[num_slots, 8\]"),
    (lambda: BallPooling(8, 16, 2)(X[:7], POS[:7]), ValueError, "x must have a multiple of stride=2 rows"),
    (lambda: BallPooling(8, 16, 2)(X, POS[:6]), ValueError, r"pos must have shape \[8, 3\]"),
    (lambda: BallUnpooling(16, 8, 2)(torch.randn(4, 16), POS[:4], X[:6], POS[:6]), ValueError,
     r"skip must have shape \[8, 8\]"),
    (lambda: ErwinEmbedding(8, 4)(X, POS, torch.tensor([[0, 8], [1, 2]])), ValueError,
     r"edge_index must hold node indices in \[0, 8\)"),
    (lambda: ErwinEmbedding(8, 4)(X, POS, -EDGES), ValueError, r"edge_index must hold node indices in \[0, 8\)"),
    (lambda: ErwinEmbedding(8, 4)(X, POS, EDGES[:1]), ValueError, r"edge_index must have shape \[2, num_edges\]"),
    (lambda: ErwinEmbedding(8, 4)(X, POS, EDGES.float()), TypeError, "edge_index must have dtype torch.int64"),
    (lambda: ErwinEmbedding(8, 4)(X.long(), POS, EDGES), TypeError, "x must be floating point"),
])
def test_layers_name_the_argument_of_bad_input(call, error, message):
    """Bad input to a layer is reported by argument name, not by the torch or einops operation it breaks."""
    with pytest.raises(error, match=message):
        call()


def test_erwin_block_on_a_permutation_returns_the_original_order():
    torch.manual_seed(3)
    block = ErwinBlock(8, num_heads=2, ball_size=4, mlp_ratio=2)
    x, pos = torch.randn(16, 8), torch.randn(16, 3)
    perm = torch.randperm(16)
    expected = torch.empty_like(x)
    expected[perm] = block(x[perm], pos[perm])
    torch.testing.assert_close(block(x, pos, permutation=perm), expected)
    for bad in (torch.zeros(16, dtype=torch.long), perm[:8], perm.int()):
        with pytest.raises(ValueError, match="permutation"):
            block(x, pos, permutation=bad)
    # the pre-norm residual structure: x + attn(norm(x)), then + mlp(norm(.))
    h = x + block.attention(block.norm1(x), pos)
    torch.testing.assert_close(block(x, pos), h + block.mlp(block.norm2(h)))


def swiglu_equation(layer, x):
    w1, w2 = layer.w12.weight.chunk(2)
    b1, b2 = layer.w12.bias.chunk(2)
    gate = torch.nn.functional.linear(x, w1, b1)
    return layer.w3(torch.nn.functional.linear(x, w2, b2) * (gate * torch.sigmoid(gate)))


def test_swiglu():
    torch.manual_seed(4)
    layer = SwiGLU(6, 10)
    x = torch.randn(5, 6)
    torch.testing.assert_close(layer(x), swiglu_equation(layer, x))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), swiglu_equation(layer, x))
    assert layer(torch.randn(0, 6)).shape == (0, 6)


def test_state_dicts_of_the_earlier_layouts_load():
    """Version-1 state dicts (and the reference code's): attention's ``qkv`` with rows interleaved
    as ``(h e three)``, SwiGLU's separate ``w1`` (the gate) and ``w2``. Loaded, the layers compute
    what those weights meant."""
    torch.manual_seed(0)
    heads, channels, m = 4, 32, 8
    attention = BallAttention(channels, heads, m, dimensionality=3)
    old = {k: v for k, v in attention.state_dict().items() if not k.startswith("in_proj")}
    qkv = torch.nn.Linear(channels, 3 * channels)
    old.update({"qkv.weight": qkv.weight.detach().clone(), "qkv.bias": qkv.bias.detach().clone()})
    attention.load_state_dict(old)
    x = torch.randn(2 * m, channels)
    q, k, v = qkv(x).detach().view(2 * m, heads, channels // heads, 3).unbind(-1)
    ours = attention.in_proj(x).detach().view(2 * m, 3, heads, channels // heads)
    for position, expected in enumerate((q, k, v)):
        torch.testing.assert_close(ours[:, position], expected)

    swiglu = SwiGLU(channels, 2 * channels)
    w1, w2 = torch.nn.Linear(channels, 2 * channels), torch.nn.Linear(channels, 2 * channels)
    swiglu.load_state_dict({"w1.weight": w1.weight.detach(), "w1.bias": w1.bias.detach(),
                            "w2.weight": w2.weight.detach(), "w2.bias": w2.bias.detach(),
                            "w3.weight": swiglu.w3.weight.detach(), "w3.bias": swiglu.w3.bias.detach()})
    with torch.no_grad():
        expected = swiglu.w3(w2(x) * torch.nn.functional.silu(w1(x)))
        torch.testing.assert_close(swiglu(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("block_bytes", [1, 3 * 2 * 10 * 8, 2**30])
def test_swiglu_cpu_path_matches_autograd_of_the_equation(monkeypatch, block_bytes):
    """The CPU path (one GEMM for W1 and W2, the gated product per block of rows: one row per
    block, blocks of 3 rows and 2 left over, or all rows at once, with its own backward pass)
    gives the outputs and every gradient of autograd through the equation, for inputs with
    leading batch dimensions, with and without autograd."""
    monkeypatch.setattr(swiglu_ops, "BLOCK_BYTES", block_bytes)
    calls, row_blocks = [], swiglu_ops._row_blocks
    monkeypatch.setattr(swiglu_ops, "_row_blocks", lambda *args: calls.append(args) or row_blocks(*args))
    torch.manual_seed(5)
    layer = SwiGLU(6, 10).double()
    for parameter in layer.parameters():
        torch.nn.init.normal_(parameter)
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    weights = torch.randn(2, 7, 6, dtype=torch.float64)
    results = []
    for forward in (layer, lambda xs: swiglu_equation(layer, xs)):
        layer.zero_grad()
        xs = x.clone().requires_grad_()
        out = forward(xs)
        (out * weights).sum().backward()
        with torch.no_grad():
            results.append([out.detach(), forward(x), xs.grad] + [p.grad.clone() for p in layer.parameters()])
    assert len(calls) == 3  # the layer took the CPU path: forward, backward, forward without autograd
    for ours, equation in zip(*results):
        torch.testing.assert_close(ours, equation)
    torch.autograd.gradcheck(lambda *args: ops.swiglu_train(*args)[0], tuple(
        t.detach().clone().requires_grad_() for t in (x[0], layer.w12.weight, layer.w12.bias, layer.w3.weight,
                                                      layer.w3.bias)))


@needs_kernels
def test_swiglu_fused_backward_kernel_matches_float64(monkeypatch):
    """The float32 backward pass with the fused elementwise kernel (csrc/swiglu.h) against the float64
    PyTorch path, for gates far in both tails (sigmoid from exp(-|g|) keeps them finite)."""
    calls, kernels = [], _extension.extension()

    class CountingKernels:
        @staticmethod
        def swiglu_backward(*args):
            calls.append(1)
            return kernels.swiglu_backward(*args)

    monkeypatch.setattr(swiglu_ops, "extension", lambda: CountingKernels)
    torch.manual_seed(6)
    layer = SwiGLU(8, 24)
    with torch.no_grad():
        layer.w12.weight[:24].mul_(20)  # gate pre-activations up to about +-60
    exact = SwiGLU(8, 24).double()
    exact.load_state_dict(layer.state_dict())
    x, weights = torch.randn(40, 8), torch.randn(40, 8, dtype=torch.float64)
    results = []
    for module, inputs in ((layer, x), (exact, x.double())):
        xs = inputs.clone().requires_grad_()
        (module(xs) * weights.to(xs.dtype)).sum().backward()
        results.append([xs.grad] + [p.grad for p in module.parameters()])
    assert calls  # float32 took the kernel, float64 the PyTorch path
    for ours, expected in zip(*results):
        assert ours.isfinite().all()
        torch.testing.assert_close(ours.double(), expected, atol=1e-5 * expected.abs().max(), rtol=1e-4)


@needs_kernels
@pytest.mark.parametrize("shape", [(2, 70, 7), (130, 32), (0, 16)])
def test_rms_norm_kernels_match_torch_in_float64(shape, monkeypatch):
    """Our RMSNorm (C++ kernels in float32) against torch.nn.RMSNorm in float64: output, the
    gradients of x and of the weight, with leading dimensions, a width that is no multiple of the
    vector width, no rows; the same with 1 and 2 threads, bit for bit; state dicts interchange."""
    calls = []
    apply = ops.rms_norm
    monkeypatch.setattr(ops, "rms_norm", lambda *args: calls.append(1) or apply(*args))
    torch.manual_seed(10)
    exact = torch.nn.RMSNorm(shape[-1]).double()
    torch.nn.init.normal_(exact.weight)
    ours = RMSNorm(shape[-1])
    ours.load_state_dict(exact.state_dict())
    x, grad = 3 * torch.randn(shape), torch.randn(shape, dtype=torch.float64)
    xs = x.double().requires_grad_()
    exact(xs).backward(grad)
    threads = torch.get_num_threads()
    try:
        runs = []
        for count in (1, 2):
            torch.set_num_threads(count)
            ours.zero_grad()
            x32 = x.clone().requires_grad_()
            out = ours(x32)
            out.backward(grad.float())
            runs.append([out.detach(), x32.grad, ours.weight.grad.clone()])
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2
    for one, two, expected in zip(*runs, [exact(xs).detach(), xs.grad, exact.weight.grad]):
        assert torch.equal(one, two)
        torch.testing.assert_close(one.double(), expected, atol=1e-5 * max([1.0, *expected.abs().flatten().tolist()]),
                                   rtol=1e-5)
    ours.double()(x.double())  # float64 runs torch's own layer
    assert len(calls) == 2


def test_ball_pooling_and_unpooling_follow_eqs_12_13():
    torch.manual_seed(5)
    pool = BallPooling(4, 6, stride=2, dimensionality=2).eval()
    unpool = BallUnpooling(6, 4, stride=2, dimensionality=2).eval()
    for norm in (pool.norm, unpool.norm):
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    x, pos = torch.randn(8, 4), torch.randn(8, 2)
    pooled, centres = pool(x, pos)
    for i in range(4):
        a, b = 2 * i, 2 * i + 1
        centre = (pos[a] + pos[b]) / 2
        torch.testing.assert_close(centres[i], centre)
        feature = torch.cat([x[a], x[b], pos[a] - centre, pos[b] - centre])
        torch.testing.assert_close(pooled[i], pool.norm(pool.proj(feature)[None])[0])
    refined = unpool(pooled, centres, x, pos)
    for i in range(4):
        a, b = 2 * i, 2 * i + 1
        delta = unpool.proj(torch.cat([pooled[i], pos[a] - centres[i], pos[b] - centres[i]]))
        torch.testing.assert_close(refined[a], unpool.norm((x[a] + delta[:4])[None])[0])
        torch.testing.assert_close(refined[b], unpool.norm((x[b] + delta[4:])[None])[0])


def test_stride_one_pooling_is_parameter_free_identity():
    pool = BallPooling(8, 8, stride=1)
    assert sum(p.numel() for p in pool.parameters()) == 0
    x, pos = torch.randn(4, 8), torch.randn(4, 3)
    assert pool(x, pos)[0] is x
    assert sum(p.numel() for p in BallPooling(8, 16, stride=1).parameters()) > 0
    with pytest.raises(ValueError, match="stride"):
        BallPooling(8, 8, stride=3)


def test_embedding_is_eq_14():
    torch.manual_seed(6)
    layer = ErwinEmbedding(3, 8, mp_steps=2, dimensionality=2)
    x, pos = torch.randn(5, 3), torch.randn(5, 2)
    edge_index = torch.tensor([[0, 1, 2, 3, 1], [1, 2, 1, 1, 0]])
    h = layer.lin(x)
    for message, update in zip(layer.messages, layer.updates):
        new = []
        for i in range(5):
            incoming = [j for j, t in zip(edge_index[0].tolist(), edge_index[1].tolist()) if t == i]
            if incoming:
                m = torch.stack([message(torch.cat([h[j], h[i], pos[j] - pos[i]])) for j in incoming]).mean(0)
            else:
                m = torch.zeros(8)
            new.append(h[i] + update(torch.cat([h[i], m])))
        h = torch.stack(new)
    torch.testing.assert_close(layer(x, pos, edge_index), h, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="edge_index"):
        layer(x, pos)
    projection_only = ErwinEmbedding(3, 8, mp_steps=0)
    torch.testing.assert_close(projection_only(x, pos), projection_only.lin(x))


@pytest.mark.parametrize("edge_block", [1, 7])
def test_embedding_edge_blocks_give_the_same_values_and_gradients(monkeypatch, edge_block):
    """Messages summed per block of edges (recomputed in the backward pass) equal the messages of
    all edges at once, in the output and in every gradient."""
    torch.manual_seed(7)
    layer = ErwinEmbedding(3, 8, mp_steps=2).double()
    x, pos = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64)
    edge_index = torch.randint(0, 11, (2, 30))  # node 11 receives no message
    results = []
    for block in (10**9, edge_block):
        monkeypatch.setattr(embedding, "EDGE_BLOCK", block)
        layer.zero_grad()
        xs = x.clone().requires_grad_()
        out = layer(xs, pos, edge_index)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append([out.detach(), xs.grad] + [p.grad.clone() for p in layer.parameters()])
    for whole, blocked in zip(*results):
        torch.testing.assert_close(blocked, whole)


def embedding_values_and_gradients(layer, x, pos, edge_index, weights):
    layer.zero_grad()
    xs = x.clone().requires_grad_()
    out = layer(xs, pos, edge_index)
    (out * weights.to(out.dtype)).sum().backward()
    return [out.detach(), xs.grad] + [p.grad.clone() for p in layer.parameters()]


@needs_kernels
@pytest.mark.parametrize("channels, dimensionality", [(16, 2), (32, 3), (64, 3)])
def test_embedding_kernels_match_the_pytorch_path_in_float64(channels, dimensionality):
    """The C++ message kernels (float32) against the PyTorch path in float64, output and every
    gradient: edges in no order, repeated edges, self-loops, a node without incoming edges."""
    torch.manual_seed(8)
    layer = ErwinEmbedding(5, channels, mp_steps=2, dimensionality=dimensionality)
    exact = ErwinEmbedding(5, channels, mp_steps=2, dimensionality=dimensionality).double()
    exact.load_state_dict(layer.state_dict())
    x, pos = torch.randn(60, 5), torch.randn(60, dimensionality)
    edge_index = torch.randint(0, 60, (2, 700))
    edge_index = torch.cat([edge_index[:, edge_index[1] != 9], torch.tensor([[4, 4], [4, 4]])], dim=1)
    weights = torch.randn(60, channels, dtype=torch.float64)
    ours = embedding_values_and_gradients(layer, x, pos, edge_index, weights)
    expected = embedding_values_and_gradients(exact, x.double(), pos.double(), edge_index, weights)
    for value, reference in zip(ours, expected):
        torch.testing.assert_close(value.double(), reference, atol=2e-6 * reference.abs().max(), rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, pos, edge_index), ours[0])
        empty = layer(x, pos, edge_index[:, :0])
    torch.testing.assert_close(empty, exact(x.double(), pos.double(), edge_index[:, :0]).float())


@needs_kernels
def test_embedding_kernels_are_taken_where_they_apply(monkeypatch):
    calls = []
    apply = ops.edge_messages
    monkeypatch.setattr(ops, "edge_messages", lambda *args: calls.append(1) or apply(*args))
    x, pos = torch.randn(40, 3), torch.randn(40, 3)
    edge_index = knn_graph(pos, 6)
    ErwinEmbedding(3, 8, mp_steps=1)(x, pos, edge_index)  # a width without kernels
    ErwinEmbedding(3, 16, mp_steps=1).double()(x.double(), pos.double(), edge_index)
    assert calls == []
    layer = ErwinEmbedding(3, 16, mp_steps=2)
    weights = torch.randn(40, 16)
    threads = torch.get_num_threads()
    try:
        runs = []
        for count in (1, 2):
            torch.set_num_threads(count)
            runs.append(embedding_values_and_gradients(layer, x, pos, edge_index, weights))
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 4
    # the kernels' own results are bit-identical; PyTorch's GEMMs and reductions around them may
    # round differently with another thread count
    for one, two in zip(*runs):
        torch.testing.assert_close(one, two, atol=1e-6, rtol=1e-6)


@needs_kernels
def test_embedding_kernels_do_not_depend_on_the_thread_count():
    generator = torch.Generator().manual_seed(9)
    per_source, per_target = (torch.randn(50, 32, generator=generator, requires_grad=True) for _ in range(2))
    offset_weight, weight, bias = (torch.randn(*shape, generator=generator, requires_grad=True)
                                   for shape in ((3, 32), (32,), (32,)))
    source, target = torch.randint(0, 50, (2, 400), generator=generator)
    offset = torch.randn(400, 3, generator=generator)
    by_target = embedding._EdgeList.grouped(1, source, target, offset, 50)
    by_source = embedding._EdgeList.grouped(0, *by_target[:3], 50)
    grad = torch.randn(50, 32, generator=generator)
    threads = torch.get_num_threads()
    try:
        runs = []
        for count in (1, 2):
            torch.set_num_threads(count)
            inputs = [t.detach().clone().requires_grad_() for t in (per_source, per_target, offset_weight)]
            summed = ops.edge_messages(*inputs, weight, bias, 1e-5, *by_target, *by_source)
            summed.backward(grad)
            runs.append([summed.detach()] + [t.grad for t in inputs])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*runs):
        assert torch.equal(one, two)


@needs_kernels
def test_embedding_kernel_bindings_reject_out_of_range_edges():
    nodes = torch.zeros(3, 16)
    layer = [nodes, nodes, torch.zeros(3, 16), torch.ones(16), torch.zeros(16)]
    source, target = torch.tensor([0, 3]), torch.tensor([0, 1])
    ptr = torch.tensor([0, 1, 2, 2])
    with pytest.raises(ValueError, match="out of range"):
        _extension.extension().edge_messages_forward(*_extension.arrays(*layer), 1e-5, *_extension.arrays(
            source, target, torch.zeros(2, 3), ptr, torch.empty(3, 16)), 1)
    with pytest.raises(ValueError, match="ptr"):
        _extension.extension().edge_messages_forward(*_extension.arrays(*layer), 1e-5, *_extension.arrays(
            target, target, torch.zeros(2, 3), torch.tensor([0, 2, 1, 2]), torch.empty(3, 16)), 1)


def brute_force_neighbours(pos, batch, count, radius, loop):
    edges = set()
    for i in range(pos.shape[0]):
        same = [j for j in range(pos.shape[0]) if batch[j] == batch[i] and (loop or j != i)]
        dist = {j: float(torch.linalg.norm(pos[i].double() - pos[j].double())) for j in same}
        ranked = sorted((j for j in same if dist[j] <= radius), key=lambda j: (dist[j], j))
        edges |= {(j, i) for j in ranked[:count]}
    return edges


@pytest.mark.parametrize("loop", [False, True])
def test_knn_and_radius_graphs_are_exact(loop, monkeypatch):
    import torch_geometric_erwin.tree.neighbour_search as search
    monkeypatch.setattr(search, "PAIRS_PER_CHUNK", 64)  # torch engine: several chunks, some spanning two graphs
    torch.manual_seed(7)
    pos = torch.rand(45, 3)
    batch = torch.tensor([0] * 3 + [1] * 30 + [2] * 12)
    knn = knn_graph(pos, 5, batch, loop=loop)
    assert set(map(tuple, knn.T.tolist())) == brute_force_neighbours(pos, batch, 5, math.inf, loop)
    radius = radius_graph(pos, 0.3, batch, loop=loop, max_num_neighbors=4)
    assert set(map(tuple, radius.T.tolist())) == brute_force_neighbours(pos, batch, 4, 0.3, loop)


def test_graph_arguments_are_checked():
    pos = torch.rand(4, 2)
    with pytest.raises(ValueError, match="k must"):
        knn_graph(pos, 0)
    with pytest.raises(ValueError, match="r must"):
        radius_graph(pos, -1.0)
    with pytest.raises(ValueError, match="pos"):
        knn_graph(torch.full((4, 2), float("nan")), 2)


def test_layers_reset_and_repr():
    for layer in (BallAttention(8, 2, 4), ErwinBlock(8, 2, 4), BallPooling(8, 16, 2), BallUnpooling(16, 8, 2),
                  ErwinEmbedding(3, 8), SwiGLU(8, 16)):
        with torch.no_grad():
            for parameter in layer.parameters():
                parameter.fill_(5.0)
        layer.reset_parameters()
        for name, parameter in layer.named_parameters():
            assert not torch.all(parameter == 5.0), name
            if name.endswith("bias") and "norm" not in name:
                assert torch.all(parameter == 0), name
        assert type(layer).__name__ in repr(layer)
    assert repr(BallAttention(8, 2, 4)) == "BallAttention(8, num_heads=2, ball_size=4, dimensionality=3)"
