from __future__ import annotations

from typing import Optional, Sequence

from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from torch_geometric_erwin.tree import build_ball_tree
from torch_geometric_erwin.tree.ball_tree import PADDINGS
from torch_geometric_erwin.checks import check_ball_config


def _describe(ball_sizes, strides, padding) -> str:
    config = [f"padding='{padding}'"]
    if ball_sizes is not None:
        config.insert(0, f"ball_sizes={list(ball_sizes)}, strides={list(strides)}")
    return ", ".join(config)


@functional_transform("ball_tree")
class BallTreeTransform(BaseTransform):
    r"""Attaches the ball tree of ``data.pos`` (functional name: :obj:`ball_tree`).

    Sets ``data.tree_index`` (``[S]`` slot -> node, padding slots repeat a node)
    and ``data.tree_mask`` (``[S]`` bool, one True slot per node), see
    :func:`~torch_geometric_erwin.tree.build_ball_tree`. Both collate with
    :class:`torch_geometric.loader.DataLoader`: ``tree_index`` is offset by the
    node counts like any ``*_index`` attribute. It also records how the tree was
    built, so that a model can refuse a tree built for another configuration:
    ``data.tree_build``, a string such as
    ``"format=1;ball_sizes=16,8;strides=2;padding=pow2;rotate=0.0"`` (a list of
    one string per graph after collation), and ``data.tree_radius``, the radius of
    every pair of leaves relative to its graph's extent (``[S / 2]``, concatenated
    by collation), with which a model checks that the tree fits the positions it
    is given. The tree depends on the geometry only, so use it
    as a ``pre_transform`` to cache it with a dataset; use the model's
    configuration: ``BallTreeTransform(**model.tree_config)``.

    Args:
        ball_sizes (List[int], optional): the model's ball size per level; small
            graphs are padded so every level's balls fit. (default: :obj:`None`)
        strides (List[int], optional): the model's pooling strides.
        padding (str, optional): ``"pow2"`` (reference layout) or ``"compact"``.
    """
    def __init__(self, ball_sizes: Optional[Sequence[int]] = None,
                 strides: Optional[Sequence[int]] = None, padding: str = "pow2") -> None:
        self.ball_sizes, self.strides = check_ball_config(ball_sizes, strides)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.padding = padding

    def forward(self, data: Data) -> Data:
        if getattr(data, "pos", None) is None:
            raise ValueError(f"{self.__class__.__name__} needs data.pos")
        tree = build_ball_tree(data.pos, getattr(data, "batch", None), ball_sizes=self.ball_sizes,
                               strides=self.strides, padding=self.padding)
        tree.attach(data)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({_describe(self.ball_sizes, self.strides, self.padding)})"
