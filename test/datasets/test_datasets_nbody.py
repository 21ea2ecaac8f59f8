"""SyntheticNBody: exact targets, determinism, splits, caching, atomic writes, argument checks, and
the long-range structure of the target."""
import os
import pathlib
import uuid

import pytest
import torch
from torch_geometric.io import fs
from torch_geometric.loader import DataLoader

from torch_geometric_erwin.datasets import SyntheticNBody
from torch_geometric_erwin.datasets.base import ProcessedFileError
from torch_geometric_erwin.datasets.nbody import gravitational_acceleration
from torch_geometric_erwin.transforms import BallTreeTransform, KNNGraphTransform

from support.datasets import interrupt_at

SMALL = dict(num_particles=100, num_graphs=(3, 2, 2), log=False)


def brute_force(pos, mass, softening):
    """O(N^2) float64 sum over j != i, written independently of the module."""
    pos, mass = pos.double(), mass.double()
    out = torch.zeros_like(pos)
    for i in range(pos.size(0)):
        others = torch.arange(pos.size(0)) != i
        diff = pos[others] - pos[i]
        dist2 = (diff ** 2).sum(dim=1) + softening ** 2
        out[i] = (mass[others, None] * diff / dist2[:, None] ** 1.5).sum(dim=0)
    return out


def physical(dataset, data):
    return dataset.denormalize(data.x.squeeze(-1), "mass"), dataset.denormalize(data.y.double())


@pytest.mark.parametrize("dim", [2, 3])
def test_target_is_the_exact_softened_acceleration(tmp_path, dim):
    dataset = SyntheticNBody(str(tmp_path), dimensionality=dim, softening=0.03, **SMALL)
    assert len(dataset) == 3 and dataset.num_particles == 100
    for data in dataset:
        assert data.pos.shape == (100, dim) and data.x.shape == (100, 1) and data.y.shape == (100, dim)
        assert data.pos.dtype == data.x.dtype == data.y.dtype == torch.float32
        assert data.edge_index is None
        mass, acc = physical(dataset, data)
        assert abs(float(mass.sum()) - 1.0) < 1e-5 and bool((mass > 0).all())
        expected = brute_force(data.pos, mass, 0.03)
        torch.testing.assert_close(acc, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_gravitational_acceleration_function():
    gen = torch.Generator().manual_seed(0)
    pos, mass = torch.randn(37, 3, generator=gen), torch.rand(37, generator=gen)
    exact = brute_force(pos, mass, 0.1)
    torch.testing.assert_close(gravitational_acceleration(pos, mass, 0.1), exact, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gravitational_acceleration(pos, mass, 0.1, gravity=2.5), 2.5 * exact)
    reference = gravitational_acceleration(pos, mass, 0.1, chunk_size=1)
    for chunk in (5, 37, 1000):  # each row is summed the same way whatever the chunking
        assert torch.equal(gravitational_acceleration(pos, mass, 0.1, chunk_size=chunk), reference)
    with pytest.raises(ValueError, match="softening"):
        gravitational_acceleration(pos, mass, 0.0)
    with pytest.raises(ValueError, match="mass"):
        gravitational_acceleration(pos, mass[:-1], 0.1)


def test_deterministic_across_runs_and_thread_counts(tmp_path):
    first = SyntheticNBody(str(tmp_path / "a"), **SMALL)
    second = SyntheticNBody(f"memory://nbody-{uuid.uuid4().hex}", **SMALL)
    for a, b in zip(first, second):
        assert torch.equal(a.pos, b.pos) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert first.acc_std == second.acc_std

    # Large enough that elementwise kernels split across threads (chunk rows x N > 32768).
    big = SyntheticNBody(f"memory://nbody-{uuid.uuid4().hex}", num_particles=600, num_graphs=1,
                         split="val", log=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = big.generate("val", 0)
        torch.set_num_threads(2)
        two = big.generate("val", 0)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_seeds_splits_and_sizes_give_the_expected_graphs(tmp_path, monkeypatch):
    base = SyntheticNBody(str(tmp_path), **SMALL)
    other_seed = SyntheticNBody(str(tmp_path), seed=1, **SMALL)
    assert not torch.equal(base[0].pos, other_seed[0].pos)
    val = SyntheticNBody(str(tmp_path), split="val", **SMALL)
    assert not torch.equal(base[0].pos, val[0].pos)
    assert val.acc_std == base.acc_std  # one normalisation for every split
    # graph k of a split does not depend on the split's size (nor on whether it was a calibration graph)
    longer = SyntheticNBody(str(tmp_path), num_particles=100, num_graphs={"train": 5}, log=False)
    assert len(longer) == 5
    for k in range(3):
        assert torch.equal(longer[k].pos, base[k].pos) and torch.equal(longer[k].y, base[k].y)
    monkeypatch.setattr(SyntheticNBody, "calibration_graphs", 2)
    few = SyntheticNBody(str(tmp_path / "few"), num_particles=100, num_graphs={"train": 5}, log=False)
    for k in range(5):
        assert torch.equal(few[k].pos, longer[k].pos)
        torch.testing.assert_close(few.denormalize(few[k].y), longer.denormalize(longer[k].y))


def test_split_sizes_and_idx_split():
    root = f"memory://nbody-{uuid.uuid4().hex}"
    sizes = {"train": 4, "val": 2, "test": 3}
    for split, size in sizes.items():
        dataset = SyntheticNBody(root, split=split, num_particles=64, num_graphs=sizes, log=False)
        assert len(dataset) == size
        idx = dataset.get_idx_split()
        key = {"val": "valid"}.get(split, split)
        assert torch.equal(idx[key], torch.arange(size))
        assert all(idx[k].numel() == 0 for k in idx if k != key)
    full = SyntheticNBody(root, split=None, num_particles=64, num_graphs=(4, 2, 3), log=False)
    assert len(full) == 9
    idx = full.get_idx_split()
    assert [idx[k].tolist() for k in ("train", "valid", "test")] == [[0, 1, 2, 3], [4, 5], [6, 7, 8]]
    test = SyntheticNBody(root, split="test", num_particles=64, num_graphs=sizes, log=False)
    assert torch.equal(full[idx["test"]][1].y, test[1].y)
    assert len(SyntheticNBody(root, num_particles=64, num_graphs=7, split="val", log=False)) == 7
    assert len(SyntheticNBody(root, num_particles=64, num_graphs=1, log=False)) == 1


def test_memory_root_and_no_raw_directory():
    root = f"memory://nbody-{uuid.uuid4().hex}"
    dataset = SyntheticNBody(root, **SMALL)
    assert fs.exists(dataset.processed_paths[0])
    assert not fs.exists(f"{root}/raw")
    assert dataset.raw_file_names == [] and dataset.download() is None


def count_generations(monkeypatch):
    calls = []
    original = SyntheticNBody.generate

    def counted(self, split, index):
        calls.append((split, index))
        return original(self, split, index)

    monkeypatch.setattr(SyntheticNBody, "generate", counted)
    return calls


def test_cache_is_reused_and_force_reload_regenerates(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    first = SyntheticNBody(str(tmp_path), **SMALL)
    assert torch.get_num_threads() == threads  # process() restores torch's thread count
    calls = count_generations(monkeypatch)
    again = SyntheticNBody(str(tmp_path), **SMALL)
    assert calls == [] and torch.equal(again[2].y, first[2].y)
    reloaded = SyntheticNBody(str(tmp_path), force_reload=True, **SMALL)
    assert ("train", 2) in calls and torch.equal(reloaded[2].y, first[2].y)
    # every generation parameter is part of the cache name: a new one never reuses a stale file
    calls.clear()
    softer = SyntheticNBody(str(tmp_path), softening=0.1, **SMALL)
    assert calls and softer.processed_paths != first.processed_paths
    assert not torch.equal(softer[0].y, first[0].y)
    names = {SyntheticNBody(str(tmp_path), **SMALL, **change).processed_file_names[0]
             for change in [{}, {"dimensionality": 2}, {"seed": 3}, {"num_halos": 2}, {"num_clusters": (1, 4)}]}
    assert len(names) == 5

    class HaloHeavier(SyntheticNBody):
        heavy_mass_fraction = 0.95

    assert HaloHeavier(str(tmp_path), **SMALL).processed_file_names != first.processed_file_names


def leftovers(folder):
    return [name for name in os.listdir(folder) if ".tmp-" in name] if os.path.isdir(folder) else []


def test_interrupted_processing_leaves_nothing_loadable(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        SyntheticNBody(str(tmp_path), pre_filter=interrupt_at(2), **SMALL)
    assert torch.get_num_threads() == threads
    path = os.path.join(str(tmp_path), "processed", SyntheticNBody(
        f"memory://nbody-{uuid.uuid4().hex}", **SMALL).processed_file_names[0])
    assert not os.path.exists(path) and leftovers(os.path.dirname(path)) == []

    # a failure while writing the cache file itself
    original = torch.save

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        SyntheticNBody(str(tmp_path), **SMALL)
    monkeypatch.setattr(torch, "save", original)
    assert not os.path.exists(path) and leftovers(os.path.dirname(path)) == []

    dataset = SyntheticNBody(str(tmp_path), **SMALL)
    assert os.path.exists(path) and len(dataset) == 3


@pytest.mark.parametrize("kwargs, error, name", [
    ({"root": None}, TypeError, "root"),
    ({"root": b"data"}, TypeError, "root"),
    ({"split": "valid"}, ValueError, "split"),
    ({"num_graphs": 0}, ValueError, "num_graphs"),
    ({"num_graphs": 2.5}, TypeError, "num_graphs"),
    ({"num_graphs": (1, 2)}, ValueError, "num_graphs"),
    ({"num_graphs": {"training": 3}}, ValueError, "num_graphs"),
    ({"num_particles": 1}, ValueError, "num_particles"),
    ({"num_particles": True}, TypeError, "num_particles"),
    ({"dimensionality": 4}, ValueError, "dimensionality"),
    ({"dimensionality": "3"}, TypeError, "dimensionality"),
    ({"num_halos": 0}, ValueError, "num_halos"),
    ({"num_clusters": (5, 2)}, ValueError, "num_clusters"),
    ({"num_clusters": (1, 2, 3)}, ValueError, "num_clusters"),
    ({"softening": 0.0}, ValueError, "softening"),
    ({"softening": float("nan")}, ValueError, "softening"),
    ({"softening": "0.1"}, TypeError, "softening"),
    ({"seed": -1}, ValueError, "seed"),
    ({"transform": 3}, TypeError, "transform"),
    ({"pre_filter": "no"}, TypeError, "pre_filter"),
    ({"force_reload": 1}, TypeError, "force_reload"),
])
def test_bad_arguments_are_rejected_before_any_work(tmp_path, kwargs, error, name):
    root = str(tmp_path / "root")
    arguments = {"root": root, "num_particles": 16, "num_graphs": 1, "log": False, **kwargs}
    with pytest.raises(error, match=name):
        SyntheticNBody(**arguments)
    assert not os.path.exists(root)


def test_path_roots_are_accepted_and_expanded(tmp_path, monkeypatch):
    """Any os.PathLike root works as its str would, "~" expanded as PyG expands str roots."""
    monkeypatch.setenv("HOME", str(tmp_path))
    dataset = SyntheticNBody(pathlib.Path("~") / "nbody", **SMALL)
    assert dataset.root == str(tmp_path / "nbody")
    assert torch.equal(dataset[0].pos, SyntheticNBody(str(tmp_path / "nbody"), **SMALL)[0].pos)


def test_normalize_roundtrip_and_errors(tmp_path):
    dataset = SyntheticNBody(str(tmp_path), **SMALL)
    data = dataset[0]
    assert dataset.acc_std > 0 and dataset.mass_scale == 1 / 100
    for field, value in (("acc", data.y), ("mass", data.x)):
        torch.testing.assert_close(dataset.normalize(dataset.denormalize(value, field), field), value)
    torch.testing.assert_close(dataset.denormalize(data.y), data.y * dataset.acc_std)
    with pytest.raises(ValueError, match="field"):
        dataset.normalize(data.y, "pos")
    with pytest.raises(TypeError, match="value"):
        dataset.denormalize([1.0])


def test_pre_transform_pre_filter_and_transform(tmp_path):
    def tag(data):
        data.tagged = torch.ones(1)
        return data

    dataset = SyntheticNBody(str(tmp_path), pre_transform=tag,
                             pre_filter=lambda data: float(data.x.max()) < 1e9, **SMALL)
    assert len(dataset) == 3 and bool(dataset[1].tagged)
    dropped = SyntheticNBody(str(tmp_path / "b"), pre_filter=lambda data: bool(data.pos[0, 0] > 0),
                             num_particles=16, num_graphs=8, log=False)
    assert 0 < len(dropped) < 8 and all(bool(d.pos[0, 0] > 0) for d in dropped)


def test_dataloader_with_ball_tree_transform(tmp_path):
    dataset = SyntheticNBody(str(tmp_path), transform=BallTreeTransform(ball_sizes=[16], strides=[]),
                             **SMALL)
    batch = next(iter(DataLoader(dataset, batch_size=2, shuffle=True)))
    assert batch.num_graphs == 2 and batch.pos.shape == (200, 3) and batch.y.shape == (200, 3)
    assert batch.tree_index.numel() % 16 == 0 and batch.tree_index.numel() >= 200
    assert "SyntheticNBody(split='train', graphs=3" in repr(dataset)


@pytest.mark.parametrize("dim", [2, 3])
def test_target_is_mostly_long_range(dim):
    """The exact contribution of each particle's 64 nearest neighbours -- more than a 2-layer 16-NN
    message-passing network can see -- explains less than half of the target variance.

    Why the physics guarantees it: 90% of the mass sits in the 1/8 of the particles that make up the
    extended halos (scale radii >= 0.3), while neighbourhoods are dominated by the dense, light
    clusters; a 64-neighbourhood holds a few percent of the halo mass at most, and by the shell
    theorem the nearly symmetric mass around a particle contributes little to its acceleration.
    (Measured: about 0.15 in 2-D and 3-D; see benchmarks/nbody_locality.py.)
    """
    dataset = SyntheticNBody(f"memory://nbody-{uuid.uuid4().hex}", split="test", num_graphs=2,
                             dimensionality=dim, log=False)
    assert dataset.num_particles == 2048
    residual, total, targets = 0.0, 0.0, []
    for data in dataset:
        mass, acc = physical(dataset, data)
        pos = data.pos.double()
        dist = torch.cdist(pos, pos)
        dist.fill_diagonal_(float("inf"))
        near = dist.topk(64, largest=False).indices  # [N, 64]
        diff = pos[near] - pos[:, None]
        dist2 = (diff ** 2).sum(-1) + dataset.softening ** 2
        local = (mass[near, None] * diff / dist2[..., None] ** 1.5).sum(1)
        residual += float(((acc - local) ** 2).sum())
        targets.append(acc)
    acc = torch.cat(targets)
    total = float(((acc - acc.mean(0)) ** 2).sum())
    assert 1 - residual / total < 0.5


def test_pre_transforms_share_a_root(tmp_path):
    # the README's trees and the example's kNN graphs in one root: each reads what it built
    trees = SyntheticNBody(str(tmp_path), split="train", pre_transform=BallTreeTransform(), **SMALL)
    graphs = SyntheticNBody(str(tmp_path), split="train", pre_transform=KNNGraphTransform(4), **SMALL)
    plain = SyntheticNBody(str(tmp_path), split="train", **SMALL)
    assert "tree_index" in trees[0] and "edge_index" not in trees[0]
    assert graphs[0].edge_index.shape == (2, 4 * 100) and "tree_index" not in graphs[0]
    assert "tree_index" not in plain[0] and "edge_index" not in plain[0]
    assert torch.equal(trees[1].pos, graphs[1].pos) and torch.equal(graphs[1].pos, plain[1].pos)
    assert trees.processed_dir != graphs.processed_dir and plain.processed_dir == str(tmp_path / "processed")
    again = SyntheticNBody(str(tmp_path), split="train", pre_transform=KNNGraphTransform(4), **SMALL)
    assert again.processed_dir == graphs.processed_dir and torch.equal(again[2].edge_index, graphs[2].edge_index)
    assert SyntheticNBody(str(tmp_path), split="train", pre_transform=KNNGraphTransform(5),
                          **SMALL).processed_dir != graphs.processed_dir


def test_damaged_processed_file_names_it(tmp_path):
    dataset = SyntheticNBody(str(tmp_path), split="train", **SMALL)
    path = os.path.join(dataset.processed_dir, dataset.processed_file_names[0])
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ProcessedFileError, match=r"processed file '.*" + dataset.processed_file_names[0]
                       + r"' cannot be read.*force_reload=True"):
        SyntheticNBody(str(tmp_path), split="train", **SMALL)
    rebuilt = SyntheticNBody(str(tmp_path), split="train", force_reload=True, **SMALL)
    assert torch.equal(rebuilt[0].pos, dataset[0].pos)
