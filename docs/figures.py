"""Draws the figures of the concept pages and the README's picture with :func:`plot_ball_tree`.

The concept pages' figures are drawn by ``conf.py`` at every build (``draw_all(docs/_generated)``, by hand
``python docs/figures.py OUTPUT_FOLDER``) and never committed, so they always show what the current tree
engine builds. The README's picture must be a committed file: ``python docs/figures.py --readme`` draws it
(:data:`README_FIGURE`) from a preset model's own tree, and records a digest of that tree and of how it was
drawn in the PNG's metadata; ``test/test_docs.py`` recomputes the digest, so a picture that no longer shows
what the model builds fails the tests until it is drawn again.
"""
import hashlib
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


#: The README's picture, relative to the repository root.
README_FIGURE = os.path.join("docs", "images", "readme_tree.png")
#: The PNG metadata key holding :func:`readme_tree_digest`.
DIGEST_KEY = "torch_geometric_erwin tree digest"
_README_PRESET, _README_POINTS, _README_LEVELS = "eagle-small", 2048, [0, 1, 2]


def readme_tree():
    """``(pos, tree)``: a clumpy 2-D cloud and the tree the README's model (the ``eagle-small`` preset,
    2-D) builds on it, rotated partitions included."""
    from torch_geometric_erwin.nn import Erwin

    pos = cloud_2d(_README_POINTS, seed=3)
    return pos, Erwin.from_preset(_README_PRESET).build_tree(pos)


def readme_tree_digest(tree) -> str:
    """SHA-256 of what the README's picture shows: the preset, the levels drawn and the tree's slots."""
    digest = hashlib.sha256(f"{_README_PRESET} {_README_POINTS} {_README_LEVELS}".encode())
    for tensor in (tree.index, tree.mask, *tree.rotated):
        digest.update(tensor.cpu().numpy().tobytes())
    return digest.hexdigest()


def draw_readme(path: str) -> str:
    """Draw the README's picture into ``path`` with the tree's digest in its metadata; returns ``path``."""
    pos, tree = readme_tree()
    figure = plot_ball_tree(pos, tree, level=_README_LEVELS, rotated=True, show_coarse=False, point_size=4,
                            panel_size=3.0)
    figure.savefig(path, format="png", dpi=80, metadata={DIGEST_KEY: readme_tree_digest(tree)})
    return path


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
    if sys.argv[1:] == ["--readme"]:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        os.makedirs(os.path.join(root, os.path.dirname(README_FIGURE)), exist_ok=True)
        print(draw_readme(os.path.join(root, README_FIGURE)))
    else:
        print("\n".join(draw_all(sys.argv[1] if len(sys.argv) > 1 else "_generated")))
