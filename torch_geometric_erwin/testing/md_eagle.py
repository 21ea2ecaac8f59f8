r"""Tiny raw files in the exact formats and layouts of :class:`PolymerMD` and
:class:`EAGLE`, with known values, for tests and examples.

Both writers accept any fsspec URL as ``raw_dir`` (the dataset's
``root/raw``) and return the arrays they wrote, so that expected samples can
be computed independently of the dataset code.
"""
from __future__ import annotations

import io
import os.path as osp
from typing import Dict, Sequence

import numpy as np

from torch_geometric_erwin.datasets._window_store import require_module
from torch_geometric_erwin.testing._files import write_file


def write_polymer_md(raw_dir: str, num_train: int = 3, num_val: int = 1, num_test: int = 2,
                     train_frames: int = 24, test_frames: int = 20,
                     num_beads: Sequence[int] = (5, 7, 6), seed: int = 0) -> Dict[str, Dict]:
    r"""Writes a PolymerMD raw tree: ``splits/{train,val,test_class2}.txt``
    (names without a trailing newline, as published) and, per trajectory,
    ``ptype.h5`` (``particle_type`` int64 ``[N]``), ``bond.h5``
    (``bond_indices`` int64 ``[N - 1, 2]``, a linear chain) and
    ``position.h5`` (``position`` float32 ``[T, N, 3]``, a random walk around
    an offset so that centring matters).

    Returns ``{name: {"split", "node_type", "bonds", "position"}}``.
    """
    h5py = require_module("h5py", "write_polymer_md", "data")
    rng = np.random.default_rng(seed)
    splits = {"train": [f"poly{i:05d}" for i in range(1, num_train + 1)],
              "val": [f"poly{i:05d}" for i in range(101, 101 + num_val)],
              "test": [f"rand{i:03d}" for i in range(1, num_test + 1)]}
    files = {"train": "train.txt", "val": "val.txt", "test": "test_class2.txt"}
    out = {}
    for split, names in splits.items():
        write_file(osp.join(raw_dir, "splits", files[split]), "\n".join(names).encode())
        folder = "polymer_test" if split == "test" else "polymer_train"
        frames = test_frames if split == "test" else train_frames
        for k, name in enumerate(names):
            n = num_beads[k % len(num_beads)]
            node_type = rng.integers(0, 4, size=n).astype(np.int64)
            bonds = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1).astype(np.int64)
            steps = rng.normal(scale=0.5, size=(frames, n, 3))
            position = (np.cumsum(steps, axis=0) + rng.normal(scale=10.0, size=3)).astype(np.float32)
            for file, key, array in (("ptype.h5", "particle_type", node_type),
                                     ("bond.h5", "bond_indices", bonds),
                                     ("position.h5", "position", position)):
                buffer = io.BytesIO()
                with h5py.File(buffer, "w") as hf:
                    hf.create_dataset(key, data=array)
                write_file(osp.join(raw_dir, folder, name, file), buffer.getvalue())
            out[name] = {"split": split, "node_type": node_type, "bonds": bonds,
                         "position": position}
    return out


def _grid_triangles(nx: int, ny: int, flip: bool) -> np.ndarray:
    r"""Two triangles per cell of an ``nx`` x ``ny`` node grid, split along
    one diagonal or the other."""
    i, j = np.meshgrid(np.arange(nx - 1), np.arange(ny - 1), indexing="ij")
    a, b = i * ny + j, (i + 1) * ny + j
    c, d = a + 1, b + 1
    if flip:
        tris = [np.stack([a, b, c], -1), np.stack([b, d, c], -1)]
    else:
        tris = [np.stack([a, b, d], -1), np.stack([a, d, c], -1)]
    return np.concatenate([t.reshape(-1, 3) for t in tris])


def _frame_triangles(nx: int, ny: int, frame: int) -> np.ndarray:
    r"""The grid triangulation of ``frame`` (diagonals flip at odd frames) plus
    one redundant triangle: a repeat of the first one at even frames, a
    degenerate one (a repeated vertex) at odd frames."""
    grid = _grid_triangles(nx, ny, flip=frame % 2 == 1)
    extra = grid[:1] if frame % 2 == 0 else grid[:1, [0, 0, 1]]
    return np.concatenate([grid, extra]).astype(np.int64)


def write_eagle(raw_dir: str, num_frames: int = 12, grid: Sequence[int] = (3, 4),
                seed: int = 0) -> Dict[str, Dict]:
    r"""Writes an EAGLE raw tree: ``Splits/{train,valid,test}.txt`` (one path
    per line) and, per simulation ``<Geom>/<scene>/<traj>``, ``sim.npz``
    (``pointcloud`` float32 ``[T, N, 2]``, ``VX``, ``VY``, ``PS``, ``PG``
    float32 ``[T, N]``, ``mask`` int64 ``[T, N]`` or ``[T, N, 1]``) and
    ``triangles.npy`` (int64 ``[T, F, 3]``; a grid mesh whose diagonals flip
    at odd frames, with moving nodes, plus a repeated or degenerate triangle).

    Returns ``{path: {"split", "pointcloud", "VX", "VY", "PS", "PG", "mask",
    "triangles"}}`` (``mask`` as written).
    """
    rng = np.random.default_rng(seed)
    splits = {"train": ["Spl/1/1", "Tri/2/2", "Stp/3/1"], "val": ["Spl/161/2"],
              "test": ["Tri/181/1", "Stp/182/2"]}
    files = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}
    nx, ny = grid
    base = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij"), -1)
    base = base.reshape(-1, 2).astype(np.float64)
    n = nx * ny
    out = {}
    for k, (split, names) in enumerate(splits.items()):
        write_file(osp.join(raw_dir, "Splits", files[split]),
                     "".join(f"{name}\n" for name in names).encode())
        for m, name in enumerate(names):
            drift = rng.normal(scale=0.05, size=(num_frames, 1, 2)).cumsum(axis=0)
            arrays = {
                "pointcloud": (base[None] + drift).astype(np.float32),
                "VX": rng.normal(0.0, 1.8, (num_frames, n)).astype(np.float32),
                "VY": rng.normal(0.2, 2.0, (num_frames, n)).astype(np.float32),
                "PS": rng.normal(-0.8, 7.4, (num_frames, n)).astype(np.float32),
                "PG": rng.normal(4.6, 9.7, (num_frames, n)).astype(np.float32),
                "mask": rng.choice([0, 2, 4, 5, 6], size=(num_frames, n)).astype(np.int64),
            }
            if (k + m) % 2:
                arrays["mask"] = arrays["mask"][..., None]
            triangles = np.stack([_frame_triangles(nx, ny, t) for t in range(num_frames)])
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            write_file(osp.join(raw_dir, name, "sim.npz"), buffer.getvalue())
            buffer = io.BytesIO()
            np.save(buffer, triangles)
            write_file(osp.join(raw_dir, name, "triangles.npy"), buffer.getvalue())
            out[name] = {"split": split, "triangles": triangles, **arrays}
    return out
