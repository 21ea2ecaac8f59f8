"""The layers, models and tree build on the device under test (``--device cuda`` or
``ERWIN_TEST_DEVICE``; the CPU by default) against the same computation on the CPU in float64
with the math attention backend."""
import pytest
import torch

from torch_geometric_erwin.nn import BallAttention, Erwin, ErwinBlock, ErwinNSA, set_attention_backend
from torch_geometric_erwin.tree import build_ball_tree

# float32 on the device against float64 on the CPU, relative to each tensor's largest magnitude (plus
# a tenth of it absolute, for gradients that are zero in exact arithmetic, such as a bias before a
# norm): a layer's rounding, and a whole model's, whose gradients sum over every slot of many layers
LAYER_TOLERANCE, MODEL_TOLERANCE = 1e-4, 1e-3


def backends(device):
    """The backends that run on ``device``: flex trains only outside the CPU."""
    return ["auto", "sdpa", "math"] + (["flex"] if device.type == "cuda" else [])


def clouds(num_points=(70, 33), features=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    total = sum(num_points)
    batch = torch.repeat_interleave(torch.arange(len(num_points)), torch.tensor(num_points))
    return (torch.randn(total, features, generator=gen, dtype=torch.float64),
            torch.rand(total, 3, generator=gen, dtype=torch.float64), batch)


def assert_close(actual, expected, what, tolerance):
    error = (actual.detach().cpu().double() - expected).abs().max().item()
    bound = tolerance * expected.abs().max().item() + tolerance / 10
    assert error < bound, f"{what}: error {error:.2e} over {bound:.2e}"


def train_step(model, *args, **kwargs):
    """Output and parameter gradients of one forward+backward pass (sum of squares)."""
    model.zero_grad(set_to_none=True)
    out = model(*args, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    out.square().sum().backward()
    return out.detach(), {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def compare_training(make, args, device, backend, tolerance=LAYER_TOLERANCE, kwargs=None):
    kwargs = kwargs or {}
    reference = set_attention_backend(make().double(), "math")
    expected, expected_grads = train_step(reference, *args, **kwargs)
    model = set_attention_backend(make().to(device), backend)
    on_device = [a.to(device=device, dtype=torch.float32 if a.is_floating_point() else a.dtype) for a in args]
    out, grads = train_step(model, *on_device, **{k: v.to(device) for k, v in kwargs.items()})
    assert out.device.type == device.type
    assert_close(out, expected, "output", tolerance)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert_close(grad, expected_grads[name], f"gradient of {name}", tolerance)


@pytest.mark.parametrize("backend", ["auto", "sdpa", "math", "flex"])
def test_ball_attention(device, backend):
    if backend not in backends(device):
        pytest.skip(f"backend {backend!r} does not train on {device}")

    def make():
        torch.manual_seed(0)
        return BallAttention(64, 4, 16)

    x, pos, _ = clouds((64,), features=64)
    key_mask = torch.ones(64, dtype=torch.bool)
    key_mask[10:16] = False
    compare_training(make, (x, pos, key_mask), device, backend)


@pytest.mark.parametrize("backend", ["auto", "sdpa", "flex"])
def test_erwin_block(device, backend):
    if backend not in backends(device):
        pytest.skip(f"backend {backend!r} does not train on {device}")

    def make():
        torch.manual_seed(0)
        return ErwinBlock(32, 2, 16)

    x, pos, _ = clouds((64,), features=32)
    permutation = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    compare_training(make, (x, pos, permutation), device, backend)


@pytest.mark.parametrize("backend", ["auto", "sdpa", "flex"])
def test_erwin_forward_backward(device, backend):
    if backend not in backends(device):
        pytest.skip(f"backend {backend!r} does not train on {device}")

    def make():
        torch.manual_seed(0)
        return Erwin(4, [32, 64], [16, 16], [2, 4], [1, 1], [2], [1], [2], rotate=45.0, mp_steps=1)

    x, pos, batch = clouds()
    compare_training(make, (x, pos, batch), device, backend, MODEL_TOLERANCE)


def test_erwin_nsa_forward(device):
    def make():
        torch.manual_seed(0)
        return ErwinNSA(4, channels=32, depth=2, num_heads=2, num_kv_heads=1, compress_ball_size=8,
                        local_ball_size=16, num_selected=3, rotate=45.0, mp_steps=1, query_chunk_size=32)

    x, pos, batch = clouds()
    reference = set_attention_backend(make().double().eval(), "math")
    model = make().to(device).eval()
    with torch.no_grad():
        expected = reference(x, pos, batch)
        out = model(x.float().to(device), pos.float().to(device), batch.to(device))
    assert out.device.type == device.type
    assert_close(out, expected, "ErwinNSA output", MODEL_TOLERANCE)


@pytest.mark.parametrize("padding", ["pow2", "compact"])
def test_tree_build(device, padding):
    _, pos, batch = clouds((700, 333))
    pos = pos.float()
    config = dict(ball_sizes=[16, 8], strides=[2], rotate=45.0, padding=padding)
    expected = build_ball_tree(pos, batch, **config)
    tree = build_ball_tree(pos.to(device), batch.to(device), **config)
    assert tree.index.device.type == device.type
    for name in ("index", "mask", "ptr", "node_ptr"):
        assert torch.equal(getattr(tree, name).cpu(), getattr(expected, name)), name
    assert len(tree.rotated) == len(expected.rotated) > 0
    for rotated, expected_rotated in zip(tree.rotated, expected.rotated):
        assert torch.equal(rotated.cpu(), expected_rotated)
