r"""The Quijote halo catalogues of Erwin's cosmology benchmark
(:class:`Cosmology`), read from their TFRecord files without TensorFlow.

A TFRecord file is a sequence of records, each framed as ``length`` (u64),
masked CRC-32C of the length bytes (u32), ``payload``, masked CRC-32C of the
payload (u32), little-endian. Every payload is a serialized
``tf.train.Example``; its features are ``bytes_list`` values that hold
``tf.io.serialize_tensor`` output, i.e. serialized ``TensorProto`` messages.
The few protobuf messages involved are decoded here from the wire format
(:func:`read_tfrecords`, :func:`parse_example`, :func:`decode_float_tensor`).
"""
from __future__ import annotations

import fnmatch
import os.path as osp
import shutil
import struct
import uuid
import zipfile
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.data.dataset import files_exist
from torch_geometric.io import fs

from torch_geometric_erwin.datasets._window_store import (
    TMP_MARK,
    RawFormatError,
    atomic_torch_save,
    channel_affine,
    dataset_root,
    missing_raw_error,
    raw_file_error,
    require_module,
)
from torch_geometric_erwin.datasets.base import ProcessedCache

# ----------------------------------------------------------------- wire format
_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5
_DT_FLOAT = 1


def _read_varint(buf: bytes, pos: int, end: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise RawFormatError("malformed protobuf varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes, start: int = 0, end: Optional[int] = None
            ) -> Iterator[Tuple[int, int, Union[int, Tuple[int, int]]]]:
    r"""Yields ``(field number, wire type, value)`` of the protobuf message
    ``buf[start:end]``; ``value`` is an integer (varint, fixed32/64) or the
    ``(start, end)`` byte range of a length-delimited field."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _WIRE_VARINT:
            value, pos = _read_varint(buf, pos, end)
            yield number, wire, value
        elif wire == _WIRE_LEN:
            length, pos = _read_varint(buf, pos, end)
            if pos + length > end:
                raise RawFormatError("malformed protobuf: a field runs past its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (_WIRE_I64, _WIRE_I32):
            size = 8 if wire == _WIRE_I64 else 4
            if pos + size > end:
                raise RawFormatError("malformed protobuf: a field runs past its message")
            yield number, wire, int.from_bytes(buf[pos:pos + size], "little")
            pos += size
        else:
            raise RawFormatError(f"malformed protobuf: unsupported wire type {wire}")


def parse_example(payload: bytes) -> Dict[str, bytes]:
    r"""The ``bytes_list`` features of a serialized ``tf.train.Example``:
    ``{key: first value}`` (``Example.features`` = 1, ``Features.feature`` = 1,
    a map entry with ``key`` = 1 and ``value`` = 2, ``Feature.bytes_list`` = 1,
    ``BytesList.value`` = 1). Features of other kinds are skipped."""
    out: Dict[str, bytes] = {}
    for number, wire, span in _fields(payload):
        if number != 1 or wire != _WIRE_LEN:
            continue
        for n_entry, w_entry, entry in _fields(payload, *span):
            if n_entry != 1 or w_entry != _WIRE_LEN:
                continue
            key, value = None, None
            for n, w, part in _fields(payload, *entry):
                if w != _WIRE_LEN:
                    continue
                if n == 1:
                    key = payload[part[0]:part[1]].decode("utf-8")
                elif n == 2:
                    value = part
            if key is None or value is None:
                continue
            for n, w, part in _fields(payload, *value):
                if n == 1 and w == _WIRE_LEN:
                    for n_v, w_v, item in _fields(payload, *part):
                        if n_v == 1 and w_v == _WIRE_LEN:
                            out[key] = payload[item[0]:item[1]]
                            break
    return out


def decode_float_tensor(buf: bytes) -> np.ndarray:
    r"""Decodes a serialized float32 ``TensorProto`` (``dtype`` = 1,
    ``tensor_shape`` = 2 with ``dim`` = 2 / ``size`` = 1, ``tensor_content`` = 4
    or ``float_val`` = 5, packed or not) into a numpy array of its shape."""
    dtype, shape, content, float_val = None, [], None, []
    for number, wire, value in _fields(buf):
        if number == 1 and wire == _WIRE_VARINT:
            dtype = value
        elif number == 2 and wire == _WIRE_LEN:
            for n_dim, w_dim, dim in _fields(buf, *value):
                if n_dim == 2 and w_dim == _WIRE_LEN:
                    size = 0
                    for n, w, v in _fields(buf, *dim):
                        if n == 1 and w == _WIRE_VARINT:
                            size = v
                    if size >= 1 << 63:
                        raise RawFormatError("tensor has an unknown (negative) dimension")
                    shape.append(size)
        elif number == 4 and wire == _WIRE_LEN:
            content = buf[value[0]:value[1]]
        elif number == 5 and wire == _WIRE_LEN:
            float_val.append(np.frombuffer(buf[value[0]:value[1]], dtype="<f4"))
        elif number == 5 and wire == _WIRE_I32:
            float_val.append(np.array([value], dtype="<u4").view("<f4"))
    if dtype != _DT_FLOAT:
        raise RawFormatError(f"tensor dtype {dtype} is not DT_FLOAT (1)")
    count = int(np.prod(shape, dtype=np.int64))
    if content is not None:
        if len(content) != 4 * count:
            raise RawFormatError(f"tensor_content holds {len(content)} bytes, shape {shape} "
                                 f"needs {4 * count}")
        array = np.frombuffer(content, dtype="<f4")
    else:
        array = np.concatenate(float_val) if float_val else np.zeros(0, dtype="<f4")
        if array.size == 1 and count > 1:     # TensorProto semantics: the last value repeats
            array = np.repeat(array, count)
        if array.size != count:
            raise RawFormatError(f"float_val holds {array.size} values, shape {shape} "
                                 f"needs {count}")
    return array.astype(np.float32).reshape(shape)


def _masked_crc(crc32c, payload: bytes) -> int:
    crc = crc32c.crc32c(payload)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(path: str, verify: bool = True) -> Iterator[bytes]:
    r"""Yields the payloads of the TFRecord file at ``path`` (any fsspec URL),
    checking both CRC-32C checksums of every record (needs the ``crc32c``
    package, which ``tfrecord`` installs). Raises :class:`OSError` naming the
    file and record on a truncated file or a checksum mismatch."""
    crc32c = require_module("crc32c", "Cosmology", "data") if verify else None
    with fs.get_fs(path).open(path, "rb") as f:
        index = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise OSError(f"raw file '{path}' is truncated in the header of record {index}")
            length, length_crc = struct.unpack("<QI", header)
            if crc32c is not None and _masked_crc(crc32c, header[:8]) != length_crc:
                raise OSError(f"raw file '{path}' is corrupt: length checksum mismatch in "
                              f"record {index}")
            payload = f.read(length)
            footer = f.read(4)
            if len(payload) != length or len(footer) != 4:
                raise OSError(f"raw file '{path}' is truncated in record {index}: expected "
                              f"{length + 4} bytes, read {len(payload) + len(footer)}")
            if crc32c is not None and _masked_crc(crc32c, payload) != struct.unpack("<I", footer)[0]:
                raise OSError(f"raw file '{path}' is corrupt: data checksum mismatch in "
                              f"record {index}")
            yield payload
            index += 1


# --------------------------------------------------------------------- dataset
class Cosmology(ProcessedCache, InMemoryDataset):
    r"""Dark-matter halo catalogues of the Quijote simulations (Villaescusa-
    Navarro et al., 2020) as packaged by eqnn-jax (Balla et al., 2024) and
    used by Erwin's cosmology benchmark: predict every halo's velocity from
    the positions of the 5000 most massive halos of one simulation.

    Each TFRecord record of a split becomes one
    :obj:`~torch_geometric.data.Data`:

    * ``pos`` ``[N, 3]``: standardised halo positions
      :math:`(x - \mu_{pos}) / \sigma_{pos}` (:attr:`pos_mean`,
      :attr:`pos_std`, per axis),
    * ``y`` ``[N, 3]``: standardised peculiar velocities
      :math:`(v - \mu_{vel}) / \sigma_{vel}` (:attr:`vel_mean`, :attr:`vel_std`),

    with :math:`N = 5000` in the published data. There is no ``x`` (the
    positions are the input) and no ``edge_index``: the reference builds a
    10-nearest-neighbour graph of ``pos`` per batch (add it with a transform,
    e.g. ``T.KNNGraph(k=10)``, or let the model build it). The other per-halo
    fields (``J_x, J_y, J_z, M200c, Rvir``), the cosmological parameters and
    ``tpcf`` are not used by the benchmark and are not kept.

    A split reads the files ``raw/halos*{split}*.tfrecord`` in name order and
    keeps the first ``num_samples`` records. Records are read with CRC-32C
    checks but without TensorFlow; this needs the ``crc32c`` package (the
    ``data`` extra, through ``tfrecord``). The processed split is one
    :class:`~torch_geometric.data.InMemoryDataset` file (about 120 kB per
    record; 1 GB for the reference's 8192 training records).

    Raw layout under ``root/raw`` (see :meth:`download`)::

        halos_train_<k>.tfrecord   (any name matching halos*train*.tfrecord)
        halos_val_<k>.tfrecord
        halos_test_<k>.tfrecord

    Args:
        root (str or os.PathLike): root directory, any fsspec URL (``memory://``, ``s3://``).
        split (str, optional): ``"train"``, ``"val"``, ``"test"`` or
            :obj:`None` for all three, in that order. (default: :obj:`"train"`)
        num_samples (int or dict, optional): how many records to take from
            the start of each loaded split. :obj:`None`: the reference's
            :attr:`default_num_samples` (8192 / 512 / 512). An integer: that
            many for every loaded split (``split="train", num_samples=n`` is
            the reference's ``--num-samples n``). A dict: per split name;
            splits it leaves out keep the default, and a value :obj:`None`
            takes every record. A split with fewer records raises
            :class:`ValueError`.
        transform (callable, optional): applied to every sample on access.
        pre_transform (callable, optional): applied to every sample once,
            when processing.
        pre_filter (callable, optional): samples for which it returns
            :obj:`False` are dropped when processing.
        log (bool, optional): print progress when processing.
        force_reload (bool, optional): reprocess even if processed files exist.
    """
    url = "https://zenodo.org/api/records/11479419/files-archive"
    record_url = "https://zenodo.org/records/11479419"
    size = "about 7 GB"
    splits = ("train", "val", "test")
    split_keys = ("train", "valid", "test")
    #: Records per split in the reference (``--num-samples`` 8192; 512 for val and test).
    default_num_samples = {"train": 8192, "val": 512, "test": 512}

    #: Per-axis mean of the halo positions (Mpc/h).
    pos_mean = torch.tensor([499.91877075908684, 500.0947802559321, 499.964508664328],
                            dtype=torch.float64)
    #: Per-axis standard deviation of the halo positions (Mpc/h).
    pos_std = torch.tensor([288.71092533309235, 288.7525818573022, 288.70234893905575],
                           dtype=torch.float64)
    #: Per-axis mean of the halo velocities (km/s).
    vel_mean = torch.tensor([-0.0512854365234889, -0.01263126442198149, -0.06458034372345466],
                            dtype=torch.float64)
    #: Per-axis standard deviation of the halo velocities (km/s).
    vel_std = torch.tensor([344.0231468131901, 343.9333673335964, 344.071876710777],
                           dtype=torch.float64)

    position_keys = ("x", "y", "z")
    velocity_keys = ("v_x", "v_y", "v_z")

    def __init__(self, root: str, split: Optional[str] = "train",
                 num_samples: Union[None, int, Dict[str, Optional[int]]] = None,
                 transform: Optional[Callable] = None, pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None, log: bool = True,
                 force_reload: bool = False) -> None:
        root = dataset_root(root)
        if split is not None and split not in self.splits:
            raise ValueError(f"split must be one of {self.splits} or None, got {split!r}")
        self.split = split
        self._splits = self.splits if split is None else (split,)
        self.num_samples = self._resolve_num_samples(num_samples)
        super().__init__(root, transform, pre_transform, pre_filter, log=log,
                         force_reload=force_reload)
        data, slices, counts = self.load_processed(self.processed_paths[0])
        self.data = Data.from_dict(data)
        self.slices = slices
        self._counts: Dict[str, int] = counts

    def _resolve_num_samples(self, num_samples) -> Dict[str, Optional[int]]:
        def check(value, what):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"num_samples{what} must be a positive integer or None, "
                                 f"got {value!r}")
            return value

        if num_samples is None:
            return {s: self.default_num_samples[s] for s in self._splits}
        if isinstance(num_samples, dict):
            unknown = set(num_samples) - set(self.splits)
            if unknown:
                raise ValueError(f"num_samples keys must be among {self.splits}, "
                                 f"got {sorted(map(str, unknown))}")
            for key, value in num_samples.items():
                check(value, f"[{key!r}]")
            return {s: num_samples.get(s, self.default_num_samples[s]) for s in self._splits}
        if isinstance(num_samples, bool) or not isinstance(num_samples, int):
            raise TypeError(f"num_samples must be None, an int or a dict, "
                            f"got {type(num_samples).__name__}")
        check(num_samples, "")
        return {s: num_samples for s in self._splits}

    # ------------------------------------------------------------------ files
    def split_files(self, split: str) -> List[str]:
        r"""Names of the raw files of ``split`` (``halos*{split}*.tfrecord``
        in ``raw_dir``), sorted."""
        paths = fs.glob(osp.join(self.raw_dir, f"halos*{split}*.tfrecord"))
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in paths)

    @property
    def raw_file_names(self) -> List[str]:
        names: List[str] = []
        for split in self._splits:
            names += self.split_files(split) or [f"halos*{split}*.tfrecord"]
        return names

    @property
    def processed_file_names(self) -> List[str]:
        counts = "-".join("all" if self.num_samples[s] is None else str(self.num_samples[s])
                          for s in self._splits)
        return [f"{'-'.join(self._splits)}_{counts}.pt"]

    def _download(self) -> None:
        # The raw files are needed only to process: a processed dataset loads without them.
        if not self.force_reload and files_exist(self.processed_paths):
            return
        super()._download()

    def download(self) -> None:
        r"""Downloads the Zenodo record (one zip archive, about 7 GB, through
        :mod:`fsspec`'s HTTP filesystem, which needs ``aiohttp``) into
        ``raw_dir`` and extracts its ``halos*.tfrecord`` files there (the
        archive is deleted afterwards). Zenodo publishes no checksum for the
        generated archive; the zip's CRC-32 of every member is checked on
        extraction and every record's CRC-32C when processing. If the download
        fails, raises :class:`FileNotFoundError` with the URL, the size and the
        layout to create by hand."""
        try:
            if self.log:
                print(f"Downloading {self.url} ({self.size})")
            self._fetch_archive()
        except Exception as exc:
            error = self._missing_error()
            raise FileNotFoundError(f"{error}\n(automatic download from {self.url} failed: "
                                    f"{type(exc).__name__}: {exc})") from exc
        if any(not self.split_files(s) for s in self._splits):
            raise self._missing_error()

    def _missing_error(self) -> FileNotFoundError:
        missing = [osp.join(self.raw_dir, f"halos*{s}*.tfrecord") for s in self._splits
                   if not self.split_files(s)]
        return missing_raw_error(
            self.__class__.__name__, self.raw_dir, missing,
            source=(f"the Quijote halo TFRecords ({self.size}, one zip archive) from "
                    f"{self.record_url} (archive: {self.url}), unzip it"),
            layout=["halos_train_<k>.tfrecord  (files matching halos*train*.tfrecord)",
                    "halos_val_<k>.tfrecord    (files matching halos*val*.tfrecord)",
                    "halos_test_<k>.tfrecord   (files matching halos*test*.tfrecord)"])

    def _fetch_archive(self) -> None:
        fs.makedirs(self.raw_dir, exist_ok=True)
        archive = osp.join(self.raw_dir, "quijote_records.zip")
        temporaries = [f"{archive}{TMP_MARK}{uuid.uuid4().hex}"]
        try:
            with fs.get_fs(self.url).open(self.url, "rb") as src, \
                    fs.get_fs(temporaries[0]).open(temporaries[0], "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
            fs.mv(temporaries[0], archive)
            temporaries[0] = archive
            with fs.get_fs(archive).open(archive, "rb") as f, zipfile.ZipFile(f) as zipped:
                for info in zipped.infolist():
                    name = info.filename.rstrip("/").rsplit("/", 1)[-1]
                    if info.is_dir() or not fnmatch.fnmatch(name, "halos*.tfrecord"):
                        continue
                    target = osp.join(self.raw_dir, name)
                    tmp = f"{target}{TMP_MARK}{uuid.uuid4().hex}"
                    temporaries.append(tmp)
                    with zipped.open(info) as src, fs.get_fs(tmp).open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 16 << 20)
                    fs.mv(tmp, target)
        finally:
            for path in temporaries:
                if fs.exists(path):
                    fs.rm(path)

    # ------------------------------------------------------------ processing
    def process(self) -> None:
        data_list: List[Data] = []
        counts: Dict[str, int] = {}
        for split in self._splits:
            kept = 0
            for pos, vel in self._read_split(split):
                data = Data(pos=self.normalize(pos, "pos").float(),
                            y=self.normalize(vel, "vel").float())
                if self.pre_filter is not None and not self.pre_filter(data):
                    continue
                if self.pre_transform is not None:
                    data = self.pre_transform(data)
                data_list.append(data)
                kept += 1
            counts[split] = kept
        if not data_list:
            raise ValueError("Cosmology: no sample left to store (pre_filter rejected all)")
        data, slices = self.collate(data_list)
        atomic_torch_save((data.to_dict(), slices, counts), self.processed_paths[0])

    def _read_split(self, split: str) -> Iterator[Tuple[Tensor, Tensor]]:
        r"""Raw positions and velocities (float64 ``[N, 3]`` each) of the first
        ``num_samples[split]`` records of ``split``."""
        wanted = self.num_samples[split]
        files = self.split_files(split)
        count = 0
        for name in files:
            path = osp.join(self.raw_dir, name)
            try:
                for index, payload in enumerate(read_tfrecords(path)):
                    if wanted is not None and count == wanted:
                        return
                    yield self._decode_record(path, index, payload)
                    count += 1
            except (RawFormatError, OSError, ImportError):
                raise
            except Exception as exc:
                raise raw_file_error(path, exc) from exc
        if wanted is not None and count < wanted:
            raise ValueError(
                f"num_samples: split '{split}' has {count} records in {len(files)} file(s) "
                f"under '{self.raw_dir}', {wanted} requested; pass a smaller num_samples, or "
                f"num_samples={{'{split}': None}} to take all of them")

    def _decode_record(self, path: str, index: int, payload: bytes) -> Tuple[Tensor, Tensor]:
        where = f"'{path}', record {index}"
        try:
            features = parse_example(payload)
        except RawFormatError as exc:
            raise RawFormatError(f"{where}: {exc}") from exc
        columns = []
        for key in (*self.position_keys, *self.velocity_keys):
            if key not in features:
                raise RawFormatError(f"{where} has no bytes feature '{key}' "
                                     f"(found {sorted(features)})")
            try:
                array = decode_float_tensor(features[key])
            except RawFormatError as exc:
                raise RawFormatError(f"{where}, feature '{key}': {exc}") from exc
            if array.ndim != 1 or (columns and array.shape != columns[0].shape):
                raise RawFormatError(f"{where}: feature '{key}' must have shape [num_halos] "
                                     f"like the others, got {list(array.shape)}")
            columns.append(array)
        values = torch.from_numpy(np.stack(columns, axis=1).astype(np.float64))
        if not torch.isfinite(values).all():
            raise RawFormatError(f"{where}: positions or velocities hold non-finite values")
        return values[:, :3], values[:, 3:]

    # ---------------------------------------------------------------- access
    def get_idx_split(self) -> Dict[str, Tensor]:
        r"""OGB-style split indices into this dataset: ``{"train", "valid",
        "test"}`` -> sample indices (empty for the splits not loaded)."""
        out, start = {}, 0
        for split, key in zip(self.splits, self.split_keys):
            count = self._counts.get(split, 0)
            out[key] = torch.arange(start, start + count)
            start += count
        return out

    # --------------------------------------------------------- normalisation
    @classmethod
    def normalize(cls, value: Tensor, field: str = "vel") -> Tensor:
        r"""Standardises ``value`` (last dimension a multiple of 3, per axis)
        with the constants of ``field``: ``"pos"`` (:attr:`pos_mean`,
        :attr:`pos_std`) or ``"vel"`` (:attr:`vel_mean`, :attr:`vel_std`)."""
        mean, std = cls._constants(field)
        return channel_affine(value, mean, std, inverse=False)

    @classmethod
    def denormalize(cls, value: Tensor, field: str = "vel") -> Tensor:
        r"""Inverse of :meth:`normalize`: ``value * std + mean`` (km/s for
        ``"vel"``, Mpc/h for ``"pos"``)."""
        mean, std = cls._constants(field)
        return channel_affine(value, mean, std, inverse=True)

    @classmethod
    def _constants(cls, field: str) -> Tuple[Tensor, Tensor]:
        constants = {"pos": (cls.pos_mean, cls.pos_std), "vel": (cls.vel_mean, cls.vel_std)}
        if field not in constants:
            raise ValueError(f"field must be one of {tuple(constants)}, got {field!r}")
        return constants[field]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)}, split={self.split!r})"
