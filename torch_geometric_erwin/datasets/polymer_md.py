from __future__ import annotations

import os.path as osp
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.io import fs

from torch_geometric_erwin.datasets._window_store import (
    RawFormatError,
    TrajectoryDataset,
    channel_affine,
    check_indices,
    fetch_verified_list,
    missing_raw_error,
    raw_file_error,
    read_rows,
    require_module,
)


class PolymerMD(TrajectoryDataset):
    r"""Single-chain coarse-grained polymer trajectories (Fu et al., TMLR 2023)
    as used by Erwin's molecular-dynamics benchmark: predict every bead's
    next-step acceleration from its last velocities.

    Every trajectory of :math:`T` frames yields :math:`T - s` windows of
    :math:`s + 1` consecutive frames :math:`P_0, \dots, P_s` (``seq_len``
    :math:`s = 16` by default; 898,560 / 99,840 / 39,360 windows for the
    train / val / test splits of the real data). Positions are centred per
    trajectory (mean over frames and beads) when processing. A window
    :math:`k` of trajectory :math:`j` is the :obj:`~torch_geometric.data.Data`

    * ``pos`` ``[N, 3]``: current positions :math:`P_{s-1} / \sigma_{pos}`,
    * ``x`` ``[N, 3(s-1)]``: velocities :math:`(P_{i+1} - P_i) / \sigma_{vel}`
      for :math:`i = 0..s-2`, time-major (``v1x, v1y, v1z, v2x, ...``),
    * ``y`` ``[N, 3]``: target acceleration
      :math:`((P_s - P_{s-1}) - (P_{s-1} - P_{s-2})) / \sigma_{acc}`,
    * ``node_type`` ``[N]`` (4 bead types), ``edge_index`` ``[2, 2 N_b]``: the
      bonds in both directions (row 0 source, row 1 target),
    * ``name`` (trajectory directory) and ``frame`` (index of :math:`P_0`).

    Normalisation divides by the per-axis constants :attr:`pos_std`,
    :attr:`vel_std`, :attr:`acc_std` (no mean shift); undo it with
    :meth:`denormalize`. Processing writes every split's centred positions as
    one float32 file; a window is read with one contiguous read, so a sample
    costs :math:`O(s \cdot N)` memory and time. Requires :obj:`h5py` (the
    ``data`` extra) to process.

    Raw layout under ``root/raw`` (see :meth:`download`)::

        splits/{train.txt, val.txt, test_class2.txt}
        polymer_train/<name>/{ptype.h5, bond.h5, position.h5}   train + val
        polymer_test/<name>/{ptype.h5, bond.h5, position.h5}    test

    Args:
        root (str or os.PathLike): root directory, any fsspec URL (``memory://``, ``s3://``).
        split (str, optional): ``"train"``, ``"val"``, ``"test"`` or
            :obj:`None` for all three, in that order. Only the requested
            splits are processed. (default: :obj:`"train"`)
        seq_len (int, optional): number of input frames :math:`s`, at least 2.
            (default: :obj:`16`)
        noise (bool, optional): position-noise augmentation (off in the
            published runs, see ``docs/deviations.md``): every window's
            positions get i.i.d. Gaussian noise of a scale :math:`\sigma` drawn
            uniformly from :attr:`noise_scales` (10 log-spaced values from 0.1
            to 0.01, in position units) with :mod:`torch`'s generator, before
            velocities and accelerations are computed. (default: :obj:`False`)
        transform (callable, optional): applied to every window on access
            (position-dependent transforms such as
            :class:`~torch_geometric_erwin.transforms.BallTreeTransform` go here).
        pre_transform (callable, optional): applied once per trajectory, when
            processing, to its static graph ``Data(node_type, edge_index,
            num_nodes, name)``; what it returns is the base of every window.
        pre_filter (callable, optional): called on the same static graph;
            trajectories for which it returns :obj:`False` are dropped.
        log (bool, optional): print progress when processing.
        force_reload (bool, optional): reprocess even if processed files exist.
    """
    url = "https://zenodo.org/records/6764836"
    size = "about 13 GB"
    splits_url = "https://raw.githubusercontent.com/kyonofx/mlcgmd/main/graphwm/splits/chain"
    #: SHA-256 of each published split list (names joined by newlines).
    split_sha256 = {
        "train.txt": "8f68b10f8b5213d7af7c53e9130fa67553855000a24c6b05af4d4967b6d5bdb7",
        "val.txt": "b03244a5a07dba31756bc9f1a660ca630fc05860a73dc4ad6a8a516812dabcb5",
        "test_class2.txt": "b825bc2665eb7fc2a3bc45eef3047f56c7f806c4a30c2e276969b708c443f637",
    }
    split_files = {"train": "train.txt", "val": "val.txt", "test": "test_class2.txt"}
    split_dirs = {"train": "polymer_train", "val": "polymer_train", "test": "polymer_test"}
    trajectory_files = {"ptype.h5": "particle_type", "bond.h5": "bond_indices",
                        "position.h5": "position"}

    #: Per-axis scale of the centred positions.
    pos_std = torch.tensor([21.4457, 31.7121, 25.5143])
    #: Per-axis scale of one-frame displacements.
    vel_std = torch.tensor([1.2809, 1.2735, 1.2792])
    #: Per-axis scale of second differences.
    acc_std = torch.tensor([1.7428, 1.7295, 1.7390])

    #: Noise scales of the ``noise`` augmentation (position units).
    noise_scales = torch.logspace(-1.0, -2.0, 10)

    def __init__(self, root: str, split: Optional[str] = "train", seq_len: int = 16,
                 noise: bool = False, transform: Optional[Callable] = None, pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None, log: bool = True,
                 force_reload: bool = False) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
        if not isinstance(noise, bool):
            raise TypeError(f"noise must be a bool, got {type(noise).__name__}")
        self.seq_len, self.noise = seq_len, noise
        super().__init__(root, split, transform, pre_transform, pre_filter, log, force_reload)

    # ------------------------------------------------------------------ files
    row_files = {"positions.f32": (np.float32, (3,))}

    def split_list(self, split: str) -> str:
        return f"splits/{self.split_files[split]}"

    def record_files(self, split: str, name: str) -> List[str]:
        return [f"{self.split_dirs[split]}/{name}/{f}" for f in self.trajectory_files]

    def download(self) -> None:
        r"""Fetches the published split lists (checked against the SHA-256
        of their names), then raises :class:`FileNotFoundError` listing the
        trajectory files still missing, with the source and the layout to
        create: the trajectories (about 13 GB on Zenodo) are downloaded and
        arranged by hand."""
        for s in self._splits:
            name = self.split_files[s]
            target = osp.join(self.raw_dir, "splits", name)
            if not fs.exists(target):
                fetch_verified_list(f"{self.splits_url}/{name}", target, self.split_sha256[name])
        missing = [p for p in self.raw_paths if not fs.exists(p)]
        if missing:
            raise missing_raw_error(
                self.__class__.__name__, self.raw_dir, missing,
                source=(f"the single-chain polymer trajectories ({self.size}) from {self.url} "
                        f"and the split lists from {self.splits_url}"),
                layout=["splits/train.txt, splits/val.txt, splits/test_class2.txt  "
                        "(one trajectory directory name per line)",
                        "polymer_train/<name>/ptype.h5, bond.h5, position.h5  "
                        "(names in train.txt and val.txt)",
                        "polymer_test/<name>/ptype.h5, bond.h5, position.h5  "
                        "(names in test_class2.txt)"])

    # ------------------------------------------------------------ processing
    def process_record(self, split: str, name: str, writers: List) -> Optional[Dict]:
        h5py = require_module("h5py", "PolymerMD", "data")
        folder = osp.join(self.raw_dir, self.split_dirs[split], name)
        ptype_path, bond_path = osp.join(folder, "ptype.h5"), osp.join(folder, "bond.h5")
        node_type = _read_h5(h5py, ptype_path, "particle_type", ndim=1)
        bonds = _read_h5(h5py, bond_path, "bond_indices", ndim=2)
        num_nodes = node_type.shape[0]
        check_indices(node_type, ptype_path, "particle_type", high=None)
        if bonds.shape[1] != 2:
            raise RawFormatError(f"'{bond_path}': bond_indices must have shape [num_bonds, 2], "
                                 f"got {tuple(bonds.shape)}")
        check_indices(bonds, bond_path, "bond_indices", high=num_nodes)
        bonds = torch.from_numpy(bonds.astype(np.int64))
        static = Data(node_type=torch.from_numpy(node_type.astype(np.int64)),
                      edge_index=torch.cat([bonds.t(), bonds.flip(1).t()], dim=1),
                      num_nodes=num_nodes, name=name)
        static = self.static_graph(static)
        if static is None:
            return None
        num_frames, row = _append_centred_positions(h5py, osp.join(folder, "position.h5"),
                                                    num_nodes, writers[0])
        return {"name": name, "num_nodes": num_nodes, "num_frames": num_frames, "row": row,
                "static": static.to_dict()}

    # ---------------------------------------------------------------- access
    def num_windows(self, record: Dict) -> int:
        return max(record["num_frames"] - self.seq_len, 0)

    def window(self, record: Dict, frame: int, data: Data) -> Data:
        s, n = self.seq_len, record["num_nodes"]
        rows = read_rows(self.processed_path(record["split"], "positions.f32"), np.float32, (3,),
                         record["row"] + frame * n, (s + 1) * n)
        positions = rearrange(torch.from_numpy(rows), "(t n) c -> n t c", n=n)
        if self.noise:
            scale = self.noise_scales[torch.randint(len(self.noise_scales), ())]
            positions = positions + torch.randn(positions.shape, dtype=positions.dtype) * scale
        velocity = positions[:, 1:s] - positions[:, :s - 1]
        acceleration = (positions[:, s] - positions[:, s - 1]) - velocity[:, -1]
        data.pos = self.normalize(positions[:, s - 1], "pos")
        data.x = rearrange(self.normalize(velocity, "vel"), "n t c -> n (t c)")
        data.y = self.normalize(acceleration, "acc")
        data.frame = frame
        return data

    # --------------------------------------------------------- normalisation
    @classmethod
    def normalize(cls, value: Tensor, field: str) -> Tensor:
        r"""Divides ``value`` (last dimension a multiple of 3, time-major) by
        the per-axis scale of ``field`` (``"pos"``, ``"vel"`` or ``"acc"``)."""
        return channel_affine(value, None, cls._scale(field), inverse=False)

    @classmethod
    def denormalize(cls, value: Tensor, field: str) -> Tensor:
        r"""Inverse of :meth:`normalize`."""
        return channel_affine(value, None, cls._scale(field), inverse=True)

    @classmethod
    def _scale(cls, field: str) -> Tensor:
        scales = {"pos": cls.pos_std, "vel": cls.vel_std, "acc": cls.acc_std}
        if field not in scales:
            raise ValueError(f"field must be one of {tuple(scales)}, got {field!r}")
        return scales[field]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(split={self.split!r}, seq_len={self.seq_len}, "
                f"noise={self.noise}, "
                f"trajectories={len(self._records)}, windows={len(self)})")


def _read_h5(h5py, path: str, key: str, ndim: int) -> np.ndarray:
    try:
        with fs.get_fs(path).open(path, "rb") as f, h5py.File(f, "r") as hf:
            if key not in hf:
                raise RawFormatError(f"'{path}' has no dataset '{key}' (found {sorted(hf.keys())})")
            array = np.asarray(hf[key][()])
    except RawFormatError:
        raise
    except Exception as exc:
        raise raw_file_error(path, exc) from exc
    if array.ndim != ndim:
        raise RawFormatError(f"'{path}': dataset '{key}' must have {ndim} dimensions, "
                             f"got shape {tuple(array.shape)}")
    return array


def _append_centred_positions(h5py, path: str, num_nodes: int, writer,
                              chunk: int = 1024) -> Tuple[int, int]:
    r"""Streams ``position`` ``[T, N, 3]`` into ``writer`` minus its mean over
    frames and beads (two chunked passes; memory :math:`O(chunk \cdot N)`)."""
    try:
        with fs.get_fs(path).open(path, "rb") as f, h5py.File(f, "r") as hf:
            if "position" not in hf:
                raise RawFormatError(f"'{path}' has no dataset 'position' (found {sorted(hf.keys())})")
            dataset = hf["position"]
            if dataset.ndim != 3 or dataset.shape[1:] != (num_nodes, 3):
                raise RawFormatError(f"'{path}': dataset 'position' must have shape "
                                     f"[num_frames, {num_nodes}, 3], got {tuple(dataset.shape)}")
            num_frames = dataset.shape[0]
            total = np.zeros(3)
            for t in range(0, num_frames, chunk):
                total += dataset[t:t + chunk].astype(np.float64).sum(axis=(0, 1))
            mean = total / max(num_frames * num_nodes, 1)
            row = writer.num_rows
            for t in range(0, num_frames, chunk):
                block = dataset[t:t + chunk].astype(np.float64) - mean
                if not np.isfinite(block).all():
                    raise RawFormatError(f"'{path}': dataset 'position' holds non-finite values")
                writer.append(block.reshape(-1, 3))
    except RawFormatError:
        raise
    except Exception as exc:
        raise raw_file_error(path, exc) from exc
    return num_frames, row
