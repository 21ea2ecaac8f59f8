"""The tree transforms: collation, round trips, batch builds, PyG integration."""
import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from torch_geometric_erwin.transforms import BallTreeTransform, RotatedTreeTransform
from torch_geometric_erwin.tree import BallTree, build_ball_tree

BALLS, STRIDES = [16, 8], [2]


def graphs(sizes=(5, 40, 1, 100, 17), dim=3):
    torch.manual_seed(0)
    return [Data(pos=torch.rand(n, dim), x=torch.rand(n, 2)) for n in sizes]


def transform(padding="pow2"):
    return T.Compose([BallTreeTransform(BALLS, STRIDES, padding), RotatedTreeTransform(45, BALLS, STRIDES, padding)])


@pytest.mark.parametrize("padding", ["pow2", "compact"])
def test_collated_trees_equal_the_batch_build(padding):
    data_list = [transform(padding)(data) for data in graphs()]
    batch = next(iter(DataLoader(data_list, batch_size=len(data_list))))
    collated = BallTree.from_data(batch, BALLS, STRIDES, padding)
    built = build_ball_tree(batch.pos, batch.batch, ball_sizes=BALLS, strides=STRIDES, rotate=45, padding=padding)
    assert torch.equal(collated.index, built.index) and torch.equal(collated.mask, built.mask)
    assert torch.equal(collated.ptr, built.ptr)
    assert all(torch.equal(a, b) for a, b in zip(collated.rotated, built.rotated))


def test_to_data_list_gives_back_each_graph_tree():
    data_list = [transform()(data) for data in graphs()]
    batch = Batch.from_data_list(data_list)
    for original, recovered in zip(data_list, batch.to_data_list()):
        for key in ["tree_index", "tree_mask", "tree_rotated_0", "tree_rotated_1"]:
            assert torch.equal(original[key], recovered[key])


def test_single_graph_attributes():
    data = transform()(graphs(sizes=(40,))[0])
    tree = build_ball_tree(data.pos, ball_sizes=BALLS, strides=STRIDES, rotate=45)
    assert torch.equal(data.tree_index, tree.index) and torch.equal(data.tree_mask, tree.mask)
    assert torch.equal(data.tree_rotated_0, tree.rotated[0]) and torch.equal(data.tree_rotated_1, tree.rotated[1])
    assert data.tree_index.numel() == 64 and data.tree_rotated_1.numel() == 32


def test_rotated_alone_attaches_the_tree_too():
    data = RotatedTreeTransform(30, BALLS, STRIDES)(graphs(sizes=(33,))[0])
    assert data.tree_index.numel() == 64 and data.tree_rotated_0.numel() == 64


def test_repr():
    assert repr(BallTreeTransform(BALLS, STRIDES)) == \
        "BallTreeTransform(ball_sizes=[16, 8], strides=[2], padding='pow2')"
    assert repr(RotatedTreeTransform(30, BALLS, STRIDES, "compact")) == \
        "RotatedTreeTransform(rotate=30.0, ball_sizes=[16, 8], strides=[2], padding='compact')"
    assert repr(BallTreeTransform()) == "BallTreeTransform(padding='pow2')"


def test_functional_transform_registered():
    from torch_geometric.data.datapipes import DatasetAdapter

    dataset = DatasetAdapter(graphs(sizes=(10, 20)))
    transformed = dataset.ball_tree(ball_sizes=BALLS, strides=STRIDES).rotated_tree(rotate=45, ball_sizes=BALLS,
                                                                                    strides=STRIDES)
    first = next(iter(transformed))
    # 10 nodes padded to the granularity max(16, 8 * 2) = 16 slots
    assert first.tree_index.numel() == 16 and first.tree_rotated_1.numel() == 8


def test_mismatched_configuration_is_caught():
    data = BallTreeTransform()(graphs(sizes=(20,))[0])  # padded for no balls: 32 slots
    with pytest.raises(ValueError, match=r"tree built with ball_sizes=None but the model uses ball_sizes=\[64\]"):
        BallTree.from_data(data, [64], [])
    with pytest.raises(ValueError, match="rotate must be a finite, non-zero"):
        RotatedTreeTransform(0)
    with pytest.warns(DeprecationWarning, match=r"now RotatedTreeTransform\(rotate=...\)"):
        assert RotatedTreeTransform(angle=30).rotate == 30.0
    with pytest.raises(ValueError, match="padding must be one of"):
        BallTreeTransform(padding="tight")
    with pytest.raises(ValueError, match="needs data.pos"):
        BallTreeTransform()(Data(x=torch.rand(3, 1)))


def test_absurd_ball_sizes_fail_at_construction():
    """Every graph's tree has at least the granularity's slots: beyond 2**30 nothing can run, so such a
    configuration is rejected when the transform is built, not with a MemoryError on the first graph."""
    BallTreeTransform([2**30])  # the largest accepted
    for ball_sizes, strides in (([2**40], []), ([8, 2**16], [2**16])):
        for make in (lambda: BallTreeTransform(ball_sizes, strides),
                     lambda: RotatedTreeTransform(45, ball_sizes, strides)):
            with pytest.raises(ValueError, match=r"ball_sizes=.* tree slots per graph.* at most 1073741824"):
                make()


def test_knn_graph_transform_matches_knn_graph():
    import torch
    from torch_geometric.data import Data

    from torch_geometric_erwin.nn import knn_graph
    from torch_geometric_erwin.transforms import KNNGraphTransform
    pos = torch.rand(30, 2)
    data = KNNGraphTransform(4, loop=True)(Data(pos=pos))
    assert torch.equal(data.edge_index, knn_graph(pos, 4, loop=True))
    assert data.edge_index.shape == (2, 120) and repr(KNNGraphTransform(4)) == "KNNGraphTransform(k=4, loop=False)"
    with pytest.raises(ValueError, match="k must"):
        KNNGraphTransform(0)


def test_build_record_collates_and_round_trips():
    """The record collates into one string per graph; the batch's tree carries it, and its leaf radii
    are the batch build's."""
    data_list = [transform()(data) for data in graphs()]
    assert data_list[0].tree_build == "format=1;ball_sizes=16,8;strides=2;padding=pow2;rotate=45.0"
    batch = next(iter(DataLoader(data_list, batch_size=len(data_list))))
    assert batch.tree_build == [data_list[0].tree_build] * len(data_list)
    tree = BallTree.from_data(batch)
    built = build_ball_tree(batch.pos, batch.batch, ball_sizes=BALLS, strides=STRIDES, rotate=45)
    assert (tree.ball_sizes, tree.strides, tree.padding, tree.rotate) == ((16, 8), (2,), "pow2", 45.0)
    torch.testing.assert_close(tree.radius, built.radius)
    assert tree.radius.shape == (tree.num_slots // 2,)
    plain = BallTreeTransform(BALLS, STRIDES)(graphs(sizes=(30,))[0])
    assert BallTree.from_data(plain).rotate == 0.0 and "rotate=0.0" in plain.tree_build


def test_rotated_transform_refuses_a_tree_of_another_configuration():
    data = BallTreeTransform([8, 8], STRIDES)(graphs(sizes=(30,))[0])
    with pytest.raises(ValueError, match=r"tree built with ball_sizes=\[8, 8\] but the model uses "
                                         r"ball_sizes=\[16, 8\]: rebuild the tree attributes with BallTreeTransform"):
        RotatedTreeTransform(45, BALLS, STRIDES)(data)


def test_a_future_tree_format_is_refused():
    data = transform()(graphs(sizes=(30,))[0])
    data.tree_build = data.tree_build.replace("format=1", "format=2")
    with pytest.raises(ValueError, match="tree format 2, this version of torch_geometric_erwin reads format 1"):
        BallTree.from_data(data)
