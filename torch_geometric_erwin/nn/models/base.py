"""What the ball-tree models share: the input path from a ``Data`` or tensors to the network."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Tuple, Union

import torch
import torch_geometric.transforms as T
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.data.data import BaseData

from torch_geometric_erwin.checks import check_edge_index, check_model_inputs, checked_positions
from torch_geometric_erwin.tree import BallTree, build_ball_tree
from torch_geometric_erwin.tree.ball_tree import has_tree_attributes, tree_fix


def resolve_graph_transform(graph_transform: Any, knn: int, radius: Optional[float] = None):
    """A model's ``graph_transform`` argument as the transform it calls: for None the kNN graph of
    ``knn`` neighbours with self-loops (or the radius graph of ``radius``), the package's graph
    transform that a model file recorded (its ``to_config()`` dict), or the transform itself (any
    callable ``Data -> Data`` that sets ``edge_index`` from ``pos`` and ``batch``, such as PyG's
    :class:`~torch_geometric.transforms.KNNGraph`)."""
    # imported here: the transforms import the layers, which this package's models import
    from torch_geometric_erwin.transforms import KNNGraphTransform, RadiusGraphTransform, graph_transform_from_config
    if graph_transform is None:
        return KNNGraphTransform(knn, loop=True) if radius is None else RadiusGraphTransform(radius, loop=True)
    if isinstance(graph_transform, Mapping):
        return graph_transform_from_config(graph_transform)
    if not callable(graph_transform):
        raise TypeError(f"graph_transform must be a transform that sets data.edge_index from data.pos (e.g. "
                        f"KNNGraphTransform(16, loop=True)), got {type(graph_transform).__name__}")
    return graph_transform


class BallTreeModel(nn.Module):
    r"""Base of the models that run on a ball tree (:class:`Erwin`, :class:`ErwinNSA`).

    :meth:`forward` takes tensors ``(x, pos, batch, edge_index, tree)`` or a
    :class:`~torch_geometric.data.Data`/:class:`~torch_geometric.data.Batch` (with the attributes
    of the tree transforms, if they ran), checks every input once, builds the tree and the graph
    that are not given, and hands them to :meth:`network`, the subclass's computation, which
    reads no data on the host and so compiles whole under ``torch.compile(fullgraph=True)``.

    A subclass sets ``in_channels``, ``dimensionality``, ``graph_transform`` (through
    :func:`resolve_graph_transform`) and ``embedding`` (whose ``lin.weight`` gives the parameters'
    dtype) and defines :attr:`tree_config`, :attr:`tree_rotation` and :meth:`network`; it may add
    checks in :meth:`_check_tree` and :meth:`_check_batch`.
    """

    in_channels: int
    dimensionality: int
    graph_transform: Callable[[Data], Data]
    embedding: nn.Module

    @property
    def tree_config(self) -> dict:
        """Arguments of the ball tree the model runs on (``ball_sizes``, ``strides``, ``padding``),
        for :func:`~torch_geometric_erwin.tree.build_ball_tree` and the tree transforms."""
        raise NotImplementedError

    @property
    def tree_rotation(self) -> Optional[float]:
        """The angle of the rotated trees the model attends in, or None if it uses none."""
        raise NotImplementedError

    def network(self, x: Tensor, pos: Tensor, edge_index: Optional[Tensor], tree: BallTree) -> Tensor:
        """The computation of :meth:`forward` on inputs it has checked and the tree it has built (or
        was given), ``pos`` in float32 at least. Inputs it has not seen checked are the caller's
        responsibility."""
        raise NotImplementedError

    @torch.compiler.disable
    def build_tree(self, pos: Tensor, batch: Optional[Tensor] = None) -> BallTree:
        """The ball tree (with its rotated orders when the model uses them) of ``pos``."""
        return build_ball_tree(pos, batch, rotate=self.tree_rotation or 0.0, **self.tree_config)

    @torch.compiler.disable
    def build_graph(self, pos: Tensor, batch: Optional[Tensor] = None) -> Tensor:
        """The graph of the embedding when none is given: :attr:`graph_transform` applied to the
        positions (and ``batch``), its ``edge_index`` checked unless it is one of the package's
        own graph transforms, whose edges are within the graphs by construction."""
        from torch_geometric_erwin.transforms.graph_config import GRAPH_TRANSFORMS
        data = Data(pos=pos) if batch is None else Data(pos=pos, batch=batch)
        edge_index = self.graph_transform(data).edge_index
        if type(self.graph_transform) not in GRAPH_TRANSFORMS.values():
            check_edge_index(edge_index, pos.shape[0], batch)
        return edge_index

    def tree_transform(self) -> T.Compose:
        """The transforms that attach the tree this model runs on to a ``Data`` (its
        :attr:`tree_config`, and the rotated orders when the model uses them): a dataset's
        ``pre_transform`` for clouds whose positions do not change, so that no tree is built
        during training."""
        # imported here: the transforms import the models' tree configuration helpers
        from torch_geometric_erwin.transforms import BallTreeTransform, RotatedTreeTransform

        transforms = [BallTreeTransform(**self.tree_config)]
        if self.tree_rotation is not None:
            transforms.append(RotatedTreeTransform(rotate=self.tree_rotation, **self.tree_config))
        return T.Compose(transforms)

    def forward(self, x: Union[Tensor, BaseData], pos: Optional[Tensor] = None, batch: Optional[Tensor] = None,
                edge_index: Optional[Tensor] = None, tree: Optional[BallTree] = None):
        from_data = False
        if isinstance(x, BaseData):
            data = x
            x, pos, batch = data.x, data.pos, getattr(data, "batch", None)
            edge_index = getattr(data, "edge_index", None)
            if tree is None and has_tree_attributes(data):
                tree, from_data = BallTree.from_data(data), True
        pos, edge_index, tree = self._prepare(x, pos, batch, edge_index, tree, from_data)
        return self.network(x, pos, edge_index, tree)

    @torch.compiler.disable
    def _prepare(self, x: Tensor, pos: Tensor, batch: Optional[Tensor], edge_index: Optional[Tensor],
                 tree: Optional[BallTree], from_data: bool) -> Tuple[Tensor, Optional[Tensor], BallTree]:
        """The checked inputs with the tree and the graph (built if not given), positions in
        float32 at least: what :meth:`network` runs on. Reads the data, so it runs eagerly."""
        node_ptr = check_model_inputs(x, pos, batch, edge_index, self.in_channels, self.dimensionality,
                                      self.embedding.lin.weight.dtype)
        if tree is not None:
            self._check_given_tree(tree, x, pos, node_ptr, from_data)
        self._check_batch(x, tree, node_ptr)
        geometry = pos.to(torch.promote_types(pos.dtype, torch.float32))
        with checked_positions(pos, geometry):
            if tree is None:
                tree = self.build_tree(geometry, batch)
            if edge_index is None and self.embedding.mp_steps > 0:
                edge_index = self.build_graph(geometry, batch)
        return geometry, edge_index, tree

    def _check_given_tree(self, tree, x: Tensor, pos: Tensor, node_ptr: Tensor, from_data: bool) -> None:
        if not isinstance(tree, BallTree):
            raise TypeError(f"tree must be a BallTree, got {type(tree).__name__}")
        if tree.num_nodes != x.shape[0]:
            raise ValueError(f"tree has {tree.num_nodes} nodes but x has {x.shape[0]}")
        tree.check(node_ptr)
        self._check_tree(tree)
        rotate = self.tree_rotation
        tree.check_build(**self.tree_config, rotate=rotate, fix=tree_fix(self.tree_config, rotate, from_data))
        tree.check_positions(pos)

    def _check_tree(self, tree: BallTree) -> None:
        """Checks of a given tree that are specific to the model, after its structure is checked."""

    def _check_batch(self, x: Tensor, tree: Optional[BallTree], node_ptr: Tensor) -> None:
        """Checks of the batch that are specific to the model (``tree`` None when it is to be built)."""
