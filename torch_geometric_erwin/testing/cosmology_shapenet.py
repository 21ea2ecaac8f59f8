r"""Tiny raw files in the exact formats and layouts of :class:`Cosmology` and
:class:`ShapeNetCar`, with known values, for tests and examples.

Both writers accept any fsspec URL as ``raw_dir`` (the dataset's
``root/raw``) and return the arrays they wrote, so that expected samples can
be computed independently of the dataset code.

The cosmology writer produces real TFRecord files: each record is framed as
``length (u64) | masked CRC-32C of length (u32) | payload | masked CRC-32C of
payload (u32)`` (little-endian), and the payload is a serialized
``tf.train.Example`` whose features are ``bytes_list`` values holding
serialized float32 ``TensorProto`` messages, as ``tf.io.serialize_tensor``
writes them. The protobuf messages are encoded here by hand (no TensorFlow).
"""
from __future__ import annotations

import io
import os.path as osp
import struct
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from torch_geometric_erwin.datasets._window_store import require_module
from torch_geometric_erwin.testing._files import write_file

#: Per-halo features of every record, in the order they are written.
HALO_FEATURES = ("x", "y", "z", "v_x", "v_y", "v_z", "J_x", "J_y", "J_z", "M200c", "Rvir")
#: Scalar cosmological parameters of every record.
COSMOLOGY_PARAMS = ("Omega_m", "Omega_b", "h", "n_s", "sigma_8")


# ------------------------------------------------------------ protobuf encoding
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    r"""A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_tensor_proto(array: np.ndarray, float_val: bool = False) -> bytes:
    r"""A float32 ``TensorProto``: ``dtype`` (1) = ``DT_FLOAT``, ``tensor_shape``
    (2) with one ``dim`` (2) per axis holding its ``size`` (1), and the values as
    little-endian ``tensor_content`` (4) or, with ``float_val=True``, as packed
    ``float_val`` (5)."""
    array = np.asarray(array, dtype="<f4")
    shape = b"".join(_field(2, _varint(1 << 3 | 0) + _varint(size)) for size in array.shape)
    out = _varint(1 << 3 | 0) + _varint(1) + _field(2, shape)
    return out + _field(5 if float_val else 4, array.tobytes())


def encode_example(features: Dict[str, bytes]) -> bytes:
    r"""A ``tf.train.Example`` whose features are single-value ``bytes_list``\ s."""
    entries = b""
    for key, value in features.items():
        feature = _field(1, _field(1, value))                     # Feature.bytes_list.value
        entries += _field(1, _field(1, key.encode()) + _field(2, feature))  # map entry
    return _field(1, entries)                                       # Example.features


def masked_crc32c(payload: bytes) -> int:
    r"""The TFRecord checksum: CRC-32C rotated right by 15 bits plus ``0xa282ead8``."""
    crc32c = require_module("crc32c", "write_cosmology", "data")
    crc = crc32c.crc32c(payload)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(payload: bytes) -> bytes:
    r"""One TFRecord: length, length CRC, payload, payload CRC."""
    length = struct.pack("<Q", len(payload))
    return (length + struct.pack("<I", masked_crc32c(length)) + payload
            + struct.pack("<I", masked_crc32c(payload)))


def write_cosmology(raw_dir: str, num_records: Optional[Dict[str, int]] = None,
                    records_per_file: int = 2, num_halos: int = 24, seed: int = 0,
                    scalar_encoding: str = "tensor_content") -> Dict[str, List[Dict]]:
    r"""Writes Quijote-like halo TFRecords ``halos_{split}_{k}.tfrecord``
    (``k = 1, 2, ...``), ``records_per_file`` records per file, as eqnn-jax's
    ``produce_tfrecords.py`` names them.

    Every record is a ``tf.train.Example`` with the per-halo float32 tensors
    ``x, y, z`` (uniform in the 1000 Mpc/h box), ``v_x, v_y, v_z`` (km/s),
    ``J_x, J_y, J_z``, ``M200c``, ``Rvir`` of shape ``[num_halos]``, the scalar
    parameters ``Omega_m, Omega_b, h, n_s, sigma_8`` (shape ``[]``) and
    ``tpcf`` (shape ``[24]``).

    Args:
        raw_dir (str): directory to write to (any fsspec URL).
        num_records (dict, optional): records per split (default
            ``{"train": 5, "val": 3, "test": 2}``).
        records_per_file (int): records per file (the last file may hold fewer).
        num_halos (int): halos per record.
        seed (int): seed of the values.
        scalar_encoding (str): ``"tensor_content"`` (what
            ``tf.io.serialize_tensor`` writes) or ``"float_val"`` (packed
            ``float_val``, also valid ``TensorProto``) for the scalar parameters.

    Returns:
        ``{split: [record, ...]}`` in writing order; each record is a dict with
        ``file`` (its file name), ``index`` (its position in the file) and the
        float32 arrays of every feature above.
    """
    if scalar_encoding not in ("tensor_content", "float_val"):
        raise ValueError(f"scalar_encoding must be 'tensor_content' or 'float_val', "
                         f"got {scalar_encoding!r}")
    num_records = {"train": 5, "val": 3, "test": 2} if num_records is None else num_records
    rng = np.random.default_rng(seed)
    out: Dict[str, List[Dict]] = {}
    for split, count in num_records.items():
        records = []
        for r in range(count):
            pos = rng.uniform(0.0, 1000.0, (num_halos, 3))
            vel = rng.normal(0.0, 344.0, (num_halos, 3))
            spin = rng.normal(2e14, 2.4e18, (num_halos, 3))
            values = {**{k: pos[:, i] for i, k in enumerate("xyz")},
                      **{f"v_{k}": vel[:, i] for i, k in enumerate("xyz")},
                      **{f"J_{k}": spin[:, i] for i, k in enumerate("xyz")},
                      "M200c": np.exp(rng.normal(np.log(3e14), 0.8, num_halos)),
                      "Rvir": rng.normal(1424.0, 298.0, num_halos)}
            values.update({k: rng.normal(m, 0.1) for k, m in
                           zip(COSMOLOGY_PARAMS, (0.3, 0.05, 0.7, 1.0, 0.8))})
            values["tpcf"] = rng.uniform(0.0, 15.0, 24)
            values = {k: np.asarray(v, dtype=np.float32) for k, v in values.items()}
            records.append({"file": f"halos_{split}_{r // records_per_file + 1}.tfrecord",
                            "index": r % records_per_file, **values})
        for name in sorted({record["file"] for record in records}):
            payload = b""
            for record in records:
                if record["file"] != name:
                    continue
                features = {k: encode_tensor_proto(record[k], float_val=(
                    k in COSMOLOGY_PARAMS and scalar_encoding == "float_val"))
                    for k in (*HALO_FEATURES, *COSMOLOGY_PARAMS, "tpcf")}
                payload += tfrecord_frame(encode_example(features))
            write_file(osp.join(raw_dir, name), payload)
        out[split] = records
    return out


def write_shapenet_car(raw_dir: str, cars_per_param: Sequence[int] = (2, 1, 2, 2, 1, 2, 2, 1, 2),
                       num_points: int = 40, seed: int = 0) -> Dict[str, Dict[str, np.ndarray]]:
    r"""Writes a ShapeNet-Car raw tree as UPT's preprocessing of ``mlcfd_data``
    leaves it: ``param{0..8}/<car_id>/mesh_points.th`` (a :func:`torch.save`\ d
    float32 tensor ``[num_points, 3]``, inside the reference's domain box
    ``[-2, 2] x [-1, 4.5] x [-4.5, 6]``) and ``pressure.th`` (float32
    ``[num_points]``, around the reference's pressure mean).

    Car ids are random 32-digit hexadecimal names, as ShapeNet model ids.

    Returns:
        ``{"param<i>/<car_id>": {"mesh_points", "pressure"}}`` (numpy float32
        arrays) in the reference's discovery order: ``param0`` to ``param8``,
        car ids sorted within each.
    """
    if len(cars_per_param) != 9:
        raise ValueError(f"cars_per_param must have 9 entries (param0..8), got {len(cars_per_param)}")
    rng = np.random.default_rng(seed)
    low, high = np.array([-2.0, -1.0, -4.5]), np.array([2.0, 4.5, 6.0])
    out: Dict[str, Dict[str, np.ndarray]] = {}
    for param, count in enumerate(cars_per_param):
        ids = sorted("".join(rng.choice(list("0123456789abcdef"), 32)) for _ in range(count))
        for car_id in ids:
            arrays = {"mesh_points": rng.uniform(low, high, (num_points, 3)).astype(np.float32),
                      "pressure": rng.normal(-36.3, 48.6, num_points).astype(np.float32)}
            for name, array in arrays.items():
                buffer = io.BytesIO()
                torch.save(torch.from_numpy(array), buffer)
                write_file(osp.join(raw_dir, f"param{param}", car_id, f"{name}.th"),
                             buffer.getvalue())
            out[f"param{param}/{car_id}"] = arrays
    return out
