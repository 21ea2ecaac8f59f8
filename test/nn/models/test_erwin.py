"""The Erwin model: presets, input order, batching, tree attributes, gradients, compile, autocast, padding."""
import dataclasses
import math

import pytest
import torch
import torch_geometric.transforms as T
from torch.func import functional_call
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from torch_geometric_erwin.nn import BallGeometry, Erwin, knn_graph
from torch_geometric_erwin.nn.models.presets import PRESETS
from torch_geometric_erwin.transforms import BallTreeTransform, RotatedTreeTransform
from torch_geometric_erwin.tree import build_ball_tree

from support.models import assert_rows_follow_permutation

CONFIG = dict(hidden_channels=[8, 16], ball_sizes=[8, 4], enc_num_heads=[2, 4], enc_depths=[2, 2],
              dec_num_heads=[2], dec_depths=[2], strides=[2], rotate=45.0, mp_steps=2)


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return Erwin(5, **{**CONFIG, **overrides})


def randomise_batch_norm(model):
    """Eval-mode BatchNorm with non-trivial statistics, so that they take part in the comparisons."""
    generator = torch.Generator().manual_seed(11)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


def make_graph(count, seed, dim=3):
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(count, dim, generator=generator)
    return Data(x=torch.randn(count, 5, generator=generator), pos=pos, edge_index=knn_graph(pos, 4))


# Backbone parameter counts of the reference ErwinTransformer (shared/reference/erwin-experiments.md), in
# millions, as published; the stride-1 presets' reference count includes a pooling layer the reference
# builds and never uses (Linear(s (C + D) -> C) and BatchNorm(C)), which ours leaves out.
REFERENCE_COUNTS = {"cosmology-small": (4.75, 2), "cosmology-medium": (18.9, 1), "cosmology-large": (75.5, 1),
                    "md-small": (4.76, 2), "md-medium": (19.0, 1), "md-large": (75.6, 1),
                    "eagle-small": (4.76, 2), "eagle-medium": (18.9, 1), "eagle-large": (75.6, 1),
                    "shapenet-small": (1.27, 2), "shapenet-medium": (5.0, 1), "shapenet-large": (19.9, 1),
                    "airfoil-small": (1.26, 2), "pipe-small": (1.26, 2), "elasticity-small": (1.26, 2),
                    "plasticity-small": (1.26, 2)}


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_preset_parameter_counts_equal_the_reference(name):
    model = Erwin.from_preset(name)
    count = sum(p.numel() for p in model.parameters())
    config = PRESETS[name]
    for level, stride in enumerate(config["strides"]):
        if stride == 1:
            width = config["hidden_channels"][level]
            count += (width + config["dimensionality"]) * width + width + 2 * width
    expected, digits = REFERENCE_COUNTS[name]
    assert round(count / 1e6, digits) == expected


def test_every_paper_configuration_has_a_preset():
    assert set(PRESETS) == set(REFERENCE_COUNTS)
    with pytest.raises(ValueError, match="unknown preset"):
        Erwin.from_preset("md-huge")
    model = Erwin.from_preset("md-small", in_channels=7, out_channels=3, mp_steps=1)
    assert (model.in_channels, model.out_channels, model.mp_steps) == (7, 3, 1)


def test_rows_in_input_order_and_permutation_equivariance():
    model = randomise_batch_norm(small_model()).eval()
    assert assert_rows_follow_permutation(model, make_graph(70, 0)).shape == (70, 8)


def test_batch_equals_each_graph_alone_and_attributes_equal_on_the_fly():
    model = randomise_batch_norm(small_model()).eval()
    transform = T.Compose([BallTreeTransform(**model.tree_config),
                           RotatedTreeTransform(rotate=model.rotate, **model.tree_config)])
    sizes = [3, 1, 40, 17, 64]  # one-node and tiny graphs are padded up to a whole ball
    graphs = [make_graph(n, seed) for seed, n in enumerate(sizes)]
    batch = next(iter(DataLoader([transform(g.clone()) for g in graphs], batch_size=len(graphs))))
    with torch.no_grad():
        batched = model(batch)
        on_the_fly = model(batch.x, batch.pos, batch.batch, batch.edge_index)
        alone = torch.cat([model(g.x, g.pos, edge_index=g.edge_index) for g in graphs])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(on_the_fly, batched, atol=1e-6, rtol=1e-5)


def test_graphs_are_never_mixed():
    """One graph's output does not depend on another graph of the batch (autograd)."""
    model = small_model().train()
    graphs = [make_graph(20, 0), make_graph(37, 1)]
    batch = Batch.from_data_list(graphs)
    x = batch.x.clone().requires_grad_(True)
    model(x, batch.pos, batch.batch, batch.edge_index)[:20].sum().backward()
    # BatchNorm statistics in training mode are the only coupling allowed; in eval mode none
    model.eval()
    x.grad = None
    model(x, batch.pos, batch.batch, batch.edge_index)[:20].sum().backward()
    assert x.grad[20:].abs().max() == 0 and x.grad[:20].abs().max() > 0


def test_rotation_reaches_beyond_the_ball():
    """With rotated trees, an output node depends on nodes outside its own ball at level 0."""
    model = small_model(enc_depths=[2, 0], dec_depths=[0], rotate=45.0, mp_steps=0, decode=True).eval()
    data = make_graph(64, 3)
    tree = model.build_tree(data.pos)
    x = data.x.clone().requires_grad_(True)
    node = int(tree.index[0])
    model(x, data.pos, tree=tree)[node].sum().backward()
    ball = set(tree.index[:8].tolist())
    outside = [i for i in range(64) if i not in ball]
    assert x.grad[outside].abs().sum() > 0


def test_gradients_match_finite_differences_and_reach_every_parameter():
    model = small_model(hidden_channels=[4, 8], enc_num_heads=[2, 2], dec_num_heads=[2], ball_sizes=[4, 2],
                        mp_steps=1).double().eval()
    data = make_graph(11, 4)
    pos, edge_index = data.pos.double(), data.edge_index
    tree = model.build_tree(pos)
    names = ["embedding.lin.weight", "encoder.0.blocks.1.attention.sigma", "pool.0.proj.bias",
             "decoder.0.blocks.0.mlp.w3.weight"]
    params = {name: param for name, param in model.named_parameters()}

    def run(x, *chosen):
        return functional_call(model, {**params, **dict(zip(names, chosen))}, (x, pos, None, edge_index, tree))

    inputs = (data.x.double().requires_grad_(True),
              *[params[name].detach().clone().requires_grad_(True) for name in names])
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)

    model.float().train()
    model(data.x, data.pos, edge_index=data.edge_index).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_compile_matches_eager():
    model = randomise_batch_norm(small_model()).eval()
    data = make_graph(50, 5)
    tree = model.build_tree(data.pos)
    compiled = torch.compile(model, backend="aot_eager")
    eager = model(data.x, data.pos, edge_index=data.edge_index, tree=tree)
    out = compiled(data.x, data.pos, edge_index=data.edge_index, tree=tree)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-4)
    out.square().mean().backward()
    assert model.encoder[0].blocks[1].attention.sigma.grad is not None
    # building the tree and the graph inside the compiled call stays outside the graph and still works
    torch.testing.assert_close(compiled(data.x, data.pos), model(data.x, data.pos), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["train", "no_grad"])
def test_network_compiles_whole_with_the_kernels(mode):
    """``torch.compile(model.network, fullgraph=True)`` traces the network into one graph that calls
    the custom ops (through their fake and autograd registrations, under AOT autograd) and
    reproduces eager outputs and gradients."""
    from torch._dynamo.backends.registry import lookup_backend

    model = randomise_batch_norm(small_model(hidden_channels=[16, 32])).train(mode == "train")
    data = make_graph(50, 5)
    pos = data.pos
    tree = model.build_tree(pos)
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(model.network, fullgraph=True, backend=recording)
    with torch.set_grad_enabled(mode == "train"):
        eager = model(data.x, pos, edge_index=data.edge_index, tree=tree)
        expected = torch.autograd.grad(eager.square().mean(), list(model.parameters())) if mode == "train" else ()
        out = compiled(data.x, pos, data.edge_index, tree)
        got = torch.autograd.grad(out.square().mean(), list(model.parameters())) if mode == "train" else ()
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-4)
    for (name, _), a, b in zip(model.named_parameters(), got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    called = {str(node.target).split(".")[1] for gm in graphs for node in gm.graph.nodes
              if node.op == "call_function" and str(node.target).startswith("erwin.")}
    swiglu = "swiglu_train" if mode == "train" else "swiglu"
    assert len(graphs) == 1 and called == {"ball_attention", "rms_norm", swiglu, "edge_messages"}, called


@pytest.mark.slow
def test_inductor_compile_matches_eager():
    model = randomise_batch_norm(small_model()).eval()
    data = make_graph(50, 5)
    compiled = torch.compile(model)
    out = compiled(data.x, data.pos, edge_index=data.edge_index)
    torch.testing.assert_close(out, model(data.x, data.pos, edge_index=data.edge_index), atol=1e-4, rtol=1e-3)
    out.sum().backward()


def test_bf16_autocast_stays_close():
    model = randomise_batch_norm(small_model()).eval()
    data = make_graph(60, 6)
    with torch.no_grad():
        reference = model(data.x, data.pos, edge_index=data.edge_index)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(data.x, data.pos, edge_index=data.edge_index)
    assert torch.isfinite(low).all()
    assert float((low.float() - reference).norm() / reference.norm()) < 0.05


def test_decode_false_returns_the_coarsest_level():
    model = small_model(decode=False).eval()
    graphs = Batch.from_data_list([make_graph(20, 0), make_graph(40, 1)])
    h, batch = model(graphs.x, graphs.pos, graphs.batch, graphs.edge_index)
    tree = model.build_tree(graphs.pos, graphs.batch)
    assert h.shape == (tree.num_slots // 2, 16) and model.out_channels == 16
    assert torch.equal(batch, tree.slot_batch(1))
    assert not hasattr(model, "decoder")


def test_compact_padding_trains_as_well_as_pow2():
    """Same model, two paddings: both fit a small regression; the compact tree uses fewer slots."""
    graphs = [make_graph(40 + 7 * i, i) for i in range(4)]
    for g in graphs:
        g.y = torch.sin(4 * g.pos).sum(1, keepdim=True)
    batch = Batch.from_data_list(graphs)
    losses = {}
    for padding in ("pow2", "compact"):
        model = small_model(padding=padding, out_channels=1)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(40):
            optimiser.zero_grad()
            loss = (model(batch) - batch.y).square().mean()
            loss.backward()
            optimiser.step()
        losses[padding] = float(loss)
    initial = float(batch.y.var())
    assert losses["pow2"] < 0.5 * initial and losses["compact"] < 0.5 * initial
    assert 0.33 < losses["compact"] / losses["pow2"] < 3.0
    pow2 = build_ball_tree(batch.pos, batch.batch, ball_sizes=[8, 4], strides=[2])
    compact = build_ball_tree(batch.pos, batch.batch, ball_sizes=[8, 4], strides=[2], padding="compact")
    assert compact.num_slots < pow2.num_slots


@pytest.mark.parametrize("overrides, message", [
    (dict(enc_depths=[2]), "enc_depths must have 2 entries"),
    (dict(hidden_channels=[8, 16, 32]), "hidden_channels must have 2 entries"),
    (dict(dec_num_heads=[3]), "does not divide"),
    (dict(enc_num_heads=[2, 3]), "does not divide"),
    (dict(ball_sizes=[6, 4]), "power"),
    (dict(strides=[3]), "power"),
    (dict(strides=[2, 2]), "strides"),
    (dict(padding="none"), "padding"),
    (dict(knn=0), "knn"),
    (dict(out_channels=0), "out_channels"),
    (dict(decode=False, out_channels=3), "out_channels needs decode=True"),
    (dict(ball_sizes=[2**31, 4]), r"need at least 2147483648 \(2\*\*31\) tree slots"),
    (dict(ball_sizes=[8, 2**20], strides=[2**20]), r"2\*\*40"),
])
def test_bad_configs_fail_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_model(**overrides)


def test_bad_inputs_fail_before_any_work():
    model = small_model()
    data = make_graph(20, 0)
    with pytest.raises(ValueError, match=r"x must have shape \[num_nodes, 5\]"):
        model(data.x[:, :3], data.pos)
    with pytest.raises(ValueError, match="pos must have shape"):
        model(data.x, data.pos[:10])
    with pytest.raises(ValueError, match="pos"):
        model(data.x, torch.full_like(data.pos, math.nan))
    with pytest.raises(ValueError, match="batch"):
        model(data.x, data.pos, torch.tensor([1] * 10 + [0] * 10))
    with pytest.raises(ValueError, match="edge_index"):
        model(data.x, data.pos, edge_index=torch.tensor([[0, 25], [1, 2]]))
    with pytest.raises(TypeError, match="x must be floating"):
        model(data.x.long(), data.pos)
    with pytest.raises(TypeError, match=r"x is torch.float64 but the model's parameters are torch.float32: cast x"):
        model(data.x.double(), data.pos)
    tree = build_ball_tree(data.pos, ball_sizes=[8, 4], strides=[2])
    with pytest.raises(ValueError, match="rotated order"):
        model(data.x, data.pos, tree=tree)
    with pytest.raises(ValueError, match="nodes"):
        model(data.x[:10], data.pos[:10], tree=tree)


def test_edges_between_graphs_of_a_batch_are_rejected():
    """An edge joining two graphs of a batch would mix them in the embedding, where a batch must give
    each graph's rows as alone; without a batch vector all nodes are one graph and the edge is fine."""
    model = small_model().eval()
    graphs = Batch.from_data_list([make_graph(20, 0), make_graph(30, 1)])
    across = torch.cat([graphs.edge_index, torch.tensor([[3], [25]])], dim=1)
    with pytest.raises(ValueError, match="edge_index joins nodes of different graphs"):
        model(graphs.x, graphs.pos, graphs.batch, edge_index=across)
    with torch.no_grad():
        model(graphs.x, graphs.pos, edge_index=across)


def test_training_on_a_batch_pooled_to_one_slot_fails_clearly(monkeypatch):
    """In training, BatchNorm takes batch statistics, which need two rows. A batch whose coarsest level
    has a single slot (only possible with a last ball size of 1, for one graph of at most prod(strides)
    nodes) is rejected before any work, naming the cause, instead of failing inside the pooling; two
    graphs train, and eval mode runs the single graph."""
    model = small_model(ball_sizes=[2, 1]).train()
    data = make_graph(2, 0)
    tree = model.build_tree(data.pos)
    with monkeypatch.context() as patch:
        patch.setattr(model, "build_tree", lambda *args: pytest.fail("work began before the check"))
        for given in (None, tree):
            with pytest.raises(ValueError, match="too few nodes to train"):
                model(data.x, data.pos, edge_index=data.edge_index, tree=given)
    model(Batch.from_data_list([data, make_graph(2, 1)])).sum().backward()
    with torch.no_grad():
        assert model.eval()(data).shape == (2, 8)


def test_malformed_trees_are_rejected():
    """A tree given by hand is checked before use: each node marked once, slots within their graph,
    rotated orders permutations within each graph, graphs equal to the input's."""
    model = small_model()
    graphs = Batch.from_data_list([make_graph(20, 0), make_graph(30, 1)])
    x, pos, batch = graphs.x, graphs.pos, graphs.batch
    tree = model.build_tree(pos, batch)
    model(x, pos, batch, tree=tree)  # the intact tree runs
    marked = tree.mask.nonzero().flatten()
    duplicate = tree.index.clone()
    duplicate[marked[1]] = duplicate[marked[0]]
    across = tree.index.clone()
    across[(~tree.mask[:int(tree.ptr[1])]).nonzero()[0]] = 25  # a padding slot of the first graph repeats a
    # node of the second
    rotated = [r.clone() for r in tree.rotated]
    rotated[1][0] = rotated[1][1]
    swapped = [r.clone() for r in tree.rotated]
    swapped[0][[0, -1]] = swapped[0][[-1, 0]]  # a permutation, but between graphs
    for broken, message in ((dict(index=duplicate), "exactly one slot"), (dict(index=across), "other graphs"),
                            (dict(rotated=rotated), r"rotated\[1\] must be a permutation"),
                            (dict(rotated=swapped), r"rotated\[0\] moves slots between graphs")):
        with pytest.raises(ValueError, match=message):
            model(x, pos, batch, tree=dataclasses.replace(tree, **broken))
    with pytest.raises(ValueError, match="do not match the input"):
        model(x, pos, None, tree=tree)


def test_extreme_coordinates_and_half_precision_positions():
    """Coordinates that a float32 model cannot square (1e22: metres of a cosmological box) fail with
    a clear error; large ones (1e15) and balls far from the origin keep exact ball geometry and a
    finite output; float16 positions run the float32 model."""
    model = small_model().eval()
    data = make_graph(40, 3)
    with pytest.raises(ValueError, match="rescale the positions"):
        model(data.x, data.pos * 1e22)
    with torch.no_grad():
        assert torch.isfinite(model(data.x, data.pos * 1e15)).all()
        half = model(data.x, data.pos.half())
        torch.testing.assert_close(half, model(data.x, data.pos.half().float()))
    for pos in (data.pos * 1e15, data.pos + 1e4):
        geometry = BallGeometry.from_pos(pos, 8)
        balls = pos.double().view(-1, 8, 3)
        exact = (balls[:, :, None] - balls[:, None]).norm(dim=-1)
        torch.testing.assert_close(geometry.distance.double(), exact, rtol=1e-5, atol=1e-5 * float(exact.max()))


def _transformed(graphs, angle=45.0, ball_sizes=(8, 4), strides=(2,), padding="pow2"):
    transform = T.Compose([BallTreeTransform(list(ball_sizes), list(strides), padding),
                           RotatedTreeTransform(angle, list(ball_sizes), list(strides), padding)])
    return Batch.from_data_list([transform(g.clone()) for g in graphs])


@pytest.mark.parametrize("build, message", [
    (dict(angle=30.0), r"tree built with rotate=30 but the model rotates by 45: use "
                       r"RotatedTreeTransform\(rotate=model.rotate, \*\*model.tree_config\), here "
                       r"RotatedTreeTransform\(rotate=45, ball_sizes=\[8, 4\], strides=\[2\], padding='pow2'\)"),
    (dict(ball_sizes=(16, 8)), r"tree built with ball_sizes=\[16, 8\] but the model uses ball_sizes=\[8, 4\]"),
    (dict(padding="compact"), r"tree built with padding='compact' but the model uses padding='pow2'"),
    (dict(strides=(1,)), r"tree built with strides=\[1\] but the model uses strides=\[2\]"),
])
def test_tree_attributes_built_for_another_configuration_are_refused(build, message):
    """Each of these trees has slot counts the model accepts, and the model ran on them and returned
    other outputs than on its own trees; the build record names the difference and the fix."""
    model = small_model().eval()
    graphs = [make_graph(20, 0), make_graph(37, 1)]
    with pytest.raises(ValueError, match=message):
        model(_transformed(graphs, **build))
    given = build_ball_tree(*(lambda b: (b.pos, b.batch))(Batch.from_data_list(graphs)),
                            ball_sizes=list(build.get("ball_sizes", (8, 4))),
                            strides=list(build.get("strides", (2,))), padding=build.get("padding", "pow2"),
                            rotate=build.get("angle", 45.0))
    batch = Batch.from_data_list(graphs)
    with pytest.raises(ValueError, match=message.split(":")[0] + r": build it with model.build_tree"):
        model(batch.x, batch.pos, batch.batch, batch.edge_index, tree=given)
    with torch.no_grad():  # the model's own configuration runs, and equals the on-the-fly build
        torch.testing.assert_close(model(_transformed(graphs)), model(batch.x, batch.pos, batch.batch,
                                                                      batch.edge_index))


def test_a_model_without_rotated_blocks_accepts_any_angle():
    model = small_model(enc_depths=[1, 1], dec_depths=[1]).eval()
    graphs = [make_graph(20, 0), make_graph(37, 1)]
    batch = Batch.from_data_list(graphs)
    with torch.no_grad():
        torch.testing.assert_close(model(_transformed(graphs, angle=30.0)),
                                   model(batch.x, batch.pos, batch.batch, batch.edge_index))


def test_a_tree_of_other_positions_is_refused():
    """A tree of another batch with the same graph sizes passes every structural check; the leaf radii
    recorded at build time show it does not fit. Rigid motions and uniform scaling of the positions,
    which leave the partition as it was, pass."""
    model = small_model().eval()
    first = Batch.from_data_list([make_graph(20, 0), make_graph(37, 1)])
    second = Batch.from_data_list([make_graph(20, 2), make_graph(37, 3)])
    tree = model.build_tree(first.pos, first.batch)
    with pytest.raises(ValueError, match="the tree does not fit these positions"):
        model(second.x, second.pos, second.batch, second.edge_index, tree=tree)
    stale = _transformed([make_graph(20, 0), make_graph(37, 1)])
    stale.pos = second.pos
    with pytest.raises(ValueError, match="the tree does not fit these positions"):
        model(stale)
    one = _transformed([make_graph(12, 4)])  # a single ball: caught inside it
    one.pos = one.pos[torch.randperm(12, generator=torch.Generator().manual_seed(0))]
    with pytest.raises(ValueError, match="the tree does not fit these positions"):
        model(one)
    moved = _transformed([make_graph(20, 0), make_graph(37, 1)])
    moved.pos = 3.0 * moved.pos + torch.tensor([1e3, -5.0, 2.0])
    with torch.no_grad():
        model(moved)


def test_partial_or_unrecorded_tree_attributes_are_refused():
    model = small_model().eval()
    data = _transformed([make_graph(20, 0)]).to_data_list()[0]
    for key, message in (("tree_mask", r"partial tree attributes .*missing tree_mask"),
                         ("tree_radius", "partial tree attributes .*missing tree_radius"),
                         ("tree_build", "without a tree_build record: they were built by an older"),
                         ("tree_index", "partial tree attributes")):
        broken = data.clone()
        del broken[key]
        with pytest.raises(ValueError, match=message):
            model(broken)
    mixed = Batch.from_data_list([_transformed([make_graph(20, 0)], angle=30.0).to_data_list()[0], data])
    with pytest.raises(ValueError, match="the graphs of this batch carry trees built differently"):
        model(mixed)


def test_non_finite_features_are_refused(monkeypatch):
    model = small_model().eval()
    data = make_graph(20, 0)
    x = data.x.clone()
    x[3, 1] = math.inf
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        model(x, data.pos, edge_index=data.edge_index)
    x[3, 1] = math.nan
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        model(x, data.pos, edge_index=data.edge_index)
    monkeypatch.setenv("TORCH_GEOMETRIC_ERWIN_CHECK_FINITE", "0")
    with torch.no_grad():
        assert torch.isnan(model(x, data.pos, edge_index=data.edge_index)).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_forward_reads_the_inputs_once(monkeypatch, dtype):
    """One pass over x and one over pos per forward, though the tree and the graph are built from
    pos inside it (each of which checks its own input when called alone); a NaN is still caught."""
    from torch_geometric_erwin.tree import engine

    model = small_model().eval()
    data = make_graph(50, 5)
    reads = []
    finite = engine.all_finite
    monkeypatch.setattr(engine, "all_finite", lambda values: reads.append(values.shape) or finite(values))
    with torch.no_grad():
        model(data.x, data.pos.to(dtype))
    assert reads == [data.x.shape, data.pos.shape]
    reads.clear()
    model.build_tree(data.pos)
    assert reads == [data.pos.shape]
    pos = data.pos.clone()
    pos[7, 2] = math.nan
    with pytest.raises(ValueError, match="pos contains NaN or Inf"):
        model(data.x, pos)


def test_decode_false_drops_padding_slots():
    """Without pooling between the levels (stride 1), the coarsest level holds the padding duplicates of
    the finest: they are dropped, one row per node remains, and the rows of a graph are its nodes'."""
    model = small_model(decode=False, ball_sizes=[8, 8], strides=[1]).eval()
    graphs = Batch.from_data_list([make_graph(20, 0), make_graph(37, 1)])
    with torch.no_grad():
        h, batch = model(graphs.x, graphs.pos, graphs.batch, graphs.edge_index)
    assert h.shape == (57, 16) and torch.equal(torch.bincount(batch), torch.tensor([20, 37]))


@pytest.mark.parametrize("model_class", ["Erwin", "ErwinNSA"])
def test_tree_transform_is_the_pre_transform_the_model_reads(model_class):
    """``model.tree_transform()`` attaches the tree the model would build itself: the same outputs
    from a batch of pre-transformed graphs as from the bare graphs, and a tree that passes the
    model's checks (no rebuild: the model reads it from the batch)."""
    from torch_geometric_erwin.nn import ErwinNSA

    torch.manual_seed(0)
    model = (small_model() if model_class == "Erwin" else
             ErwinNSA(5, channels=16, depth=2, num_heads=2, compress_ball_size=4, local_ball_size=8,
                      num_selected=2, mp_steps=1)).eval()
    transform = model.tree_transform()
    assert isinstance(transform, T.Compose)
    graphs = [make_graph(30, 0), make_graph(45, 1)]
    batch = Batch.from_data_list([transform(graph.clone()) for graph in graphs])
    bare = Batch.from_data_list(graphs)
    assert hasattr(batch, "tree_index") and (model.tree_rotation is None) == (not hasattr(batch, "tree_rotated_0"))
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(bare.x, bare.pos, bare.batch, bare.edge_index))
@pytest.mark.parametrize("model_class", ["Erwin", "ErwinNSA"])
def test_graph_transform_builds_the_embedding_graph(model_class, tmp_path):
    """The injected ``graph_transform`` builds the graph the model runs on: the output equals the
    output on that transform's edges given explicitly, and differs from the default kNN-16 graph's;
    a model file keeps the transform, and a callable's edges are checked like a given edge_index."""
    from torch_geometric_erwin.nn import ErwinNSA
    from torch_geometric_erwin.transforms import KNNGraphTransform

    def build(**kwargs):
        torch.manual_seed(0)
        if model_class == "Erwin":
            return small_model(**kwargs).eval()
        return ErwinNSA(5, channels=16, depth=2, num_heads=2, compress_ball_size=4, local_ball_size=8,
                        num_selected=2, mp_steps=1, **kwargs).eval()

    graphs = Batch.from_data_list([make_graph(30, 0), make_graph(45, 1)])
    x, pos, batch = graphs.x, graphs.pos, graphs.batch
    model, default = build(graph_transform=KNNGraphTransform(4)), build()
    assert repr(default.graph_transform) == "KNNGraphTransform(k=16, loop=True)"
    with torch.no_grad():
        out = model(x, pos, batch)
        torch.testing.assert_close(out, model(x, pos, batch, knn_graph(pos, 4, batch)))
        torch.testing.assert_close(default(x, pos, batch), default(x, pos, batch, knn_graph(pos, 16, batch, loop=True)))
        assert not torch.allclose(out, default(x, pos, batch))
    model.save(tmp_path / "model.pt")
    loaded = type(model).from_checkpoint(tmp_path / "model.pt")
    assert repr(loaded.graph_transform) == "KNNGraphTransform(k=4, loop=False)"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, pos, batch), out)

    def ring(data):  # an edge from every node to the next, across the graphs of the batch
        data.edge_index = torch.stack([torch.arange(data.pos.shape[0]), torch.arange(1, data.pos.shape[0] + 1)
                                       % data.pos.shape[0]])
        return data

    custom = build(graph_transform=ring)
    with torch.no_grad():
        single = make_graph(30, 0)
        torch.testing.assert_close(custom(single.x, single.pos), custom(single.x, single.pos, None,
                                                                        ring(single.clone()).edge_index))
    with pytest.raises(ValueError, match="edge_index joins nodes of different graphs"):
        custom(x, pos, batch)
    with pytest.raises(TypeError, match="not a plain value"):
        custom.save(tmp_path / "custom.pt")
    with pytest.raises(TypeError, match="graph_transform must be a transform"):
        build(graph_transform=16)


def test_graph_transform_replaces_radius():
    from torch_geometric_erwin.transforms import KNNGraphTransform, RadiusGraphTransform
    assert repr(small_model(radius=0.3).graph_transform) == "RadiusGraphTransform(r=0.3, loop=True, max_num_neighbors=32)"
    with pytest.raises(ValueError, match="give radius or graph_transform, not both"):
        small_model(radius=0.3, graph_transform=KNNGraphTransform(4))
    with pytest.raises(ValueError, match="names no graph transform"):
        small_model(graph_transform={"transform": "Delaunay"})
    assert isinstance(small_model(graph_transform=RadiusGraphTransform(0.2).to_config()).graph_transform,
                      RadiusGraphTransform)


def test_reference_state_dict_uses_the_reference_names_and_round_trips():
    from torch_geometric_erwin.testing import reference_state_dict
    config = dict(c_in=6, c_hidden=[8, 16, 32], ball_sizes=[8, 8, 4], enc_num_heads=[2, 2, 4], enc_depths=[2, 2, 2],
                  dec_num_heads=[2, 2], dec_depths=[2, 2], strides=[2, 2], rotate=45, mp_steps=2)
    model = Erwin(6, [8, 16, 32], [8, 8, 4], [2, 2, 4], [2, 2, 2], [2, 2], [2, 2], [2, 2], mp_steps=2)
    state = reference_state_dict(model)
    # the reference's decoder runs coarsest first: its decoder.0 is our finest-but-one level's unpooling
    for key in ("embed.embed_fn.weight", "embed.mpnn.message_fns.0.0.weight", "encoder.0.blocks.0.BMSA.qkv.weight",
                "encoder.1.pool.proj.weight", "bottleneck.blocks.1.swiglu.w3.weight",
                "decoder.0.blocks.0.BMSA.sigma_att", "decoder.1.unpool.proj.weight"):
        assert key in state, (key, sorted(state)[:20])
    assert state["decoder.0.blocks.0.norm1.weight"].shape == (16,)  # level 1 of 0..2, width 16
    loaded = Erwin.from_reference(state, **config)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="without a head"):
        reference_state_dict(Erwin(6, [8], [8], [2], [2], [], [], [], out_channels=3))
