from __future__ import annotations

import math
import warnings
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
    ``rotate`` degrees and mean-pooled by the strides of the earlier levels, are
    re-partitioned into balls of ``ball_sizes[l]``. The permutations are local
    to each graph; :meth:`BallTree.from_data` offsets them after collation.
    Reuses ``data.tree_index`` when a :class:`BallTreeTransform` ran before
    (its configuration must match: a :class:`ValueError` names the difference),
    otherwise attaches the tree as well. Records the angle in ``data.tree_build``.

    Args:
        rotate (float, optional): rotation angle in degrees, not 0; the models' ``rotate``.
            (default: :obj:`45.`)
        ball_sizes (List[int], optional): ball size per level. Without it a
            single level is assumed (a model without pooling).
        strides (List[int], optional): pooling strides, ``len(ball_sizes) - 1``.
        padding (str, optional): ``"pow2"`` or ``"compact"``, as for the tree.
        angle (float, optional): the former name of ``rotate`` (deprecated).
    """
    def __init__(self, rotate: float = 45.0, ball_sizes: Optional[Sequence[int]] = None,
                 strides: Optional[Sequence[int]] = None, padding: str = "pow2", *,
                 angle: Optional[float] = None) -> None:
        if angle is not None:
            warnings.warn("RotatedTreeTransform(angle=...) is now RotatedTreeTransform(rotate=...), the name the "
                          "models and build_ball_tree use", DeprecationWarning, stacklevel=2)
            rotate = angle
        if isinstance(rotate, bool) or not isinstance(rotate, (int, float)) or not math.isfinite(rotate) \
                or rotate == 0:
            raise ValueError(f"rotate must be a finite, non-zero number of degrees, got {rotate!r}")
        self.rotate = float(rotate)
        self.tree_transform = BallTreeTransform(ball_sizes or [1], strides, padding)
        self.ball_sizes, self.strides = self.tree_transform.ball_sizes, self.tree_transform.strides
        self.padding = padding

    def forward(self, data: Data) -> Data:
        if getattr(data, INDEX_KEY, None) is None:
            data = self.tree_transform(data)
        tree = BallTree.from_data(data, self.ball_sizes, self.strides, self.padding)
        tree.rotated, tree.rotate = rotated_partitions(data.pos, tree, self.rotate), self.rotate
        tree.local_rotations().attach(data)
        return data

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(rotate={self.rotate}, "
                f"{_describe(self.ball_sizes, self.strides, self.padding)})")
