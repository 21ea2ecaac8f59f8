"""Cosmology and ShapeNetCar: raw fixtures -> process -> samples checked against the fixture arrays."""
import io
import os.path as osp
import struct
import sys
import uuid
import zipfile

import numpy as np
import pytest
import torch
from torch_geometric.io import fs
from torch_geometric.loader import DataLoader

from support.datasets import interrupt_at, processed_files
from torch_geometric_erwin.datasets import Cosmology, ShapeNetCar
from torch_geometric_erwin.datasets.cosmology import decode_float_tensor, parse_example
from torch_geometric_erwin.testing import (
    encode_example,
    encode_tensor_proto,
    tfrecord_frame,
    write_cosmology,
    write_shapenet_car,
)
from torch_geometric_erwin.transforms import BallTreeTransform

pytest.importorskip("crc32c")

# Published constants (reference facts), restated here independently of the dataset classes.
POS_MEAN = np.array([499.91877075908684, 500.0947802559321, 499.964508664328])
POS_STD = np.array([288.71092533309235, 288.7525818573022, 288.70234893905575])
VEL_MEAN = np.array([-0.0512854365234889, -0.01263126442198149, -0.06458034372345466])
VEL_STD = np.array([344.0231468131901, 343.9333673335964, 344.071876710777])
DOMAIN_MIN, DOMAIN_MAX = np.array([-2.0, -1.0, -4.5]), np.array([2.0, 4.5, 6.0])
PRESSURE_MEAN, PRESSURE_STD = -36.3099, 48.5743
# The first entries of the reference's published TEST_INDICES (in randperm order).
REFERENCE_TEST_HEAD = [550, 592, 229, 547, 62, 464, 798, 836, 5, 732, 876, 843, 367, 496]
SMALL = {"train": 5, "val": 3, "test": 2}


@pytest.fixture
def no_network(monkeypatch):
    """Points the Cosmology archive URL at nothing, so no test can start a 7 GB download."""
    monkeypatch.setattr(Cosmology, "url", f"memory://{uuid.uuid4().hex}/files-archive")


def rewrite(path, payload):
    with fs.get_fs(path).open(path, "wb") as f:
        f.write(payload)


# ------------------------------------------------------------------------------- Cosmology
def cosmology_order(records):
    """Records of one split in the documented order: file names sorted, then position in file."""
    return sorted(records, key=lambda r: (r["file"], r["index"]))


def expected_cosmology(record):
    pos = np.stack([record[k] for k in ("x", "y", "z")], axis=1).astype(np.float64)
    vel = np.stack([record[k] for k in ("v_x", "v_y", "v_z")], axis=1).astype(np.float64)
    return (pos - POS_MEAN) / POS_STD, (vel - VEL_MEAN) / VEL_STD


def check_cosmology_sample(data, record):
    pos, vel = expected_cosmology(record)
    torch.testing.assert_close(data.pos.double(), torch.from_numpy(pos), atol=1e-6, rtol=0)
    torch.testing.assert_close(data.y.double(), torch.from_numpy(vel), atol=1e-6, rtol=0)
    assert data.pos.dtype == data.y.dtype == torch.float32
    assert data.edge_index is None and data.x is None


def test_cosmology_samples_match_fixture(root, no_network):
    raw = write_cosmology(osp.join(root, "raw"), num_halos=24)
    dataset = Cosmology(root, split=None, num_samples=SMALL, log=False)
    records = [r for split in ("train", "val", "test") for r in cosmology_order(raw[split])]
    assert len(dataset) == len(records) == 10
    for i, record in enumerate(records):
        check_cosmology_sample(dataset[i], record)
    split = dataset.get_idx_split()
    assert [split[k].tolist() for k in ("train", "valid", "test")] == [[0, 1, 2, 3, 4], [5, 6, 7], [8, 9]]
    val = Cosmology(root, split="val", num_samples=3, log=False)
    assert len(val) == 3 and val.get_idx_split()["valid"].tolist() == [0, 1, 2]
    check_cosmology_sample(val[2], cosmology_order(raw["val"])[2])
    assert val.get_idx_split()["train"].numel() == 0


def test_cosmology_file_order_and_num_samples(tmp_path, no_network):
    raw = write_cosmology(str(tmp_path / "raw"), {"train": 11, "val": 2, "test": 1}, records_per_file=1)
    first = Cosmology(tmp_path, split="train", num_samples=4, log=False)  # an os.PathLike root, as a str
    assert first.root == str(tmp_path)
    files = [r["file"] for r in cosmology_order(raw["train"])]
    assert files[:4] == ["halos_train_1.tfrecord", "halos_train_10.tfrecord", "halos_train_11.tfrecord",
                         "halos_train_2.tfrecord"]  # name order, as documented
    for i in range(4):
        check_cosmology_sample(first[i], cosmology_order(raw["train"])[i])
    every = Cosmology(str(tmp_path), split="train", num_samples={"train": None}, log=False)
    assert len(every) == 11
    check_cosmology_sample(every[10], cosmology_order(raw["train"])[10])
    assert processed_files(str(tmp_path)) == ["pre_filter.pt", "pre_transform.pt", "train_4.pt", "train_all.pt"]
    with pytest.raises(ValueError, match=r"num_samples: split 'val' has 2 records.*3 requested"):
        Cosmology(str(tmp_path), split="val", num_samples=3, log=False)
    with pytest.raises(ValueError, match=r"num_samples: split 'train' has 11 records.*8192 requested"):
        Cosmology(str(tmp_path), split="train", log=False)  # the reference's default
    assert "train_8192.pt" not in processed_files(str(tmp_path))


def test_cosmology_records_are_real_tfrecords(tmp_path):
    """The fixture, read by independent code: the tfrecord package and protobuf's own parser."""
    pytest.importorskip("tfrecord")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from tfrecord import example_pb2
    from tfrecord.reader import tfrecord_iterator
    from tfrecord.writer import TFRecordWriter

    raw = write_cosmology(str(tmp_path), {"train": 2}, records_per_file=2, num_halos=7,
                          scalar_encoding="float_val")
    fdp = descriptor_pb2.FileDescriptorProto(name="tensor.proto", package="t", syntax="proto3")
    dim = fdp.message_type.add(name="Dim")
    dim.field.add(name="size", number=1, type=3, label=1)
    shape = fdp.message_type.add(name="Shape")
    shape.field.add(name="dim", number=2, type=11, label=3, type_name=".t.Dim")
    tensor = fdp.message_type.add(name="TensorProto")
    tensor.field.add(name="dtype", number=1, type=5, label=1)
    tensor.field.add(name="tensor_shape", number=2, type=11, label=1, type_name=".t.Shape")
    tensor.field.add(name="tensor_content", number=4, type=12, label=1)
    tensor.field.add(name="float_val", number=5, type=2, label=3)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    TensorProto = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.TensorProto"))
    path = str(tmp_path / "halos_train_1.tfrecord")
    payloads = [bytes(p) for p in tfrecord_iterator(path)]
    assert len(payloads) == 2
    for payload, record in zip(payloads, raw["train"]):
        example = example_pb2.Example()
        example.ParseFromString(payload)
        assert len(example.features.feature) == 17
        proto = TensorProto()
        proto.ParseFromString(example.features.feature["v_y"].bytes_list.value[0])
        assert proto.dtype == 1 and [d.size for d in proto.tensor_shape.dim] == [7]
        assert np.array_equal(np.frombuffer(proto.tensor_content, "<f4"), record["v_y"])
        proto.ParseFromString(example.features.feature["sigma_8"].bytes_list.value[0])
        assert list(proto.tensor_shape.dim) == [] and proto.float_val == [record["sigma_8"]]
        # and our decoder agrees on both encodings
        features = parse_example(payload)
        assert np.array_equal(decode_float_tensor(features["v_y"]), record["v_y"])
        assert decode_float_tensor(features["sigma_8"]).shape == ()
        assert decode_float_tensor(features["sigma_8"]) == record["sigma_8"]
    with open(path, "rb") as f:  # the framing checksums are TFRecord's
        length = f.read(8)
        assert f.read(4) == TFRecordWriter.masked_crc(length)
        payload = f.read(struct.unpack("<Q", length)[0])
        assert f.read(4) == TFRecordWriter.masked_crc(payload)


def test_cosmology_tensor_decoding_variants():
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(decode_float_tensor(encode_tensor_proto(values)), values)
    assert np.array_equal(decode_float_tensor(encode_tensor_proto(values, float_val=True)), values)
    # one float_val for many elements repeats (TensorProto semantics)
    proto = encode_tensor_proto(np.full((2, 2), 3.5, np.float32), float_val=True)
    short = encode_tensor_proto(np.array([3.5], np.float32), float_val=True)
    shape = encode_tensor_proto(np.zeros((2, 2), np.float32))
    assert decode_float_tensor(proto).tolist() == [[3.5, 3.5], [3.5, 3.5]]
    # dtype + shape [2, 2] of `shape` (its 18-byte tensor_content dropped) + the one float_val of `short`
    assert decode_float_tensor(shape[:-18] + short[-6:]).tolist() == [[3.5, 3.5], [3.5, 3.5]]
    double = b"\x08\x02" + encode_tensor_proto(values)[2:]  # dtype DT_DOUBLE
    with pytest.raises(ValueError, match="DT_FLOAT"):
        decode_float_tensor(double)
    with pytest.raises(ValueError, match="tensor_content holds 20 bytes"):
        decode_float_tensor(encode_tensor_proto(values)[:-4].replace(b"\x22\x18", b"\x22\x14"))
    with pytest.raises(ValueError, match="malformed"):
        decode_float_tensor(encode_tensor_proto(values)[:-3])


def test_cosmology_normalisation_helpers():
    vel = torch.randn(5, 3, dtype=torch.float64)
    expected = (vel - torch.from_numpy(VEL_MEAN)) / torch.from_numpy(VEL_STD)
    torch.testing.assert_close(Cosmology.normalize(vel), expected)
    torch.testing.assert_close(Cosmology.denormalize(expected, "vel"), vel)
    pos = torch.rand(4, 6, dtype=torch.float64) * 1000
    expected = (pos.view(4, 2, 3) - torch.from_numpy(POS_MEAN)) / torch.from_numpy(POS_STD)
    torch.testing.assert_close(Cosmology.normalize(pos, "pos"), expected.view(4, 6))
    with pytest.raises(ValueError, match="field"):
        Cosmology.normalize(vel, "mass")
    with pytest.raises(ValueError, match="multiple of 3"):
        Cosmology.normalize(torch.ones(2, 4), "pos")


def test_cosmology_loader_with_ball_tree(tmp_path, no_network):
    write_cosmology(str(tmp_path / "raw"), num_halos=20)
    dataset = Cosmology(str(tmp_path), split="train", num_samples=5, log=False,
                        transform=BallTreeTransform(ball_sizes=[16], strides=[]))
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch.num_graphs == 3 and batch.pos.shape == (60, 3) and batch.y.shape == (60, 3)
    assert batch.tree_mask.sum() == 60 and batch.tree_index.numel() >= 60


def test_cosmology_missing_files_listed(root, no_network):
    raw_dir = osp.join(root, "raw")
    write_cosmology(raw_dir, {"train": 2})
    with pytest.raises(FileNotFoundError) as info:
        Cosmology(root, split=None, num_samples=2, log=False)
    message = str(info.value)
    assert "2 raw file(s) missing" in message and "halos*val*.tfrecord" in message
    assert "halos*test*.tfrecord" in message and "halos*train*" not in message.split("Download")[0]
    assert "zenodo.org/records/11479419" in message and "halos_val_<k>.tfrecord" in message
    assert "automatic download" in message
    assert processed_files(root) == []


def test_cosmology_downloads_and_extracts_archive(tmp_path, monkeypatch):
    source = f"memory://{uuid.uuid4().hex}"
    raw = write_cosmology(f"{source}/records", num_halos=8)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in fs.glob(f"{source}/records/*.tfrecord"):
            name = path.rsplit("/", 1)[-1]
            archive.writestr(f"quijote_records/{name}", fs.get_fs(path).cat(path))
        archive.writestr("quijote_records/README.txt", b"not a record")
    rewrite(f"{source}/files-archive", buffer.getvalue())
    monkeypatch.setattr(Cosmology, "url", f"{source}/files-archive")
    dataset = Cosmology(str(tmp_path), split="test", num_samples=2, log=False)
    check_cosmology_sample(dataset[1], cosmology_order(raw["test"])[1])
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "halos_test_1.tfrecord", "halos_train_1.tfrecord", "halos_train_2.tfrecord",
        "halos_train_3.tfrecord", "halos_val_1.tfrecord", "halos_val_2.tfrecord"]


def test_cosmology_corrupt_files_named(root, no_network):
    raw_dir = osp.join(root, "raw")
    write_cosmology(raw_dir)
    path = osp.join(raw_dir, "halos_train_2.tfrecord")
    payload = fs.get_fs(path).cat(path)
    rewrite(path, payload[:len(payload) - 100])
    with pytest.raises(OSError, match=r"halos_train_2.tfrecord' is truncated in record 1"):
        Cosmology(root, num_samples=5, log=False)
    assert processed_files(root) == []
    flipped = bytearray(payload)
    flipped[len(payload) // 3] ^= 0xFF
    rewrite(path, bytes(flipped))
    with pytest.raises(OSError, match=r"halos_train_2.tfrecord' is corrupt: data checksum"):
        Cosmology(root, num_samples=5, log=False)
    rewrite(path, payload)
    # a valid record that lacks a feature
    features = {k: encode_tensor_proto(np.zeros(4, np.float32)) for k in ("x", "y", "z", "v_x", "v_z")}
    rewrite(osp.join(raw_dir, "halos_val_9.tfrecord"), tfrecord_frame(encode_example(features)))
    with pytest.raises(ValueError, match=r"halos_val_9.tfrecord', record 0 has no bytes feature 'v_y'"):
        Cosmology(root, split="val", num_samples=4, log=False)
    features["v_y"] = encode_tensor_proto(np.zeros(5, np.float32))
    rewrite(osp.join(raw_dir, "halos_val_9.tfrecord"), tfrecord_frame(encode_example(features)))
    with pytest.raises(ValueError, match=r"halos_val_9.tfrecord', record 0: feature 'v_y' must have shape"):
        Cosmology(root, split="val", num_samples=4, log=False)
    assert len(Cosmology(root, num_samples=5, log=False)) == 5


def test_cosmology_interrupted_process_leaves_nothing(root, no_network):
    raw = write_cosmology(osp.join(root, "raw"))
    with pytest.raises(KeyboardInterrupt):
        Cosmology(root, num_samples=5, pre_filter=interrupt_at(2), log=False)
    assert processed_files(root) == []
    dataset = Cosmology(root, num_samples=5, log=False)
    check_cosmology_sample(dataset[4], cosmology_order(raw["train"])[4])


@pytest.mark.filterwarnings("ignore:The `pre_filter` argument differs")
def test_cosmology_pre_filter_and_loading_without_raw(root, no_network):
    raw = write_cosmology(osp.join(root, "raw"))
    def in_front(data):
        return bool(data.pos[0, 0] > -0.5)

    keep = Cosmology(root, split=None, num_samples=SMALL, log=False, pre_filter=in_front)
    expected = [r for s in ("train", "val", "test") for r in cosmology_order(raw[s])
                if (r["x"][0] - POS_MEAN[0]) / POS_STD[0] > -0.5]
    assert len(keep) == len(expected) and sum(len(v) for v in keep.get_idx_split().values()) == len(keep)
    fs.rm(osp.join(root, "raw"), recursive=True)
    again = Cosmology(root, split=None, num_samples=SMALL, log=False, pre_filter=in_front)
    assert torch.equal(again[len(again) - 1].y, keep[len(keep) - 1].y)


def test_cosmology_bad_arguments(tmp_path, no_network):
    for kwargs, error, match in (
            (dict(split="valid"), ValueError, "split"),
            (dict(num_samples=0), ValueError, "num_samples"),
            (dict(num_samples=True), TypeError, "num_samples"),
            (dict(num_samples=2.5), TypeError, "num_samples"),
            (dict(num_samples={"training": 3}), ValueError, "num_samples keys"),
            (dict(num_samples={"val": -1}), ValueError, r"num_samples\['val'\]")):
        with pytest.raises(error, match=match):
            Cosmology(str(tmp_path), **kwargs)
    assert not (tmp_path / "raw").exists() and not (tmp_path / "processed").exists()


def test_cosmology_without_crc32c(tmp_path, no_network, monkeypatch):
    write_cosmology(str(tmp_path / "raw"))
    monkeypatch.setitem(sys.modules, "crc32c", None)
    with pytest.raises(ImportError, match="pip install crc32c"):
        Cosmology(str(tmp_path), num_samples=5, log=False)


# ----------------------------------------------------------------------------- ShapeNetCar
FIXTURE_SPLIT = dict(num_cars=15, num_test=4, num_val=3)


def expected_shapenet(arrays):
    pos = (arrays["mesh_points"].astype(np.float64) - DOMAIN_MIN) / (DOMAIN_MAX - DOMAIN_MIN)
    pos = (pos - 0.4063) / 0.1531
    pressure = (arrays["pressure"].astype(np.float64) - PRESSURE_MEAN) / PRESSURE_STD
    return pos, pressure.reshape(-1, 1)


def check_car(data, car_id, arrays):
    pos, pressure = expected_shapenet(arrays)
    assert data.car_id == car_id
    torch.testing.assert_close(data.pos.double(), torch.from_numpy(pos), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.y.double(), torch.from_numpy(pressure), atol=1e-6, rtol=0)
    assert data.pos.dtype == data.y.dtype == torch.float32 and data.y.shape == (len(pos), 1)


def reference_splits(num_cars, num_test, num_val, val_seed=0):
    """The documented recipe, written out independently."""
    test = torch.randperm(num_cars, generator=torch.Generator().manual_seed(0))[:num_test].tolist()
    train = [i for i in range(num_cars) if i not in set(test)]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(val_seed)).tolist()
    val = sorted(train[k] for k in order[:num_val])
    return sorted(set(train) - set(val)), val, sorted(test)


def test_shapenet_samples_match_fixture(root):
    raw = write_shapenet_car(osp.join(root, "raw"))  # 15 cars
    cars = sorted(raw, key=lambda c: (int(c.split("/")[0][5:]), c))  # param0..8, ids sorted
    dataset = ShapeNetCar(root, split=None, log=False, **FIXTURE_SPLIT)
    assert len(dataset) == 15
    for i, car in enumerate(cars):
        check_car(dataset[i], car, raw[car])
        assert dataset[i].car_index.tolist() == [i]
    train, val, test = reference_splits(15, 4, 3)
    split = dataset.get_idx_split()
    assert [split[k].tolist() for k in ("train", "valid", "test")] == [train, val, test]
    for name, indices in (("train", train), ("val", val), ("test", test)):
        part = ShapeNetCar(root, split=name, log=False, **FIXTURE_SPLIT)
        assert [part[k].car_id for k in range(len(part))] == [cars[i] for i in indices]
        check_car(part[len(part) - 1], cars[indices[-1]], raw[cars[indices[-1]]])
        assert part.get_idx_split()[{"val": "valid"}.get(name, name)].tolist() == list(range(len(indices)))
    assert processed_files(root) == ["cars.pt", "pre_filter.pt", "pre_transform.pt"]


def test_shapenet_reference_split():
    splits = ShapeNetCar.car_splits(889)
    test = [i for i, s in enumerate(splits) if s == "test"]
    assert len(test) == 189 and set(REFERENCE_TEST_HEAD) <= set(test)
    assert set(test) == set(torch.randperm(889, generator=torch.Generator().manual_seed(0))[:189].tolist())
    assert splits.count("val") == 70 and splits.count("train") == 630
    train, val, test_again = reference_splits(889, 189, 70)
    assert [i for i, s in enumerate(splits) if s == "val"] == val and test_again == test
    assert ShapeNetCar.car_splits(889) == splits  # deterministic
    other = ShapeNetCar.car_splits(889, val_seed=1)
    assert other != splits and [s == "test" for s in other] == [s == "test" for s in splits]
    assert ShapeNetCar.car_splits(889, num_val=0).count("train") == 700  # the reference's train split


def test_shapenet_validation_seed_and_size(tmp_path):
    write_shapenet_car(str(tmp_path / "raw"))
    a = ShapeNetCar(tmp_path, split="val", log=False, **FIXTURE_SPLIT)  # an os.PathLike root, as a str
    assert a.root == str(tmp_path)
    b = ShapeNetCar(str(tmp_path), split="val", log=False, **FIXTURE_SPLIT)
    cars = lambda d: [d[i].car_id for i in range(len(d))]  # noqa: E731
    assert cars(a) == cars(b) and len(a) == 3
    seeds = {tuple(cars(ShapeNetCar(str(tmp_path), split="val", val_seed=s, log=False, **FIXTURE_SPLIT)))
             for s in range(5)}
    assert len(seeds) > 1
    bigger = ShapeNetCar(str(tmp_path), split="val", num_val=5, num_cars=15, num_test=4, log=False)
    train = ShapeNetCar(str(tmp_path), split="train", num_val=5, num_cars=15, num_test=4, log=False)
    assert len(bigger) == 5 and len(train) == 6 and not set(cars(bigger)) & set(cars(train))


def test_shapenet_permutation_is_opt_in(tmp_path):
    raw = write_shapenet_car(str(tmp_path / "raw"), num_points=30)
    plain = ShapeNetCar(str(tmp_path), split="test", log=False, **FIXTURE_SPLIT)
    shuffled = ShapeNetCar(str(tmp_path), split="test", permute=True, log=False, **FIXTURE_SPLIT)
    assert torch.equal(plain[0].pos, plain[0].pos)
    torch.manual_seed(5)
    data = shuffled[0]
    torch.manual_seed(5)
    perm = torch.randperm(30)
    assert torch.equal(data.pos, plain[0].pos[perm]) and torch.equal(data.y, plain[0].y[perm])
    assert not torch.equal(data.pos, plain[0].pos) and data.car_id == plain[0].car_id
    check_car(plain[0], plain[0].car_id, raw[plain[0].car_id])
    with pytest.raises(TypeError, match="permute"):
        ShapeNetCar(str(tmp_path), permute=1, **FIXTURE_SPLIT)


def test_shapenet_loader_with_ball_tree(tmp_path):
    write_shapenet_car(str(tmp_path / "raw"), num_points=20)
    dataset = ShapeNetCar(str(tmp_path), split="train", log=False, permute=True,
                          transform=BallTreeTransform(ball_sizes=[16], strides=[]), **FIXTURE_SPLIT)
    batch = next(iter(DataLoader(dataset, batch_size=2, shuffle=True)))
    assert batch.num_graphs == 2 and batch.pos.shape == (40, 3) and batch.y.shape == (40, 1)
    assert batch.tree_mask.sum() == 40 and batch.car_index.shape == (2,) and len(batch.car_id) == 2


def test_shapenet_normalisation_helpers():
    p = torch.randn(7, 1, dtype=torch.float64) * 50
    torch.testing.assert_close(ShapeNetCar.normalize(p), (p - PRESSURE_MEAN) / PRESSURE_STD)
    torch.testing.assert_close(ShapeNetCar.denormalize(ShapeNetCar.normalize(p)), p)
    pos = torch.rand(5, 3, dtype=torch.float64) * 4 - 2
    expected = ((pos.numpy() - DOMAIN_MIN) / (DOMAIN_MAX - DOMAIN_MIN) - 0.4063) / 0.1531
    torch.testing.assert_close(ShapeNetCar.normalize(pos, "pos"), torch.from_numpy(expected))
    torch.testing.assert_close(ShapeNetCar.denormalize(torch.from_numpy(expected), "pos"), pos)
    with pytest.raises(ValueError, match="field"):
        ShapeNetCar.normalize(p, "velocity")


def test_shapenet_missing_files_listed(root):
    raw_dir = osp.join(root, "raw")
    raw = write_shapenet_car(raw_dir)
    car = list(raw)[5]
    fs.rm(osp.join(raw_dir, car, "pressure.th"))
    with pytest.raises(FileNotFoundError) as info:
        ShapeNetCar(root, log=False, **FIXTURE_SPLIT)
    message = str(info.value)
    assert f"{car}/pressure.th" in message and "1 raw file(s) missing" in message
    assert "ml-jku/UPT/blob/main/SETUP_DATA.md" in message and "mlcfd_data.zip" in message
    assert "param0/<car_id>/mesh_points.th" in message and "889 car directories" in message
    assert processed_files(root) == []
    with pytest.raises(FileNotFoundError, match="9 raw file\\(s\\) missing(.|\n)*param8"):
        ShapeNetCar(root + "-empty", log=False)


def test_shapenet_corrupt_files_named(root):
    raw_dir = osp.join(root, "raw")
    raw = write_shapenet_car(raw_dir)
    car = list(raw)[7]
    path = osp.join(raw_dir, car, "mesh_points.th")
    payload = fs.get_fs(path).cat(path)
    rewrite(path, payload[:len(payload) // 2])
    with pytest.raises(OSError, match=f"{car}/mesh_points.th"):
        ShapeNetCar(root, log=False, **FIXTURE_SPLIT)
    assert processed_files(root) == []
    rewrite(path, payload)
    pressure = osp.join(raw_dir, car, "pressure.th")
    buffer = io.BytesIO()
    torch.save(torch.zeros(39), buffer)
    original = fs.get_fs(pressure).cat(pressure)
    rewrite(pressure, buffer.getvalue())
    with pytest.raises(ValueError, match=f"{car}/pressure.th' must hold 40 values"):
        ShapeNetCar(root, log=False, **FIXTURE_SPLIT)
    buffer = io.BytesIO()
    torch.save({"pressure": torch.zeros(40)}, buffer)
    rewrite(pressure, buffer.getvalue())
    with pytest.raises(ValueError, match=f"{car}/pressure.th' must hold a floating-point torch.Tensor"):
        ShapeNetCar(root, log=False, **FIXTURE_SPLIT)
    rewrite(pressure, original)
    with pytest.raises(ValueError, match=r"found 15 car directories.*889 expected \(num_cars\)"):
        ShapeNetCar(root, log=False, num_test=4, num_val=3)  # the reference's count by default
    assert len(ShapeNetCar(root, split=None, log=False, **FIXTURE_SPLIT)) == 15


def test_shapenet_interrupted_process_leaves_nothing(root):
    raw = write_shapenet_car(osp.join(root, "raw"))
    with pytest.raises(KeyboardInterrupt):
        ShapeNetCar(root, pre_filter=interrupt_at(9), log=False, **FIXTURE_SPLIT)
    assert processed_files(root) == []
    dataset = ShapeNetCar(root, split=None, log=False, **FIXTURE_SPLIT)
    car = list(raw)[14]
    check_car(dataset[14], car, raw[car])


@pytest.mark.filterwarnings("ignore:The `pre_filter` argument differs")
def test_shapenet_pre_filter_keeps_splits_and_loads_without_raw(root):
    raw = write_shapenet_car(osp.join(root, "raw"))
    fs.makedirs(osp.join(root, "raw", "param4"), exist_ok=True)
    rewrite(osp.join(root, "raw", "param4", "notes.txt"), b"not a car")  # files in param dirs are ignored
    dropped = list(raw)[1]
    def kept_car(data):
        return data.car_id != dropped

    dataset = ShapeNetCar(root, split=None, log=False, pre_filter=kept_car, **FIXTURE_SPLIT)
    assert len(dataset) == 14 and dropped not in [dataset[i].car_id for i in range(14)]
    train, val, test = reference_splits(15, 4, 3)
    kept = [i for i in range(15) if i != 1]
    split = dataset.get_idx_split()
    assert [dataset[int(k)].car_index.item() for k in split["test"]] == [i for i in test if i in kept]
    assert [dataset[int(k)].car_index.item() for k in split["valid"]] == [i for i in val if i in kept]
    fs.rm(osp.join(root, "raw"), recursive=True)
    again = ShapeNetCar(root, split="test", log=False, pre_filter=kept_car, **FIXTURE_SPLIT)
    assert [again[i].car_index.item() for i in range(len(again))] == [i for i in test if i in kept]
    with pytest.raises(ValueError, match="num_cars: the processed dataset .* built from 15 cars"):
        ShapeNetCar(root, log=False, num_test=4, num_val=3, num_cars=16, pre_filter=kept_car)


def test_shapenet_bad_arguments(tmp_path):
    for kwargs, error, match in (
            (dict(split="valid"), ValueError, "split"),
            (dict(num_val=-1), ValueError, "num_val"),
            (dict(num_test=0), ValueError, "num_test"),
            (dict(val_seed="0"), ValueError, "val_seed"),
            (dict(num_cars=5, num_test=4, num_val=3), ValueError, "num_cars"),
            (dict(num_cars=15.0), ValueError, "num_cars"),
            (dict(permute="yes"), TypeError, "permute")):
        with pytest.raises(error, match=match):
            ShapeNetCar(str(tmp_path), **kwargs)
    assert not (tmp_path / "raw").exists() and not (tmp_path / "processed").exists()
    write_shapenet_car(str(tmp_path / "raw"))
    with pytest.raises(ValueError, match="num_test \\+ num_val"):
        ShapeNetCar(str(tmp_path), num_cars=None, num_test=10, num_val=5, log=False)


@pytest.mark.parametrize("name", ["cosmology", "shapenet"])
def test_damaged_processed_file_names_it(name, tmp_path, no_network):
    """A truncated processed file: an error naming it and force_reload=True (never weights_only=False),
    and force_reload=True rebuilds it."""
    root = str(tmp_path / name)
    if name == "cosmology":
        write_cosmology(osp.join(root, "raw"))
        make = lambda **kw: Cosmology(root, split="train", num_samples=4, log=False, **kw)  # noqa: E731
    else:
        write_shapenet_car(osp.join(root, "raw"))
        make = lambda **kw: ShapeNetCar(root, split="train", num_cars=None, num_test=SMALL["test"],  # noqa: E731
                                        num_val=SMALL["val"], log=False, **kw)
    before = make()
    path = before.processed_paths[0]
    with open(path, "rb") as handle:
        head = handle.read(1000)
    with open(path, "wb") as handle:
        handle.write(head)
    with pytest.raises(OSError, match=rf"processed file '{path}' cannot be read.*force_reload=True") as info:
        make()
    assert "weights_only" not in str(info.value)
    after = make(force_reload=True)
    assert torch.equal(before[0].pos, after[0].pos)
