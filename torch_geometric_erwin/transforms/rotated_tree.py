from __future__ import annotations

import math
from typing import Optional, Sequence

from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from torch_geometric_erwin.transforms.ball_tree import BallTreeTransform, _describe
from torch_geometric_erwin.tree import BallTree
from torch_geometric_erwin.tree.ball_tree import INDEX_KEY, rotated_partitions


@functional_transform("rotated_tree")
class RotatedTreeTransform(BaseTransform):
    r"""Attaches the rotated re-partitions used for cross-ball attention
    (paper, eq. 11; functional name: :obj:`rotated_tree`).

    For every level :math:`l` of the model, ``data.tree_rotated_<l>`` is a
    permutation of that level's slots: the leaves of the ball tree, rotated by
    ``angle`` degrees and mean-pooled by the strides of the earlier levels, are
    re-partitioned into balls of ``ball_sizes[l]``. The permutations are local
    to each graph; :meth:`BallTree.from_data` offsets them after collation.
    Reuses ``data.tree_index`` when a :class:`BallTreeTransform` ran before
    (its configuration must match: a :class:`ValueError` names the difference),
    otherwise attaches the tree as well. Records the angle in ``data.tree_build``.

    Args:
        angle (float, optional): rotation angle in degrees. (default: :obj:`45.`)
        ball_sizes (List[int], optional): ball size per level. Without it a
            single level is assumed (a model without pooling).
        strides (List[int], optional): pooling strides, ``len(ball_sizes) - 1``.
        padding (str, optional): ``"pow2"`` or ``"compact"``, as for the tree.
    """
    def __init__(self, angle: float = 45.0, ball_sizes: Optional[Sequence[int]] = None,
                 strides: Optional[Sequence[int]] = None, padding: str = "pow2") -> None:
        if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not math.isfinite(angle) \
                or angle == 0:
            raise ValueError(f"angle must be a finite, non-zero number of degrees, got {angle!r}")
        self.angle = float(angle)
        self.tree_transform = BallTreeTransform(ball_sizes or [1], strides, padding)
        self.ball_sizes, self.strides = self.tree_transform.ball_sizes, self.tree_transform.strides
        self.padding = padding

    def forward(self, data: Data) -> Data:
        if getattr(data, INDEX_KEY, None) is None:
            data = self.tree_transform(data)
        tree = BallTree.from_data(data, self.ball_sizes, self.strides, self.padding)
        tree.rotated, tree.rotate = rotated_partitions(data.pos, tree, self.angle), self.angle
        tree.local_rotations().attach(data)
        return data

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(angle={self.angle}, "
                f"{_describe(self.ball_sizes, self.strides, self.padding)})")
