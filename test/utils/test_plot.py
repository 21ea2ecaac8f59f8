"""plot_ball_tree and ball_assignment: which node is drawn in which ball, files, errors."""
import os
import sys

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Batch, Data

from torch_geometric_erwin.transforms import BallTreeTransform, RotatedTreeTransform
from torch_geometric_erwin.tree import build_ball_tree
from torch_geometric_erwin.utils import ball_assignment, plot_ball_tree

pytest.importorskip("matplotlib")

BALLS, STRIDES = [16, 8], [2]


def cloud(n=100, dim=2, seed=0):
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed))


def members(tree, level, rotated):
    """Nodes of each ball read forwards from the slots: ball j holds the slots of its run."""
    factor = tree.pooling_factor(level)
    size = tree.ball_sizes[level]
    order = tree.rotated[level] if rotated else torch.arange(tree.num_slots // factor)
    balls = {}
    for position, coarse in enumerate(order.tolist()):
        for slot in range(coarse * factor, (coarse + 1) * factor):
            if tree.mask[slot]:
                balls.setdefault(position // size, set()).add(int(tree.index[slot]))
    return balls


@pytest.mark.parametrize("rotated", [False, True])
@pytest.mark.parametrize("level", [0, 1])
def test_ball_assignment_matches_the_slot_runs(level, rotated):
    pos = torch.cat([cloud(70), cloud(30, seed=1) + 3])
    batch = torch.cat([torch.zeros(70), torch.ones(30)]).long()
    tree = build_ball_tree(pos, batch, ball_sizes=BALLS, strides=STRIDES, rotate=45)
    assigned = ball_assignment(tree, level, rotated)
    assert assigned.shape == (100,)
    expected = members(tree, level, rotated)
    assert sorted(map(sorted, expected.values())) == \
        sorted(sorted(torch.nonzero(assigned == ball).flatten().tolist()) for ball in assigned.unique())
    assert set(assigned[:70].tolist()).isdisjoint(assigned[70:].tolist())  # no ball spans two graphs


def test_rotated_partition_differs_and_balls_have_their_size():
    tree = build_ball_tree(cloud(256), ball_sizes=[16], rotate=45)
    plain, rotated = ball_assignment(tree, 0), ball_assignment(tree, 0, rotated=True)
    assert torch.bincount(plain).tolist() == [16] * 16 and torch.bincount(rotated).tolist() == [16] * 16
    assert not torch.equal(plain, rotated)


def same_ball_same_colour(colours, balls):
    for ball in balls.unique():
        assert colours[balls == ball].unique().numel() == 1


def test_png_panels_and_colours(tmp_path):
    pos = cloud(120)
    tree = build_ball_tree(pos, ball_sizes=BALLS, strides=STRIDES, rotate=30)
    path = tmp_path / "tree.png"
    figure = plot_ball_tree(pos, tree, level=[0, 1], rotated=True, path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["tree.png"]  # the temporary file was renamed, not left behind
    assert len(figure.axes) == 4
    for axes, (level, rotated) in zip(figure.axes, [(0, False), (1, False), (0, True), (1, True)]):
        points = axes.collections[0]
        assert torch.allclose(torch.as_tensor(points.get_offsets()), pos.double())
        balls = ball_assignment(tree, level, rotated)
        same_ball_same_colour(torch.as_tensor(points.get_array()), balls)
        assert f"{int(balls.unique().numel())} {'rotated balls' if rotated else 'balls'}" in axes.get_title()
    # level 1 also draws the 64 coarse nodes: pairs of leaves (padding repeats included) mean-pooled
    coarse = torch.as_tensor(figure.axes[1].collections[-1].get_offsets())
    assert torch.allclose(coarse, pos[tree.index].view(64, 2, 2).mean(1).double())


def test_3d_cloud(tmp_path):
    figure = plot_ball_tree(cloud(80, dim=3), level=1, rotated=True, ball_sizes=BALLS, strides=STRIDES,
                            path=tmp_path / "tree3d.png")
    assert [axes.name for axes in figure.axes] == ["3d", "3d"]
    assert (tmp_path / "tree3d.png").stat().st_size > 0


def test_data_with_transform_attributes_and_graph_choice():
    transform = T.Compose([BallTreeTransform(BALLS, STRIDES), RotatedTreeTransform(45, BALLS, STRIDES)])
    batch = Batch.from_data_list([transform(Data(pos=cloud(n, seed=n))) for n in (40, 25)])
    figure = plot_ball_tree(batch, level=0, rotated=True, graph=1, ball_sizes=BALLS, strides=STRIDES)
    offsets = torch.as_tensor(figure.axes[1].collections[0].get_offsets())
    assert torch.allclose(offsets, batch.pos[40:].double())
    built = build_ball_tree(batch.pos, batch.batch, ball_sizes=BALLS, strides=STRIDES, rotate=45)
    same_ball_same_colour(torch.as_tensor(figure.axes[1].collections[0].get_array()),
                          ball_assignment(built, 0, rotated=True)[40:])


def test_padding_rings_the_duplicated_nodes():
    pos = cloud(40)
    tree = build_ball_tree(pos, ball_sizes=[16])  # 64 slots, 24 nodes repeated
    figure = plot_ball_tree(pos, tree, show_padding=True)
    rings = torch.as_tensor(figure.axes[0].collections[1].get_offsets())
    duplicated = torch.bincount(tree.index, minlength=40) > 1
    assert rings.shape[0] == int(duplicated.sum()) == 24
    assert torch.allclose(rings, pos[duplicated].double())


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(level=2), ValueError, "level must lie in"),
    (dict(level=[]), ValueError, "non-empty"),
    (dict(graph=1), ValueError, "graph must be"),
    (dict(rotated=1), TypeError, "rotated must be a bool"),
    (dict(path="figure.xyz"), ValueError, "image format"),
    (dict(path="no/such/folder/figure.png"), ValueError, "folder does not exist"),
    (dict(point_size=0), ValueError, "point_size"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_ball_tree(cloud(30), ball_sizes=BALLS, strides=STRIDES, **kwargs)


def test_bad_inputs(tmp_path):
    tree = build_ball_tree(cloud(30), ball_sizes=BALLS, strides=STRIDES)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        plot_ball_tree(cloud(30, dim=4), ball_sizes=BALLS, strides=STRIDES)
    with pytest.raises(ValueError, match="rotated partitions"):
        plot_ball_tree(cloud(30), tree, rotated=True, path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="not both"):
        plot_ball_tree(cloud(30), tree, ball_sizes=BALLS, strides=STRIDES)
    with pytest.raises(ValueError, match="give a tree or the ball_sizes"):
        plot_ball_tree(cloud(30))
    with pytest.raises(ValueError, match="covers 30 nodes"):
        plot_ball_tree(cloud(31), tree)
    with pytest.raises(TypeError, match="pos_or_data"):
        plot_ball_tree([[0.0, 1.0]], ball_sizes=BALLS, strides=STRIDES)
    assert os.listdir(tmp_path) == []


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_ball_tree(cloud(30), ball_sizes=BALLS, strides=STRIDES)
