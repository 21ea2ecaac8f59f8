"""The baselines of the paper's comparisons: Transolver, PointNet++ and the serialized transformer
(PTv3-style) on batched ``Data``, against brute-force oracles and the claims of their docstrings."""
import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from torch_geometric_erwin.nn import MPNN, Erwin, PointNet2, SerializedTransformer, Transolver
from torch_geometric_erwin.nn.models.pointnet2 import farthest_point_sampling, knn_between, knn_interpolate

F, D, OUT = 4, 3, 2


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread runs them many times faster than threads that wait on
    each other on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def transolver(**overrides):
    return Transolver(F, **{**dict(hidden_channels=16, num_layers=2, num_heads=2, num_slices=6,
                                   out_channels=OUT, dimensionality=D), **overrides})


def transolver_pp(**overrides):
    return transolver(adaptive_temperature=True, gumbel=True, **overrides)


def pointnet2(**overrides):
    return PointNet2(F, **{**dict(hidden_channels=8, out_channels=OUT, dimensionality=D, ratios=[0.5, 0.5],
                                  num_neighbors=6, interpolation_k=[3, 2]), **overrides})


def pointnet2_radius(**overrides):
    return pointnet2(radii=[0.4, 0.8], aggr="mean", **overrides)


def ptv3(**overrides):
    return SerializedTransformer(F, **{**dict(enc_channels=[8, 16], enc_depths=[2, 1], enc_num_heads=[2, 2],
                                              dec_channels=[8], dec_depths=[2], dec_num_heads=[2], strides=[2],
                                              patch_size=8, mlp_ratio=2, out_channels=OUT, dimensionality=D),
                                      **overrides})


def ptv3_tree(**overrides):
    return ptv3(orders=["tree"], **overrides)


MODELS = {"transolver": transolver, "transolver++": transolver_pp, "pointnet2": pointnet2,
          "pointnet2-radius": pointnet2_radius, "ptv3": ptv3, "ptv3-tree": ptv3_tree}
#: The models whose positions enter only relatively (offsets, distances, per-graph grids).
TRANSLATION_INVARIANT = ["pointnet2", "pointnet2-radius", "ptv3"]


def graph(n, seed, dtype=torch.float64, grid=False):
    """A random graph; with ``grid`` its positions are multiples of 2**-10 (exact under integer shifts)."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, D, generator=g, dtype=torch.float64)
    if grid:
        pos = (pos * 1024).floor() / 1024
    return Data(x=torch.randn(n, F, generator=g, dtype=torch.float64).to(dtype), pos=pos.to(dtype))


def build(name, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return MODELS[name]().to(dtype).eval()


def run(model, batch):
    with torch.no_grad():
        return model(batch.x, batch.pos, batch.batch)


@pytest.mark.parametrize("name", MODELS)
def test_shapes_on_batches_of_different_sizes(name):
    model = build(name)
    batch = Batch.from_data_list([graph(n, seed) for seed, n in enumerate((5, 17, 40, 1))])
    out = run(model, batch)
    assert out.shape == (batch.num_nodes, OUT) and torch.isfinite(out).all()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), out)  # forward(data)
        alone = model(batch.x[:5], batch.pos[:5])  # no batch vector: one graph
    assert alone.shape == (5, OUT)
    headless = MODELS[name](out_channels=None).double().eval()
    assert run(headless, batch).shape == (batch.num_nodes, headless.out_channels)


@pytest.mark.parametrize("name", MODELS)
def test_a_graph_does_not_see_the_others_of_its_batch(name):
    """A graph's rows are the same alone, beside other graphs of other sizes, at another place in
    the batch, and when its neighbours in the batch change (padding and masks hide them)."""
    model = build(name)
    a, b, c = graph(23, 1), graph(9, 2), graph(41, 3)
    alone = run(model, Batch.from_data_list([a]))
    first = run(model, Batch.from_data_list([a, b]))[:23]
    middle = run(model, Batch.from_data_list([c, a, b]))[41:64]
    changed = graph(9, 7)
    beside_other = run(model, Batch.from_data_list([a, changed]))[:23]
    for other in (first, middle, beside_other):
        torch.testing.assert_close(other, alone, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", [name for name in MODELS if name != "ptv3-tree"])
def test_rows_follow_a_permutation_of_the_nodes(name):
    """Permutation equivariance within a graph (PointNet++ starts FPS at the node farthest from the
    centroid; curve orders break ties in cells by index, which random points do not share)."""
    model = build(name)
    a, b = graph(30, 4), graph(19, 5)
    batch = Batch.from_data_list([a, b])
    perm = torch.cat([torch.randperm(30, generator=torch.Generator().manual_seed(0)),
                      30 + torch.randperm(19, generator=torch.Generator().manual_seed(1))])
    out = run(model, batch)
    with torch.no_grad():
        permuted = model(batch.x[perm], batch.pos[perm], batch.batch)
    torch.testing.assert_close(permuted, out[perm], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", TRANSLATION_INVARIANT)
def test_translation_invariance(name):
    model = build(name)
    batch = Batch.from_data_list([graph(33, 6, grid=True), graph(20, 8, grid=True)])
    shifted = batch.pos + torch.tensor([3.0, -5.0, 17.0], dtype=batch.pos.dtype)
    out = run(model, batch)
    with torch.no_grad():
        moved = model(batch.x, shifted, batch.batch)
    torch.testing.assert_close(moved, out, atol=1e-10, rtol=1e-10)


def test_transolver_sees_absolute_positions_unless_use_pos_is_off():
    """Transolver feeds the positions as features (not translation invariant, as documented);
    ``use_pos=False`` leaves them out of the model entirely."""
    batch = Batch.from_data_list([graph(25, 9)])
    shifted = batch.pos + 1.0
    model = build("transolver")
    with torch.no_grad():
        assert not torch.allclose(model(batch.x, shifted, batch.batch), run(model, batch), atol=1e-6)
    torch.manual_seed(0)
    blind = transolver(use_pos=False).double().eval()
    with torch.no_grad():
        torch.testing.assert_close(blind(batch.x, torch.rand_like(batch.pos) * 9, batch.batch), run(blind, batch))


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    model = build(name, dtype=torch.float32).train()
    batch = Batch.from_data_list([graph(37, 10, torch.float32), graph(12, 11, torch.float32)])
    model(batch.x, batch.pos, batch.batch).square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("name", ["transolver", "pointnet2", "ptv3"])
def test_one_small_batch_overfits(name):
    torch.manual_seed(0)
    model = MODELS[name](**dict(transolver=dict(num_layers=1), pointnet2={},
                                ptv3=dict(enc_depths=[1, 1], dec_depths=[1]))[name])
    batch = Batch.from_data_list([graph(40, 12, torch.float32), graph(24, 13, torch.float32)])
    p = batch.pos
    target = torch.stack([torch.sin(4 * p[:, 0]) * p[:, 1], torch.cos(3 * p[:, 2]) + batch.x[:, 0]], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        optimizer.zero_grad()
        loss = (model(batch.x, batch.pos, batch.batch) - target).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-10:]) < losses[0] / 20, (losses[0], losses[-1])


def _message(call):
    try:
        call()
    except (ValueError, TypeError) as error:
        return type(error), str(error)
    raise AssertionError("no error raised")


def _small_erwin():
    return Erwin(F, hidden_channels=[8, 16], ball_sizes=[8, 4], enc_num_heads=[2, 2], enc_depths=[1, 1],
                 dec_num_heads=[2], dec_depths=[1], strides=[2], mp_steps=0, dimensionality=D)


BAD_INPUTS = {
    "nan pos": lambda x, pos, batch: (x, pos.index_fill(0, torch.tensor([3]), math.nan), batch),
    "inf pos": lambda x, pos, batch: (x, pos.index_fill(0, torch.tensor([3]), math.inf), batch),
    "nan x": lambda x, pos, batch: (x.index_fill(0, torch.tensor([5]), math.nan), pos, batch),
    "x rows != pos rows": lambda x, pos, batch: (x, pos[:-2], batch),
    "x width": lambda x, pos, batch: (x[:, :3], pos, batch),
    "pos dimension": lambda x, pos, batch: (x, pos[:, :2], batch),
    "batch length": lambda x, pos, batch: (x, pos, batch[:-1]),
    "unsorted batch": lambda x, pos, batch: (x, pos, batch.flip(0)),
    "float batch": lambda x, pos, batch: (x, pos, batch.float()),
    "integer x": lambda x, pos, batch: (x.long(), pos, batch),
    "float64 x": lambda x, pos, batch: (x.double(), pos, batch),
    "integer pos": lambda x, pos, batch: (x, pos.long(), batch),
    "huge pos": lambda x, pos, batch: (x, pos * 1e30, batch),
    "pos not a tensor": lambda x, pos, batch: (x, pos.tolist(), batch),
    "nan pos in the second graph": lambda x, pos, batch: (x, pos.index_fill(0, torch.tensor([25]), math.nan), batch),
    "no nodes": lambda x, pos, batch: (x[:0], pos[:0], batch[:0]),
    "negative graph id": lambda x, pos, batch: (x, pos, batch - 1),
    "2-D batch": lambda x, pos, batch: (x, pos, batch[:, None]),
    "batch not a tensor": lambda x, pos, batch: (x, pos, batch.tolist()),
    "x not a tensor": lambda x, pos, batch: (x.tolist(), pos, batch),
    "1-D x": lambda x, pos, batch: (x[:, 0], pos, batch),
}
#: Inputs Erwin accepts as they are meant: each must give what the plain input gives.
EQUIVALENT_INPUTS = {
    "float64 pos": lambda x, pos, batch: (x, pos.double(), batch),
    "int32 batch": lambda x, pos, batch: (x, pos, batch.int()),
    "an empty graph between the two": lambda x, pos, batch: (x, pos, torch.where(batch == 1, 2, 0)),
    "empty graphs before, between and after": lambda x, pos, batch: (x, pos, 2 * batch + 1),
}
#: An edge of the first graph: the MPNN needs a graph, the others accept and check one.
EDGE = torch.tensor([[0, 1], [1, 0]])


def mpnn():
    return MPNN(F, 8, 2, out_channels=OUT, dimensionality=D)


@pytest.mark.parametrize("case", BAD_INPUTS)
@pytest.mark.parametrize("name", ["transolver", "pointnet2", "ptv3", "mpnn"])
def test_bad_input_gets_erwins_error(name, case):
    """The same checks and messages as Erwin (the shared ``check_model_inputs``), before any work."""
    batch = Batch.from_data_list([graph(20, 14, torch.float32), graph(12, 15, torch.float32)])
    args = BAD_INPUTS[case](batch.x, batch.pos, batch.batch) + (EDGE,)
    torch.manual_seed(0)
    expected = _message(lambda: _small_erwin()(*args))
    got = _message(lambda: (mpnn if name == "mpnn" else MODELS[name])()(*args))
    assert got == expected


@pytest.mark.parametrize("case", EQUIVALENT_INPUTS)
@pytest.mark.parametrize("name", [*MODELS, "mpnn"])
def test_inputs_erwin_accepts_give_the_plain_output(name, case):
    """float64 positions, int32 graph ids and empty graphs anywhere in the batch (graph ids that skip
    or start above 0, as from a filtered batch) change nothing: every node's row is the one of the
    plain batch."""
    data = Batch.from_data_list([graph(20, 14, torch.float32), graph(12, 15, torch.float32)])
    torch.manual_seed(0)
    model = (mpnn if name == "mpnn" else MODELS[name])().eval()
    with torch.no_grad():
        plain = model(data.x, data.pos, data.batch, EDGE)
        given = model(*EQUIVALENT_INPUTS[case](data.x, data.pos, data.batch), EDGE)
    assert given.shape == plain.shape
    torch.testing.assert_close(given, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["transolver", "pointnet2", "ptv3"])
def test_bad_edge_index_and_missing_pos(name):
    model = MODELS[name]()
    batch = Batch.from_data_list([graph(20, 14, torch.float32), graph(12, 15, torch.float32)])
    with pytest.raises(ValueError, match=r"edge_index must hold node indices in \[0, 32\)"):
        model(batch.x, batch.pos, batch.batch, torch.tensor([[0, 40], [1, 2]]))
    with pytest.raises(ValueError, match="edge_index joins nodes of different graphs"):
        model(batch.x, batch.pos, batch.batch, torch.tensor([[0], [25]]))
    with pytest.raises(ValueError, match="pos is required"):
        model(batch.x)
    with torch.no_grad():  # a valid graph is accepted (and not needed)
        model(batch.x, batch.pos, batch.batch, torch.tensor([[0, 21], [1, 22]]))


@pytest.mark.parametrize("name, overrides, error, message", [
    ("transolver", dict(num_heads=3), ValueError, "num_heads = 3 must divide hidden_channels = 16"),
    ("transolver", dict(num_slices=0), ValueError, "num_slices must be a positive int"),
    ("transolver", dict(use_pos=1), TypeError, "use_pos must be a bool"),
    ("transolver", dict(dropout=1.0), ValueError, "dropout"),
    ("pointnet2", dict(ratios=[0.5, 1.5]), ValueError, r"ratios must hold fractions in \(0, 1\]"),
    ("pointnet2", dict(radii=[0.1]), ValueError, "radii must be None or a list of 2 radii"),
    ("pointnet2", dict(interpolation_k=[3]), ValueError, "interpolation_k must have 2 entries"),
    ("pointnet2", dict(aggr="min"), ValueError, "aggr must be"),
    ("pointnet2", dict(fps_start="random"), ValueError, "fps_start must be one of"),
    ("ptv3", dict(enc_depths=[2]), ValueError, "enc_depths must have 2 entries"),
    ("ptv3", dict(orders=["peano"]), ValueError, "orders must be a non-empty list"),
    ("ptv3", dict(enc_num_heads=[3, 2]), ValueError, "num_heads = 3 must divide channels = 8"),
    ("ptv3", dict(out_channels=0), ValueError, "out_channels must be a positive int or None"),
])
def test_bad_configs_fail_at_construction(name, overrides, error, message):
    with pytest.raises(error, match=message):
        MODELS[name](**overrides)


def fps_oracle(pos, ratio, start):
    """Farthest point sampling of one graph, one node at a time in plain Python."""
    n = len(pos)
    count = min(n, math.ceil(n * ratio))
    if start == "first":
        current = 0
    else:
        spread = ((pos - pos.mean(0)) ** 2).sum(1)
        current = int(np.argmax(spread))
    chosen, nearest = [], np.full(n, np.inf)
    for _ in range(count):
        chosen.append(current)
        for i in range(n):
            nearest[i] = min(nearest[i], float(((pos[i] - pos[current]) ** 2).sum()))
        nearest[chosen] = -np.inf
        current = max(range(n), key=lambda i: (nearest[i], -i))  # largest, ties to the lowest index
    return chosen


@pytest.mark.parametrize("start", ["first", "farthest"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("grid", [False, True])
def test_farthest_point_sampling_is_exact(start, ratio, grid):
    """Against the one-node-at-a-time oracle, on random points and on a small integer grid, where
    many distances tie and the lowest index must win."""
    sizes = (13, 1, 30, 7)
    rng = np.random.default_rng(int(ratio * 8) + grid)
    clouds = [rng.integers(0, 3, (n, D)).astype(np.float64) if grid else rng.random((n, D)) for n in sizes]
    pos = torch.from_numpy(np.concatenate(clouds))
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    got = farthest_point_sampling(pos, batch, ratio, start).tolist()
    offsets = np.cumsum((0,) + sizes)
    expected = [int(offsets[g] + i) for g, cloud in enumerate(clouds) for i in fps_oracle(cloud, ratio, start)]
    assert got == expected


def test_knn_between_and_interpolation_match_brute_force():
    rng = np.random.default_rng(3)
    sizes_q, sizes_k = (20, 9), (6, 2)
    pos_q = torch.from_numpy(rng.random((sum(sizes_q), D)))
    pos_k = torch.from_numpy(rng.random((sum(sizes_k), D)))
    batch_q = torch.repeat_interleave(torch.arange(2), torch.tensor(sizes_q))
    batch_k = torch.repeat_interleave(torch.arange(2), torch.tensor(sizes_k))
    index, distance = knn_between(pos_q, batch_q, pos_k, batch_k, 3, 2)
    values = torch.from_numpy(rng.random((sum(sizes_k), 5)))
    interpolated = knn_interpolate(values, pos_k, pos_q, batch_k, batch_q, 3, 2)
    for q in range(pos_q.shape[0]):
        keys = (batch_k == batch_q[q]).nonzero().flatten()
        d2 = ((pos_k[keys] - pos_q[q]) ** 2).sum(1)
        nearest = keys[torch.argsort(d2)[:3]]
        found = index[q][torch.isfinite(distance[q])]
        assert found.tolist() == nearest.tolist()
        w = 1.0 / ((pos_k[nearest] - pos_q[q]) ** 2).sum(1)
        torch.testing.assert_close(interpolated[q], (w[:, None] * values[nearest]).sum(0) / w.sum())


@pytest.mark.parametrize("name", MODELS)
def test_reset_parameters_and_repr(name):
    model = MODELS[name]()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(7.0)
    torch.manual_seed(3)
    model.reset_parameters()
    first = {key: value.clone() for key, value in model.state_dict().items()}
    assert not [key for key, value in first.items() if value.numel() > 1 and bool((value == 7.0).all())]
    torch.manual_seed(3)
    model.reset_parameters()
    for key, value in model.state_dict().items():
        assert torch.equal(value, first[key]), key
    text = repr(model)
    assert text.startswith(type(model).__name__ + f"({F}, {OUT}") and f"dimensionality={D}" in text


@pytest.mark.parametrize("module, cls", [("transolver", Transolver), ("pointnet2", PointNet2),
                                         ("serialized_transformer", SerializedTransformer)])
def test_presets_build_and_run(module, cls):
    import importlib
    presets = importlib.import_module(f"torch_geometric_erwin.nn.models.{module}").PRESETS
    for name, config in presets.items():
        model = cls.from_preset(name, in_channels=F, out_channels=1)
        dim = config["dimensionality"]
        assert model.dimensionality == dim
        if name == next(iter(presets)):
            x, pos = torch.randn(70, F), torch.rand(70, dim)
            with torch.no_grad():
                assert model.eval()(x, pos).shape == (70, 1)
    with pytest.raises(ValueError, match="unknown preset"):
        cls.from_preset("nope", in_channels=F)


@pytest.mark.parametrize("example", ["nbody", "airfoil"])
@pytest.mark.parametrize("model", ["transolver", "pointnet2", "ptv3"])
def test_examples_train_each_baseline(example, model, tmp_path, capsys):
    """The examples' ``--model`` runs each baseline end to end (two steps and an evaluation), in 3-D
    (nbody, generated data) and in 2-D (airfoil's synthetic files, where Transolver has its preset)."""
    import json

    from support.examples import fast_args, run_example
    status = run_example(example, ["--synthetic", "--data", str(tmp_path / "data"), *fast_args(tmp_path, model)])
    assert status == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["model"] for row in rows] == [model] and rows[0]["steps"] == 2
    assert all(math.isfinite(v) for v in rows[0]["test"].values() if not isinstance(v, list))


def test_every_example_offers_the_baselines(capsys):
    from support.examples import ALL_EXAMPLES, ERWIN_ONLY, run_example
    for example in sorted(set(ALL_EXAMPLES) - ERWIN_ONLY):
        with pytest.raises(SystemExit):
            run_example(example, ["--help"])
        help_text = capsys.readouterr().out
        assert all(name in help_text for name in ("transolver", "pointnet2", "ptv3")), example


def parameter_table():
    """The rows ``(model, preset, overrides, in_channels, parameters)`` of docs/baselines.md's table."""
    import ast
    import os

    from support import ROOT
    path = os.path.join(ROOT, "docs", "baselines.md")
    text = open(path, encoding="utf-8").read()
    table = text[text.index("### Parameter counts"):].split("\n\n")[2]
    rows = []
    for line in table.splitlines()[2:]:
        model, name, overrides, in_channels, count, _ = (cell.strip() for cell in line.strip("|").split("|"))
        overrides = {key: ast.literal_eval(value) for key, value in
                     (item.strip().split("=") for item in overrides.split(",") if item.strip())}
        rows.append((model, name, overrides, int(in_channels), int(count.replace(",", ""))))
    return rows


def test_parameter_table_matches_the_models():
    import torch_geometric_erwin.nn as tnn
    from torch_geometric_erwin.nn.models import presets as erwin_presets
    from torch_geometric_erwin.nn.models import pointnet2 as p2, serialized_transformer as st, transolver as ts
    rows = parameter_table()
    presets = {"Transolver": ts.PRESETS, "PointNet2": p2.PRESETS, "SerializedTransformer": st.PRESETS}
    # every preset has a row at the input width the examples feed it
    plain = {(model, name): in_channels for model, name, overrides, in_channels, _ in rows if not overrides}
    assert set(plain) == {(model, name) for model, table in presets.items() for name in table}
    for (model, name), in_channels in plain.items():
        assert in_channels == erwin_presets.PRESETS[name]["in_channels"], (model, name)
    for model, name, overrides, in_channels, count in rows:
        built = getattr(tnn, model).from_preset(name, in_channels=in_channels, **overrides)
        assert sum(p.numel() for p in built.parameters()) == count, (model, name, overrides)


@pytest.mark.parametrize("sizes", [[6], [5, 5, 5], [5, 3, 7], [4, 0, 4]])
def test_slice_and_deslice_match_a_loop_over_graphs(sizes):
    """Transolver's slice tokens and deslicing on the [B, N_max] grid (a view when every graph has N_max
    nodes, a padded copy otherwise) against the sums over each graph's nodes, one graph at a time."""
    from torch_geometric_erwin.nn.models.transolver import SLICE_EPS, SliceLayout, deslice_tokens, slice_tokens
    g = torch.Generator().manual_seed(3)
    batch = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    n, h, m, d = batch.numel(), 2, 4, 3
    weights = torch.rand(n, h, m, generator=g, dtype=torch.float64).softmax(-1)
    features = torch.randn(n, h, d, generator=g, dtype=torch.float64)
    tokens = torch.randn(len(sizes), h, m, d, generator=g, dtype=torch.float64)
    layout = SliceLayout(batch, len(sizes))
    assert layout.full == (len(set(sizes)) == 1)
    sliced, back = slice_tokens(weights, features, layout), deslice_tokens(weights, tokens, layout)
    for b in range(len(sizes)):
        rows = batch == b
        w, f = weights[rows], features[rows]
        expected = torch.einsum("nhm,nhd->hmd", w, f) / (w.sum(0)[..., None] + SLICE_EPS)
        torch.testing.assert_close(sliced[b], expected)
        torch.testing.assert_close(back[rows], torch.einsum("nhm,hmd->nhd", w, tokens[b]))
