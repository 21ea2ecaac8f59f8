r"""Tiny raw files in the exact formats and layouts of the Geo-FNO benchmarks
(:class:`Airfoil`, :class:`Pipe`, :class:`Elasticity`, :class:`Plasticity`),
with known values, for tests and examples.

Every writer takes ``raw_dir`` (the dataset's ``root/raw``, any fsspec URL),
writes the benchmark's files under their real names, and returns the arrays
it wrote, so that expected samples can be computed independently of the
dataset code. The sample counts default to the smallest the benchmarks' splits
need (the published files hold more); the grids are small by default and
configurable (pass the real shape to write real-sized samples). Values are
drawn from a seeded generator around the published normalisation constants.
The grid writers' ``smooth=True`` writes fields that are a smooth function of
the grid point's position instead of noise: something a model can learn, for
comparisons of models on the benchmark's formats (``benchmarks/compare.py``).
"""
from __future__ import annotations

import io
import os.path as osp
from typing import Dict, Sequence

import numpy as np

from torch_geometric_erwin.datasets._window_store import require_module
from torch_geometric_erwin.testing._files import write_file


def _write_npy(path: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_file(path, buffer.getvalue())


def _write_grid(raw_dir: str, names: Sequence[str], num_samples: int, grid: Sequence[int],
                channels: int, centre: Sequence[float], spread: Sequence[float],
                field: Sequence[float], seed: int, dtype, smooth: bool = False) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = grid
    u, v = np.meshgrid(np.linspace(0.0, 1.0, w), np.linspace(0.0, 1.0, h))       # [H, W]
    shift = rng.normal(size=(num_samples, 2, 1, 1))
    a, b = u - 0.5 + 0.1 * shift[:, 0], v - 0.5 + 0.1 * shift[:, 1]               # [S, H, W]
    if smooth:
        # channel c: a wave over the (shifted) grid, so every sample's field follows from its positions
        phase = np.arange(channels)[None, :, None, None]
        wave = np.sin(2 * np.pi * a[:, None] + phase) * np.cos(np.pi * b[:, None] + 0.5 * phase)
        values = field[0] + field[1] * wave + 0.01 * field[1] * rng.normal(size=wave.shape)
    else:
        values = rng.normal(field[0], field[1], size=(num_samples, channels, h, w))
    arrays = {"X": (centre[0] + spread[0] * a).astype(dtype), "Y": (centre[1] + spread[1] * b).astype(dtype),
              "Q": values.astype(dtype)}
    for key, name in zip("XYQ", names):
        _write_npy(osp.join(raw_dir, name), arrays[key])
    return arrays


def write_airfoil(raw_dir: str, num_samples: int = 1200, grid: Sequence[int] = (5, 3), seed: int = 0,
                  dtype=np.float64, smooth: bool = False) -> Dict[str, np.ndarray]:
    r"""Writes ``airfoil/naca/NACA_Cylinder_{X,Y}.npy`` ``[S, H, W]`` and
    ``NACA_Cylinder_Q.npy`` ``[S, 5, H, W]`` (the real grid is 221 x 51).
    With ``smooth`` the fields are waves over the grid (a function of the positions), else noise.

    Returns ``{"X", "Y", "Q"}``.
    """
    return _write_grid(raw_dir, [f"airfoil/naca/NACA_Cylinder_{k}.npy" for k in "XYQ"], num_samples,
                       grid, 5, (1.5, 0.0), (20.0, 20.0), (0.8, 0.14), seed, dtype, smooth)


def write_pipe(raw_dir: str, num_samples: int = 1200, grid: Sequence[int] = (130, 3), seed: int = 0,
               dtype=np.float64, smooth: bool = False) -> Dict[str, np.ndarray]:
    r"""Writes ``pipe/Pipe_{X,Y}.npy`` ``[S, H, W]`` and ``pipe/Pipe_Q.npy``
    ``[S, 3, H, W]`` (the real grid is 129 x 129; the default 130 rows are
    enough for the dataset's ``[:128, :128]`` crop to drop rows). With ``smooth`` the
    fields are waves over the grid (a function of the positions), else noise.

    Returns ``{"X", "Y", "Q"}``.
    """
    return _write_grid(raw_dir, [f"pipe/Pipe_{k}.npy" for k in "XYQ"], num_samples, grid, 3,
                       (5.0, 0.0), (10.0, 2.0), (0.17, 0.08), seed, dtype, smooth)


def write_elasticity(raw_dir: str, num_samples: int = 1210, num_points: int = 10, seed: int = 0,
                     dtype=np.float64) -> Dict[str, np.ndarray]:
    r"""Writes ``elasticity/Meshes/Random_UnitCell_sigma_10.npy`` ``[P, S]``
    (stress) and ``Random_UnitCell_XY_10.npy`` ``[P, 2, S]`` (positions in
    the unit square), samples last as published (the real files have
    :math:`P = 972`, :math:`S = 2000`).

    Returns ``{"sigma", "XY"}`` as written.
    """
    rng = np.random.default_rng(seed)
    arrays = {"sigma": rng.normal(187.7, 127.1, size=(num_points, num_samples)).astype(dtype),
              "XY": rng.uniform(0.0, 1.0, size=(num_points, 2, num_samples)).astype(dtype)}
    for key in arrays:
        _write_npy(osp.join(raw_dir, "elasticity", "Meshes", f"Random_UnitCell_{key}_10.npy"), arrays[key])
    return arrays


def write_plasticity(raw_dir: str, num_samples: int = 987, grid: Sequence[int] = (5, 3),
                     num_steps: int = 4, channels: int = 4, seed: int = 0,
                     dtype=np.float64) -> Dict[str, np.ndarray]:
    r"""Writes ``plasticity/plas_N987_T20.mat`` (MATLAB v5, with
    :func:`scipy.io.savemat`) holding ``input`` ``[S, H]`` and ``output``
    ``[S, H, W, T, C]`` (the real file: ``[987, 101]`` and
    ``[987, 101, 31, 20, 4]``).

    Returns ``{"input", "output"}``.
    """
    scipy = require_module("scipy", "write_plasticity", "data")
    import scipy.io  # noqa: F401  (the submodule)

    rng = np.random.default_rng(seed)
    h, w = grid
    arrays = {"input": rng.normal(19.6, 2.4, size=(num_samples, h)).astype(dtype),
              "output": rng.normal(-4.4, 14.3, size=(num_samples, h, w, num_steps, channels)).astype(dtype)}
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, arrays)
    write_file(osp.join(raw_dir, "plasticity", "plas_N987_T20.mat"), buffer.getvalue())
    return arrays
