"""Activation checkpointing of Erwin and ErwinNSA: the same gradients as the plain models, less memory kept."""
import copy
import os
import weakref

import pytest
import torch
import torch.multiprocessing as mp
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from torch_geometric_erwin import ops
from torch_geometric_erwin.nn import Erwin, knn_graph
from torch_geometric_erwin.nn import ball_attention
from torch_geometric_erwin.nn.ball_attention import BallGeometry
from torch_geometric_erwin.nn.models.erwin import ErwinStage
from torch_geometric_erwin.nn.models.erwin_nsa import ErwinNSA
from torch_geometric_erwin.testing import reference_state_dict

from support.distributed import free_port

ERWIN = dict(hidden_channels=[16, 32, 64], ball_sizes=[8, 8, 4], enc_num_heads=[2, 4, 8], enc_depths=[2, 2, 2],
             dec_num_heads=[2, 4], dec_depths=[2, 2], strides=[2, 2], rotate=45.0, mp_steps=2)
NSA = dict(channels=16, depth=3, num_heads=4, num_kv_heads=2, compress_ball_size=8, local_ball_size=16,
           num_selected=3, rotate=45.0, mp_steps=1, query_chunk_size=32)


def models(kind, dtype):
    """A plain model and a checkpointed copy with the same weights."""
    torch.manual_seed(0)
    plain = (Erwin(5, **ERWIN) if kind == "erwin" else ErwinNSA(5, **NSA)).to(dtype).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.activation_checkpointing = True
    return plain, checkpointed


def inputs(dtype, sizes=(90, 60)):
    generator = torch.Generator().manual_seed(1)
    pos = torch.rand(sum(sizes), 3, generator=generator, dtype=dtype)
    x = torch.randn(sum(sizes), 5, generator=generator, dtype=dtype)
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    return x, pos, batch, knn_graph(pos, 6, batch, loop=True)


def step(model, x, pos, batch, edge_index):
    """Output, gradient of the input and of every parameter after a backward pass of a weighted sum."""
    x = x.clone().requires_grad_()
    out = model(x, pos, batch, edge_index)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out.float() * weights).sum().backward()
    return out, x.grad, {name: p.grad for name, p in model.named_parameters()}


def assert_same_step(a, b, atol, rtol=0.0):
    torch.testing.assert_close(b[0], a[0], atol=atol, rtol=rtol)
    torch.testing.assert_close(b[1], a[1], atol=atol, rtol=rtol)
    assert a[2].keys() == b[2].keys()
    for name in a[2]:
        assert (a[2][name] is None) == (b[2][name] is None), name
        if a[2][name] is not None:
            torch.testing.assert_close(b[2][name], a[2][name], atol=atol, rtol=rtol, msg=name)


class CallCounter:
    """Counts calls of callables, each given as ``label=(owner, attribute name)`` (patched on the owner)."""

    def __init__(self, monkeypatch, **callables):
        self.counts = {label: 0 for label in callables}
        for label, (owner, name) in callables.items():
            original = getattr(owner, name)

            def counted(*args, _original=original, _label=label):
                self.counts[_label] += 1
                return _original(*args)
            monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize("kind", ["erwin", "erwin-nsa"])
def test_float64_gradients_equal_the_plain_model(kind, monkeypatch):
    plain, checkpointed = models(kind, torch.float64)
    data = inputs(torch.float64)
    expected = step(plain, *data)
    counter = CallCounter(monkeypatch, blocked=(ball_attention._BallAttentionFunction, "apply"))
    got = step(checkpointed, *data)
    assert_same_step(expected, got, atol=1e-10)
    if kind == "erwin":
        blocks = sum(ERWIN["enc_depths"]) + sum(ERWIN["dec_depths"])
        # every block ran twice: in the forward pass and again in the backward pass
        assert counter.counts["blocked"] == 2 * blocks
        # BatchNorm, outside the checkpoints, updated its statistics once
        for a, b in zip(plain.buffers(), checkpointed.buffers()):
            assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["erwin", "erwin-nsa"])
def test_float32_kernel_paths_give_the_plain_gradients(kind, monkeypatch):
    if not ops.available("ball_attention", torch.float32):
        pytest.skip("the C++ extension is not built")
    plain, checkpointed = models(kind, torch.float32)
    data = inputs(torch.float32)
    expected = step(plain, *data)
    counter = CallCounter(monkeypatch, kernel=(ops, "ball_attention"),
                          blocked=(ball_attention._BallAttentionFunction, "apply"))
    got = step(checkpointed, *data)
    assert_same_step(expected, got, atol=1e-5, rtol=1e-5)
    blocks = (sum(ERWIN["enc_depths"]) + sum(ERWIN["dec_depths"])) if kind == "erwin" else NSA["depth"]
    assert counter.counts == {"kernel": 2 * blocks, "blocked": 0}


def test_bf16_autocast_matches_the_plain_model_under_autocast():
    plain, checkpointed = models("erwin", torch.float32)
    data = inputs(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = step(plain, *data)
        got = step(checkpointed, *data)
    assert got[0].dtype == torch.bfloat16
    assert_same_step(expected, got, atol=2e-2, rtol=2e-2)


@pytest.mark.slow
def test_compile_matches_eager():
    plain, checkpointed = models("erwin", torch.float32)
    data = inputs(torch.float32)
    expected = step(plain, *data)
    got = step(torch.compile(checkpointed, backend="aot_eager"), *data)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[1], expected[1], atol=1e-5, rtol=1e-4)
    # the compiled graph traces the composite layers, eager runs the C++ kernels: float32 rounding apart
    for name, grad in expected[2].items():
        torch.testing.assert_close(checkpointed.get_parameter(name).grad, grad, atol=1e-4, rtol=1e-3, msg=name)


def test_inference_is_unaffected(monkeypatch):
    plain, checkpointed = models("erwin", torch.float32)
    data = inputs(torch.float32)
    calls = []
    monkeypatch.setattr(ErwinStage, "checkpointed", lambda *args: calls.append(args))
    with torch.no_grad():
        out = checkpointed(*data)  # train mode, no autograd
        plain(*data)  # the same BatchNorm statistics
    checkpointed.eval()
    out_eval = checkpointed(*data)  # eval mode, autograd
    assert not calls
    plain.eval()
    torch.testing.assert_close(out_eval, plain(*data))
    assert out.shape == out_eval.shape


class LiveStorages(TorchDispatchMode):
    """Storages of every tensor that ops create while active; :meth:`live_bytes` sums those still alive."""

    def __init__(self):
        super().__init__()
        self.refs = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                self.refs[storage.data_ptr(), storage.nbytes()] = StorageWeakRef(storage)
        return out

    def live_bytes(self):
        return sum(nbytes for (_, nbytes), ref in self.refs.items() if not ref.expired())


def kept_for_backward(model, data):
    """Bytes the forward pass leaves alive for the backward pass (its output included)."""
    import gc
    x, pos, batch, edge_index = data
    with LiveStorages() as mode:
        out = model(x.requires_grad_(), pos, batch, edge_index)
    gc.collect()
    kept = mode.live_bytes()
    out.sum().backward()
    return kept


@pytest.mark.parametrize("kind", ["erwin", "erwin-nsa"])
def test_checkpointed_forward_keeps_a_fraction_of_the_memory(kind):
    plain, checkpointed = models(kind, torch.float32)
    data = inputs(torch.float32, sizes=(512, 512))
    plain_bytes = kept_for_backward(plain, data)
    checkpointed_bytes = kept_for_backward(checkpointed, data)
    assert checkpointed_bytes < 0.35 * plain_bytes, (checkpointed_bytes, plain_bytes)


def test_inference_keeps_one_level_of_geometry_at_a_time(monkeypatch):
    torch.manual_seed(0)
    model = Erwin(5, **ERWIN).eval()
    distances, alive, geometries, formed = [], [], [], []
    from_pos = BallGeometry.from_pos.__func__

    def recording(cls, pos, ball_size):
        geometry = from_pos(cls, pos, ball_size)
        geometries.append(weakref.ref(geometry))
        distances.append(StorageWeakRef(geometry.rel_pos.untyped_storage()))
        return geometry
    forward = ErwinStage.forward

    def stage(self, x, orders):
        alive.append(sum(not ref.expired() for ref in distances))
        out = forward(self, x, orders)
        formed.extend(geometry()._distance is not None for geometry in geometries if geometry() is not None)
        return out
    monkeypatch.setattr(BallGeometry, "from_pos", classmethod(recording))
    monkeypatch.setattr(ErwinStage, "forward", stage)
    with torch.no_grad():
        model(*inputs(torch.float32))
    levels = len(ERWIN["ball_sizes"])
    assert len(alive) == 2 * levels - 1
    assert max(alive) == 2  # the level's balls and rotated balls
    # the C++ kernel forms each ball's distances from the positions: no [balls, m, m] tensor
    assert formed and (not any(formed)) == ops.available("ball_attention")
    # with autograd (plain training) the decoder takes the encoder's geometry
    distances.clear()
    model.train()
    model(*inputs(torch.float32)).sum().backward()
    assert len(distances) == 2 * levels


def test_option_in_constructors_presets_and_repr():
    model = Erwin.from_preset("md-small", activation_checkpointing=True)
    assert model.activation_checkpointing and "activation_checkpointing=True" in repr(model)
    assert "activation_checkpointing" not in repr(Erwin.from_preset("md-small"))
    nsa = ErwinNSA.from_preset("md-base", in_channels=4, activation_checkpointing=True)
    assert nsa.activation_checkpointing and "activation_checkpointing=True" in repr(nsa)
    for cls, args in ((Erwin, (5,)), (ErwinNSA, (5,))):
        config = ERWIN if cls is Erwin else NSA
        with pytest.raises(TypeError, match="activation_checkpointing must be a bool"):
            cls(*args, **config, activation_checkpointing="block")


def test_from_reference_takes_the_option():
    plain, _ = models("erwin", torch.float32)
    config = {k: v for k, v in ERWIN.items() if k != "hidden_channels"}
    model = Erwin.from_reference(reference_state_dict(plain), c_in=5, c_hidden=ERWIN["hidden_channels"], **config,
                                 activation_checkpointing=True)
    assert model.activation_checkpointing
    for (name, a), b in zip(plain.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def _ddp_worker(rank, world_size, port, result_dir):
    import datetime

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        grads = []
        for model in models("erwin", torch.float64):
            ddp = DistributedDataParallel(model)
            x, pos, batch, edge_index = inputs(torch.float64, sizes=(70 + 20 * rank, 50))
            (ddp(x, pos, batch, edge_index) ** 2).mean().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        torch.save(grads, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_gives_the_plain_gradients(tmp_path, gloo_works):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for plain, checkpointed in ranks:
        for a, b in zip(plain, checkpointed):
            torch.testing.assert_close(b, a, atol=1e-10, rtol=0)
    for a, b in zip(ranks[0][1], ranks[1][1]):  # averaged over both ranks' (different) data
        assert torch.equal(a, b)


class _Built(Exception):
    pass


@pytest.mark.parametrize("model_name", ["erwin", "erwin-nsa", "mpnn"])
def test_cli_flag_reaches_the_backbone(model_name, monkeypatch):
    from torch_geometric_erwin.training import Experiment, UsageError, parser, runner

    built = {}

    def build_task(backbone, args):
        built["backbone"] = backbone(16)
        raise _Built

    experiment = Experiment(name="toy", description="toy", dimensionality=3, preset="md", nsa_preset="md-base",
                            train=dict(steps=1, batch_size=1, lr=1e-3), load=None, build_task=build_task,
                            layout="none")
    argv = ["--data", "unused", "--model", model_name, "--steps", "1"]
    for flag in (False, True):
        args = parser.parse_args(experiment, argv + ["--activation-checkpointing"] * flag)
        if model_name == "mpnn" and flag:
            with pytest.raises(UsageError, match="mpnn has no activation checkpointing"):
                runner.train_models(experiment, args, None, lambda model_name: (None, None, None))
            continue
        with pytest.raises(_Built):
            runner.train_models(experiment, args, None, lambda model_name: (None, None, None))
        assert getattr(built["backbone"], "activation_checkpointing", False) is flag
