"""ErwinNSA model: presets, input order, batching, tree attributes, gradients, receptive field."""
import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from torch_geometric_erwin.nn.models.erwin_nsa import PRESETS, ErwinNSA
from torch_geometric_erwin.transforms import BallTreeTransform, RotatedTreeTransform
from torch_geometric_erwin.tree import build_ball_tree

from support.models import assert_rows_follow_permutation


def small_model(**overrides):
    torch.manual_seed(0)
    config = dict(channels=16, depth=2, num_heads=4, num_kv_heads=2, compress_ball_size=8, local_ball_size=16,
                  num_selected=3, rotate=45.0, mp_steps=1, query_chunk_size=32)
    config.update(overrides)
    return ErwinNSA(5, **config)


def chain_edges(count: int) -> torch.Tensor:
    src = torch.arange(count - 1)
    return torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], dim=1)


def make_graph(count: int, seed: int) -> Data:
    gen = torch.Generator().manual_seed(seed)
    return Data(x=torch.randn(count, 5, generator=gen), pos=torch.rand(count, 3, generator=gen),
                edge_index=chain_edges(count))


def open_gates(model, global_bias=0.0):
    """Gate biases of every block: compressed and selected set to ``global_bias``, local kept."""
    with torch.no_grad():
        for block in model.blocks:
            heads = block.conv.num_heads
            block.conv.gate.bias[:2 * heads] = global_bias


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_follow_table_3(name):
    model = ErwinNSA.from_preset(name, in_channels=4)
    table = {"cosmology-base": (64, 4, 128), "md-base": (128, 2, 32), "shapenet-base": (64, 6, 128)}[name]
    conv = model.blocks[0].conv
    assert (model.channels, model.depth, conv.local_ball_size) == table
    assert (conv.compress_ball_size, conv.num_selected, conv.head_dim) == (32, 16, 16)
    with pytest.raises(ValueError, match="preset"):
        ErwinNSA.from_preset("nope", in_channels=4)
    old = name.removesuffix("-base")
    with pytest.warns(DeprecationWarning, match=f"now '{name}'"):
        assert ErwinNSA.from_preset(old, in_channels=4).config == model.config


def test_rows_in_input_order():
    assert assert_rows_follow_permutation(small_model().eval(), make_graph(50, 0), seed=3).shape == (50, 16)


def test_batch_equals_graphs_alone_and_transform_attributes_equal_on_the_fly():
    model = small_model(out_channels=2).eval()
    graphs = [make_graph(n, seed) for seed, n in enumerate([40, 7, 29])]
    transform = RotatedTreeTransform(rotate=model.rotate, **model.tree_config)
    transformed = [transform(BallTreeTransform(**model.tree_config)(g.clone())) for g in graphs]
    batch = Batch.from_data_list(transformed)
    with torch.no_grad():
        batched = model(batch)
        on_the_fly = model(batch.x, batch.pos, batch.batch, edge_index=batch.edge_index)
        alone = torch.cat([model(g.x, g.pos, edge_index=g.edge_index) for g in graphs])
    torch.testing.assert_close(batched, on_the_fly)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_parameter():
    model = small_model(out_channels=1)
    data = Batch.from_data_list([make_graph(40, 0), make_graph(25, 1)])
    model(data).square().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing
    names = [name for name, _ in model.named_parameters()]
    for part in ("gate", "compress_k", "compress_v", "out_selected", "out_compressed", "local", "sigma"):
        assert any(part in name for name in names), part


def test_one_block_reaches_outside_local_ball_but_not_other_graphs():
    model = small_model(depth=1, mp_steps=0)
    open_gates(model)
    graphs = [make_graph(60, 0), make_graph(40, 1)]
    data = Batch.from_data_list(graphs)
    x = data.x.clone().requires_grad_(True)
    tree = model.build_tree(data.pos, data.batch)
    out = model(x, data.pos, data.batch, tree=tree)
    slot_of = torch.empty(data.num_nodes, dtype=torch.long)
    slot_of[tree.index[tree.mask]] = torch.nonzero(tree.mask).flatten()
    ball_of = slot_of // model.blocks[0].conv.local_ball_size
    for node in (0, 30, 65):
        grad, = torch.autograd.grad(out[node].sum(), x, retain_graph=True)
        touched = grad.abs().sum(1) > 0
        same_graph = data.batch == data.batch[node]
        assert not bool(touched[~same_graph].any())
        assert bool(touched[same_graph & (ball_of != ball_of[node])].any())


def test_odd_blocks_use_the_rotated_tree():
    """With the global branches switched off, only the rotation lets a node see beyond its ball."""
    data = make_graph(64, 0)
    reach = {}
    for rotate in (0.0, 45.0):
        model = small_model(depth=2, mp_steps=0, rotate=rotate)
        open_gates(model, global_bias=-1e4)  # sigmoid(-1e4) == 0 exactly: local branch only
        x = data.x.clone().requires_grad_(True)
        tree = model.build_tree(data.pos)
        out = model(x, data.pos, tree=tree)
        grad, = torch.autograd.grad(out[0].sum(), x)
        reach[rotate] = int((grad.abs().sum(1) > 0).sum())
    assert reach[0.0] <= 16 < reach[45.0]


def test_autocast_and_compile_run():
    model = small_model()
    data = make_graph(40, 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(data.x, data.pos, edge_index=data.edge_index)
    out.float().sum().backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    tree = model.build_tree(data.pos)
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(data.x, data.pos, edge_index=data.edge_index, tree=tree),
                               model(data.x, data.pos, edge_index=data.edge_index, tree=tree))


def test_validation():
    model = small_model()
    data = make_graph(20, 0)
    with pytest.raises(ValueError, match="x"):
        model(data.x[:, :3], data.pos, edge_index=data.edge_index)
    with pytest.raises(ValueError, match="pos"):
        model(data.x, data.pos[:, :2], edge_index=data.edge_index)
    wrong = build_ball_tree(data.pos, ball_sizes=[4], padding="compact")
    with pytest.raises(ValueError, match="multiples"):
        model(data.x, data.pos, edge_index=data.edge_index, tree=wrong)
    unrotated = build_ball_tree(data.pos, **model.tree_config)
    with pytest.raises(ValueError, match="rotated"):
        model(data.x, data.pos, edge_index=data.edge_index, tree=unrotated)
    with pytest.raises(ValueError, match="depth"):
        small_model(depth=0)
    assert "ErwinNSA(5" in repr(model)


def test_inputs_are_checked_as_erwin_checks_them_with_or_without_a_tree():
    """Positions are checked (finite, squarable in the model's dtype) also when a tree is given; x must
    have the model's dtype; edge_index must index the nodes and, given a batch, stay within each graph."""
    model = small_model()
    data = make_graph(20, 0)
    for tree in (None, model.build_tree(data.pos)):
        with pytest.raises(ValueError, match="pos contains NaN"):
            model(data.x, torch.full_like(data.pos, math.nan), edge_index=data.edge_index, tree=tree)
        with pytest.raises(ValueError, match="rescale the positions"):
            model(data.x, data.pos * 1e22, edge_index=data.edge_index, tree=tree)
    with pytest.raises(TypeError, match=r"x is torch.float64 but the model's parameters are torch.float32: cast x"):
        model(data.x.double(), data.pos, edge_index=data.edge_index)
    with pytest.raises(ValueError, match=r"edge_index must hold node indices in \[0, 20\)"):
        model(data.x, data.pos, edge_index=torch.tensor([[0, 25], [1, 2]]))
    with pytest.raises(TypeError, match="edge_index must have dtype torch.int64"):
        model(data.x, data.pos, edge_index=data.edge_index.int())
    graphs = Batch.from_data_list([data, make_graph(30, 1)])
    across = torch.cat([graphs.edge_index, torch.tensor([[3], [25]])], dim=1)
    with pytest.raises(ValueError, match="edge_index joins nodes of different graphs"):
        model(graphs.x, graphs.pos, graphs.batch, edge_index=across)


def test_float64_and_float16_positions_run_the_float32_model():
    """As in Erwin: float64 positions keep their precision in the geometry, float16 ones are promoted."""
    model = small_model().eval()
    data = make_graph(40, 3)
    with torch.no_grad():
        out = model(data.x, data.pos, edge_index=data.edge_index)
        torch.testing.assert_close(model(data.x, data.pos.double(), edge_index=data.edge_index), out)
        torch.testing.assert_close(model(data.x, data.pos.half(), edge_index=data.edge_index),
                                   model(data.x, data.pos.half().float(), edge_index=data.edge_index))


def test_initialisation_is_the_references():
    # every linear layer truncated normal (std 0.02) with zero bias, as the reference's model-wide
    # init, except the gates, which keep NSA's initialisation (docs/deviations.md)
    torch.manual_seed(0)
    model = ErwinNSA.from_preset("md-base", in_channels=16, out_channels=3)
    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    gates = {name for name in linears if name.endswith(".gate")}
    assert gates and len(linears) > len(gates)
    for name, lin in linears.items():
        if name in gates:
            assert (lin.weight == 0).all() and set(lin.bias.tolist()) == {-2.0, 2.0}
            continue
        assert abs(lin.weight.std().item() - 0.02) < 0.004, name
        assert lin.bias is None or (lin.bias == 0).all(), name


def test_trees_built_otherwise_or_for_other_positions_are_refused():
    """As for Erwin: the build record and the leaf radii are checked before any work."""
    model = small_model().eval()
    graphs = [make_graph(40, 0), make_graph(29, 1)]
    region = model.tree_config["ball_sizes"]
    for angle, ball_sizes, message in (
            (30.0, region, r"tree built with rotate=30 but the model rotates by 45: use RotatedTreeTransform"),
            (45.0, [2 * region[0]], r"tree built with ball_sizes=\[32\] but the model uses ball_sizes=\[16\]")):
        transform = RotatedTreeTransform(rotate=angle, ball_sizes=ball_sizes, strides=[])
        with pytest.raises(ValueError, match=message):
            model(Batch.from_data_list([transform(g.clone()) for g in graphs]))
    first, second = Batch.from_data_list(graphs), Batch.from_data_list([make_graph(40, 2), make_graph(29, 3)])
    tree = model.build_tree(first.pos, first.batch)
    with pytest.raises(ValueError, match="the tree does not fit these positions"):
        model(second.x, second.pos, second.batch, second.edge_index, tree=tree)
    partial = RotatedTreeTransform(rotate=45.0, **model.tree_config)(make_graph(40, 0))
    del partial.tree_mask
    with pytest.raises(ValueError, match="partial tree attributes"):
        model(partial)
    x = first.x.clone()
    x[0, 0] = math.nan
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        model(x, first.pos, first.batch, first.edge_index)


def test_ball_geometry_is_formed_once_per_tree_order(monkeypatch):
    """A forward forms the balls' geometry (the local balls' and the compressed balls') once per tree
    order, for all blocks, and gives the output of blocks that each form their own."""
    from torch_geometric_erwin.nn import BallGeometry
    from torch_geometric_erwin.nn import nsa_conv

    model, data = small_model(depth=4).eval(), make_graph(70, 0)
    with torch.no_grad():
        shared = model(data.x, data.pos, edge_index=data.edge_index)
    compressed, local = [], []
    ball_geometry, from_pos = nsa_conv.ball_geometry, BallGeometry.from_pos.__func__
    monkeypatch.setattr(nsa_conv, "ball_geometry", lambda *args: compressed.append(1) or ball_geometry(*args))
    monkeypatch.setattr(BallGeometry, "from_pos", classmethod(lambda cls, *args: local.append(1) or from_pos(cls, *args)))
    with torch.no_grad():
        model(data.x, data.pos, edge_index=data.edge_index)
    assert (len(compressed), len(local)) == (2, 2)  # the plain and the rotated order

    block = ErwinNSA._block  # a staticmethod: the plain function
    monkeypatch.setattr(ErwinNSA, "_block", staticmethod(lambda *args: block(*args[:-1], None)))
    with torch.no_grad():
        torch.testing.assert_close(model(data.x, data.pos, edge_index=data.edge_index), shared)
    assert (len(compressed), len(local)) == (2 + 2 + 4, 2 + 2 + 4)  # the unused shared pair, then one per block
