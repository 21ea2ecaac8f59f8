"""Figures the examples write: loss curves, the first sample's ball tree, rollout frames."""
from __future__ import annotations

import math
import os
import tempfile
from typing import Dict, Sequence

import torch
from torch import Tensor

from torch_geometric_erwin.training.loggers import read_metrics_csv


def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install matplotlib "
                          "(or pip install 'torch_geometric_erwin[examples]')") from error
    return Figure(**kwargs)


def save_figure(fig, path: str) -> None:
    """Save ``fig`` as PNG atomically (temporary file, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
    os.close(handle)
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


def plot_loss_curves(metrics_files: Dict[str, str], path: str) -> None:
    """Training loss (left) and validation loss (right) against step, one line per run."""
    fig = _figure(figsize=(10, 3.8))
    train_ax, val_ax = fig.subplots(1, 2)
    for label, csv_path in metrics_files.items():
        if not os.path.isfile(csv_path):
            continue
        rows = read_metrics_csv(csv_path)
        for ax, split in ((train_ax, "train"), (val_ax, "val")):
            points = [(r["step"], r["value"]) for r in rows if r["split"] == split and r["name"] == "loss"]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=label, marker="o" if split == "val" else None,
                        markersize=3)
    for ax, title in ((train_ax, "training loss"), (val_ax, "validation loss")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    save_figure(fig, path)


#: Points of the largest graph :func:`plot_first_sample_tree` draws whole.
MAX_PLOTTED_POINTS = 2**15


def plot_first_sample_tree(data, path: str) -> None:
    """The ball-tree partition (levels 0 and 1, plain and rotated) of one graph's positions; of an
    evenly strided subset of :data:`MAX_PLOTTED_POINTS` of them for a larger graph, whose scatter
    plot of every point would take minutes and show nothing more."""
    from torch_geometric_erwin.utils import plot_ball_tree
    pos = data.pos
    if pos.size(0) > MAX_PLOTTED_POINTS:
        pos = pos[::-(-pos.size(0) // MAX_PLOTTED_POINTS)]
    n = pos.size(0)
    ball = 2 ** max(2, min(6, int(math.log2(max(n, 16) / 16))))
    fig = plot_ball_tree(pos[:, :3].float(), level=[0, 1], rotated=True, ball_sizes=[ball, ball],
                         strides=[2])
    save_figure(fig, path)


def plot_rollout_frames(pos: Tensor, truth: Tensor, pred: Tensor, steps: Sequence[int], path: str,
                        names: Sequence[str] = ("|velocity|", "pressure")) -> None:
    r"""Ground truth and prediction of a rollout at a few steps, one field per pair of rows.

    Args:
        pos: ``[H, N, 2]`` node positions per step.
        truth, pred: ``[H, N, F]`` fields per step (``F = len(names)``).
        steps: which steps to draw (columns).
        path: PNG file.
        names: field labels.
    """
    fig = _figure(figsize=(2.6 * len(steps), 2.3 * 2 * len(names)))
    axes = fig.subplots(2 * len(names), len(steps), squeeze=False)
    for f, name in enumerate(names):
        lo = float(torch.minimum(truth[..., f].min(), pred[..., f].min()))
        hi = float(torch.maximum(truth[..., f].max(), pred[..., f].max()))
        for c, step in enumerate(steps):
            for r, (label, field) in enumerate((("truth", truth), ("prediction", pred))):
                ax = axes[2 * f + r, c]
                ax.scatter(pos[step, :, 0], pos[step, :, 1], c=field[step, :, f], s=4, vmin=lo, vmax=hi,
                           cmap="viridis")
                ax.set_aspect("equal")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{name} {label}, step {step + 1}", fontsize=8)
    save_figure(fig, path)
