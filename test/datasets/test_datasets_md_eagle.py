"""PolymerMD and EAGLE: raw fixtures -> process -> windows checked against the fixture arrays."""
import os
import os.path as osp
import uuid

import numpy as np
import pytest
import torch
from torch_geometric.io import fs
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import Compose

from support.datasets import interrupt_at, processed_files
from torch_geometric_erwin.datasets.eagle import EAGLE
from torch_geometric_erwin.testing import write_eagle, write_polymer_md
from torch_geometric_erwin.datasets.polymer_md import PolymerMD
from torch_geometric_erwin.transforms import BallTreeTransform, RotatedTreeTransform

pytest.importorskip("h5py")

# Published constants (reference facts), restated here independently of the dataset classes.
POS_STD = np.array([21.4457, 31.7121, 25.5143])
VEL_STD = np.array([1.2809, 1.2735, 1.2792])
ACC_STD = np.array([1.7428, 1.7295, 1.7390])
STATE_MEAN = np.array([-0.0015, 0.2211, -0.8322, 4.6050])
STATE_STD = np.array([1.7970, 2.0258, 7.4013, 9.7232])
MD_ORDER = ("train", "val", "test")


# --------------------------------------------------------------------------------- PolymerMD
def window_features(p):
    """pos, x, y of a window p [s + 1, N, 3] of centred positions, in float64."""
    s = p.shape[0] - 1
    vel = np.diff(p[:s], axis=0)                                   # [s-1, N, 3]
    x = (vel / VEL_STD).transpose(1, 0, 2).reshape(p.shape[1], -1)
    y = ((p[s] - p[s - 1]) - (p[s - 1] - p[s - 2])) / ACC_STD
    return p[s - 1] / POS_STD, x, y


def centred(position):
    position = position.astype(np.float64)
    return position - position.mean(axis=(0, 1))


def expected_md_window(position, frame, s=16):
    """The sample of window `frame`, from the raw float32 positions."""
    return window_features(centred(position)[frame:frame + s + 1])


def md_order(raw):
    return [name for split in MD_ORDER for name in raw if raw[name]["split"] == split]


def test_polymer_md_windows_match_fixture(root):
    raw = write_polymer_md(osp.join(root, "raw"))
    dataset = PolymerMD(root, split=None)
    names = md_order(raw)
    counts = [raw[n]["position"].shape[0] - 16 for n in names]
    assert len(dataset) == sum(counts) == 3 * 8 + 8 + 2 * 4
    starts = np.concatenate([[0], np.cumsum(counts)])
    for j, name in enumerate(names):
        # first and last window of every trajectory: the boundaries of the window table
        for frame in (0, counts[j] - 1):
            data = dataset[int(starts[j] + frame)]
            assert data.name == name and data.frame == frame
            pos, x, y = expected_md_window(raw[name]["position"], frame)
            torch.testing.assert_close(data.pos.double(), torch.from_numpy(pos), atol=1e-5, rtol=0)
            torch.testing.assert_close(data.x.double(), torch.from_numpy(x), atol=1e-5, rtol=0)
            torch.testing.assert_close(data.y.double(), torch.from_numpy(y), atol=1e-5, rtol=0)
            bonds = raw[name]["bonds"]
            assert data.edge_index.tolist() == [list(bonds[:, 0]) + list(bonds[:, 1]),
                                                list(bonds[:, 1]) + list(bonds[:, 0])]
            assert data.node_type.tolist() == raw[name]["node_type"].tolist()
            assert data.num_nodes == raw[name]["position"].shape[1]
    # the last window ends exactly at the last frame of the last trajectory
    assert dataset[len(dataset) - 1].frame == raw[names[-1]]["position"].shape[0] - 17
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    split = dataset.get_idx_split()
    assert [len(split[k]) for k in ("train", "valid", "test")] == [24, 8, 8]
    assert torch.equal(torch.cat([split["train"], split["valid"], split["test"]]),
                       torch.arange(len(dataset)))
    assert {dataset[int(i)].name for i in split["valid"]} == {"poly00101"}


def test_polymer_md_split_and_seq_len(root):
    raw = write_polymer_md(osp.join(root, "raw"), num_beads=(6,))
    dataset = PolymerMD(root, split="test", seq_len=4)
    assert processed_files(root) == ["pre_filter.pt", "pre_transform.pt", "test_positions.f32",
                                     "test_records.pt"]
    assert len(dataset) == 2 * (20 - 4)
    assert dataset.get_idx_split()["train"].numel() == 0
    data = dataset[17]
    assert data.name == "rand002" and data.frame == 1 and data.x.shape == (6, 9)
    pos, x, y = expected_md_window(raw["rand002"]["position"], 1, s=4)
    torch.testing.assert_close(data.y.double(), torch.from_numpy(y), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.x.double(), torch.from_numpy(x), atol=1e-5, rtol=0)


def test_polymer_md_noise_augmentation(tmp_path):
    raw = write_polymer_md(str(tmp_path / "raw"))
    dataset = PolymerMD(tmp_path, split="train", noise=True)  # an os.PathLike root, kept as a str
    assert dataset.root == str(tmp_path)
    scales = np.exp(np.linspace(np.log(0.1), np.log(0.01), 10))
    torch.manual_seed(3)
    data = dataset[9]                                          # poly00002, frame 1, 7 beads
    torch.manual_seed(3)
    scale = scales[int(torch.randint(10, ()))]
    noise = torch.randn(7, 17, 3).double().numpy().transpose(1, 0, 2) * scale
    pos, x, y = window_features(centred(raw["poly00002"]["position"])[1:18] + noise)
    torch.testing.assert_close(data.pos.double(), torch.from_numpy(pos), atol=1e-4, rtol=0)
    torch.testing.assert_close(data.x.double(), torch.from_numpy(x), atol=1e-4, rtol=0)
    torch.testing.assert_close(data.y.double(), torch.from_numpy(y), atol=1e-4, rtol=0)
    assert not torch.allclose(data.y, PolymerMD(str(tmp_path), split="train")[9].y)
    with pytest.raises(TypeError, match="noise"):
        PolymerMD(str(tmp_path), noise=1)


def test_polymer_md_normalisation_helpers():
    acc = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(PolymerMD.normalize(acc, "acc"), acc / torch.from_numpy(ACC_STD))
    vel = torch.randn(4, 45, dtype=torch.float64)
    expected = (vel.view(4, 15, 3) / torch.from_numpy(VEL_STD)).view(4, 45)
    torch.testing.assert_close(PolymerMD.normalize(vel, "vel"), expected)
    torch.testing.assert_close(PolymerMD.denormalize(PolymerMD.normalize(vel, "vel"), "vel"), vel)
    with pytest.raises(ValueError, match="field"):
        PolymerMD.normalize(acc, "force")
    with pytest.raises(ValueError, match="multiple of 3"):
        PolymerMD.normalize(torch.ones(2, 4), "pos")


def test_polymer_md_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        PolymerMD(str(tmp_path), split="valid")
    with pytest.raises(ValueError, match="seq_len"):
        PolymerMD(str(tmp_path), seq_len=1)


def test_polymer_md_loader_with_tree_transforms(tmp_path):
    raw = write_polymer_md(str(tmp_path / "raw"))
    transform = Compose([BallTreeTransform(ball_sizes=[4, 4], strides=[2]),
                         RotatedTreeTransform(rotate=45, ball_sizes=[4, 4], strides=[2])])
    dataset = PolymerMD(str(tmp_path), split="train", transform=transform)
    loader = DataLoader(dataset, batch_size=4, shuffle=False)
    batch = next(iter(loader))
    assert batch.num_graphs == 4 and batch.x.shape == (4 * 5, 45)
    assert batch.tree_index.numel() >= batch.num_nodes and batch.tree_mask.sum() == batch.num_nodes
    bonds = raw["poly00001"]["bonds"]
    # the second graph's bonds are offset by the first graph's 5 beads
    assert batch.edge_index[:, 8:16].tolist() == [list(bonds[:, 0] + 5) + list(bonds[:, 1] + 5),
                                                  list(bonds[:, 1] + 5) + list(bonds[:, 0] + 5)]


def test_polymer_md_pre_filter_and_pre_transform(tmp_path):
    write_polymer_md(str(tmp_path / "raw"))

    def add_degree(data):
        data.degree = torch.bincount(data.edge_index[0], minlength=data.num_nodes)
        return data

    dataset = PolymerMD(str(tmp_path), split="train", pre_filter=lambda d: d.name != "poly00002",
                        pre_transform=add_degree)
    assert sorted({dataset[i].name for i in range(len(dataset))}) == ["poly00001", "poly00003"]
    assert dataset[0].degree.tolist() == [1, 2, 2, 2, 1]


def test_polymer_md_missing_files_listed(root):
    raw_dir = osp.join(root, "raw")
    write_polymer_md(raw_dir)
    fs.rm(osp.join(raw_dir, "polymer_test", "rand002", "position.h5"))
    with pytest.raises(FileNotFoundError) as info:
        PolymerMD(root, split="test")
    message = str(info.value)
    assert "polymer_test/rand002/position.h5" in message and "1 raw file(s) missing" in message
    assert "zenodo.org/records/6764836" in message and "polymer_test/<name>/" in message
    assert processed_files(root) == []


def test_polymer_md_downloads_and_verifies_split_lists(tmp_path, monkeypatch):
    source = f"memory://{uuid.uuid4().hex}"
    write_polymer_md(source)
    monkeypatch.setattr(PolymerMD, "splits_url", f"{source}/splits")
    root = str(tmp_path)
    with pytest.raises(OSError, match="checksum mismatch"):  # the fixture lists are not the published ones
        PolymerMD(root, split="val")
    import hashlib
    names = fs.get_fs(source).cat(f"{source}/splits/val.txt").decode().split("\n")
    monkeypatch.setitem(PolymerMD.split_sha256, "val.txt",
                        hashlib.sha256("\n".join(names).encode()).hexdigest())
    with pytest.raises(FileNotFoundError) as info:  # lists fetched, trajectories still missing
        PolymerMD(root, split="val")
    assert fs.exists(osp.join(root, "raw", "splits", "val.txt"))
    assert "polymer_train/poly00101/ptype.h5" in str(info.value)
    assert "splits/val.txt" not in str(info.value).split("arrange")[0]


def test_polymer_md_unreachable_split_source(tmp_path, monkeypatch):
    monkeypatch.setattr(PolymerMD, "splits_url", f"memory://{uuid.uuid4().hex}/nothing")
    with pytest.warns(UserWarning, match="could not fetch"):
        with pytest.raises(FileNotFoundError, match="splits/train.txt"):
            PolymerMD(str(tmp_path))


def test_polymer_md_truncated_raw_file_named(root):
    raw_dir = osp.join(root, "raw")
    write_polymer_md(raw_dir)
    path = osp.join(raw_dir, "polymer_train", "poly00002", "position.h5")
    payload = fs.get_fs(path).cat(path)
    with fs.get_fs(path).open(path, "wb") as f:
        f.write(payload[: len(payload) // 2])
    with pytest.raises(OSError, match="poly00002/position.h5"):
        PolymerMD(root, split="train")
    assert processed_files(root) == []
    with fs.get_fs(path).open(path, "wb") as f:
        f.write(payload)
    assert len(PolymerMD(root, split="train")) == 24


def test_polymer_md_bad_bonds_named(tmp_path):
    import h5py
    write_polymer_md(str(tmp_path / "raw"))
    with h5py.File(tmp_path / "raw" / "polymer_train" / "poly00003" / "bond.h5", "w") as hf:
        hf.create_dataset("bond_indices", data=np.array([[0, 99]]))
    with pytest.raises(ValueError, match=r"poly00003/bond.h5.*\[0, 6\)"):
        PolymerMD(str(tmp_path), split="train")


def test_polymer_md_interrupted_process_leaves_nothing(root):
    write_polymer_md(osp.join(root, "raw"))
    with pytest.raises(KeyboardInterrupt):
        PolymerMD(root, split="train", pre_filter=interrupt_at(2))
    assert processed_files(root) == []
    dataset = PolymerMD(root, split="train")
    assert len(dataset) == 24
    pos, _, _ = expected_md_window(write_polymer_md(osp.join(root, "raw"))["poly00003"]["position"], 7)
    torch.testing.assert_close(dataset[23].pos.double(), torch.from_numpy(pos), atol=1e-5, rtol=0)


def test_polymer_md_truncated_processed_file_named(tmp_path):
    write_polymer_md(str(tmp_path / "raw"))
    dataset = PolymerMD(str(tmp_path), split="train")
    path = tmp_path / "processed" / "train_positions.f32"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(OSError, match="train_positions.f32"):
        dataset[len(dataset) - 1]


def test_polymer_md_without_h5py(tmp_path, monkeypatch):
    write_polymer_md(str(tmp_path / "raw"))
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)
    with pytest.raises(ImportError, match=r"pip install h5py"):
        PolymerMD(str(tmp_path))


# -------------------------------------------------------------------------------------- EAGLE
def mesh_edges(triangles):
    """Undirected edge set of one frame's triangles, by brute force."""
    edges = set()
    for tri in triangles.tolist():
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[0], tri[2])):
            if a != b:
                edges.add((max(a, b), min(a, b)))
    return edges


def check_eagle_window(data, sim, start, length):
    sl = slice(start, start + length)
    assert data.frame == start
    torch.testing.assert_close(data.mesh_pos, torch.from_numpy(sim["pointcloud"][sl]).transpose(0, 1))
    torch.testing.assert_close(data.pos, torch.from_numpy(sim["pointcloud"][start]))
    raw_state = np.stack([sim[k][sl] for k in ("VX", "VY", "PS", "PG")], axis=-1)
    state = torch.from_numpy((raw_state - STATE_MEAN) / STATE_STD).transpose(0, 1)
    torch.testing.assert_close(data.x.double(), state[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(data.y.double(), state[:, 1:], atol=1e-6, rtol=0)
    mask = sim["mask"].reshape(sim["mask"].shape[0], -1)
    assert data.node_type.tolist() == mask[sl].T.tolist()
    for w in range(length):
        pairs = data.edge_index_seq[:, data.edge_step == w].t().tolist()
        expected = mesh_edges(sim["triangles"][start + w])
        assert len(pairs) == 2 * len(expected)
        assert set(map(tuple, pairs)) == expected | {(b, a) for a, b in expected}
    assert data.edge_index.tolist() == data.edge_index_seq[:, data.edge_step == 0].tolist()


def eagle_order(raw):
    return [name for split in MD_ORDER for name in raw if raw[name]["split"] == split]


def test_eagle_windows_match_fixture(root):
    raw = write_eagle(osp.join(root, "raw"))
    dataset = EAGLE(root, split=None, window_length=4, window_start=7)
    names = eagle_order(raw)
    assert len(dataset) == 6
    for i, name in enumerate(names):
        data = dataset[i]
        assert data.name == name and data.num_nodes == 12
        check_eagle_window(data, raw[name], start=7, length=4)
    # the last admissible window ends at the last frame; one more frame is rejected
    check_eagle_window(EAGLE(root, split="test", window_length=12, window_start=0)[1],
                       raw["Stp/182/2"], start=0, length=12)
    with pytest.raises(ValueError, match="window_start 9 \\+ window_length 4"):
        EAGLE(root, split="test", window_length=4, window_start=9)
    with pytest.raises(ValueError, match="window_length 400 exceeds"):
        EAGLE(root, split="test")
    split = dataset.get_idx_split()
    assert [split[k].tolist() for k in ("train", "valid", "test")] == [[0, 1, 2], [3], [4, 5]]


def test_eagle_reference_window_rules(tmp_path):
    raw = write_eagle(str(tmp_path / "raw"), num_frames=12)
    val = EAGLE(tmp_path, split="val")  # an os.PathLike root, kept as a str
    assert val.root == str(tmp_path)
    data = val[0]
    check_eagle_window(data, raw["Spl/161/2"], start=10, length=2)  # min(100, T - W)
    train = EAGLE(str(tmp_path), split="train")
    torch.manual_seed(0)
    first = [train[i].frame for i in range(3) for _ in range(8)]
    torch.manual_seed(0)
    assert [train[i].frame for i in range(3) for _ in range(8)] == first
    assert min(first) >= 0 and max(first) <= 12 - 6 and len(set(first)) > 1
    data = train[1]
    check_eagle_window(data, raw["Tri/2/2"], start=data.frame, length=6)


def test_eagle_normalisation_helpers():
    state = torch.randn(3, 5, 4, dtype=torch.float64)
    expected = (state - torch.from_numpy(STATE_MEAN)) / torch.from_numpy(STATE_STD)
    torch.testing.assert_close(EAGLE.normalize(state, "state"), expected)
    torch.testing.assert_close(EAGLE.normalize(state[..., 2:], "pressure"), expected[..., 2:])
    torch.testing.assert_close(EAGLE.denormalize(expected[..., :2], "velocity"), state[..., :2])
    with pytest.raises(ValueError, match="field"):
        EAGLE.normalize(state, "vorticity")


def test_eagle_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        EAGLE(str(tmp_path), split="valid")
    with pytest.raises(ValueError, match="window_length"):
        EAGLE(str(tmp_path), window_length=1)
    with pytest.raises(ValueError, match="window_start"):
        EAGLE(str(tmp_path), window_start=-1)


def test_eagle_loader_with_tree_transforms(tmp_path):
    write_eagle(str(tmp_path / "raw"))
    transform = Compose([BallTreeTransform(ball_sizes=[4, 4], strides=[2]),
                         RotatedTreeTransform(rotate=45, ball_sizes=[4, 4], strides=[2])])
    single = EAGLE(str(tmp_path), split="train", window_length=3, window_start=2)
    dataset = EAGLE(str(tmp_path), split="train", window_length=3, window_start=2, transform=transform)
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch.num_graphs == 3 and batch.y.shape == (36, 2, 4) and batch.mesh_pos.shape == (36, 3, 2)
    assert batch.tree_mask.sum() == 36
    offsets = torch.repeat_interleave(torch.arange(3) * 12, torch.tensor(
        [single[i].edge_step.numel() for i in range(3)]))
    expected = torch.cat([single[i].edge_index_seq for i in range(3)], dim=1) + offsets
    assert torch.equal(batch.edge_index_seq, expected)
    assert torch.equal(batch.edge_step, torch.cat([single[i].edge_step for i in range(3)]))


def test_eagle_missing_files_listed(root):
    raw_dir = osp.join(root, "raw")
    write_eagle(raw_dir)
    fs.rm(osp.join(raw_dir, "Tri", "2", "2", "triangles.npy"))
    with pytest.raises(FileNotFoundError) as info:
        EAGLE(root, split="train")
    message = str(info.value)
    assert "Tri/2/2/triangles.npy" in message and "1 raw file(s) missing" in message
    assert "datasets.liris.cnrs.fr/eagle-version1" in message and "<Geom>/<scene>/<traj>/sim.npz" in message
    with pytest.raises(FileNotFoundError, match="Splits/valid.txt"):
        EAGLE(str(root) + "-empty", split="val")


def test_eagle_corrupt_files_named(root):
    raw_dir = osp.join(root, "raw")
    write_eagle(raw_dir)
    path = osp.join(raw_dir, "Stp", "3", "1", "sim.npz")
    payload = fs.get_fs(path).cat(path)
    with fs.get_fs(path).open(path, "wb") as f:
        f.write(payload[: len(payload) - 200])
    with pytest.raises(OSError, match="Stp/3/1/sim.npz"):
        EAGLE(root, split="train")
    assert processed_files(root) == []
    tri = osp.join(raw_dir, "Tri", "2", "2", "triangles.npy")
    with fs.get_fs(path).open(path, "wb") as f:
        f.write(payload)
    with fs.get_fs(tri).open(tri, "wb") as f:
        np.save(f, np.full((12, 12, 3), 12))
    with pytest.raises(ValueError, match=r"Tri/2/2/triangles.npy.*\[0, 12\)"):
        EAGLE(root, split="train")


def test_eagle_interrupted_process_leaves_nothing(root):
    raw = write_eagle(osp.join(root, "raw"))

    def interrupt(data):
        if data.name == "Stp/3/1":
            raise KeyboardInterrupt
        return True

    with pytest.raises(KeyboardInterrupt):
        EAGLE(root, split="train", pre_filter=interrupt)
    assert processed_files(root) == []
    dataset = EAGLE(root, split="train", window_length=2, window_start=5)
    check_eagle_window(dataset[2], raw["Stp/3/1"], start=5, length=2)


def test_eagle_leftover_temporaries_are_ignored(tmp_path):
    raw = write_eagle(str(tmp_path / "raw"))
    os.makedirs(tmp_path / "processed")
    leftover = tmp_path / "processed" / "train_fields.f32.tmp-dead"  # as a hard-killed run leaves
    leftover.write_bytes(b"x" * 10)
    dataset = EAGLE(str(tmp_path), split="train", window_length=2, window_start=0)
    check_eagle_window(dataset[0], raw["Spl/1/1"], start=0, length=2)


# ------------------------------------------------------------------------------- cost per sample
def spy_reads(monkeypatch, module):
    import torch_geometric_erwin.datasets._window_store as store
    calls = []

    def spy(path, dtype, row_shape, start, count):
        calls.append((path.rsplit("_", 1)[-1], count))
        return store.read_rows(path, dtype, row_shape, start, count)

    monkeypatch.setattr(module, "read_rows", spy)
    return calls


def test_samples_read_only_their_window(tmp_path, monkeypatch):
    import torch_geometric_erwin.datasets.eagle as eagle_module
    import torch_geometric_erwin.datasets.polymer_md as md_module
    write_polymer_md(str(tmp_path / "md" / "raw"), train_frames=200, num_beads=(5,))
    md = PolymerMD(str(tmp_path / "md"), split="train")
    calls = spy_reads(monkeypatch, md_module)
    md[len(md) - 1], md[300]
    assert calls == [("positions.f32", 17 * 5)] * 2  # one read of 17 frames, not the trajectory
    write_eagle(str(tmp_path / "eagle" / "raw"), num_frames=40)
    eagle = EAGLE(str(tmp_path / "eagle"), split="val", window_length=3)
    calls = spy_reads(monkeypatch, eagle_module)
    eagle[0]
    assert calls == [("fields.f32", 3 * 12), ("type.u8", 3 * 12), ("triangles.i32", 3 * 13)]


# ------------------------------------------------------------------------------------- the model
def test_model_forward_on_both_datasets(tmp_path):
    nn = pytest.importorskip("torch_geometric_erwin.nn")
    if not hasattr(nn, "Erwin"):
        pytest.skip("torch_geometric_erwin.nn.Erwin does not exist yet")
    write_polymer_md(str(tmp_path / "md" / "raw"))
    write_eagle(str(tmp_path / "eagle" / "raw"))
    for preset, dataset, out in (
            ("md-small", PolymerMD(str(tmp_path / "md"), split="train"), 6),
            ("eagle-small", EAGLE(str(tmp_path / "eagle"), split="train", window_length=3), 4)):
        batch = next(iter(DataLoader(dataset, batch_size=2)))
        model = nn.Erwin.from_preset(preset, in_channels=batch.x.size(-1), out_channels=out).eval()
        with torch.no_grad():
            pred = model(batch)
        assert pred.shape == (batch.num_nodes, out) and torch.isfinite(pred).all()


def test_processed_datasets_load_without_raw_files(root, monkeypatch):
    write_polymer_md(osp.join(root, "md", "raw"))
    write_eagle(osp.join(root, "eagle", "raw"))
    expected = (PolymerMD(osp.join(root, "md"), split=None)[30],
                EAGLE(osp.join(root, "eagle"), split="test", window_length=5)[1])
    fs.rm(osp.join(root, "md", "raw"))
    fs.rm(osp.join(root, "eagle", "raw"))
    loaded = (PolymerMD(osp.join(root, "md"), split=None)[30],
              EAGLE(osp.join(root, "eagle"), split="test", window_length=5)[1])
    for before, after in zip(expected, loaded):
        assert before.name == after.name and torch.equal(before.x, after.x)
        assert torch.equal(before.y, after.y) and torch.equal(before.edge_index, after.edge_index)
    monkeypatch.setattr(PolymerMD, "splits_url", f"memory://{uuid.uuid4().hex}")  # no network
    with pytest.warns(UserWarning, match="could not fetch"), \
            pytest.raises(FileNotFoundError, match="missing"):
        PolymerMD(osp.join(root, "md"), split=None, force_reload=True)


@pytest.mark.parametrize("name", ["polymer_md", "eagle"])
def test_damaged_records_file_names_it(name, tmp_path):
    """A truncated records file (the windows' index): an error naming it and force_reload=True, which
    rebuilds it."""
    if name == "eagle":
        write_eagle(str(tmp_path / "raw"))
        make = lambda **kw: EAGLE(str(tmp_path), split="train", window_length=4, **kw)  # noqa: E731
    else:
        write_polymer_md(str(tmp_path / "raw"))
        make = lambda **kw: PolymerMD(str(tmp_path), split="train", **kw)  # noqa: E731
    before = make()
    path = before.processed_path("train", "records.pt")
    with open(path, "rb") as handle:
        head = handle.read(200)
    with open(path, "wb") as handle:
        handle.write(head)
    with pytest.raises(OSError, match=rf"processed file '{path}' cannot be read.*force_reload=True"):
        make()
    after = make(force_reload=True)  # (EAGLE's training windows start at random frames: compare meshes)
    assert len(after) == len(before) and after[0].num_nodes == before[0].num_nodes
