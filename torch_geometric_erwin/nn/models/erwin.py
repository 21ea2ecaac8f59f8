r"""Erwin: the hierarchical ball-tree transformer (Zhdanov, Welling, van de Meent, ICML 2025)."""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint
from torch_geometric.data import Data

from torch_geometric_erwin.nn.ball_attention import BallGeometry
from torch_geometric_erwin.nn.embedding import ErwinEmbedding
from torch_geometric_erwin.nn.erwin_block import ErwinBlock
from torch_geometric_erwin.nn.init import reset_linear
from torch_geometric_erwin.nn.models.base import BallTreeModel, resolve_graph_transform
from torch_geometric_erwin.nn.models.presets import PRESETS
from torch_geometric_erwin.nn.models.reference import from_reference
from torch_geometric_erwin.nn.pooling import BallPooling, BallUnpooling
from torch_geometric_erwin.nn.models.serialization import Configurable
from torch_geometric_erwin.tree import BallTree, engine, granularity
from torch_geometric_erwin.tree.ball_tree import PADDINGS
from torch_geometric_erwin.checks import as_int, check_angle, check_ball_config, check_int, check_real

#: A level's tree orders: the geometry of its balls, and (permutation, geometry) of the rotated balls.
LevelOrders = Tuple[BallGeometry, Optional[Tuple[Tensor, BallGeometry]]]


class ErwinStage(nn.Module):
    r"""The blocks of one U-Net level: ``depth`` :class:`~torch_geometric_erwin.nn.ErwinBlock`\ s, the
    odd ones on the rotated tree's balls when a rotated order is given (cross-ball interaction, eq. 11).

    Shapes: ``forward(x [S_l, C], orders) -> [S_l, C]`` with ``orders`` a :data:`LevelOrders`;
    ``checkpointed(x [S_l, C], pos [S_l, D], permutation [S_l]?) -> [S_l, C]``.
    """

    def __init__(self, depth: int, channels: int, num_heads: int, ball_size: int, mlp_ratio: int,
                 dimensionality: int):
        super().__init__()
        self.ball_size = ball_size
        self.blocks = nn.ModuleList([ErwinBlock(channels, num_heads, ball_size, mlp_ratio, dimensionality)
                                     for _ in range(depth)])

    def reset_parameters(self) -> None:
        for block in self.blocks:
            block.reset_parameters()

    def forward(self, x: Tensor, orders: LevelOrders) -> Tensor:
        geometry, rotated = orders
        for i, block in enumerate(self.blocks):
            if i % 2 and rotated is not None:
                x = block.permuted(x, rotated[0], geometry=rotated[1])
            else:
                x = block(x, geometry=geometry)
        return x

    def checkpointed(self, x: Tensor, pos: Tensor, permutation: Optional[Tensor]) -> Tensor:
        """:meth:`forward` with every block under activation checkpointing: the backward pass keeps
        only each block's input ``[S_l, C]`` and runs the block again. The block's
        :class:`BallGeometry` (``[S_l / m, m, m]`` distances) is formed inside, from the level's
        positions ``pos`` (in tree order) and the rotated order ``permutation``, so that it is
        not kept between the passes either."""
        for i, block in enumerate(self.blocks):
            rotated = permutation if i % 2 else None
            x = activation_checkpoint(self._block, block, x, pos, rotated, use_reentrant=False)
        return x

    def _block(self, block: ErwinBlock, x: Tensor, pos: Tensor, permutation: Optional[Tensor]) -> Tensor:
        if permutation is None:
            return block(x, geometry=BallGeometry.from_pos(pos, self.ball_size))
        return block.permuted(x, permutation, geometry=BallGeometry.from_pos(pos[permutation], self.ball_size))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(depth={len(self.blocks)})"


def _positive_ints(name: str, values, allow_zero: bool = False) -> List[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of ints, got {values!r}")
    low = 0 if allow_zero else 1
    for value in values:
        if as_int(value) is None or value < low:
            raise ValueError(f"{name} must hold ints >= {low}, got {list(values)}")
    return [int(value) for value in values]


class Erwin(Configurable, BallTreeModel):
    r"""Erwin (Zhdanov et al., ICML 2025, Sec. 4 and Fig. 2): ball attention on a
    ball tree, coarsened and refined like a U-Net.

    .. math::
        h &= \mathrm{Embed}(x, p, \mathcal{E}) \qquad \text{(eq. 14, on the graph's nodes)} \\
        h^{(l)} &= \mathrm{Blocks}^{enc}_l\big(h^{(l)}\big), \quad
            h^{(l+1)} = \mathrm{BallPool}_l\big(h^{(l)}\big) \qquad (l < L - 1,\ \text{eq. 12}) \\
        h^{(L-1)} &= \mathrm{Blocks}^{enc}_{L-1}\big(h^{(L-1)}\big) \qquad \text{(bottleneck)} \\
        h^{(l)} &= \mathrm{Blocks}^{dec}_l\big(\mathrm{BallUnpool}_l(h^{(l+1)}, h^{(l)})\big)
            \qquad (l = L-2, \dots, 0,\ \text{eq. 13})

    on the leaves of the ball tree of each graph (padding slots included), with
    the odd blocks of every level attending inside the balls of the rotated tree
    (eq. 11) when ``rotate != 0``. Rows come back in the input node order, one
    per node.

    Args:
        in_channels (int): input features per node.
        hidden_channels (list of int): width :math:`C_l` of every level (``L`` entries).
        ball_sizes (list of int): ball size of every level (powers of two).
        enc_num_heads, enc_depths (list of int): heads and blocks of every
            encoder level, the last one being the bottleneck (``L`` entries).
        dec_num_heads, dec_depths (list of int): heads and blocks of the decoder
            levels ``0..L-2``, finest first (``L - 1`` entries).
        strides (list of int): pooling stride after every level but the last
            (powers of two, ``L - 1`` entries).
        rotate (float): rotation angle of the cross-ball trees in degrees; ``0``
            for none. (default: ``45``)
        decode (bool): if :obj:`False`, return the bottleneck level instead:
            ``(h [S', C_{L-1}], batch [S'])`` in tree order, one row per slot of the coarsest
            level that pools at least one node (slots of padding only are dropped, so that
            e.g. ``global_mean_pool(h, batch)`` sees no padding). (default: :obj:`True`)
        mlp_ratio (int): SwiGLU hidden width / :math:`C_l`. (default: ``4``)
        dimensionality (int): :math:`D` of the positions. (default: ``3``)
        mp_steps (int): message-passing steps of the embedding. (default: ``3``)
        out_channels (int, optional): if given, a final ``Linear(C_0, out_channels)``.
        padding (str): tree padding, ``"pow2"`` (the reference's) or ``"compact"``
            (see :func:`~torch_geometric_erwin.tree.build_ball_tree`).
        knn (int): neighbours of the kNN graph (self-loops included) built for the
            embedding when no ``edge_index`` is given. (default: ``16``)
        radius (float, optional): build a radius graph (self-loops, at most 32
            neighbours) instead of the kNN graph.
        graph_transform (callable, optional): the transform that builds the embedding's
            graph when no ``edge_index`` is given, in place of ``knn`` and ``radius``: any
            ``Data -> Data`` callable that sets ``edge_index`` from ``pos`` (and
            ``batch``), such as :class:`~torch_geometric_erwin.transforms.KNNGraphTransform`
            or PyG's graph transforms. The same object serves as a dataset's transform,
            so that the graphs a model builds and the ones stored with the data agree. A model
            with one of the package's graph transforms saves and loads with it; with another
            callable it runs but :meth:`save` refuses its configuration.
            (default: ``KNNGraphTransform(knn, loop=True)``, or
            ``RadiusGraphTransform(radius, loop=True)``)
        activation_checkpointing (bool): in training with autograd, run every
            transformer block under :func:`torch.utils.checkpoint.checkpoint`
            (non-reentrant): the forward pass keeps each block's input only and
            the backward pass runs the block again, trading about a third more
            time for a fraction of the activation memory (see the docs' "Activation
            checkpointing"). Per block rather than per level: a level's
            checkpoint would keep fewer inputs (one ``[S_l, C_l]`` tensor each,
            a small part of the memory) but hold all of its blocks' activations
            at once while it runs again (six blocks at the bottleneck of the
            deep presets), and both run every block forward twice. The
            embedding's message-passing steps are checkpointed one by one too
            (each keeps about seven ``[N, C_0]`` tensors, more than a block at
            the finest level); pooling and unpooling (whose BatchNorm would
            update its running statistics again if run twice) are not. An attribute that may be
            switched at any time; eval mode and ``torch.no_grad`` are
            unaffected. (default: :obj:`False`)

    Shapes:
        ``forward(x [N, F], pos [N, D], batch [N]?, edge_index [2, E]?, tree?) -> [N, C_0]``
        (or ``[N, out_channels]``), or ``forward(data)`` for a
        :class:`~torch_geometric.data.Data`/:class:`~torch_geometric.data.Batch`
        with ``x``, ``pos`` and optionally ``edge_index`` and the attributes of
        :class:`~torch_geometric_erwin.transforms.BallTreeTransform` and
        :class:`~torch_geometric_erwin.transforms.RotatedTreeTransform`.
    """

    def __init__(self, in_channels: int, hidden_channels: Sequence[int], ball_sizes: Sequence[int],
                 enc_num_heads: Sequence[int], enc_depths: Sequence[int], dec_num_heads: Sequence[int],
                 dec_depths: Sequence[int], strides: Sequence[int], rotate: float = 45.0, decode: bool = True,
                 mlp_ratio: int = 4, dimensionality: int = 3, mp_steps: int = 3,
                 out_channels: Optional[int] = None, padding: str = "pow2", knn: int = 16,
                 radius: Optional[float] = None, activation_checkpointing: bool = False,
                 graph_transform: Optional[Callable[[Data], Data]] = None):
        super().__init__()
        hidden_channels = _positive_ints("hidden_channels", hidden_channels)
        enc_num_heads = _positive_ints("enc_num_heads", enc_num_heads)
        enc_depths = _positive_ints("enc_depths", enc_depths, allow_zero=True)
        dec_num_heads = _positive_ints("dec_num_heads", dec_num_heads)
        dec_depths = _positive_ints("dec_depths", dec_depths, allow_zero=True)
        ball_sizes, strides = check_ball_config(ball_sizes, strides)
        levels = len(ball_sizes)
        for name, values, expected in (("hidden_channels", hidden_channels, levels),
                                       ("enc_num_heads", enc_num_heads, levels),
                                       ("enc_depths", enc_depths, levels),
                                       ("dec_num_heads", dec_num_heads, levels - 1),
                                       ("dec_depths", dec_depths, levels - 1)):
            if len(values) != expected:
                raise ValueError(f"{name} must have {expected} entries (len(ball_sizes) = {levels}"
                                 f"{' minus 1' if expected < levels else ''}), got {len(values)}")
        for name, heads, widths in (("enc_num_heads", enc_num_heads, hidden_channels),
                                    ("dec_num_heads", dec_num_heads, hidden_channels[:-1])):
            for level, (h, c) in enumerate(zip(heads, widths)):
                if c % h:
                    raise ValueError(f"{name}[{level}] = {h} does not divide hidden_channels[{level}] = {c}")
        check_angle("rotate", rotate)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if not isinstance(decode, bool):
            raise TypeError(f"decode must be a bool, got {decode!r}")
        if out_channels is not None and (as_int(out_channels) is None or out_channels < 1):
            raise ValueError(f"out_channels must be a positive int or None, got {out_channels!r}")
        if out_channels is not None and not decode:
            raise ValueError("out_channels needs decode=True: the output head maps the decoder's finest level, "
                             "and decode=False returns the coarsest level")
        check_int("knn", knn)
        if radius is not None:
            check_real("radius", radius, positive=True)
            if graph_transform is not None:
                raise ValueError("give radius or graph_transform, not both: the radius only configures the "
                                 "default graph transform")
        if not isinstance(activation_checkpointing, bool):
            raise TypeError(f"activation_checkpointing must be a bool, got {activation_checkpointing!r}")

        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        # the width of what forward returns
        self.out_channels = (int(out_channels) if out_channels is not None
                             else hidden_channels[0] if decode else hidden_channels[-1])
        self.ball_sizes, self.strides = list(ball_sizes), list(strides)
        self.enc_num_heads, self.enc_depths = enc_num_heads, enc_depths
        self.dec_num_heads, self.dec_depths = dec_num_heads, dec_depths
        self.rotate, self.decode, self.mlp_ratio = float(rotate), bool(decode), mlp_ratio
        self.dimensionality, self.mp_steps, self.padding = dimensionality, mp_steps, padding
        self.knn, self.radius = knn, radius
        self.graph_transform = resolve_graph_transform(graph_transform, knn, radius)
        self.activation_checkpointing = activation_checkpointing

        self.embedding = ErwinEmbedding(in_channels, hidden_channels[0], mp_steps, dimensionality)
        self.encoder = nn.ModuleList([
            ErwinStage(enc_depths[l], hidden_channels[l], enc_num_heads[l], ball_sizes[l], mlp_ratio,
                       dimensionality) for l in range(levels)])
        self.pool = nn.ModuleList([
            BallPooling(hidden_channels[l], hidden_channels[l + 1], strides[l], dimensionality)
            for l in range(levels - 1)])
        if self.decode:
            self.unpool = nn.ModuleList([
                BallUnpooling(hidden_channels[l + 1], hidden_channels[l], strides[l], dimensionality)
                for l in range(levels - 1)])
            self.decoder = nn.ModuleList([
                ErwinStage(dec_depths[l], hidden_channels[l], dec_num_heads[l], ball_sizes[l], mlp_ratio,
                           dimensionality) for l in range(levels - 1)])
        self.head = None if out_channels is None else nn.Linear(hidden_channels[0], out_channels)
        self.reset_parameters()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str, in_channels: Optional[int] = None, **overrides) -> "Erwin":
        """The configuration ``name`` of :data:`~torch_geometric_erwin.nn.models.presets.PRESETS`
        (e.g. ``"md-small"``), with ``in_channels`` (default: the reference wrapper's width) and any
        other argument overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
        config = dict(PRESETS[name])
        if in_channels is not None:
            config["in_channels"] = in_channels
        config.update(overrides)
        return cls(**config)

    @classmethod
    def from_reference(cls, state_dict: Mapping[str, Tensor], *args, **kwargs) -> "Erwin":
        """An :class:`Erwin` with the weights of a reference ``ErwinTransformer``: the reference
        constructor's arguments and its ``state_dict``, as
        :func:`~torch_geometric_erwin.nn.models.reference.from_reference` takes them."""
        return from_reference(state_dict, *args, model_class=cls, **kwargs)

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()
        for module in self.children():
            if isinstance(module, nn.ModuleList):
                for layer in module:
                    layer.reset_parameters()
        if self.head is not None:
            reset_linear(self.head)

    # ------------------------------------------------------------------ trees and graphs
    @property
    def tree_config(self) -> dict:
        """Arguments of the ball tree this model runs on, for
        :class:`~torch_geometric_erwin.transforms.BallTreeTransform` (add ``rotate=model.rotate`` for
        :class:`~torch_geometric_erwin.transforms.RotatedTreeTransform`)."""
        return dict(ball_sizes=self.ball_sizes, strides=self.strides, padding=self.padding)

    @property
    def uses_rotation(self) -> bool:
        return self.rotate != 0 and any(depth > 1 for depth in self.enc_depths + self.dec_depths)

    @property
    def tree_rotation(self) -> Optional[float]:
        """The angle of the rotated trees (``rotate``) when some level has a second block to
        attend in them, else None."""
        return self.rotate if self.uses_rotation else None

    @property
    def _has_batch_norm(self) -> bool:
        # every unpooling layer normalises, and every pooling layer but the parameter-free identity
        return (self.decode and len(self.pool) > 0) or any(not pool.identity for pool in self.pool)

    def estimate_memory(self, num_nodes: Union[int, Sequence[int]], training: bool = False,
                        activation_checkpointing: Optional[bool] = None) -> int:
        """Predicted peak bytes of one call on graphs of ``num_nodes`` points (one int, or one per
        graph of a batch), end to end with the tree and the graph: inference (eval mode,
        ``torch.no_grad``) or, with ``training``, one training step, with or without
        ``activation_checkpointing`` (default: this model's setting). Meant as an upper bound; see
        :func:`~torch_geometric_erwin.utils.memory.estimate_erwin_memory`."""
        from torch_geometric_erwin.utils.memory import estimate_erwin_memory
        return estimate_erwin_memory(self, num_nodes, training, activation_checkpointing)

    def _check_tree(self, tree: BallTree) -> None:
        grain = granularity(self.ball_sizes, self.strides)
        if bool((tree.ptr % grain).any()):
            raise ValueError(f"every graph's tree must have a multiple of {grain} slots for this model: "
                             f"build it with model.tree_config")
        if self.uses_rotation and len(tree.rotated) != len(self.ball_sizes):
            raise ValueError(f"the model attends in rotated balls (rotate={self.rotate}) and needs one "
                             f"rotated order per level ({len(self.ball_sizes)}), the tree has "
                             f"{len(tree.rotated)}: build it with rotate=model.rotate")

    def _check_batch(self, x: Tensor, tree: Optional[BallTree], node_ptr: Tensor) -> None:
        if self.training and self._has_batch_norm:
            # BatchNorm takes batch statistics in training, which need two rows per channel; pooling
            # by the strides leaves the coarsest level the fewest rows of any BatchNorm's input
            grain = granularity(self.ball_sizes, self.strides)
            num_slots = (tree.num_slots if tree is not None
                         else int(engine.slot_ptr(node_ptr, self.padding, grain)[-1]))
            coarsest = num_slots // math.prod(self.strides)
            if coarsest < 2:
                raise ValueError(
                    f"too few nodes to train: the {x.shape[0]} nodes of this batch pool to a single slot at the "
                    f"coarsest level (ball_sizes={self.ball_sizes}, strides={self.strides}), where BatchNorm "
                    "needs at least 2 to take batch statistics: batch more or larger graphs, or evaluate "
                    "with model.eval()")

    # ------------------------------------------------------------------ forward
    def network(self, x: Tensor, pos: Tensor, edge_index: Optional[Tensor], tree: BallTree):
        """The network of :meth:`forward` on inputs it has checked and the tree it has built (or was
        given): no check that reads the data and no host synchronisation, so that
        ``torch.compile(model.network, fullgraph=True)`` compiles it whole, the kernels of
        :mod:`torch_geometric_erwin.ops` in its graph. ``torch.compile(model)`` compiles the same
        graph behind :meth:`forward`'s checks, which run eagerly. ``pos`` as :meth:`forward` passes
        it: float32 at least. Inputs it has not seen checked are the caller's responsibility."""
        node_slots = tree.node_slots(x.shape[0])
        checkpointed = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        h = self.embedding(x, pos, edge_index, check_edges=False, checkpoint=checkpointed)[tree.index]
        level_pos = [pos[tree.index].detach()]
        # A level's geometry (the [S_l / m, m, m] distances of its balls and rotated balls) serves the
        # encoder's and the decoder's blocks. Autograd keeps it for the backward pass in plain
        # training, so there the decoder takes the encoder's; without autograd it is formed again
        # (cheaply, next to the blocks' work) rather than kept for every level until the decoder
        # runs, and checkpointed blocks form their own inside the checkpoint.
        shared: Dict[int, LevelOrders] = {}

        def stage(module: ErwinStage, h: Tensor, level: int) -> Tensor:
            if checkpointed:
                return module.checkpointed(h, level_pos[level], self._rotation(tree, level))
            orders = shared[level] if level in shared else self._orders(level_pos[level], tree, level)
            if torch.is_grad_enabled():
                shared[level] = orders
            return module(h, orders)

        skips = []
        levels = len(self.ball_sizes)
        for level in range(levels):
            h = stage(self.encoder[level], h, level)
            if level < levels - 1:
                skips.append(h)
                h, centres = self.pool[level](h, level_pos[level])
                level_pos.append(centres)
        if not self.decode:  # the coarsest level's slots that hold nodes, not padding only
            keep = tree.level_mask(levels - 1)
            return h[keep], tree.slot_batch(levels - 1)[keep]
        for level in reversed(range(levels - 1)):
            h = self.unpool[level](h, level_pos[level + 1], skips[level], level_pos[level])
            h = stage(self.decoder[level], h, level)
        out = h[node_slots]
        return out if self.head is None else self.head(out)

    def _rotation(self, tree: BallTree, level: int) -> Optional[Tensor]:
        """The permutation of the level's slots into the rotated tree's order, if the model uses it."""
        return tree.rotated[level] if self.uses_rotation and tree.rotated else None

    def _orders(self, pos: Tensor, tree: BallTree, level: int) -> LevelOrders:
        ball_size = self.ball_sizes[level]
        geometry = BallGeometry.from_pos(pos, ball_size)
        permutation = self._rotation(tree, level)
        if permutation is None:
            return geometry, None
        return geometry, (permutation, BallGeometry.from_pos(pos[permutation], ball_size))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"hidden_channels={self.hidden_channels}, ball_sizes={self.ball_sizes}, "
                f"strides={self.strides}, enc_depths={self.enc_depths}, dec_depths={self.dec_depths}, "
                f"rotate={self.rotate:g}, mp_steps={self.mp_steps}"
                f"{', activation_checkpointing=True' if self.activation_checkpointing else ''})")
