r"""The four Geo-FNO PDE benchmarks of Erwin (Li et al., 2023, "Fourier neural
operator with learned deformations for PDEs on general geometries"):
:class:`Airfoil`, :class:`Pipe`, :class:`Elasticity` and :class:`Plasticity`.

All four are small enough for memory (at most a few GB raw). :meth:`process`
reads the raw arrays once (memory-mapped where the root is a local path),
keeps only the samples the benchmark uses, normalises them with the published
constants and saves them as one collated file per benchmark under
``root/processed/<benchmark>/``, so that the four can share one ``root``.
The validation split is carved out of the training samples when loading, so
``val_size`` and ``split_seed`` can change without reprocessing.
"""
from __future__ import annotations

import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import fsspec
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, Dataset
from torch_geometric.data.collate import collate
from torch_geometric.data.dataset import files_exist
from torch_geometric.data.separate import separate
from torch_geometric.io import fs

from torch_geometric_erwin.datasets._window_store import (
    RawFormatError,
    channel_affine,
    dataset_root,
    missing_raw_error,
    raw_file_error,
)
from torch_geometric_erwin.datasets.base import ProcessedCache
from torch_geometric_erwin.datasets.io.atomic import atomic_torch_save
from torch_geometric_erwin.datasets.io.matlab import mat5_variables, read_mat5

#: The Google Drive folder of the Geo-FNO data ("PDE Benchmarks", about 10 GB).
GEO_FNO_URL = "https://drive.google.com/drive/folders/1YBuaoTdOSr_qzaow-G-iwvbUI7fiUzu8"

# Item codes of the time axis (see Plasticity): no time axis / a random step / every step.
_NO_TIME, _RANDOM_TIME, _ALL_TIMES = -1, -2, -3


class GeoFNODataset(ProcessedCache, Dataset):
    r"""Base of the Geo-FNO benchmarks: raw checks, processing, splits and
    normalisation. Subclasses say which raw files they read
    (:attr:`raw_layout`), how the arrays become one sample
    (:meth:`read_raw`, :meth:`raw_sample`) and which constants normalise
    which field.

    Splits (raw sample indices): the training pool is the first
    :attr:`num_train` samples; ``"val"`` is ``val_size`` of them drawn
    without replacement by a :class:`torch.Generator` seeded with
    ``split_seed``, ``"train"`` the rest (both in raw order); ``"test"`` is
    the :attr:`num_test` samples from index :attr:`num_train` on
    (:attr:`test_at_end` false) or the last :attr:`num_test` samples of the
    files (true), exactly as the reference.

    Args:
        root (str or os.PathLike): root directory, any fsspec URL (``memory://``, ``s3://``).
        split (str, optional): ``"train"``, ``"val"``, ``"test"`` or
            :obj:`None` for all three, in that order. (default: :obj:`"train"`)
        val_size (int, optional): number of training-pool samples held out for
            validation, :obj:`None` for :attr:`default_val_size`.
        split_seed (int, optional): seed of the validation draw. (default: :obj:`0`)
        transform (callable, optional): applied to every sample on access.
        pre_transform (callable, optional): applied to every sample once, when
            processing (it sees the stored sample, see the subclass).
        pre_filter (callable, optional): samples for which it returns
            :obj:`False` are dropped when processing.
        log (bool, optional): print progress when processing.
        force_reload (bool, optional): reprocess even if processed files exist.
    """
    splits = ("train", "val", "test")
    split_keys = ("train", "valid", "test")
    #: Folder of the benchmark under ``root/raw`` and ``root/processed``.
    folder = ""
    #: ``{raw file relative to raw_dir: what it holds}``, in reading order.
    raw_layout: Dict[str, str] = {}
    #: Approximate download size of :attr:`raw_layout`.
    size = ""
    #: Size of the training pool (train + val): the first samples of the files.
    num_train = 1000
    #: Size of the test split.
    num_test = 200
    #: Test split at the end of the files (else right after the training pool).
    test_at_end = False
    #: Validation samples when ``val_size`` is :obj:`None`.
    default_val_size = 100
    #: Fields that :meth:`normalize` knows, each with ``<field>_mean`` and
    #: ``<field>_std`` class attributes (float64 tensors, one entry per channel).
    normalized_fields: Tuple[str, ...] = ("pos", "y")

    def __init__(self, root: str, split: Optional[str] = "train", val_size: Optional[int] = None,
                 split_seed: int = 0, transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None, pre_filter: Optional[Callable] = None,
                 log: bool = True, force_reload: bool = False) -> None:
        root = dataset_root(root)
        if split is not None and split not in self.splits:
            raise ValueError(f"split must be one of {self.splits} or None, got {split!r}")
        if val_size is None:
            val_size = self.default_val_size
        if isinstance(val_size, bool) or not isinstance(val_size, int):
            raise TypeError(f"val_size must be an int or None, got {type(val_size).__name__}")
        if not 0 <= val_size < self.num_train:
            raise ValueError(f"val_size must lie in [0, {self.num_train}) (the training pool has "
                             f"{self.num_train} samples), got {val_size}")
        if isinstance(split_seed, bool) or not isinstance(split_seed, int):
            raise TypeError(f"split_seed must be an int, got {type(split_seed).__name__}")
        self.split, self.val_size, self.split_seed = split, val_size, split_seed
        self._splits = self.splits if split is None else (split,)
        super().__init__(root, transform, pre_transform, pre_filter, log=log,
                         force_reload=force_reload)
        stored = self.load_processed(self.processed_paths[0])
        self._store = None if stored["data"] is None else Data.from_dict(stored["data"])
        self._slices: Dict[str, Tensor] = stored["slices"]
        self.meta: Dict = stored["meta"]
        self._setup(self.meta)
        position = {int(r): k for k, r in enumerate(stored["raw_index"].tolist())}
        items, self._counts = [], []
        for name, indices in self.raw_split_indices().items():
            before = len(items)
            if name in self._splits:
                for r in indices.tolist():
                    if r in position:
                        items += [(position[r], t) for t in self._times(name)]
            self._counts.append(len(items) - before)
        self._items = torch.tensor(items, dtype=torch.long).reshape(-1, 2)

    # ----------------------------------------------------------------- files
    @property
    def raw_file_names(self) -> List[str]:
        return list(self.raw_layout)

    @property
    def processed_root(self) -> str:
        return osp.join(self.root, "processed", self.folder)

    @property
    def processed_file_names(self) -> List[str]:
        return ["data.pt"]

    def _download(self) -> None:
        # The raw files are needed only to process: a processed dataset loads
        # without them.
        if not self.force_reload and files_exist(self.processed_paths):
            return
        super()._download()

    def download(self) -> None:
        r"""Raises :class:`FileNotFoundError`: the Geo-FNO data sits in a
        Google Drive folder that cannot be fetched programmatically. The
        message lists the missing files, the folder's URL, the approximate
        size and the layout to create by hand under ``root/raw``."""
        missing = [p for p in self.raw_paths if not fs.exists(p)]
        layout = [f"{name}  {what}" for name, what in self.raw_layout.items()]
        raise missing_raw_error(
            self.__class__.__name__, self.raw_dir, missing,
            source=(f"the Geo-FNO 'PDE Benchmarks' data by hand (Google Drive cannot be fetched "
                    f"programmatically) from {GEO_FNO_URL} ({self.size}; the folder holds all four "
                    f"benchmarks, about 10 GB)"),
            layout=layout)

    # ------------------------------------------------------------ processing
    def read_raw(self) -> Tuple[Dict[str, np.ndarray], int]:
        r"""Opens and checks the raw arrays; returns them (memory-mapped where
        possible) and the number of samples :math:`S` they hold."""
        raise NotImplementedError

    def raw_sample(self, arrays: Dict[str, np.ndarray], r: int) -> Dict[str, np.ndarray]:
        r"""The unnormalised fields of raw sample ``r`` (float arrays, first
        dimension the nodes)."""
        raise NotImplementedError

    #: Raw file(s) each field comes from, for error messages.
    field_sources: Dict[str, str] = {}

    def raw_meta(self, arrays: Dict[str, np.ndarray]) -> Dict:
        r"""Extra facts about the raw data kept in the processed file."""
        return {}

    def process(self) -> None:
        arrays, num_raw = self.read_raw()
        required = self.num_train + self.num_test
        if num_raw < required:
            files = ", ".join(f"'{p}'" for p in self.raw_paths)
            raise RawFormatError(f"{files}: {self.__class__.__name__} needs at least {required} "
                                 f"samples (train pool {self.num_train}, test {self.num_test}), "
                                 f"the files hold {num_raw}")
        used = torch.cat([torch.arange(self.num_train), self._test_indices(num_raw)]).tolist()
        data_list, kept = [], []
        for r in used:
            fields = self.raw_sample(arrays, r)
            values = {}
            for key, value in fields.items():
                if not np.isfinite(value).all():
                    raise RawFormatError(f"'{osp.join(self.raw_dir, self.field_sources[key])}': "
                                         f"sample {r} holds non-finite values")
                if key in self.normalized_fields:
                    mean, std = self._constants(key)
                    value = (value - mean.numpy()) / std.numpy()
                values[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
            data = Data(**values, raw_index=r)
            if self.pre_filter is not None and not self.pre_filter(data):
                continue
            if self.pre_transform is not None:
                data = self.pre_transform(data)
            data_list.append(data)
            kept.append(r)
        meta = {"num_raw": num_raw, **self.raw_meta(arrays)}
        del arrays  # the samples hold copies: free the raw arrays before collating doubles them
        stored, slices = None, {}
        if data_list:
            batch, slices, _ = collate(Data, data_list, increment=False, add_batch=False)
            stored = batch.to_dict()
        atomic_torch_save({"data": stored, "slices": slices, "raw_index": torch.tensor(kept, dtype=torch.long),
                           "meta": meta},
                          self.processed_paths[0])

    # ----------------------------------------------------------------- splits
    def _test_indices(self, num_raw: int) -> Tensor:
        start = num_raw - self.num_test if self.test_at_end else self.num_train
        return torch.arange(start, start + self.num_test)

    def raw_split_indices(self) -> Dict[str, Tensor]:
        r"""``{"train", "val", "test"}`` -> raw sample indices of each split
        (before ``pre_filter``), in raw order."""
        generator = torch.Generator().manual_seed(self.split_seed)
        perm = torch.randperm(self.num_train, generator=generator)
        return {"train": perm[self.val_size:].sort().values,
                "val": perm[:self.val_size].sort().values,
                "test": self._test_indices(self.meta["num_raw"])}

    def get_idx_split(self) -> Dict[str, Tensor]:
        r"""OGB-style split indices into this dataset: ``{"train", "valid",
        "test"}`` -> item indices (empty for the splits not loaded)."""
        bounds = np.concatenate([[0], np.cumsum(self._counts)])
        return {key: torch.arange(int(bounds[i]), int(bounds[i + 1]))
                for i, key in enumerate(self.split_keys)}

    # ----------------------------------------------------------------- access
    def _setup(self, meta: Dict) -> None:
        r"""Hook run after loading the processed file."""

    def _times(self, split: str) -> Sequence[int]:
        r"""The time codes of the items of one sample of ``split``."""
        return (_NO_TIME,)

    def len(self) -> int:
        return self._items.size(0)

    def get(self, idx: int) -> Data:
        k, t = self._items[idx].tolist()
        data = separate(Data, self._store, k, self._slices, decrement=False)
        return self._finish(data, t)

    def _finish(self, data: Data, t: int) -> Data:
        r"""Turns a stored sample into the sample of an item: where the
        benchmark's input is the geometry alone (no stored ``x``), ``x`` is
        ``pos`` (the same tensor)."""
        if "x" not in data:
            data.x = data.pos
        return data

    # --------------------------------------------------------- normalisation
    @classmethod
    def normalize(cls, value: Tensor, field: str = "y") -> Tensor:
        r"""``(value - mean) / std`` with the constants of ``field`` (one of
        :attr:`normalized_fields`; per channel, the last dimension of
        ``value`` a multiple of the number of channels)."""
        mean, std = cls._constants(field)
        return channel_affine(value, mean, std, inverse=False)

    @classmethod
    def denormalize(cls, value: Tensor, field: str = "y") -> Tensor:
        r"""Inverse of :meth:`normalize`: ``value * std + mean``."""
        mean, std = cls._constants(field)
        return channel_affine(value, mean, std, inverse=True)

    @classmethod
    def _constants(cls, field: str) -> Tuple[Tensor, Tensor]:
        if field not in cls.normalized_fields:
            raise ValueError(f"field must be one of {cls.normalized_fields} for "
                             f"{cls.__name__}, got {field!r}")
        return getattr(cls, f"{field}_mean"), getattr(cls, f"{field}_std")

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)}, split={self.split!r})"


def _local_path(path: str) -> Optional[str]:
    r"""The plain file-system path of ``path`` if it is on a local disk."""
    return fsspec.core.url_to_fs(path)[1] if fs.isdisk(path) else None


def load_npy(path: str, ndim: int) -> np.ndarray:
    r"""Reads a ``.npy`` array of ``ndim`` dimensions: memory-mapped for a
    local path, through :mod:`fsspec` otherwise. Errors name the file."""
    try:
        local = _local_path(path)
        if local is not None:
            array = np.load(local, mmap_mode="r", allow_pickle=False)
        else:
            with fs.get_fs(path).open(path, "rb") as f:
                array = np.load(f, allow_pickle=False)
    except Exception as exc:
        raise raw_file_error(path, exc) from exc
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise RawFormatError(f"'{path}' must hold a numeric array, got "
                             f"{getattr(array, 'dtype', type(array).__name__)}")
    if array.ndim != ndim:
        raise RawFormatError(f"'{path}' must hold a {ndim}-dimensional array, got shape "
                             f"{tuple(array.shape)}")
    return array


def _expect_shape(path: str, shape: Tuple[int, ...], expected: Sequence[Optional[int]],
                  text: str) -> None:
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        raise RawFormatError(f"'{path}' must have shape {text}, got {tuple(shape)}")


def _constant(*values: float) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


class _CurvilinearGrid(GeoFNODataset):
    r"""Geo-FNO's structured-mesh benchmarks (airfoil, pipe): coordinate
    arrays ``X``, ``Y`` ``[S, H, W]`` and fields ``Q`` ``[S, C, H, W]``; a
    sample is the (cropped) grid flattened in row-major order, node
    :math:`k = i W' + j`, with ``pos = (X, Y)`` and ``y`` one channel of ``Q``."""
    #: Names of the ``X``, ``Y`` and ``Q`` files in :attr:`raw_layout`.
    grid_files: Tuple[str, str, str] = ("", "", "")
    #: Channel of ``Q`` that is the target.
    channel = 0
    #: Rows and columns kept (``[:crop, :crop]``), or :obj:`None` for all.
    crop: Optional[int] = None

    def read_raw(self) -> Tuple[Dict[str, np.ndarray], int]:
        paths = [osp.join(self.raw_dir, name) for name in self.grid_files]
        x, y = load_npy(paths[0], 3), load_npy(paths[1], 3)
        q = load_npy(paths[2], 4)
        s, h, w = x.shape
        _expect_shape(paths[1], y.shape, x.shape, f"{list(x.shape)} (as {self.grid_files[0]})")
        _expect_shape(paths[2], q.shape, (s, None, h, w), f"[{s}, C, {h}, {w}] with C > {self.channel}")
        if q.shape[1] <= self.channel:
            raise RawFormatError(f"'{paths[2]}' must have more than {self.channel} channels "
                                 f"(dimension 1), got shape {tuple(q.shape)}")
        return {"X": x, "Y": y, "Q": q}, s

    def raw_sample(self, arrays: Dict[str, np.ndarray], r: int) -> Dict[str, np.ndarray]:
        crop = slice(None) if self.crop is None else slice(0, self.crop)
        x = np.asarray(arrays["X"][r, crop, crop], dtype=np.float64)
        y = np.asarray(arrays["Y"][r, crop, crop], dtype=np.float64)
        q = np.asarray(arrays["Q"][r, self.channel, crop, crop], dtype=np.float64)
        return {"pos": np.stack([x, y], axis=-1).reshape(-1, 2), "y": q.reshape(-1, 1)}


class Airfoil(_CurvilinearGrid):
    r"""Transonic flow around NACA airfoils (Geo-FNO's "airfoil"): predict
    the Mach number on the 221 x 51 C-grid around the airfoil from the grid.

    A sample (:obj:`~torch_geometric.data.Data`, :math:`N = 221 \cdot 51 =
    11271` nodes, node :math:`k = 51 i + j` for grid index :math:`(i, j)`):

    * ``pos`` ``[N, 2]``: the grid point ``(X, Y)``, normalised per
      coordinate with :attr:`pos_mean` ``(1.4925, 3.4233e-4)`` and
      :attr:`pos_std` ``(6.6607, 6.0777)``;
    * ``x`` ``[N, 2]``: the input features, the same tensor as ``pos`` (the
      benchmark's input is the geometry alone);
    * ``y`` ``[N, 1]``: channel 4 of ``Q`` (the Mach number), normalised
      with :attr:`y_mean` 0.8163 and :attr:`y_std` 0.1385;
    * ``raw_index``: the sample's index in the raw arrays.

    ``pre_transform`` and ``pre_filter`` see ``Data(pos, y, raw_index)``.
    Splits: train pool ``[0:1000]`` (``val_size`` of them, 100 by default,
    form ``"val"``), test ``[1000:1200]``. Raw layout under ``root/raw``::

        airfoil/naca/NACA_Cylinder_X.npy   float [S, 221, 51]     x of the C-grid
        airfoil/naca/NACA_Cylinder_Y.npy   float [S, 221, 51]     y of the C-grid
        airfoil/naca/NACA_Cylinder_Q.npy   float [S, 5, 221, 51]  flow fields

    with :math:`S \geq 1200`. Other grid sizes ``[S, H, W]`` are accepted
    (:math:`N = H W`). Args: see :class:`GeoFNODataset`.
    """
    folder = "airfoil"
    raw_layout = {
        "airfoil/naca/NACA_Cylinder_X.npy": "float [S, 221, 51], S >= 1200: x of the C-grid",
        "airfoil/naca/NACA_Cylinder_Y.npy": "float [S, 221, 51]: y of the C-grid",
        "airfoil/naca/NACA_Cylinder_Q.npy": "float [S, 5, 221, 51]: flow fields, channel 4 = Mach number",
    }
    grid_files = tuple(raw_layout)
    field_sources = {"pos": "airfoil/naca/NACA_Cylinder_{X,Y}.npy", "y": "airfoil/naca/NACA_Cylinder_Q.npy"}
    size = "the airfoil files are roughly 1.5 GB"
    channel = 4
    pos_mean = _constant(1.4925, 3.4233e-4)
    pos_std = _constant(6.6607, 6.0777)
    y_mean = _constant(0.8163)
    y_std = _constant(0.1385)


class Pipe(_CurvilinearGrid):
    r"""Incompressible flow through pipes of varying shape (Geo-FNO's
    "pipe"): predict the horizontal velocity on a curvilinear grid from the grid.

    The raw 129 x 129 grids are cropped to ``[:128, :128]`` as in the
    reference (the last row and column are dropped), so :math:`N = 16384`
    nodes, node :math:`k = 128 i + j`. A sample:

    * ``pos`` ``[N, 2]``: ``(X, Y)`` normalised with :attr:`pos_mean`
      ``(4.9609, -0.0080)`` and :attr:`pos_std` ``(2.8867, 0.5690)``;
    * ``x`` ``[N, 2]``: the same tensor as ``pos``;
    * ``y`` ``[N, 1]``: channel 0 of ``Pipe_Q`` (horizontal velocity),
      normalised with :attr:`y_mean` 0.1667 and :attr:`y_std` 0.0805;
    * ``raw_index``.

    Splits: train pool ``[0:1000]``, test ``[1000:1200]``. Raw layout under
    ``root/raw``::

        pipe/Pipe_X.npy   float [S, 129, 129]      x of the grid
        pipe/Pipe_Y.npy   float [S, 129, 129]      y of the grid
        pipe/Pipe_Q.npy   float [S, 3, 129, 129]   flow fields

    with :math:`S \geq 1200`; grids of another size are cropped the same
    way (``[:128, :128]``). Args: see :class:`GeoFNODataset`.
    """
    folder = "pipe"
    raw_layout = {
        "pipe/Pipe_X.npy": "float [S, 129, 129], S >= 1200: x of the grid",
        "pipe/Pipe_Y.npy": "float [S, 129, 129]: y of the grid",
        "pipe/Pipe_Q.npy": "float [S, 3, 129, 129]: flow fields, channel 0 = horizontal velocity",
    }
    grid_files = tuple(raw_layout)
    field_sources = {"pos": "pipe/Pipe_{X,Y}.npy", "y": "pipe/Pipe_Q.npy"}
    size = "the pipe files are roughly 1.5 GB"
    channel = 0
    crop = 128
    pos_mean = _constant(4.9609, -0.0080)
    pos_std = _constant(2.8867, 0.5690)
    y_mean = _constant(0.1667)
    y_std = _constant(0.0805)


class Elasticity(GeoFNODataset):
    r"""Hyper-elastic unit cells with a void (Geo-FNO's "elasticity"):
    predict the stress at 972 points of the cell from their positions.

    The raw arrays keep the sample axis last; processing transposes them as
    the reference: ``sigma`` ``[972, S]`` to ``[S, 972]`` and ``XY``
    ``[972, 2, S]`` to ``[S, 972, 2]``. A sample (:math:`N = 972`):

    * ``pos`` ``[N, 2]``: the point cloud normalised with :attr:`pos_mean`
      ``(0.4998, 0.5003)`` and :attr:`pos_std` ``(0.3217, 0.3216)``;
    * ``x`` ``[N, 2]``: the same tensor as ``pos``;
    * ``y`` ``[N, 1]``: the stress normalised with :attr:`y_mean` 187.7388
      and :attr:`y_std` 127.0829;
    * ``raw_index``.

    Splits: train pool the first 1000 samples, test the **last** 200 (with
    the published 2000 samples, ``[1800:2000]``). Raw layout under ``root/raw``::

        elasticity/Meshes/Random_UnitCell_sigma_10.npy   float [972, S]      stress
        elasticity/Meshes/Random_UnitCell_XY_10.npy      float [972, 2, S]   positions

    with :math:`S \geq 1200` (2000 published); other point counts are
    accepted. Args: see :class:`GeoFNODataset`.
    """
    folder = "elasticity"
    raw_layout = {
        "elasticity/Meshes/Random_UnitCell_sigma_10.npy": "float [972, S], S >= 1200 (2000): stress",
        "elasticity/Meshes/Random_UnitCell_XY_10.npy": "float [972, 2, S]: point positions",
    }
    field_sources = {"pos": "elasticity/Meshes/Random_UnitCell_XY_10.npy",
                     "y": "elasticity/Meshes/Random_UnitCell_sigma_10.npy"}
    size = "the two elasticity files are roughly 50 MB"
    test_at_end = True
    pos_mean = _constant(0.4998, 0.5003)
    pos_std = _constant(0.3217, 0.3216)
    y_mean = _constant(187.7388)
    y_std = _constant(127.0829)

    def read_raw(self) -> Tuple[Dict[str, np.ndarray], int]:
        sigma_path, xy_path = (osp.join(self.raw_dir, name) for name in self.raw_layout)
        sigma, xy = load_npy(sigma_path, 2), load_npy(xy_path, 3)
        p, s = sigma.shape
        _expect_shape(xy_path, xy.shape, (p, 2, s), f"[{p}, 2, {s}] (points and samples as the sigma file)")
        return {"sigma": sigma.T, "xy": xy.transpose(2, 0, 1)}, s

    def raw_sample(self, arrays: Dict[str, np.ndarray], r: int) -> Dict[str, np.ndarray]:
        return {"pos": np.asarray(arrays["xy"][r], dtype=np.float64),
                "y": np.asarray(arrays["sigma"][r], dtype=np.float64).reshape(-1, 1)}


class Plasticity(GeoFNODataset):
    r"""A plate hit by a die of random profile (Geo-FNO's "plasticity"):
    predict the plate's deformation at one of 20 time steps from the die
    profile, the grid position and the time step.

    ``plas_N987_T20.mat`` holds ``input`` ``[S, 101]`` (the die profile
    per grid row) and ``output`` ``[S, 101, 31, 20, 4]`` (a 101 x 31 grid, 20
    time steps, 4 output channels). Node :math:`k = 31 i + j` is grid point
    :math:`(i, j)`, so :math:`N = 3131`. The stored sample keeps every step:

    * ``pos`` ``[N, 2]``: the reference grid (not the deformed one),
      ``(linspace(0, 1, 31)[j], linspace(0, 1, 101)[i])``, **not** normalised;
    * ``x`` ``[N, 1]``: the die profile ``input[i]`` of the node's row,
      normalised with :attr:`x_mean` 19.6351 and :attr:`x_std` 2.3652;
    * ``y`` ``[N, 20, 4]``: ``output``, normalised with :attr:`y_mean`
      -4.4049 and :attr:`y_std` 14.3477 (the same for all channels);
    * ``raw_index``.

    ``pre_transform`` and ``pre_filter`` see this stored sample. What an
    item holds depends on ``time``:

    * an int :math:`t`, or a step drawn per access (``"random"``), or each
      step as its own item (``"each"``, item :math:`20 m + t` is step
      :math:`t` of sample :math:`m`): ``y`` ``[N, 4]`` at step :math:`t` and
      ``time`` ``[N]`` (int64, :math:`t` repeated, for a time embedding);
    * ``"all"``: ``y`` ``[N, 20, 4]``, no ``time``.

    By default (``time=None``) training items draw a random step on every
    access, from :mod:`torch`'s generator (per worker in a
    :class:`~torch.utils.data.DataLoader`), as the reference; validation and
    test items cover each (sample, step) pair once (``"each"``: 1,600 test
    items), so evaluation is deterministic. The reference drew a random step
    for the test samples too.

    Splits: train pool the first 900 samples (``val_size`` of them, 90 by
    default, form ``"val"``), test the **last** 80. Raw layout under ``root/raw``::

        plasticity/plas_N987_T20.mat   MATLAB v5 file, input [S, 101], output [S, 101, 31, 20, 4]

    with :math:`S \geq 980` (987 published); other grid sizes, step and
    channel counts are accepted. The ``.mat`` file (plain or compressed) is
    read one slab at a time, so processing needs about the float32 data's
    size in memory (2 GB for the real file), not several copies of it.

    Args:
        time (int or str, optional): ``"random"``, ``"each"``, ``"all"``, a
            step index, or :obj:`None` for ``"random"`` on the training split
            and ``"each"`` on the others. (default: :obj:`None`)
        **kwargs: see :class:`GeoFNODataset`.
    """
    folder = "plasticity"
    raw_layout = {
        "plasticity/plas_N987_T20.mat": "MATLAB v5 file with 'input' [S, 101] (die profile per grid "
                                        "row) and 'output' [S, 101, 31, 20, 4], S >= 980 (987)",
    }
    field_sources = {key: "plasticity/plas_N987_T20.mat" for key in ("pos", "x", "y")}
    size = "the plasticity file is roughly 2 GB"
    num_train = 900
    num_test = 80
    test_at_end = True
    default_val_size = 90
    normalized_fields = ("x", "y")
    x_mean = _constant(19.6351)
    x_std = _constant(2.3652)
    y_mean = _constant(-4.4049)
    y_std = _constant(14.3477)
    time_modes = ("random", "each", "all")

    def __init__(self, root: str, split: Optional[str] = "train",
                 time: Optional[Union[int, str]] = None, **kwargs) -> None:
        if time is not None:
            if isinstance(time, bool) or not isinstance(time, (int, str)):
                raise TypeError(f"time must be an int, one of {self.time_modes} or None, "
                                f"got {type(time).__name__}")
            if isinstance(time, str) and time not in self.time_modes:
                raise ValueError(f"time must be an int, one of {self.time_modes} or None, got {time!r}")
            if isinstance(time, int) and time < 0:
                raise ValueError(f"time must be a non-negative step index, got {time}")
        self.time = time
        super().__init__(root, split, **kwargs)

    def read_raw(self) -> Tuple[Dict[str, np.ndarray], int]:
        r"""``input`` and ``output`` of the ``.mat`` file, read from their headers first and then one
        slab at a time into float32 arrays (:mod:`~torch_geometric_erwin.datasets.io.matlab`): the peak
        memory of processing is about the float32 data once, not the several copies of
        :func:`scipy.io.loadmat`."""
        path = osp.join(self.raw_dir, next(iter(self.raw_layout)))
        try:
            with fs.get_fs(path).open(path, "rb") as f:
                variables = mat5_variables(f)
                for key in ("input", "output"):
                    if key not in variables:
                        raise RawFormatError(f"'{path}' has no variable '{key}' (numeric variables found: "
                                             f"{sorted(variables)})")
                a, u = variables["input"].shape, variables["output"].shape
                if len(a) != 2:
                    raise RawFormatError(f"'{path}': 'input' must have shape [S, H], got {a}")
                s, h = a
                _expect_shape(path, u, (s, h, None, None, None),
                              f"[{s}, {h}, W, T, C] for 'output' (as 'input' [{s}, {h}])")
                arrays = {key: read_mat5(f, variables[key], np.empty(variables[key].shape, dtype=np.float32))
                          for key in ("input", "output")}
        except RawFormatError:
            raise
        except Exception as exc:
            raise raw_file_error(path, exc) from exc
        return arrays, s

    def raw_meta(self, arrays: Dict[str, np.ndarray]) -> Dict:
        return {"num_steps": int(arrays["output"].shape[3])}

    def raw_sample(self, arrays: Dict[str, np.ndarray], r: int) -> Dict[str, np.ndarray]:
        u = np.asarray(arrays["output"][r], dtype=np.float64)        # [H, W, T, C]
        h, w = u.shape[:2]
        gx, gy = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))  # [H, W] each
        a = np.repeat(np.asarray(arrays["input"][r], dtype=np.float64), w)
        return {"pos": np.stack([gx, gy], axis=-1).reshape(-1, 2), "x": a.reshape(-1, 1),
                "y": u.reshape(h * w, *u.shape[2:])}

    @property
    def num_steps(self) -> int:
        r"""Number of time steps :math:`T` of the raw data (20)."""
        return self.meta["num_steps"]

    def _setup(self, meta: Dict) -> None:
        if isinstance(self.time, int) and self.time >= meta["num_steps"]:
            raise ValueError(f"time must be < {meta['num_steps']} (the number of steps), got {self.time}")

    def _times(self, split: str) -> Sequence[int]:
        mode = self.time if self.time is not None else ("random" if split == "train" else "each")
        if mode == "each":
            return range(self.num_steps)
        return {"random": (_RANDOM_TIME,), "all": (_ALL_TIMES,)}.get(mode, (mode,))

    def _finish(self, data: Data, t: int) -> Data:
        if t == _ALL_TIMES:
            return data
        if t == _RANDOM_TIME:
            t = int(torch.randint(self.num_steps, ()))
        data.y = data.y[:, t]
        data.time = torch.full((data.y.size(0),), t, dtype=torch.long)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)}, split={self.split!r}, time={self.time!r})"
