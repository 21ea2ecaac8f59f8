"""Draws the figures of the concept pages with :func:`plot_ball_tree`.

Run by ``conf.py`` at every build (``draw_all(docs/_generated)``) and usable by
hand: ``python docs/figures.py OUTPUT_FOLDER``. Nothing here is committed as an
image; the pictures always show what the current tree engine builds.
"""
import math
import os
import sys

import torch

from torch_geometric_erwin.tree import build_ball_tree
from torch_geometric_erwin.utils import plot_ball_tree


def cloud_2d(num_points: int, seed: int = 0) -> torch.Tensor:
    """A clumpy 2-D cloud: three Gaussian blobs and a ring."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [2.5, 1.0], [1.0, 2.8]])
    blob = centres[torch.randint(3, (num_points // 2,), generator=generator)]
    blob = blob + 0.45 * torch.randn(blob.shape, generator=generator)
    angle = 2 * math.pi * torch.rand(num_points - blob.shape[0], generator=generator)
    radius = 3.2 + 0.15 * torch.randn(angle.shape, generator=generator)
    ring = torch.stack([1.2 + radius * angle.cos(), 1.2 + radius * angle.sin()], dim=1)
    return torch.cat([blob, ring])


def torus_3d(num_points: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    u, v = 2 * math.pi * torch.rand(2, num_points, generator=generator)
    radius = 1.0 + 0.35 * v.cos()
    return torch.stack([radius * u.cos(), radius * u.sin(), 0.35 * v.sin()], dim=1)


def draw_all(folder: str) -> list:
    """Write every figure into ``folder``; returns the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []

    def out(name):
        paths.append(os.path.join(folder, name))
        return paths[-1]

    pos = cloud_2d(256)
    tree = build_ball_tree(pos, ball_sizes=[16, 16, 16], strides=[2, 2], rotate=45)
    plot_ball_tree(pos, tree, level=[0, 1, 2], show_coarse=False, path=out("tree_levels.png"))
    plot_ball_tree(pos, tree, level=[0, 1], rotated=True, show_coarse=False, path=out("tree_rotated.png"))

    small = cloud_2d(64, seed=1)
    plot_ball_tree(small, level=[0, 1], ball_sizes=[16, 4], strides=[4], point_size=20,
                   path=out("tree_coarsening.png"))

    padded = cloud_2d(150, seed=2)
    for padding in ("pow2", "compact"):
        plot_ball_tree(padded, level=0, ball_sizes=[32], padding=padding, show_padding=True,
                       path=out(f"padding_{padding}.png"))

    plot_ball_tree(torus_3d(512), level=[0, 1], rotated=True, ball_sizes=[32, 32], strides=[4],
                   path=out("tree_3d.png"))
    return paths


if __name__ == "__main__":
    print("\n".join(draw_all(sys.argv[1] if len(sys.argv) > 1 else "_generated")))
