"""Geo-FNO benchmarks (Airfoil, Pipe, Elasticity, Plasticity): raw fixtures -> process -> samples
checked against the written arrays and the published constants."""
import argparse
import os
import os.path as osp

import numpy as np
import pytest
import torch
from torch_geometric.io import fs
from torch_geometric.loader import DataLoader

from torch_geometric_erwin.datasets.geo_fno import Airfoil, Elasticity, Pipe, Plasticity
from torch_geometric_erwin.testing import write_airfoil, write_elasticity, write_pipe, write_plasticity
from torch_geometric_erwin.transforms import BallTreeTransform

from support import ROOT
from support.datasets import processed_files
from support.examples import load_example

pytest.importorskip("scipy")

URL = "drive.google.com/drive/folders/1YBuaoTdOSr_qzaow-G-iwvbUI7fiUzu8"

# Published constants (reference facts, section 7-10), restated independently of the dataset classes.
AIRFOIL = dict(pos_mean=[1.4925, 3.4233e-4], pos_std=[6.6607, 6.0777], y_mean=0.8163, y_std=0.1385)
PIPE = dict(pos_mean=[4.9609, -0.0080], pos_std=[2.8867, 0.5690], y_mean=0.1667, y_std=0.0805)
ELASTICITY = dict(pos_mean=[0.4998, 0.5003], pos_std=[0.3217, 0.3216], y_mean=187.7388, y_std=127.0829)
PLASTICITY = dict(x_mean=19.6351, x_std=2.3652, y_mean=-4.4049, y_std=14.3477)


# ----------------------------------------------------------------------- expected samples
def grid_sample(raw, r, constants, channel, crop=None):
    """pos, y of a structured-grid sample, node k = i * W + j, by explicit loops."""
    h, w = raw["X"].shape[1:]
    h, w = (h, w) if crop is None else (min(h, crop), min(w, crop))
    pos, y = [], []
    for i in range(h):
        for j in range(w):
            pos.append([(raw["X"][r, i, j] - constants["pos_mean"][0]) / constants["pos_std"][0],
                        (raw["Y"][r, i, j] - constants["pos_mean"][1]) / constants["pos_std"][1]])
            y.append([(raw["Q"][r, channel, i, j] - constants["y_mean"]) / constants["y_std"]])
    return {"pos": np.array(pos), "y": np.array(y)}


def airfoil_sample(raw, r):
    return grid_sample(raw, r, AIRFOIL, channel=4)


def pipe_sample(raw, r):
    return grid_sample(raw, r, PIPE, channel=0, crop=128)


def elasticity_sample(raw, r):
    c = ELASTICITY
    points = raw["sigma"].shape[0]
    pos = [[(raw["XY"][p, d, r] - c["pos_mean"][d]) / c["pos_std"][d] for d in range(2)] for p in range(points)]
    y = [[(raw["sigma"][p, r] - c["y_mean"]) / c["y_std"]] for p in range(points)]
    return {"pos": np.array(pos), "y": np.array(y)}


def plasticity_sample(raw, r):
    """pos, x and y [N, T, C] of a plasticity sample."""
    c = PLASTICITY
    _, h, w = raw["output"].shape[:3]
    pos, x, y = [], [], []
    for i in range(h):
        for j in range(w):
            pos.append([j / (w - 1), i / (h - 1)])
            x.append([(raw["input"][r, i] - c["x_mean"]) / c["x_std"]])
            y.append((raw["output"][r, i, j] - c["y_mean"]) / c["y_std"])
    return {"pos": np.array(pos), "x": np.array(x), "y": np.array(y)}


CASES = {
    "airfoil": (Airfoil, write_airfoil, airfoil_sample),
    "pipe": (Pipe, write_pipe, pipe_sample),
    "elasticity": (Elasticity, write_elasticity, elasticity_sample),
    "plasticity": (Plasticity, write_plasticity, plasticity_sample),
}
# (raw samples the fixture writes, train pool, raw test indices), from the reference facts
SPLITS = {"airfoil": (1200, 1000, range(1000, 1200)), "pipe": (1200, 1000, range(1000, 1200)),
          "elasticity": (1210, 1000, range(1010, 1210)), "plasticity": (987, 900, range(907, 987))}


def check(data, expected, t=None):
    for key, value in expected.items():
        if key == "y" and t is not None:
            value = value[:, t]
        torch.testing.assert_close(data[key].double(), torch.from_numpy(value), atol=1e-5, rtol=1e-6)


def raw_indices(dataset, idx):
    return [int(dataset[int(i)].raw_index) for i in idx]


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_process_load_and_batch(name, root):
    cls, write, expected = CASES[name]
    raw = write(osp.join(root, "raw"))
    num_raw, pool, test = SPLITS[name]
    dataset = cls(root, split=None, log=False)
    steps = raw["output"].shape[3] if name == "plasticity" else 1
    split = dataset.get_idx_split()
    val_size = pool // 10
    assert {k: len(v) for k, v in split.items()} == {
        "train": pool - val_size, "valid": val_size * steps, "test": len(test) * steps}
    assert torch.equal(torch.cat([split["train"], split["valid"], split["test"]]), torch.arange(len(dataset)))
    train, val = raw_indices(dataset, split["train"]), raw_indices(dataset, split["valid"][::steps])
    assert train == sorted(train) and val == sorted(val) and sorted(train + val) == list(range(pool))
    assert raw_indices(dataset, split["test"][::steps]) == list(test)
    for key in ("train", "valid", "test"):
        for i in (split[key][0], split[key][-1]):
            data = dataset[int(i)]
            r = int(data.raw_index)
            if name == "plasticity":
                t = int(data.time[0]) if key == "train" else (int(i) - int(split[key][0])) % steps
                assert data.time.tolist() == [t] * data.num_nodes and data.time.dtype == torch.long
                check(data, expected(raw, r), t=t)
            else:
                check(data, expected(raw, r))
                assert data.x is data.pos

    for split_name, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        alone = cls(root, split=split_name, log=False)
        assert len(alone) == len(split[key]) and alone.get_idx_split()[key].tolist() == list(range(len(alone)))
        assert int(alone[len(alone) - 1].raw_index) == int(dataset[int(split[key][-1])].raw_index)

    loader = DataLoader(cls(root, split="test", transform=BallTreeTransform(ball_sizes=[16], strides=[]),
                            log=False), batch_size=3)
    batch = next(iter(loader))
    n = dataset[0].num_nodes
    assert batch.num_graphs == 3 and batch.pos.shape == (3 * n, 2)
    assert batch.y.shape == ((3 * n, 4) if name == "plasticity" else (3 * n, 1))
    assert batch.tree_mask.sum() == 3 * n and batch.tree_index.numel() >= 3 * n


def test_pipe_crops_both_axes(tmp_path):
    class SmallPipe(Pipe):  # fewer samples so that a grid larger than 128 x 128 stays cheap
        num_train, num_test, default_val_size = 3, 2, 1

    raw = write_pipe(str(tmp_path / "raw"), num_samples=5, grid=(131, 130))
    dataset = SmallPipe(str(tmp_path), split=None, log=False)
    assert len(dataset) == 5 and dataset[0].num_nodes == 128 * 128
    for i in (0, 4):
        check(dataset[i], pipe_sample(raw, int(dataset[i].raw_index)))


# -------------------------------------------------------------------------------- plasticity
def test_plasticity_time_modes(tmp_path):
    raw = write_plasticity(str(tmp_path / "raw"), num_steps=3)
    root = str(tmp_path)
    test = Plasticity(root, split="test", log=False)
    assert len(test) == 80 * 3
    for i in (0, 1, 2, 3, 239):
        data = test[i]
        assert int(data.raw_index) == 907 + i // 3 and data.time.unique().tolist() == [i % 3]
        check(data, plasticity_sample(raw, 907 + i // 3), t=i % 3)
    assert torch.equal(test[5].y, test[5].y)  # deterministic
    train = Plasticity(root, split="train", log=False)
    assert len(train) == 810
    torch.manual_seed(0)
    drawn = [int(train[7].time[0]) for _ in range(30)]
    torch.manual_seed(0)
    assert [int(train[7].time[0]) for _ in range(30)] == drawn and set(drawn) == {0, 1, 2}
    data = train[7]
    check(data, plasticity_sample(raw, int(data.raw_index)), t=int(data.time[0]))
    fixed = Plasticity(root, split="train", time=2, log=False)
    assert len(fixed) == 810 and fixed[3].time.unique().tolist() == [2]
    full = Plasticity(root, split="val", time="all", log=False)
    assert len(full) == 90 and full[0].y.shape == (15, 3, 4) and "time" not in full[0]
    check(full[0], plasticity_sample(raw, int(full[0].raw_index)))
    each = Plasticity(root, split="train", time="each", log=False)
    assert len(each) == 810 * 3
    with pytest.raises(ValueError, match="time must be < 3"):
        Plasticity(root, split="test", time=3, log=False)


def test_plasticity_grid_positions_are_the_reference_grid(tmp_path):
    write_plasticity(str(tmp_path / "raw"), grid=(101, 31), num_samples=980, num_steps=1, channels=1)
    data = Plasticity(str(tmp_path), split="test", log=False)[0]
    assert data.num_nodes == 3131
    k = 40 * 31 + 7
    torch.testing.assert_close(data.pos[k], torch.tensor([7 / 30, 40 / 100]))


# ------------------------------------------------------------------------------ splits/args
def test_validation_carve_out_is_deterministic(tmp_path):
    write_elasticity(str(tmp_path / "raw"))
    root = str(tmp_path)

    def val_indices(**kwargs):
        return [int(d.raw_index) for d in Elasticity(root, split="val", log=False, **kwargs)]

    first = val_indices()
    assert len(first) == 100 and first == val_indices(split_seed=0) and first == sorted(first)
    assert val_indices(split_seed=1) != first and len(val_indices(val_size=7)) == 7
    assert val_indices(val_size=0) == []
    assert Elasticity(tmp_path, split="val", log=False).root == root  # an os.PathLike root, as a str
    train = [int(d.raw_index) for d in Elasticity(root, split="train", val_size=7, split_seed=3, log=False)]
    assert len(train) == 993 and not set(train) & set(val_indices(val_size=7, split_seed=3))
    # the carve-out is a pure function of (val_size, split_seed): a torch.Generator permutation
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    assert first == sorted(perm[:100].tolist())


@pytest.mark.parametrize("cls", [Airfoil, Pipe, Elasticity, Plasticity])
def test_bad_arguments_named(cls, tmp_path):
    root = str(tmp_path)
    with pytest.raises(ValueError, match="split"):
        cls(root, split="valid")
    with pytest.raises(ValueError, match="val_size"):
        cls(root, val_size=cls.num_train)
    with pytest.raises(ValueError, match="val_size"):
        cls(root, val_size=-1)
    with pytest.raises(TypeError, match="val_size"):
        cls(root, val_size=0.1)
    with pytest.raises(TypeError, match="split_seed"):
        cls(root, split_seed="0")
    assert not fs.exists(osp.join(root, "processed"))


def test_plasticity_bad_time(tmp_path):
    with pytest.raises(ValueError, match="time"):
        Plasticity(str(tmp_path), time="first")
    with pytest.raises(ValueError, match="time"):
        Plasticity(str(tmp_path), time=-1)
    with pytest.raises(TypeError, match="time"):
        Plasticity(str(tmp_path), time=1.0)


def test_normalisation_helpers():
    for cls, constants in ((Airfoil, AIRFOIL), (Pipe, PIPE), (Elasticity, ELASTICITY)):
        pos = torch.randn(6, 2, dtype=torch.float64)
        expected = (pos - torch.tensor(constants["pos_mean"], dtype=torch.float64)) / torch.tensor(
            constants["pos_std"], dtype=torch.float64)
        torch.testing.assert_close(cls.normalize(pos, "pos"), expected)
        torch.testing.assert_close(cls.denormalize(expected, "pos"), pos)
        y = torch.randn(5, 1, dtype=torch.float64)
        torch.testing.assert_close(cls.denormalize(y), y * constants["y_std"] + constants["y_mean"])
        with pytest.raises(ValueError, match="field"):
            cls.normalize(y, "x")
    u = torch.randn(7, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(Plasticity.normalize(u), (u + 4.4049) / 14.3477)
    torch.testing.assert_close(Plasticity.denormalize(u.float()), (u.float() * 14.3477 - 4.4049))
    a = torch.randn(7, 1, dtype=torch.float64)
    torch.testing.assert_close(Plasticity.normalize(a, "x"), (a - 19.6351) / 2.3652)
    with pytest.raises(ValueError, match="field"):
        Plasticity.normalize(a, "pos")


# --------------------------------------------------------------------------------- bad data
@pytest.mark.parametrize("name", sorted(CASES))
def test_missing_file_listed_with_layout(name, root):
    cls, write, _ = CASES[name]
    write(osp.join(root, "raw"))
    missing = list(cls.raw_layout)[-1]
    fs.rm(osp.join(root, "raw", missing))
    with pytest.raises(FileNotFoundError) as info:
        cls(root, split="test", log=False)
    message = str(info.value)
    assert "1 raw file(s) missing" in message and missing in message.split("Download")[0]
    assert URL in message and "GB" in message
    for file in cls.raw_layout:  # the whole layout is spelled out
        assert file in message.split("arrange the files as")[1]
    assert processed_files(root, cls.folder) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_truncated_raw_file_named(name, root):
    cls, write, expected = CASES[name]
    raw = write(osp.join(root, "raw"))
    path = osp.join(root, "raw", list(cls.raw_layout)[0])
    payload = fs.get_fs(path).cat(path)
    with fs.get_fs(path).open(path, "wb") as f:
        f.write(payload[: len(payload) // 2])
    with pytest.raises(OSError, match=list(cls.raw_layout)[0].rsplit("/", 1)[-1]):
        cls(root, split="test", log=False)
    assert processed_files(root, cls.folder) == []
    with fs.get_fs(path).open(path, "wb") as f:
        f.write(b"not a numpy or matlab file" + payload[200:400])
    with pytest.raises(OSError, match=list(cls.raw_layout)[0].rsplit("/", 1)[-1]):
        cls(root, split="test", log=False)
    with fs.get_fs(path).open(path, "wb") as f:
        f.write(payload)
    data = cls(root, split="test", log=False)[0]
    check(data, expected(raw, int(data.raw_index)), t=0 if name == "plasticity" else None)


def _save_npy(path, array):
    with fs.get_fs(path).open(path, "wb") as f:
        np.save(f, array)


def test_wrong_shapes_and_values_named(root):
    raw_dir = osp.join(root, "raw")
    raw = write_airfoil(raw_dir)
    q = osp.join(raw_dir, "airfoil", "naca", "NACA_Cylinder_Q.npy")
    _save_npy(q, raw["Q"][:, :4])
    with pytest.raises(ValueError, match=r"NACA_Cylinder_Q.npy.*more than 4 channels"):
        Airfoil(root, log=False)
    _save_npy(q, raw["Q"][:, :, :, :2])
    with pytest.raises(ValueError, match=r"NACA_Cylinder_Q.npy.*must have shape \[1200, C, 5, 3\]"):
        Airfoil(root, log=False)
    bad = raw["Q"].copy()
    bad[1100, 4, 0, 0] = np.nan
    _save_npy(q, bad)
    with pytest.raises(ValueError, match=r"NACA_Cylinder_Q.npy.*sample 1100 holds non-finite"):
        Airfoil(root, log=False)
    write_airfoil(raw_dir, num_samples=1199)
    with pytest.raises(ValueError, match=r"NACA_Cylinder_X.npy.*at least 1200 samples.*1199"):
        Airfoil(root, log=False)
    assert processed_files(root, "airfoil") == []

    raw = write_elasticity(raw_dir)
    _save_npy(osp.join(raw_dir, "elasticity", "Meshes", "Random_UnitCell_XY_10.npy"), raw["XY"][:, :, :-1])
    with pytest.raises(ValueError, match=r"Random_UnitCell_XY_10.npy.*\[10, 2, 1210\]"):
        Elasticity(root, log=False)


def test_plasticity_mat_contents_checked(tmp_path):
    import scipy.io
    raw = write_plasticity(str(tmp_path / "raw"))
    path = tmp_path / "raw" / "plasticity" / "plas_N987_T20.mat"
    scipy.io.savemat(path, {"input": raw["input"], "outputs": raw["output"]})
    with pytest.raises(ValueError, match=r"plas_N987_T20.mat' has no variable 'output'"):
        Plasticity(str(tmp_path), log=False)
    scipy.io.savemat(path, {"input": raw["input"], "output": raw["output"][:, :4]})
    with pytest.raises(ValueError, match=r"plas_N987_T20.mat.*\[987, 5, W, T, C\]"):
        Plasticity(str(tmp_path), log=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_interrupted_process_leaves_nothing(name, root):
    cls, write, expected = CASES[name]
    raw = write(osp.join(root, "raw"))

    def interrupt(data):
        if int(data.raw_index) == 500:
            raise KeyboardInterrupt
        return True

    with pytest.raises(KeyboardInterrupt):
        cls(root, split="test", pre_filter=interrupt, log=False)
    assert processed_files(root, cls.folder) == []
    dataset = cls(root, split="train", log=False)
    assert processed_files(root, cls.folder) == ["data.pt", "pre_filter.pt", "pre_transform.pt"]
    data = dataset[len(dataset) - 1]
    check(data, expected(raw, int(data.raw_index)), t=int(data.time[0]) if name == "plasticity" else None)


def test_processed_loads_without_raw_and_force_reload_needs_it(root):
    write_elasticity(osp.join(root, "raw"))
    before = Elasticity(root, split="test", log=False)[3]
    fs.rm(osp.join(root, "raw"))
    after = Elasticity(root, split="test", log=False)[3]
    assert torch.equal(before.pos, after.pos) and torch.equal(before.y, after.y)
    with pytest.raises(FileNotFoundError, match="2 raw file"):
        Elasticity(root, split="test", force_reload=True, log=False)


def test_benchmarks_share_a_root(tmp_path):
    write_elasticity(str(tmp_path / "raw"))
    write_plasticity(str(tmp_path / "raw"))
    assert len(Elasticity(str(tmp_path), split="test", log=False)) == 200
    assert len(Plasticity(str(tmp_path), split="test", log=False)) == 80 * 4
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == ["elasticity", "plasticity"]


def test_pre_filter_and_pre_transform(tmp_path):
    write_airfoil(str(tmp_path / "raw"))

    def mark(data):
        data.y_raw = Airfoil.denormalize(data.y)
        return data

    dataset = Airfoil(str(tmp_path), split=None, pre_filter=lambda d: int(d.raw_index) % 2 == 0,
                      pre_transform=mark, log=False)
    indices = [int(dataset[i].raw_index) for i in range(len(dataset))]
    assert all(r % 2 == 0 for r in indices) and len(dataset) == 600
    assert [len(v) for v in dataset.get_idx_split().values()][2] == 100
    data = dataset[5]
    torch.testing.assert_close(data.y_raw, data.y * 0.1385 + 0.8163)


_PEAK_CHILD = """
import sys
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
from torch_geometric_erwin.datasets import Plasticity
base = rss("VmRSS")
data = Plasticity(sys.argv[1], split="test", time="all", log=False)[0]
print(rss("VmHWM") - base, float(data.y.sum()))
"""


@pytest.mark.skipif(not osp.exists("/proc/self/status"), reason="peak memory read from /proc (Linux)")
@pytest.mark.parametrize("compressed", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_plasticity_processing_peak_memory(tmp_path, compressed):
    """Processing a 126 MB float64 file (the real one's 20 steps and 4 channels on a smaller grid) grows the
    process by less than 3x the float32 data it stores; reading it with scipy.io.loadmat took 5.6x."""
    import subprocess
    import sys
    import scipy.io
    raw = write_plasticity(str(tmp_path / "raw"), grid=(20, 10), num_steps=20, channels=4)
    if compressed:
        scipy.io.savemat(tmp_path / "raw" / "plasticity" / "plas_N987_T20.mat", raw, do_compression=True)
    float32_bytes = raw["output"].nbytes // 2
    env = {**__import__("os").environ, "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    growth, total = result.stdout.split()
    expected = ((raw["output"][-80] - PLASTICITY["y_mean"]) / PLASTICITY["y_std"]).sum()
    assert abs(float(total) - expected) < 1e-3 * abs(expected) + 1.0  # the child processed this file
    assert int(growth) < 3 * float32_bytes, f"peak growth {int(growth) / 2**20:.0f} MiB"


def test_plasticity_reads_without_scipy(tmp_path, monkeypatch):
    raw = write_plasticity(str(tmp_path / "raw"))
    monkeypatch.setitem(__import__("sys").modules, "scipy", None)
    data = Plasticity(str(tmp_path), split="test", time="all", log=False)[0]
    check(data, plasticity_sample(raw, int(data.raw_index)))


# --------------------------------------------------------------------------------- examples
@pytest.mark.parametrize("name", sorted(CASES))
def test_examples_load_the_datasets(name, tmp_path):
    cls, write, _ = CASES[name]
    write(str(tmp_path / "raw"))
    example = load_example(name)
    train, val, test = example.EXPERIMENT.load(argparse.Namespace(data=str(tmp_path)), None)
    steps = 4 if name == "plasticity" else 1
    pool, num_test = cls.num_train, len(SPLITS[name][2])
    assert (len(train), len(val), len(test)) == (pool - pool // 10, pool // 10 * steps, num_test * steps)
    assert all(f"raw/{f.rsplit('/', 1)[0]}/" in example.EXPERIMENT.layout for f in cls.raw_layout)
    assert int(test[len(test) - 1].raw_index) == SPLITS[name][2][-1]


def test_testing_package_has_a_writer_for_every_raw_file_dataset_and_the_package_ships_none():
    import torch_geometric_erwin.datasets as datasets
    import torch_geometric_erwin.testing as testing
    writers = {"Airfoil": "write_airfoil", "Cosmology": "write_cosmology", "EAGLE": "write_eagle",
               "Elasticity": "write_elasticity", "Pipe": "write_pipe", "Plasticity": "write_plasticity",
               "PolymerMD": "write_polymer_md", "ShapeNetCar": "write_shapenet_car"}
    generated = {"SyntheticNBody", "ProcessedFileError"}  # generated data; an exception
    assert set(datasets.__all__) - generated == set(writers)
    assert all(callable(getattr(testing, writers[name])) for name in writers)
    folder = os.path.dirname(datasets.__file__)
    assert not [f for f in os.listdir(folder) if f.startswith("fixtures")]


def test_damaged_processed_file_names_it(tmp_path):
    write_airfoil(str(tmp_path / "raw"))
    before = Airfoil(str(tmp_path), split="test", log=False)[0]
    path = tmp_path / "processed" / "airfoil" / "data.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(OSError, match=r"processed file '.*airfoil/data.pt' cannot be read.*force_reload=True"):
        Airfoil(str(tmp_path), split="test", log=False)
    after = Airfoil(str(tmp_path), split="test", force_reload=True, log=False)[0]
    assert torch.equal(before.y, after.y)


@pytest.mark.parametrize("write, centre, spread, field, channels", [
    (write_airfoil, (1.5, 0.0), (20.0, 20.0), (0.8, 0.14), 5),
    (write_pipe, (5.0, 0.0), (10.0, 2.0), (0.17, 0.08), 3)])
def test_smooth_fixture_fields_follow_the_positions(write, centre, spread, field, channels, tmp_path):
    """``smooth=True``: channel c is a wave over the positions (plus 1 % noise), so a model can learn it;
    the positions are those of the noise fixture."""
    raw = write(str(tmp_path / "smooth"), num_samples=6, grid=(9, 5), smooth=True)
    noise = write(str(tmp_path / "noise"), num_samples=6, grid=(9, 5))
    np.testing.assert_array_equal(raw["X"], noise["X"])
    np.testing.assert_array_equal(raw["Y"], noise["Y"])
    a, b = (raw["X"] - centre[0]) / spread[0], (raw["Y"] - centre[1]) / spread[1]
    for c in range(channels):
        wave = np.sin(2 * np.pi * a + c) * np.cos(np.pi * b + 0.5 * c)
        residual = raw["Q"][:, c] - (field[0] + field[1] * wave)
        assert np.abs(residual).max() < 0.05 * field[1]
        assert 0.005 * field[1] < residual.std() < 0.02 * field[1]
