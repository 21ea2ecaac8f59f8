"""Ball attention's backends (math, sdpa, flex, kernel, blocked, auto): the same outputs and
gradients, the distance bias kept, padding hidden, and how each is chosen and refused."""
import pytest
import torch

from torch_geometric_erwin.nn import BallAttention, BallGeometry, Erwin, ErwinBlock, attention_backend, set_attention_backend
from torch_geometric_erwin.nn.ball_attention import (ATTENTION_BACKENDS, _math_attention, flex_score_mod,
                                                     flex_supported)
from torch_geometric_erwin import ops

needs_extension = pytest.mark.skipif(not ops.available("ball_attention"), reason="the C++ extension is not built")

# bfloat16 keeps 8 bits of mantissa: every product, sum and softmax input rounds at up to 2**-8
# relative, and the layer's outputs come out within 2e-2 of their largest magnitude of the same
# layer and inputs evaluated in float64 (sdpa, flex and math stay near 5e-3 on these inputs)
BF16_TOLERANCE = 2e-2
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def layer(dtype=torch.float64, channels=16, heads=2, ball_size=8, seed=0):
    torch.manual_seed(seed)
    attention = BallAttention(channels, heads, ball_size).to(dtype)
    with torch.no_grad():  # spread sigma so that every head's bias differs
        attention.sigma.copy_(torch.linspace(-2.0, 0.5, heads))
    return attention


def inputs(dtype=torch.float64, channels=16, ball_size=8, balls=5, seed=1):
    """Random rows and positions, with a partly padded ball and a wholly padded one."""
    gen = torch.Generator().manual_seed(seed)
    slots = balls * ball_size
    x = torch.randn(slots, channels, generator=gen).to(dtype)
    pos = torch.rand(slots, 3, generator=gen).to(dtype)
    key_mask = torch.ones(slots, dtype=torch.bool)
    key_mask[ball_size - 3:ball_size] = False  # the first ball's last three slots
    key_mask[2 * ball_size:3 * ball_size] = False  # the third ball entirely
    return x, pos, key_mask


def direct(attention, x, pos, key_mask):
    """Eqs. 8-10 ball by ball, from the layer's weights (the projection's ``(three h e)`` column
    order), in float64."""
    m, h = attention.ball_size, attention.num_heads
    e = attention.channels // h
    weights = {name: t.detach().double() for name, t in attention.state_dict().items()}
    outs = []
    for ball in range(x.shape[0] // m):
        rows = slice(ball * m, (ball + 1) * m)
        p, real = pos[rows].double(), key_mask[rows]
        # eq. 9's centre over the ball's real points (all slots when it holds padding only)
        rel = p - (p[real].mean(0) if real.any() else p.mean(0))
        xb = x[rows].double() + rel @ weights["pos_proj.weight"].T + weights["pos_proj.bias"]
        qkv = (xb @ weights["in_proj.weight"].T + weights["in_proj.bias"]).view(m, 3, h, e)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        distance = (rel[:, None] - rel[None]).norm(dim=-1)
        hidden = ~key_mask[rows] if not (~key_mask[rows]).all() else torch.zeros(m, dtype=torch.bool)
        heads = []
        for head in range(h):
            scores = q[:, head] @ k[:, head].T / e ** 0.5 + weights["sigma"][head] * distance
            heads.append(scores.masked_fill(hidden, float("-inf")).softmax(-1) @ v[:, head])
        outs.append(torch.cat(heads, dim=1) @ weights["proj.weight"].T + weights["proj.bias"])
    return torch.cat(outs)


def run(attention, backend, x, pos, key_mask, grad=True):
    """Output and gradients (input, every parameter) of ``backend``, under the same upstream gradient."""
    attention.backend = backend
    attention.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(grad)
    if not grad:
        with torch.no_grad():
            return attention(x, pos, key_mask), {}
    out = attention(x, pos, key_mask)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.dtype)
    (out * upstream).sum().backward()
    grads = {name: p.grad.clone() for name, p in attention.named_parameters()}
    grads["x"] = x.grad.clone()
    return out.detach(), grads


def test_math_path_is_eqs_8_to_10_with_padding_hidden():
    attention = layer()
    x, pos, key_mask = inputs()
    out, _ = run(attention, "math", x, pos, key_mask, grad=False)
    torch.testing.assert_close(out, direct(attention, x, pos, key_mask), rtol=0, atol=1e-12)


TRAINING = [("sdpa", torch.float64), ("sdpa", torch.float32), ("blocked", torch.float64),
            ("blocked", torch.float32), pytest.param("kernel", torch.float32, marks=needs_extension)]


@pytest.mark.parametrize("backend,dtype", TRAINING)
def test_training_backends_equal_math(backend, dtype):
    attention = layer(dtype)
    x, pos, key_mask = inputs(dtype)
    expected, expected_grads = run(attention, "math", x, pos, key_mask)
    assert attention.backend_for(x) == "math"
    out, grads = run(attention, backend, x, pos, key_mask)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(out, expected, rtol=0, atol=tol)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=tol, atol=tol, msg=f"gradient of {name}")
    # sigma is trained: its gradient is there and not zero
    assert expected_grads["sigma"].abs().min() > 1e-6


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_flex_forward_equals_math(dtype):
    """On the CPU torch runs flex attention eagerly, forward only (in float64 too)."""
    attention = layer(dtype)
    x, pos, key_mask = inputs(dtype)
    expected, _ = run(attention, "math", x, pos, key_mask, grad=False)
    out, _ = run(attention, "flex", x, pos, key_mask, grad=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=TOLERANCE[dtype])
    # without any padding (the score_mod without the mask)
    expected, _ = run(attention, "math", x, pos, None, grad=False)
    out, _ = run(attention, "flex", x, pos, None, grad=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=TOLERANCE[dtype])


def test_flex_score_mod_gradients_equal_math():
    """The score_mod that flex attention differentiates (on CUDA): called on broadcast indices, as
    flex attention's dense form does, its attention has math's gradients for q, k, v and sigma."""
    n, h, m, e = 4, 3, 8, 4
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(n, h, m, e, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    sigma = torch.tensor([-1.5, -0.2, 0.7], dtype=torch.float64, requires_grad=True)
    rel_pos = torch.rand(n, m, 3, generator=gen, dtype=torch.float64)
    hidden = torch.zeros(n, m, dtype=torch.bool)
    hidden[1, 5:] = True
    b, hh, i, j = (torch.arange(size).view([-1 if axis == dim else 1 for axis in range(4)])
                   for dim, size in enumerate((n, h, m, m)))
    scores = flex_score_mod(sigma, rel_pos, hidden)(q @ k.transpose(-1, -2) * e ** -0.5, b, hh, i, j)
    out = scores.softmax(-1) @ v
    bias = (sigma.view(1, h, 1, 1) * torch.cdist(rel_pos, rel_pos)[:, None]).masked_fill(
        hidden[:, None, None, :], float("-inf"))
    expected = _math_attention(q, k, v, bias)
    upstream = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad((out * upstream).sum(), (q, k, v, sigma))
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (q, k, v, sigma))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)
    assert expected_grads[3].abs().min() > 1e-6


@pytest.mark.parametrize("backend", ["math", "sdpa", "flex", "blocked", pytest.param("kernel", marks=needs_extension)])
def test_padding_slots_reach_no_other_slot(backend):
    """Changing what a hidden slot holds changes nothing at the visible slots of its ball; a wholly
    padded ball attends to all of its slots."""
    dtype = torch.float32
    attention = layer(dtype)
    x, pos, key_mask = inputs(dtype)
    grad = backend != "flex"
    out, _ = run(attention, backend, x, pos, key_mask, grad=grad)
    changed = x.clone()
    changed[~key_mask] += 10.0
    out_changed, _ = run(attention, backend, changed, pos, key_mask, grad=grad)
    torch.testing.assert_close(out_changed[key_mask], out[key_mask], rtol=0, atol=1e-5)
    # in the wholly padded (third) ball, the rows do depend on each other
    assert not torch.allclose(out_changed[16:24], out[16:24], atol=1e-2)


@pytest.mark.parametrize("backend", ["sdpa", "flex", "math"])
def test_bfloat16_within_documented_tolerance(backend):
    attention = layer(torch.float64).to(torch.bfloat16)
    x, pos, key_mask = inputs(torch.float64)
    x, pos = x.to(torch.bfloat16), pos.to(torch.bfloat16)
    expected = direct(attention, x, pos, key_mask)  # the same bfloat16 weights and inputs, in float64
    out, _ = run(attention, backend, x, pos, key_mask, grad=False)
    assert out.dtype == torch.bfloat16
    error = (out.double() - expected).abs().max() / expected.abs().max()
    assert error < BF16_TOLERANCE, error


def test_auto_keeps_cpu_choices_and_picks_flex_elsewhere():
    attention = layer(torch.float32)
    qkv = torch.randn(40, 48)
    assert attention.backend_for(qkv) == ("kernel" if ops.available("ball_attention") else "blocked")
    attention.double()
    assert attention.backend_for(qkv.double()) == "blocked"
    with torch.no_grad():
        assert attention.backend_for(qkv.double()) == "sdpa"
    # a tensor on the meta device stands in for one on a GPU: only its device and dtype are read
    wide = layer(torch.float32, channels=64, heads=2, ball_size=16)
    assert wide.backend_for(torch.empty(32, 192, device="meta")) == "flex"
    assert flex_supported(torch.empty(0, device="meta", dtype=torch.bfloat16), 32, 16)
    assert not flex_supported(torch.empty(0, device="meta", dtype=torch.float64), 32, 16)
    assert not flex_supported(torch.empty(0, device="meta"), 8, 16)  # head width below the tiles
    assert not flex_supported(torch.empty(0), 32, 16)  # the CPU: no backward pass
    assert layer(torch.float32).backend_for(torch.empty(40, 48, device="meta")) == "sdpa"


def test_backends_refused_where_they_cannot_run():
    attention = layer(torch.float64)
    with pytest.raises(ValueError, match="backend must be one of"):
        attention.backend = "fast"
    with pytest.raises(ValueError, match="backend must be one of"):
        BallAttention(16, 2, 8, backend="triton")
    x, pos, key_mask = inputs(torch.float64)
    attention.backend = "kernel"
    with pytest.raises(ValueError, match="backend='kernel' needs float32"):
        attention(x, pos, key_mask)
    attention.backend = "flex"
    with pytest.raises(ValueError, match="cannot train on the CPU"):
        attention(x, pos, key_mask)
    attention.backend = "blocked"
    with pytest.raises(ValueError, match="backend='blocked' needs"):
        attention.backend_for(torch.empty(40, 48, device="meta", dtype=torch.float64))


def test_setter_and_context_manager_reach_every_layer_of_a_model():
    torch.manual_seed(0)
    model = Erwin(4, [16, 32], [8, 8], [2, 4], [1, 1], [2], [1], [2], rotate=45.0, mp_steps=0).double()
    layers = [module for module in model.modules() if isinstance(module, BallAttention)]
    assert len(layers) == sum(isinstance(module, ErwinBlock) for module in model.modules()) > 1
    assert set_attention_backend(model, "math") is model
    assert {attention.backend for attention in layers} == {"math"}
    assert "backend='math'" in repr(layers[0])
    with attention_backend("sdpa"):
        assert {attention.backend_for(torch.empty(8, attention.channels * 3, dtype=torch.float64))
                for attention in layers} == {"sdpa"}
        with attention_backend("auto"):  # "auto" defers to each layer's own backend
            assert layers[0].backend_for(torch.empty(8, 48, dtype=torch.float64)) == "math"
    assert layers[0].backend_for(torch.empty(8, 48, dtype=torch.float64)) == "math"
    with pytest.raises(ValueError, match="no BallAttention"):
        set_attention_backend(torch.nn.Linear(2, 2), "math")
    with pytest.raises(ValueError, match="backend must be one of"):
        with attention_backend("nope"):
            pass
    assert set(ATTENTION_BACKENDS) == {"auto", "math", "sdpa", "flex", "kernel", "blocked"}


def test_erwin_and_block_equal_under_every_training_backend():
    torch.manual_seed(0)
    model = Erwin(4, [16, 32], [8, 8], [2, 4], [1, 1], [2], [1], [2], rotate=45.0, mp_steps=0).double()
    gen = torch.Generator().manual_seed(3)
    pos = torch.rand(45, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(45, 4, generator=gen, dtype=torch.float64)
    batch = torch.tensor([0] * 30 + [1] * 15)
    results = {}
    for backend in ("math", "sdpa", "blocked", "auto"):
        set_attention_backend(model, backend)
        model.zero_grad(set_to_none=True)
        out = model(x, pos, batch)
        out.square().sum().backward()
        results[backend] = (out.detach(), [p.grad.clone() for p in model.parameters()])
    expected, expected_grads = results.pop("math")
    for backend, (out, grads) in results.items():
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-10, msg=backend)
        for grad, expected_grad in zip(grads, expected_grads):
            torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-10, msg=backend)
    block = ErwinBlock(16, 2, 8, backend="math").double()
    h = torch.randn(32, 16, dtype=torch.float64)
    with torch.no_grad():
        expected = block(h, pos[:32])
        block.attention.backend = "flex"
        torch.testing.assert_close(block(h, pos[:32]), expected, rtol=0, atol=1e-10)


def test_flex_on_device_trains_like_math(device):
    """flex attention's backward pass (CUDA: the compiled kernel) against the math path."""
    if device.type == "cpu":
        pytest.skip("torch's flex attention has no CPU backward pass: run with --device cuda")
    attention = layer(torch.float32, channels=64, heads=4, ball_size=16).to(device)
    x, pos, key_mask = (t.to(device) for t in inputs(torch.float32, channels=64, ball_size=16))
    expected, expected_grads = run(attention, "math", x, pos, key_mask)
    out, grads = run(attention, "flex", x, pos, key_mask)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-4, msg=f"gradient of {name}")


@pytest.mark.slow
@pytest.mark.parametrize("padded", [
    False,
    pytest.param(True, marks=pytest.mark.xfail(
        strict=True, reason="torch 2.13's CPU flex template takes only graph inputs as score_mod buffers; "
                            "the padding mask is computed in the graph")),
])
def test_flex_compiled_on_cpu_equals_math(padded):
    """Under torch.compile the flex backend is lowered by inductor (float32; CPU compilation takes
    over 20 s), with the geometry given, so that its positions are inputs of the graph."""
    attention = layer(torch.float32, channels=32, heads=2, ball_size=16)
    x, pos, key_mask = inputs(torch.float32, channels=32, ball_size=16)
    key_mask = key_mask if padded else None
    expected, _ = run(attention, "math", x, pos, key_mask, grad=False)
    attention.backend = "flex"
    torch._dynamo.reset()
    compiled = torch.compile(attention, fullgraph=True)
    with torch.no_grad():
        out = compiled(x, None, key_mask, BallGeometry.from_pos(pos, attention.ball_size))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
