r"""ShapeNet-Car surface pressure (:class:`ShapeNetCar`), from the per-car
tensors that UPT's preprocessing of Umetani & Bickel's ``mlcfd_data`` writes."""
from __future__ import annotations

import os.path as osp
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.data.dataset import files_exist
from torch_geometric.io import fs

from torch_geometric_erwin.datasets._window_store import (
    RawFormatError,
    atomic_torch_save,
    channel_affine,
    dataset_root,
    missing_raw_error,
    raw_file_error,
)
from torch_geometric_erwin.datasets.base import ProcessedCache


class ShapeNetCar(ProcessedCache, InMemoryDataset):
    r"""The ShapeNet-Car benchmark (Umetani & Bickel, 2018) as used by
    Erwin (after UPT, Alkin et al., 2024): predict the pressure on the
    surface of a car from the positions of its 3586 mesh vertices.

    Every car is one :obj:`~torch_geometric.data.Data`:

    * ``pos`` ``[N, 3]``: normalised vertex positions
      :math:`((p - p_{min}) / (p_{max} - p_{min}) - 0.4063) / 0.1531` with the
      simulation domain :math:`p_{min} = (-2, -1, -4.5)`,
      :math:`p_{max} = (2, 4.5, 6)` (:attr:`domain_min`, :attr:`domain_max`,
      :attr:`pos_shift`, :attr:`pos_scale`; the last two are the same for
      every axis),
    * ``y`` ``[N, 1]``: normalised pressure
      :math:`(p + 36.3099) / 48.5743` (:attr:`pressure_mean`,
      :attr:`pressure_std`),
    * ``car_index`` ``[1]``: the car's index in the reference's discovery
      order (``param0`` .. ``param8``, car ids sorted within each; 0 .. 888),
      ``car_id``: ``"param<i>/<ShapeNet id>"``,

    with :math:`N = 3586` in the real data. There is no ``x`` (the positions
    are the input; the reference encodes them with random Fourier features)
    and no ``edge_index`` (the reference builds a kNN graph per batch).

    **Splits.** The test split is the reference's: the first ``num_test``
    (189) entries of ``torch.randperm(num_cars, generator=
    torch.Generator().manual_seed(0))``; the other 700 cars are the
    reference's training set. The reference validates on the test split; we
    instead carve ``num_val`` cars out of those 700 (the first ``num_val`` of a
    ``torch.randperm`` seeded with ``val_seed``), so model selection never sees
    the test split. Within a split cars keep their discovery order.

    All cars are processed into one file (about 50 MB), whatever ``split``;
    the split is selected when loading.

    Raw layout under ``root/raw`` (see :meth:`download`)::

        param0/<car_id>/mesh_points.th   float32 [3586, 3] (torch.save)
        param0/<car_id>/pressure.th      float32 [3586]
        ...
        param8/<car_id>/...              889 car directories in all

    Args:
        root (str or os.PathLike): root directory, any fsspec URL (``memory://``, ``s3://``).
        split (str, optional): ``"train"``, ``"val"``, ``"test"`` or
            :obj:`None` for every car in discovery order. (default: :obj:`"train"`)
        num_val (int, optional): validation cars carved out of the
            reference's training cars. (default: :obj:`70`, 10 %)
        val_seed (int, optional): seed of the validation carve-out.
            (default: :obj:`0`)
        num_test (int, optional): test cars. (default: :obj:`189`)
        num_cars (int, optional): number of car directories ``raw/`` must hold
            (the reference asserts 889); :obj:`None` accepts any number.
            (default: :obj:`889`)
        permute (bool, optional): randomly permute the points of every sample
            on access, with :mod:`torch`'s generator, as the reference does
            (it does not change what a permutation-invariant model such as
            Erwin computes, since the ball tree reorders the points).
            (default: :obj:`False`)
        transform (callable, optional): applied to every sample on access
            (after ``permute``).
        pre_transform (callable, optional): applied to every car once, when
            processing.
        pre_filter (callable, optional): cars for which it returns
            :obj:`False` are dropped when processing (split membership is by
            ``car_index``, so the other cars keep their split).
        log (bool, optional): print progress when processing.
        force_reload (bool, optional): reprocess even if processed files exist.
    """
    url = "https://github.com/ml-jku/UPT/blob/main/SETUP_DATA.md"
    data_url = "http://www.nobuyuki-umetani.com/publication/mlcfd_data.zip"
    size = "about 2 GB"
    splits = ("train", "val", "test")
    split_keys = ("train", "valid", "test")
    num_params = 9
    point_files = ("mesh_points.th", "pressure.th")

    #: Lower corner of the simulation domain.
    domain_min = torch.tensor([-2.0, -1.0, -4.5], dtype=torch.float64)
    #: Upper corner of the simulation domain.
    domain_max = torch.tensor([2.0, 4.5, 6.0], dtype=torch.float64)
    #: Mean of the domain-scaled positions (every axis).
    pos_shift = 0.4063
    #: Standard deviation of the domain-scaled positions (every axis).
    pos_scale = 0.1531
    #: Pressure mean (computed by UPT on the 700 training cars).
    pressure_mean = torch.tensor([-36.3099], dtype=torch.float64)
    #: Pressure standard deviation.
    pressure_std = torch.tensor([48.5743], dtype=torch.float64)

    def __init__(self, root: str, split: Optional[str] = "train", num_val: int = 70,
                 val_seed: int = 0, num_test: int = 189, num_cars: Optional[int] = 889,
                 permute: bool = False, transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None, pre_filter: Optional[Callable] = None,
                 log: bool = True, force_reload: bool = False) -> None:
        root = dataset_root(root)
        if split is not None and split not in self.splits:
            raise ValueError(f"split must be one of {self.splits} or None, got {split!r}")
        for arg, value, low in (("num_val", num_val, 0), ("num_test", num_test, 1),
                                ("val_seed", val_seed, None)):
            if isinstance(value, bool) or not isinstance(value, int) or (
                    low is not None and value < low):
                raise ValueError(f"{arg} must be an integer{'' if low is None else f' >= {low}'}, "
                                 f"got {value!r}")
        if num_cars is not None and (isinstance(num_cars, bool) or not isinstance(num_cars, int)
                                     or num_cars < num_test + num_val + 1):
            raise ValueError(f"num_cars must be None or an integer > num_test + num_val "
                             f"({num_test + num_val}), got {num_cars!r}")
        if not isinstance(permute, bool):
            raise TypeError(f"permute must be a bool, got {type(permute).__name__}")
        self.split, self.num_val, self.val_seed = split, num_val, val_seed
        self.num_test, self.num_cars, self.permute = num_test, num_cars, permute
        super().__init__(root, transform, pre_transform, pre_filter, log=log,
                         force_reload=force_reload)
        data, slices, found = self.load_processed(self.processed_paths[0])
        if num_cars is not None and found != num_cars:
            raise ValueError(f"num_cars: the processed dataset in '{self.processed_dir}' was built "
                             f"from {found} cars, {num_cars} expected; pass num_cars={found} or "
                             f"None, or force_reload=True to process the raw files again")
        if found <= num_test + num_val:
            raise ValueError(f"num_test + num_val ({num_test} + {num_val}) must leave training "
                             f"cars out of the {found} found")
        self.data = Data.from_dict(data)
        self.slices = slices
        self.total_cars: int = found
        self._car_split = self.car_splits(found, num_test, num_val, val_seed)
        stored = self.car_indices()
        if split is not None:
            self._indices = [i for i, c in enumerate(stored) if self._car_split[c] == split]

    # ---------------------------------------------------------------- splits
    @staticmethod
    def car_splits(num_cars: int, num_test: int = 189, num_val: int = 70,
                   val_seed: int = 0) -> List[str]:
        r"""The split of every car index ``0 .. num_cars - 1``: ``"test"`` for
        the first ``num_test`` of ``torch.randperm(num_cars,
        generator=torch.Generator().manual_seed(0))`` (the reference's
        ``TEST_INDICES`` for 889 cars), ``"val"`` for the first ``num_val`` of
        the remaining cars (in index order) permuted by a generator seeded with
        ``val_seed``, ``"train"`` for the rest."""
        test = torch.randperm(num_cars, generator=torch.Generator().manual_seed(0))[:num_test]
        out = ["train"] * num_cars
        for i in test.tolist():
            out[i] = "test"
        rest = torch.tensor([i for i in range(num_cars) if out[i] == "train"], dtype=torch.long)
        order = torch.randperm(rest.numel(), generator=torch.Generator().manual_seed(val_seed))
        for i in rest[order[:num_val]].tolist():
            out[i] = "val"
        return out

    def car_indices(self) -> List[int]:
        r"""``car_index`` of every stored car (all splits), in storage order."""
        return self._data.car_index.view(-1).tolist()

    def get_idx_split(self) -> Dict[str, Tensor]:
        r"""OGB-style split indices into this dataset: ``{"train", "valid",
        "test"}`` -> sample indices (with ``split=None`` the reference's car
        indices, minus cars dropped by ``pre_filter``; otherwise the loaded
        split's range and empty tensors)."""
        cars = self.car_indices()
        members = [self._car_split[cars[i]] for i in self.indices()]
        return {key: torch.tensor([k for k, s in enumerate(members) if s == split],
                                  dtype=torch.long)
                for split, key in zip(self.splits, self.split_keys)}

    # ------------------------------------------------------------------ files
    def car_dirs(self) -> Tuple[List[str], List[str]]:
        r"""``(car directories "param<i>/<id>" in discovery order, missing
        param folders)`` of ``raw_dir``."""
        cars, missing = [], []
        for i in range(self.num_params):
            param = osp.join(self.raw_dir, f"param{i}")
            if not fs.isdir(param):
                missing.append(f"param{i}")
                continue
            names = sorted(entry["name"].rstrip("/").rsplit("/", 1)[-1]
                           for entry in fs.ls(param, detail=True)
                           if entry.get("type") == "directory")
            cars += [f"param{i}/{name}" for name in names]
        return cars, missing

    @property
    def raw_file_names(self) -> List[str]:
        cars, missing = self.car_dirs()
        return missing + [f"{car}/{f}" for car in cars for f in self.point_files]

    @property
    def processed_file_names(self) -> List[str]:
        return ["cars.pt"]

    def _download(self) -> None:
        # The raw files are needed only to process: a processed dataset loads without them.
        if not self.force_reload and files_exist(self.processed_paths):
            return
        super()._download()

    def download(self) -> None:
        r"""Raises :class:`FileNotFoundError` listing the missing raw files with
        the source and the layout to create: the raw data (``mlcfd_data.zip``,
        about 2 GB) must be unpacked and preprocessed by hand as UPT's
        ``SETUP_DATA.md`` describes (its preprocessing reads the VTK meshes)."""
        missing = [p for p in self.raw_paths if not fs.exists(p)]
        if missing:
            raise missing_raw_error(
                self.__class__.__name__, self.raw_dir, missing,
                source=(f"{self.data_url} ({self.size}), unpack param0..8 and delete the 4 cars "
                        f"without quadpress_smpl.vtk, run UPT's ShapeNet-Car preprocessing as "
                        f"described in {self.url} (it keeps the unique vertices of the quad "
                        f"cells and their pressures), then copy its output folders"),
                layout=["param0/<car_id>/mesh_points.th  float32 [3586, 3] (torch.save)",
                        "param0/<car_id>/pressure.th     float32 [3586]",
                        "...",
                        "param8/<car_id>/...             889 car directories in all"])

    # ------------------------------------------------------------ processing
    def process(self) -> None:
        cars, _ = self.car_dirs()
        if self.num_cars is not None and len(cars) != self.num_cars:
            raise RawFormatError(
                f"found {len(cars)} car directories under '{self.raw_dir}/param0..8', "
                f"{self.num_cars} expected (num_cars); after unpacking mlcfd_data, exactly the 4 "
                f"cars without quadpress_smpl.vtk are removed; pass num_cars=None to use "
                f"whatever is there")
        data_list = []
        for index, car in enumerate(cars):
            folder = osp.join(self.raw_dir, car)
            points = _load_tensor(osp.join(folder, "mesh_points.th"))
            pressure = _load_tensor(osp.join(folder, "pressure.th"))
            if points.dim() != 2 or points.size(1) != 3:
                raise RawFormatError(f"'{folder}/mesh_points.th' must hold a [num_points, 3] "
                                     f"tensor, got {list(points.shape)}")
            if pressure.reshape(-1).numel() != points.size(0) or pressure.dim() > 2:
                raise RawFormatError(f"'{folder}/pressure.th' must hold {points.size(0)} values "
                                     f"(one per mesh point), got shape {list(pressure.shape)}")
            for name, value in (("mesh_points.th", points), ("pressure.th", pressure)):
                if not torch.isfinite(value).all():
                    raise RawFormatError(f"'{folder}/{name}' holds non-finite values")
            data = Data(pos=self.normalize(points.double(), "pos").float(),
                        y=self.normalize(pressure.double().reshape(-1, 1), "pressure").float(),
                        car_index=torch.tensor([index]), car_id=car)
            if self.pre_filter is not None and not self.pre_filter(data):
                continue
            if self.pre_transform is not None:
                data = self.pre_transform(data)
            data_list.append(data)
        if not data_list:
            raise ValueError("ShapeNetCar: no car to store (none found, or pre_filter rejected all)")
        data, slices = self.collate(data_list)
        atomic_torch_save((data.to_dict(), slices, len(cars)), self.processed_paths[0])

    # ---------------------------------------------------------------- access
    def get(self, idx: int) -> Data:
        data = super().get(idx)
        if self.permute:
            perm = torch.randperm(data.num_nodes)
            for key, value in list(data.items()):
                if isinstance(value, Tensor) and data.is_node_attr(key):
                    data[key] = value[perm]
        return data

    # --------------------------------------------------------- normalisation
    @classmethod
    def normalize(cls, value: Tensor, field: str = "pressure") -> Tensor:
        r"""Normalises ``value``: ``field="pressure"`` (any shape)
        :math:`(p + 36.3099) / 48.5743`, or ``"pos"`` (last dimension a
        multiple of 3) the position map above."""
        mean, std = cls._constants(field)
        return channel_affine(value, mean, std, inverse=False)

    @classmethod
    def denormalize(cls, value: Tensor, field: str = "pressure") -> Tensor:
        r"""Inverse of :meth:`normalize` (pressure in the simulation's units
        for ``"pressure"``, positions in the domain's units for ``"pos"``)."""
        mean, std = cls._constants(field)
        return channel_affine(value, mean, std, inverse=True)

    @classmethod
    def _constants(cls, field: str) -> Tuple[Tensor, Tensor]:
        if field == "pressure":
            return cls.pressure_mean, cls.pressure_std
        if field == "pos":
            extent = cls.domain_max - cls.domain_min
            # ((p - min) / extent - shift) / scale == (p - (min + shift extent)) / (scale extent)
            return cls.domain_min + cls.pos_shift * extent, cls.pos_scale * extent
        raise ValueError(f"field must be 'pressure' or 'pos', got {field!r}")

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({len(self)}, split={self.split!r})"


def _load_tensor(path: str) -> Tensor:
    try:
        with fs.get_fs(path).open(path, "rb") as f:
            value = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise raw_file_error(path, exc) from exc
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise RawFormatError(f"'{path}' must hold a floating-point torch.Tensor, "
                             f"got {type(value).__name__}"
                             f"{'' if not isinstance(value, Tensor) else ' of ' + str(value.dtype)}")
    return value
