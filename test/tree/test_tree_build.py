"""Property and edge-case tests of build_ball_tree against the independent checker in support.tree."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torch_geometric_erwin.tree import build_ball_tree, granularity
from torch_geometric_erwin.tree.engine import cpp_available
from support.tree import check_split_rule, rotated_level_positions

ENGINES = ["torch", pytest.param("cpp", marks=pytest.mark.skipif(not cpp_available(), reason="C++ engine not built"))]
CONFIGS = [(None, None), ([4], []), ([8, 4], [2]), ([16, 8, 4], [2, 2]), ([2, 4], [4])]


def make_cloud(kind: str, num_nodes: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.uniform(-1, 1, (num_nodes, dim))
    if kind == "clustered":
        centres = rng.normal(0, 10, (3, dim))
        return centres[rng.integers(0, 3, num_nodes)] + rng.normal(0, 0.1, (num_nodes, dim))
    if kind == "grid":  # many exact ties on every coordinate
        return rng.integers(0, 3, (num_nodes, dim)).astype(np.float64)
    if kind == "identical":
        return np.full((num_nodes, dim), 0.5)
    if kind == "collinear":
        return np.outer(rng.uniform(-1, 1, num_nodes), rng.normal(size=dim))
    raise ValueError(kind)


@st.composite
def batches(draw, max_graphs=4, max_nodes=150):
    sizes = draw(st.lists(st.integers(1, max_nodes), min_size=1, max_size=max_graphs))
    dim = draw(st.sampled_from([1, 2, 3, 5, 8]))
    kind = draw(st.sampled_from(["uniform", "clustered", "grid", "identical", "collinear"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pos = np.concatenate([make_cloud(kind, n, dim, rng) for n in sizes])
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.from_numpy(pos).to(dtype), batch


def check_tree(pos, batch, tree, padding):
    num_nodes = pos.shape[0]
    grain = granularity(tree.ball_sizes, tree.strides)
    counts = torch.bincount(batch)
    slots = tree.ptr.diff()
    # every node exactly once unmasked; padding repeats nodes of the same graph
    assert torch.equal(torch.sort(tree.index[tree.mask]).values, torch.arange(num_nodes))
    assert torch.equal(batch[tree.index], tree.slot_batch())
    assert torch.equal(tree.node_ptr, torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]))
    # slot counts: enough for the nodes, multiples of the granularity, the mode's size
    assert bool((slots >= counts).all()) and bool((slots % grain == 0).all())
    if padding == "pow2":
        expected = torch.tensor([max(grain, 2 ** math.ceil(math.log2(n))) for n in counts.tolist()])
    else:
        expected = (counts + grain - 1) // grain * grain
    assert torch.equal(slots, expected)
    check_split_rule(pos, tree.index, tree.mask, tree.ptr, tree.node_ptr, grain)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("padding", ["pow2", "compact"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=batches(), config=st.sampled_from(CONFIGS))
def test_tree_follows_split_rule(engine, padding, data, config):
    pos, batch = data
    ball_sizes, strides = config
    tree = build_ball_tree(pos, batch, ball_sizes=ball_sizes, strides=strides, padding=padding,
                           engine_name=engine)
    check_tree(pos, batch, tree, padding)


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=batches(), config=st.sampled_from(CONFIGS[1:]), padding=st.sampled_from(["pow2", "compact"]),
       angle=st.sampled_from([45.0, 30.0, -60.0]))
def test_rotated_partitions(engine, data, config, padding, angle):
    pos, batch = data
    ball_sizes, strides = config
    tree = build_ball_tree(pos, batch, ball_sizes=ball_sizes, strides=strides, rotate=angle, padding=padding,
                           engine_name=engine)
    assert len(tree.rotated) == len(ball_sizes)
    for level, (permutation, points) in enumerate(zip(tree.rotated, rotated_level_positions(pos, tree, angle))):
        level_slots = tree.num_slots // tree.pooling_factor(level)
        assert torch.equal(torch.sort(permutation).values, torch.arange(level_slots))
        # each rotated ball stays inside one graph
        graph_of_slot = tree.slot_batch(level)[permutation].view(-1, ball_sizes[level])
        assert bool((graph_of_slot == graph_of_slot[:, :1]).all())
        # and is a ball of the rotated points under the same split rule
        level_ptr = tree.level_ptr(level)
        check_split_rule(points, permutation, torch.ones_like(permutation, dtype=torch.bool), level_ptr,
                         level_ptr, ball_sizes[level])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=batches(max_nodes=400), config=st.sampled_from(CONFIGS), padding=st.sampled_from(["pow2", "compact"]))
@pytest.mark.skipif(not cpp_available(), reason="C++ engine not built")
def test_engines_agree(data, config, padding):
    pos, batch = data
    ball_sizes, strides = config
    rotate = 45.0 if ball_sizes else 0.0
    trees = [build_ball_tree(pos, batch, ball_sizes=ball_sizes, strides=strides, rotate=rotate, padding=padding,
                             engine_name=engine) for engine in ("cpp", "torch")]
    assert torch.equal(trees[0].index, trees[1].index) and torch.equal(trees[0].mask, trees[1].mask)
    assert all(torch.equal(a, b) for a, b in zip(trees[0].rotated, trees[1].rotated))


def test_reference_layout_five_points():
    # Five points on a line: the documented example of the reference layout.
    pos = torch.tensor([[3.0], [0.0], [2.0], [4.0], [1.0]])
    tree = build_ball_tree(pos)
    # sorted by x: node 1 (0.), 4 (1.), 2 (2.), 0 (3.), 3 (4.); left gets floor(5/2) = 2 points
    assert tree.index.tolist() == [1, 1, 4, 4, 2, 2, 0, 3]
    assert tree.mask.tolist() == [True, False, True, False, True, False, True, True]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("num_nodes", [1, 2, 3])
def test_tiny_graphs_padded_to_a_ball(engine, num_nodes):
    pos = torch.rand(num_nodes, 3)
    tree = build_ball_tree(pos, ball_sizes=[8, 4], strides=[2], rotate=45, engine_name=engine)
    assert tree.num_slots == 8 and int(tree.mask.sum()) == num_nodes
    check_split_rule(pos, tree.index, tree.mask, tree.ptr, tree.node_ptr, 8)
    assert [r.numel() for r in tree.rotated] == [8, 4]


@pytest.mark.parametrize("engine", ENGINES)
def test_huge_coordinates(engine):
    pos = torch.randn(300, 3, dtype=torch.float64) * 1e30
    tree = build_ball_tree(pos, ball_sizes=[16, 8], strides=[2], rotate=45, engine_name=engine)
    check_split_rule(pos, tree.index, tree.mask, tree.ptr, tree.node_ptr, 16)
    pos32 = pos.float()
    tree32 = build_ball_tree(pos32, engine_name=engine)
    check_split_rule(pos32, tree32.index, tree32.mask, tree32.ptr, tree32.node_ptr, 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_one_node_graphs_beside_a_large_graph(engine):
    sizes = torch.tensor([1, 100_000, 1, 1, 7, 1])
    pos = torch.rand(int(sizes.sum()), 3)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    tree = build_ball_tree(pos, batch, ball_sizes=[64, 32], strides=[2], rotate=45, engine_name=engine)
    assert tree.ptr.diff().tolist() == [64, 131072, 64, 64, 64, 64]
    assert torch.equal(batch[tree.index], tree.slot_batch())
    assert torch.equal(torch.sort(tree.index[tree.mask]).values, torch.arange(pos.shape[0]))
    small = tree.ptr[0].item(), tree.ptr[1].item()
    assert (tree.index[small[0]:small[1]] == 0).all()
    for level, permutation in enumerate(tree.rotated):
        graph_of_slot = tree.slot_batch(level)[permutation].view(-1, [64, 32][level])
        assert bool((graph_of_slot == graph_of_slot[:, :1]).all())


def test_compact_padding_example_from_the_issue():
    pos = torch.rand(5000, 3)
    compact = build_ball_tree(pos, ball_sizes=[128, 64], strides=[4], padding="compact")
    pow2 = build_ball_tree(pos, ball_sizes=[128, 64], strides=[4])
    assert granularity([128, 64], [4]) == 256
    assert compact.num_slots == 5120 and pow2.num_slots == 8192


def test_output_on_input_device_and_dtype_independent_of_batch_position():
    torch.manual_seed(0)
    graphs = [torch.rand(n, 3, dtype=torch.float64) for n in (50, 333, 17)]
    pos = torch.cat(graphs)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([50, 333, 17]))
    tree = build_ball_tree(pos, batch, ball_sizes=[16, 8], strides=[2], rotate=45)
    offset = 0
    for g, graph in enumerate(graphs):
        alone = build_ball_tree(graph, ball_sizes=[16, 8], strides=[2], rotate=45)
        lo, hi = tree.ptr[g].item(), tree.ptr[g + 1].item()
        assert torch.equal(tree.index[lo:hi] - offset, alone.index)
        assert torch.equal(tree.mask[lo:hi], alone.mask)
        for level, (batched, single) in enumerate(zip(tree.rotated, alone.rotated)):
            level_lo, level_hi = tree.level_ptr(level)[g].item(), tree.level_ptr(level)[g + 1].item()
            assert torch.equal(batched[level_lo:level_hi] - level_lo, single)
        offset += graph.shape[0]
    assert tree.index.device == pos.device and tree.index.dtype == torch.long and tree.mask.dtype == torch.bool


def test_ptr_and_batch_give_the_same_tree():
    pos = torch.rand(120, 2)
    sizes = torch.tensor([30, 0, 90])
    batch = torch.repeat_interleave(torch.arange(3), sizes)
    ptr = torch.tensor([0, 30, 30, 120])
    a = build_ball_tree(pos, batch, ball_sizes=[8], rotate=30)
    b = build_ball_tree(pos, ptr=ptr, ball_sizes=[8], rotate=30)
    assert torch.equal(a.index, b.index) and torch.equal(a.ptr, b.ptr)
    assert a.ptr.diff().tolist() == [32, 0, 128]


@pytest.mark.parametrize("engine", ENGINES)
def test_any_layout_and_input_type_gives_the_same_tree(engine):
    """Strided positions, positions that require grad, half precision and int32 batch/ptr
    vectors are converted by the build path, never misread."""
    torch.manual_seed(0)
    pos = torch.rand(300, 3)
    sizes = torch.tensor([100, 200])
    batch = torch.repeat_interleave(torch.arange(2), sizes)
    expected = build_ball_tree(pos, batch, ball_sizes=[16], engine_name=engine)
    strided = torch.rand(300, 6)
    strided[:, ::2] = pos  # a view with column stride 2
    variants = {
        "strided": dict(pos=strided[:, ::2]),
        "transposed": dict(pos=pos.t().contiguous().t()),
        "requires grad": dict(pos=pos.clone().requires_grad_()),
        "int32 batch": dict(batch=batch.int()),
        "int32 ptr": dict(batch=None, ptr=torch.tensor([0, 100, 300], dtype=torch.int32)),
    }
    for name, change in variants.items():
        kwargs = {"pos": pos, "batch": batch, **change}
        tree = build_ball_tree(kwargs.pop("pos"), kwargs.pop("batch"), ball_sizes=[16], engine_name=engine,
                               **kwargs)
        assert torch.equal(tree.index, expected.index) and torch.equal(tree.mask, expected.mask), name
    half = pos.half()
    assert torch.equal(build_ball_tree(half, batch, ball_sizes=[16], engine_name=engine).index,
                       build_ball_tree(half.float(), batch, ball_sizes=[16], engine_name=engine).index)
