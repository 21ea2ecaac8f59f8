r"""On-disk trajectory datasets (:class:`PolymerMD`, :class:`EAGLE`): the
:class:`TrajectoryDataset` base, row stores and atomic processing.

A trajectory dataset is processed into flat binary files, one per field and
split, holding every record's frames back to back in C order
(``[T, N, ...]`` per record), plus a small record table saved last. A window
of ``W`` frames of one record is then a single contiguous byte range, read
through :mod:`fsspec` with one ``seek`` + ``read``: a sample costs
:math:`O(W \cdot N)` memory and time whatever the size of the dataset, on any
filesystem (local paths, ``memory://``, object stores).

Writes follow one protocol (:class:`ProcessTransaction`): the record table of
a split is deleted first, field files are written under temporary names and
moved into place only when every record was written, and the record table is
saved last under a temporary name and moved. An interrupted run therefore
never leaves a complete-looking processed split; its temporary files are
removed on failure. Only a hard kill can leave ``*.tmp-<uuid>`` files
behind; they are never read and may be deleted. (They are not swept
automatically: another process, e.g. a second rank of a distributed job,
may be writing its own.)
"""
from __future__ import annotations

import hashlib
import importlib
import os
import os.path as osp
import uuid
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, Dataset
from torch_geometric.data.dataset import files_exist
from torch_geometric.io import fs

from torch_geometric_erwin.datasets.base import ProcessedCache

TMP_MARK = ".tmp-"


class TrajectoryDataset(ProcessedCache, Dataset):
    r"""Base of the on-disk trajectory datasets: splits, record tables and
    the window index.

    Subclasses process each split into ``processed/<split>_records.pt`` (a
    list of dicts with at least ``name``, ``num_nodes``, ``num_frames`` and
    ``static``, the :meth:`~torch_geometric.data.Data.to_dict` of the
    record's static graph) plus their row files, and define
    :meth:`num_windows` and :meth:`window`. Window ``idx`` is window ``k`` of
    the record whose range of windows holds ``idx``.

    Args:
        root (str or os.PathLike): root directory, any fsspec URL.
        split (str, optional): one of :attr:`splits`, or :obj:`None` for all.
        transform, pre_transform, pre_filter, log, force_reload: as
            :class:`torch_geometric.data.Dataset`; ``pre_filter`` and
            ``pre_transform`` apply to each record's static graph
            (:meth:`static_graph`).
    """
    splits = ("train", "val", "test")
    split_keys = ("train", "valid", "test")
    #: ``{file suffix: (dtype, row shape)}`` of the row files of every split.
    row_files: Dict[str, Tuple[Any, Tuple[int, ...]]] = {}

    def __init__(self, root: str, split: Optional[str], transform: Optional[Callable],
                 pre_transform: Optional[Callable], pre_filter: Optional[Callable], log: bool,
                 force_reload: bool) -> None:
        root = dataset_root(root)
        if split is not None and split not in self.splits:
            raise ValueError(f"split must be one of {self.splits} or None, got {split!r}")
        self.split = split
        self._splits = self.splits if split is None else (split,)
        super().__init__(root, transform, pre_transform, pre_filter, log=log,
                         force_reload=force_reload)
        self._records: List[Dict] = []
        for name in self._splits:
            for record in self.load_processed(self.processed_path(name, "records.pt")):
                record["split"] = name
                self._records.append(record)
        counts = [self.num_windows(record) for record in self._records]
        self._ptr = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    def _download(self) -> None:
        # The raw files are needed only to process: a processed dataset loads
        # without them (they may be deleted, or be far away on slow storage).
        if not self.force_reload and files_exist(self.processed_paths):
            return
        super()._download()

    @property
    def raw_file_names(self) -> List[str]:
        names = [self.split_list(s) for s in self._splits]
        for s in self._splits:
            path = osp.join(self.raw_dir, self.split_list(s))
            if fs.exists(path):
                names += [f for name in read_name_list(path) for f in self.record_files(s, name)]
        return names

    @property
    def processed_file_names(self) -> List[str]:
        return [f"{s}_{kind}" for s in self._splits for kind in (*self.row_files, "records.pt")]

    def processed_path(self, split: str, kind: str) -> str:
        return osp.join(self.processed_dir, f"{split}_{kind}")

    def process(self) -> None:
        for split in self._splits:
            names = read_name_list(osp.join(self.raw_dir, self.split_list(split)))
            with ProcessTransaction(self.processed_path(split, "records.pt")) as tx:
                writers = [tx.writer(self.processed_path(split, kind), dtype, shape)
                           for kind, (dtype, shape) in self.row_files.items()]
                records = [self.process_record(split, name, writers) for name in names]
                tx.records = [record for record in records if record is not None]

    def split_list(self, split: str) -> str:
        r"""Path of a split's name list, relative to ``raw_dir``."""
        raise NotImplementedError

    def record_files(self, split: str, name: str) -> List[str]:
        r"""Raw files of one record, relative to ``raw_dir``."""
        raise NotImplementedError

    def process_record(self, split: str, name: str, writers: List["RowWriter"]) -> Optional[Dict]:
        r"""Appends one record's rows and returns its table entry (or
        :obj:`None` when ``pre_filter`` drops it)."""
        raise NotImplementedError

    def num_windows(self, record: Dict) -> int:
        r"""Number of samples of one record."""
        raise NotImplementedError

    def window(self, record: Dict, k: int, data: Data) -> Data:
        r"""Fills ``data`` (a copy of the record's static graph) with window ``k``."""
        raise NotImplementedError

    def static_graph(self, static: Data) -> Optional[Data]:
        r"""Applies ``pre_filter`` (:obj:`None` when it rejects) and ``pre_transform``."""
        if self.pre_filter is not None and not self.pre_filter(static):
            return None
        return static if self.pre_transform is None else self.pre_transform(static)

    def len(self) -> int:
        return int(self._ptr[-1])

    def get(self, idx: int) -> Data:
        r = int(np.searchsorted(self._ptr, idx, side="right")) - 1
        record = self._records[r]
        data = Data.from_dict({k: v.clone() if isinstance(v, Tensor) else v
                               for k, v in record["static"].items()})
        return self.window(record, idx - int(self._ptr[r]), data)

    def get_idx_split(self) -> Dict[str, Tensor]:
        r"""OGB-style split indices into this dataset: ``{"train", "valid",
        "test"}`` -> sample indices (empty for the splits not loaded)."""
        parts: Dict[str, List[Tensor]] = {key: [] for key in self.split_keys}
        for r, record in enumerate(self._records):
            key = self.split_keys[self.splits.index(record["split"])]
            parts[key].append(torch.arange(int(self._ptr[r]), int(self._ptr[r + 1])))
        return {key: torch.cat(p) if p else torch.empty(0, dtype=torch.long)
                for key, p in parts.items()}


class RowWriter:
    r"""Appends arrays of one dtype and row shape to a temporary binary file.

    Args:
        path (str): final path of the file (any fsspec URL).
        dtype (numpy.dtype): element type stored on disk.
        row_shape (Tuple[int, ...]): shape of one row (trailing dimensions).
    """
    def __init__(self, path: str, dtype: Any, row_shape: Tuple[int, ...] = ()) -> None:
        self.path = path
        self.tmp_path = f"{path}{TMP_MARK}{uuid.uuid4().hex}"
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.num_rows = 0
        self._file = fs.get_fs(path).open(self.tmp_path, "wb")

    def append(self, array: np.ndarray) -> int:
        r"""Writes ``array`` (``[rows, *row_shape]``) and returns its first row."""
        if tuple(array.shape[1:]) != self.row_shape:
            raise ValueError(f"rows of shape {self.row_shape} expected for '{self.path}', "
                             f"got an array of shape {tuple(array.shape)}")
        start = self.num_rows
        self._file.write(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
        self.num_rows += array.shape[0]
        return start

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}('{self.path}', rows={self.num_rows})"


def read_rows(path: str, dtype: Any, row_shape: Sequence[int], start: int,
              count: int) -> np.ndarray:
    r"""Reads rows ``[start, start + count)`` of a file written by :class:`RowWriter`.

    Returns a writable array of shape ``[count, *row_shape]``. Raises
    :class:`OSError` naming the file when it is shorter than the record table
    says (a truncated or foreign file).
    """
    dtype = np.dtype(dtype)
    row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
    with fs.get_fs(path).open(path, "rb") as f:
        f.seek(start * row_bytes)
        buffer = f.read(count * row_bytes)
    if len(buffer) != count * row_bytes:
        raise OSError(f"processed file '{path}' is truncated: expected {count * row_bytes} bytes "
                      f"at offset {start * row_bytes}, read {len(buffer)}; delete the processed "
                      f"directory or pass force_reload=True to rebuild it")
    return np.frombuffer(bytearray(buffer), dtype=dtype).reshape(count, *row_shape)


class ProcessTransaction:
    r"""Groups the files of one processed split so that they appear atomically.

    Usage::

        with ProcessTransaction(records_path) as tx:
            writer = tx.writer(path, dtype, row_shape)
            ...                            # append every record
            tx.records = [...]             # the record table
        # on success: field files moved into place, then the table saved

    Args:
        records_path (str): path of the record table; it is deleted on entry.
    """
    def __init__(self, records_path: str) -> None:
        self.records_path = records_path
        self.records: Any = None
        self._writers: List[RowWriter] = []

    def writer(self, path: str, dtype: Any, row_shape: Tuple[int, ...] = ()) -> RowWriter:
        writer = RowWriter(path, dtype, row_shape)
        self._writers.append(writer)
        return writer

    def __enter__(self) -> "ProcessTransaction":
        if fs.exists(self.records_path):
            fs.rm(self.records_path)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        for writer in self._writers:
            writer.close()
        if exc_type is not None:
            for writer in self._writers:
                if fs.exists(writer.tmp_path):
                    fs.rm(writer.tmp_path)
            return False
        if self.records is None:
            raise RuntimeError("ProcessTransaction finished without a record table")
        for writer in self._writers:
            fs.mv(writer.tmp_path, writer.path)
        atomic_torch_save(self.records, self.records_path)
        return False


def atomic_torch_save(obj: Any, path: str) -> None:
    r"""Saves ``obj`` with :func:`torch_geometric.io.fs.torch_save` under a
    temporary name, then moves it to ``path``."""
    tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex}"
    try:
        fs.torch_save(obj, tmp)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def channel_affine(value: Tensor, mean: Optional[Tensor], std: Tensor, inverse: bool) -> Tensor:
    r"""Per-channel ``(value - mean) / std`` (or its inverse) where the last
    dimension of ``value`` holds whole groups of ``len(std)`` channels."""
    if not isinstance(value, Tensor):
        raise TypeError(f"value must be a torch.Tensor, got {type(value).__name__}")
    channels = std.numel()
    if value.dim() == 0 or value.size(-1) % channels != 0:
        raise ValueError(f"value's last dimension must be a multiple of {channels}, "
                         f"got shape {tuple(value.shape)}")
    grouped = value.reshape(*value.shape[:-1], -1, channels)
    std = std.to(value.device, value.dtype)
    mean = torch.zeros_like(std) if mean is None else mean.to(value.device, value.dtype)
    out = grouped * std + mean if inverse else (grouped - mean) / std
    return out.reshape(value.shape)


def read_name_list(path: str) -> List[str]:
    r"""One name per non-empty line, stripped (split files)."""
    with fs.get_fs(path).open(path, "r") as f:
        return [line.strip() for line in f.read().splitlines() if line.strip()]


def names_sha256(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def fetch_verified_list(url: str, path: str, sha256: str) -> None:
    r"""Copies the name list at ``url`` to ``path`` (atomically) if the
    SHA-256 of its names, joined by newlines, is ``sha256``. Network errors
    are left to the caller's missing-file report: the file simply stays absent."""
    try:
        with fs.get_fs(url).open(url, "rb") as f:
            payload = f.read()
    except Exception as exc:  # unreachable source: reported with the missing files
        warnings.warn(f"could not fetch '{url}': {exc}", stacklevel=2)
        return
    names = [line.strip() for line in payload.decode().splitlines() if line.strip()]
    if names_sha256(names) != sha256:
        raise OSError(f"checksum mismatch for '{url}': expected names with SHA-256 {sha256}, "
                      f"got {names_sha256(names)}")
    tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex}"
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.get_fs(tmp).open(tmp, "wb") as f:
        f.write(payload)
    fs.mv(tmp, path)


def missing_raw_error(dataset: str, raw_dir: str, missing: Sequence[str], source: str,
                      layout: Sequence[str], shown: int = 20) -> FileNotFoundError:
    r"""The error raised when raw files are absent: what is missing, where to
    get it, and the directory layout to create by hand."""
    names = [m[len(raw_dir):].lstrip("/") if m.startswith(raw_dir) else m for m in missing]
    listed = "\n".join(f"  {n}" for n in names[:shown])
    more = f"\n  ... and {len(names) - shown} more" if len(names) > shown else ""
    tree = "\n".join(f"    {line}" for line in layout)
    return FileNotFoundError(
        f"{dataset}: {len(names)} raw file(s) missing under '{raw_dir}':\n{listed}{more}\n"
        f"Download {source}, and arrange the files as\n  {raw_dir}/\n{tree}")


class RawFormatError(ValueError):
    r"""A raw file that reads fine but does not hold what the format says."""


def check_indices(array: np.ndarray, path: str, key: str, high: Optional[int]) -> None:
    r"""Checks that ``array`` holds integer values in ``[0, high)`` (or
    ``>= 0`` when ``high`` is :obj:`None`); integer-valued floats pass."""
    if not np.issubdtype(array.dtype, np.number) or (
            array.size and not np.array_equal(array, np.round(array))):
        raise RawFormatError(f"'{path}': {key} must hold integers, got {array.dtype}")
    if array.size and (array.min() < 0 or (high is not None and array.max() >= high)):
        bound = f"[0, {high})" if high is not None else ">= 0"
        raise RawFormatError(f"'{path}': {key} values must lie in {bound}, "
                             f"got [{array.min()}, {array.max()}]")


def raw_file_error(path: str, exc: BaseException) -> OSError:
    return OSError(f"cannot read raw file '{path}' (truncated or corrupt?): "
                   f"{type(exc).__name__}: {exc}")


def dataset_root(root) -> str:
    r"""``root`` as a str: a local path (a str or any :class:`os.PathLike`, such as
    :class:`pathlib.Path`) or an fsspec URL. PyG normalises (and expands ``~`` in) str roots
    only, and fsspec takes str paths, so every dataset converts its root here first."""
    if isinstance(root, os.PathLike):
        root = os.fspath(root)
    if not isinstance(root, str) or not root:
        raise TypeError(f"root must be a non-empty str or os.PathLike (a path or fsspec URL), got {root!r}")
    return root


def require_module(name: str, dataset: str, extra: str):
    r"""Imports an optional format library or says how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{dataset} needs '{name}' to read its raw files: install it with "
                          f"`pip install {name}` or `pip install torch_geometric_erwin[{extra}]`"
                          ) from exc
