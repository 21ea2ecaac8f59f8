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
    missing_raw_error,
    raw_file_error,
    read_rows,
)


def triangles_to_edges(triangles: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    r"""Mesh edges of every time step of ``triangles`` ``[W, F, 3]``.

    Each step's edge set is the union of the sides ``(0, 1)``, ``(1, 2)``,
    ``(0, 2)`` of its triangles, deduplicated *within the step*, without
    self-loops (from degenerate triangles), in both directions.

    Returns:
        ``edge_index`` ``[2, E]`` (row 0 source) and ``edge_step`` ``[E]`` (the
        step of each edge, non-decreasing: a step's edges are contiguous).
    """
    num_steps = triangles.size(0)
    sides = torch.cat([triangles[:, :, [0, 1]], triangles[:, :, [1, 2]], triangles[:, :, [0, 2]]],
                      dim=1).long()
    high, low = sides.max(dim=-1).values, sides.min(dim=-1).values
    step = torch.arange(num_steps).view(-1, 1).expand_as(high)
    keep = high != low
    key = (step[keep] * num_nodes + high[keep]) * num_nodes + low[keep]
    key = torch.unique(key)
    step, high, low = key // (num_nodes * num_nodes), (key // num_nodes) % num_nodes, key % num_nodes
    edge_index = torch.cat([torch.stack([high, low]), torch.stack([low, high])], dim=1)
    edge_step = torch.cat([step, step])
    order = torch.argsort(edge_step, stable=True)
    return edge_index[:, order], edge_step[order]


class EAGLE(TrajectoryDataset):
    r"""The EAGLE unsteady 2-D fluid meshes with a moving drone (Janny et al.,
    ICLR 2023) as used by Erwin: autoregressive prediction of velocity and
    pressure on a mesh that changes every time step.

    Each simulation (``<geometry>/<scene>/<trajectory>``, e.g. ``Spl/178/1``)
    has :math:`T = 990` frames of :math:`N` nodes. One sample per simulation
    (as the reference): a window of ``window_length`` :math:`W` frames
    starting at frame :math:`t` (reference rules, see ``window_start``), as a
    :obj:`~torch_geometric.data.Data` with

    * ``pos`` ``[N, 2]``: mesh positions at the first window frame (raw units),
      ``mesh_pos`` ``[N, W, 2]``: positions at every window frame,
    * ``x`` ``[N, 4]``: normalised state :math:`(v_x, v_y, p_s, p_g)` at the
      first frame, ``y`` ``[N, W - 1, 4]``: normalised states of the next
      :math:`W - 1` frames (the rollout targets),
    * ``node_type`` ``[N, W]`` (0 normal, 2 disabled, 4 inflow, 5 outflow,
      6 wall; 9 classes),
    * ``edge_index`` ``[2, E_0]``: mesh edges of the first frame, both
      directions; ``edge_index_seq`` ``[2, \sum_w E_w]`` with ``edge_step``:
      the edges of every frame (frame ``w``'s are ``edge_step == w``),
    * ``name`` (simulation path) and ``frame`` (:math:`t`).

    Velocity and pressure are standardised per component with
    :attr:`velocity_mean`, :attr:`velocity_std`, :attr:`pressure_mean`,
    :attr:`pressure_std` (:meth:`normalize`, :meth:`denormalize`); positions
    are not normalised. Processing stores every split's frames as flat files
    (float32 positions + fields, uint8 node types, int32 triangles) about as
    large as the raw data; a sample reads three contiguous ranges and costs
    :math:`O(W \cdot (N + F))` memory and time.

    Raw layout under ``root/raw`` (see :meth:`download`)::

        Splits/{train.txt, valid.txt, test.txt}     one simulation path per line
        <Geom>/<scene>/<traj>/sim.npz               pointcloud [T, N, 2], VX, VY,
                                                    PS, PG [T, N], mask [T, N(, 1)]
        <Geom>/<scene>/<traj>/triangles.npy         [T, F, 3] node indices

    Args:
        root (str or os.PathLike): root directory, any fsspec URL.
        split (str, optional): ``"train"``, ``"val"`` (the ``valid`` list),
            ``"test"`` or :obj:`None` for all three, in that order. Only the
            requested splits are processed. (default: :obj:`"train"`)
        window_length (int, optional): frames per sample, at least 2; by
            default 6 / 2 / 400 for train / val / test, as the reference.
        window_start (int, optional): first frame of every window. By default
            (:obj:`None`) uniform in :math:`[0, T - W]` for train, drawn from
            :mod:`torch`'s generator on every access, and
            :math:`\min(100, T - W)` for val and test.
        transform (callable, optional): applied to every window on access.
        pre_transform (callable, optional): applied once per simulation, when
            processing, to ``Data(num_nodes, name)``; attributes it adds are
            copied into every window of that simulation.
        pre_filter (callable, optional): called on the same ``Data``;
            simulations for which it returns :obj:`False` are dropped.
        log (bool, optional): print progress when processing.
        force_reload (bool, optional): reprocess even if processed files exist.
    """
    url = "https://datasets.liris.cnrs.fr/eagle-version1"
    size = "about 270 GB"
    split_files = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}
    default_window = {"train": 6, "val": 2, "test": 400}
    eval_start = 100
    num_node_types = 9
    NODE_NORMAL, NODE_DISABLE, NODE_INPUT, NODE_OUTPUT, NODE_WALL = 0, 2, 4, 5, 6

    velocity_mean = torch.tensor([-0.0015, 0.2211])
    velocity_std = torch.tensor([1.7970, 2.0258])
    pressure_mean = torch.tensor([-0.8322, 4.6050])
    pressure_std = torch.tensor([7.4013, 9.7232])

    def __init__(self, root: str, split: Optional[str] = "train",
                 window_length: Optional[int] = None, window_start: Optional[int] = None,
                 transform: Optional[Callable] = None, pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None, log: bool = True,
                 force_reload: bool = False) -> None:
        for arg, value, low in (("window_length", window_length, 2),
                                ("window_start", window_start, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < low):
                raise ValueError(f"{arg} must be None or an integer >= {low}, got {value!r}")
        self.window_length = window_length
        self.window_start = window_start
        super().__init__(root, split, transform, pre_transform, pre_filter, log, force_reload)
        for record in self._records:
            self._check_window(record)

    def _length(self, split: str) -> int:
        return self.default_window[split] if self.window_length is None else self.window_length

    def _check_window(self, record: Dict) -> None:
        length, frames = self._length(record["split"]), record["num_frames"]
        if length > frames:
            raise ValueError(f"window_length {length} exceeds the {frames} frames of "
                             f"simulation '{record['name']}'")
        if self.window_start is not None and self.window_start + length > frames:
            raise ValueError(f"window_start {self.window_start} + window_length {length} exceeds "
                             f"the {frames} frames of simulation '{record['name']}'")

    # ------------------------------------------------------------------ files
    row_files = {"fields.f32": (np.float32, (6,)), "node_type.u8": (np.uint8, ()),
                 "triangles.i32": (np.int32, (3,))}

    def split_list(self, split: str) -> str:
        return f"Splits/{self.split_files[split]}"

    def record_files(self, split: str, name: str) -> List[str]:
        return [f"{name}/sim.npz", f"{name}/triangles.npy"]

    def download(self) -> None:
        r"""EAGLE (about 270 GB) is distributed by LIRIS behind a web page,
        not programmatically: raises :class:`FileNotFoundError` listing the
        missing files, the source and the layout to create by hand."""
        missing = [p for p in self.raw_paths if not fs.exists(p)]
        raise missing_raw_error(
            self.__class__.__name__, self.raw_dir, missing,
            source=f"EAGLE ({self.size}) from {self.url}",
            layout=["Splits/train.txt, Splits/valid.txt, Splits/test.txt  (one simulation path "
                    "per line, e.g. Spl/178/1; the lists of "
                    "github.com/eagle-dataset/EagleMeshTransformer/tree/main/Splits)",
                    "<Geom>/<scene>/<traj>/sim.npz  (pointcloud, VX, VY, PS, PG, mask)",
                    "<Geom>/<scene>/<traj>/triangles.npy"])

    # ------------------------------------------------------------ processing
    def process_record(self, split: str, name: str, writers: List) -> Optional[Dict]:
        sim_path = osp.join(self.raw_dir, name, "sim.npz")
        tri_path = osp.join(self.raw_dir, name, "triangles.npy")
        arrays = _load_npz(sim_path, ("pointcloud", "VX", "VY", "PS", "PG", "mask"))
        points = arrays["pointcloud"]
        if points.ndim != 3 or points.shape[2] != 2:
            raise RawFormatError(f"'{sim_path}': pointcloud must have shape [T, N, 2], "
                                 f"got {tuple(points.shape)}")
        num_frames, num_nodes = points.shape[:2]
        mask = arrays["mask"]
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[..., 0]
        for key, array in (("VX", arrays["VX"]), ("VY", arrays["VY"]), ("PS", arrays["PS"]),
                           ("PG", arrays["PG"]), ("mask", mask)):
            if array.shape != (num_frames, num_nodes):
                raise RawFormatError(f"'{sim_path}': {key} must have shape [{num_frames}, {num_nodes}]"
                                     f" (or [T, N, 1] for mask), got {tuple(arrays[key].shape)}")
        check_indices(mask, sim_path, "mask", self.num_node_types)
        triangles = _load_npy(tri_path)
        if triangles.ndim != 3 or triangles.shape[0] != num_frames or triangles.shape[2] != 3:
            raise RawFormatError(f"'{tri_path}': triangles must have shape [{num_frames}, F, 3], "
                                 f"got {tuple(triangles.shape)}")
        check_indices(triangles, tri_path, "triangles", num_nodes)
        static = Data(num_nodes=num_nodes, name=name)
        static = self.static_graph(static)
        if static is None:
            return None
        fields = np.stack([points[..., 0], points[..., 1], arrays["VX"], arrays["VY"],
                           arrays["PS"], arrays["PG"]], axis=-1).astype(np.float32)
        if not np.isfinite(fields).all():
            raise RawFormatError(f"'{sim_path}' holds non-finite positions, velocities or pressures")
        row = writers[0].append(fields.reshape(-1, 6))
        writers[1].append(mask.reshape(-1))
        face_row = writers[2].append(triangles.reshape(-1, 3))
        return {"name": name, "num_nodes": num_nodes, "num_frames": num_frames,
                "num_faces": triangles.shape[1], "row": row, "face_row": face_row,
                "static": static.to_dict()}

    # ---------------------------------------------------------------- access
    def num_windows(self, record: Dict) -> int:
        return 1

    def _start(self, record: Dict, length: int) -> int:
        if self.window_start is not None:
            return self.window_start
        if record["split"] == "train":
            return int(torch.randint(0, record["num_frames"] - length + 1, ()))
        return min(self.eval_start, record["num_frames"] - length)

    def window(self, record: Dict, k: int, data: Data) -> Data:
        split, n, faces = record["split"], record["num_nodes"], record["num_faces"]
        length = self._length(split)
        t = self._start(record, length)
        fields = read_rows(self.processed_path(split, "fields.f32"), np.float32, (6,),
                           record["row"] + t * n, length * n)
        node_type = read_rows(self.processed_path(split, "node_type.u8"), np.uint8, (),
                              record["row"] + t * n, length * n)
        triangles = read_rows(self.processed_path(split, "triangles.i32"), np.int32, (3,),
                              record["face_row"] + t * faces, length * faces)
        fields = rearrange(torch.from_numpy(fields), "(t n) c -> n t c", n=n)
        state = torch.cat([self.normalize(fields[..., 2:4], "velocity"),
                           self.normalize(fields[..., 4:6], "pressure")], dim=-1)
        edge_index_seq, edge_step = triangles_to_edges(
            rearrange(torch.from_numpy(triangles), "(t f) c -> t f c", f=faces), n)
        data.mesh_pos = fields[..., :2]
        data.pos = fields[:, 0, :2].clone()
        data.x, data.y = state[:, 0], state[:, 1:]
        data.node_type = rearrange(torch.from_numpy(node_type).long(), "(t n) -> n t", n=n)
        data.edge_index = edge_index_seq[:, edge_step == 0]
        data.edge_index_seq, data.edge_step = edge_index_seq, edge_step
        data.frame = t
        return data

    # --------------------------------------------------------- normalisation
    @classmethod
    def normalize(cls, value: Tensor, field: str) -> Tensor:
        r"""Standardises ``value`` per component: ``field`` is ``"velocity"``
        or ``"pressure"`` (last dimension a multiple of 2) or ``"state"``
        (``(v_x, v_y, p_s, p_g)``, last dimension 4)."""
        mean, std = cls._stats(field)
        return channel_affine(value, mean, std, inverse=False)

    @classmethod
    def denormalize(cls, value: Tensor, field: str) -> Tensor:
        r"""Inverse of :meth:`normalize`."""
        mean, std = cls._stats(field)
        return channel_affine(value, mean, std, inverse=True)

    @classmethod
    def _stats(cls, field: str) -> Tuple[Tensor, Tensor]:
        stats = {"velocity": (cls.velocity_mean, cls.velocity_std),
                 "pressure": (cls.pressure_mean, cls.pressure_std),
                 "state": (torch.cat([cls.velocity_mean, cls.pressure_mean]),
                           torch.cat([cls.velocity_std, cls.pressure_std]))}
        if field not in stats:
            raise ValueError(f"field must be one of {tuple(stats)}, got {field!r}")
        return stats[field]

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(split={self.split!r}, "
                f"window_length={self.window_length}, simulations={len(self)})")


def _load_npz(path: str, keys) -> Dict[str, np.ndarray]:
    try:
        with fs.get_fs(path).open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise RawFormatError(f"'{path}' lacks arrays {missing} (found {sorted(npz.files)})")
            return {k: npz[k] for k in keys}
    except RawFormatError:
        raise
    except Exception as exc:
        raise raw_file_error(path, exc) from exc


def _load_npy(path: str) -> np.ndarray:
    try:
        with fs.get_fs(path).open(path, "rb") as f:
            return np.load(f, allow_pickle=False)
    except Exception as exc:
        raise raw_file_error(path, exc) from exc
