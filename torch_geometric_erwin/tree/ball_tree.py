"""The Python face of the ball-tree engine: :class:`BallTree` and :func:`build_ball_tree`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from torch_geometric_erwin.tree import engine
from torch_geometric_erwin.tree.rotation import rotate as rotate_points
from torch_geometric_erwin.tree.rotation import rotation_matrix
from torch_geometric_erwin.checks import (check_angle, check_ball_config, check_permutation, check_pos, granularity,
                                                   node_ptr_from)

PADDINGS = ("pow2", "compact")

#: Attribute names the tree transforms attach to a ``Data`` object. ``tree_index``
#: contains "index", so PyG's collation offsets it by each graph's node count;
#: the rotated permutations are offset in :meth:`BallTree.from_data` instead.
#: ``tree_build`` is a string (a list of strings after collation, one per graph) recording how
#: the tree was built; ``tree_radius`` holds one relative radius per pair of leaves
#: (:data:`RADIUS_GROUP` slots; concatenated by collation, no offset).
INDEX_KEY, MASK_KEY, ROTATED_PREFIX = "tree_index", "tree_mask", "tree_rotated_"
BUILD_KEY, RADIUS_KEY = "tree_build", "tree_radius"

#: Version of the tree layout and of the ``tree_build`` record; trees of another version are refused.
TREE_FORMAT = 1

#: Slots per group whose radius a tree records (pairs of leaves: the tree's lowest inner nodes, so
#: that a tree of other positions is caught even inside a single ball).
RADIUS_GROUP = 2

#: Relative slack of the radius check (float32 round-off, CPU against GPU reductions).
RADIUS_RTOL, RADIUS_ATOL = 1e-4, 1e-5


def _ptr(counts: Tensor) -> Tensor:
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


@dataclass
class BallTree:
    r"""Ball trees of a batch of graphs, in the reference layout.

    Graph :math:`g` owns slots ``ptr[g]:ptr[g+1]``; balls of size :math:`b_l` at
    level :math:`l` are contiguous runs of :math:`b_l` slots of that level, where
    level :math:`l` has :math:`S / \prod_{j<l} s_j` slots (pooling groups of
    ``strides[l]`` consecutive slots lead from level :math:`l` to :math:`l+1`).

    Attributes:
        index: ``[S]`` int64, slot -> node (the reference's ``tree_idx``).
            Padding slots repeat a node of the same leaf.
        mask: ``[S]`` bool, True on exactly one slot per node (``tree_mask``).
        ptr: ``[B + 1]`` int64, slot offsets of the graphs at level 0.
        node_ptr: ``[B + 1]`` int64, node offsets of the graphs.
        rotated: one ``[S_l]`` int64 permutation of the level-``l`` slots per level
            (``tree_idx_rot``), empty when built without rotation.
        ball_sizes, strides: the configuration the tree was padded for (or None).
        padding: ``"pow2"`` or ``"compact"``.
        rotate: the angle in degrees ``rotated`` was built with (``0.0``: none), or None if
            unknown (a tree assembled by hand).
        radius: ``[S / 2]`` radius of every pair of leaves (:data:`RADIUS_GROUP` consecutive
            slots) relative to its graph's extent, recorded at build time (:func:`ball_radii`), or
            None; with it :meth:`check_positions` tells whether the tree fits the positions given.
    """

    index: Tensor
    mask: Tensor
    ptr: Tensor
    node_ptr: Tensor
    rotated: List[Tensor] = field(default_factory=list)
    ball_sizes: Optional[Tuple[int, ...]] = None
    strides: Optional[Tuple[int, ...]] = None
    padding: str = "pow2"
    rotate: Optional[float] = None
    radius: Optional[Tensor] = None

    @property
    def num_graphs(self) -> int:
        return self.ptr.numel() - 1

    @property
    def num_slots(self) -> int:
        return self.index.numel()

    @property
    def num_nodes(self) -> int:
        return int(self.node_ptr[-1])

    def pooling_factor(self, level: int) -> int:
        """Slots of level 0 per slot of ``level`` (product of the earlier strides)."""
        return math.prod((self.strides or ())[:level])

    def level_ptr(self, level: int = 0) -> Tensor:
        """``[B + 1]`` slot offsets of the graphs at ``level``."""
        return self.ptr // self.pooling_factor(level)

    def slot_batch(self, level: int = 0) -> Tensor:
        """``[S_l]`` graph id of every slot at ``level``."""
        counts = self.level_ptr(level).diff()
        return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)

    def level_mask(self, level: int = 0) -> Tensor:
        """``[S_l]`` bool: the slots of ``level`` that pool at least one node's slot (the others pool
        padding only; at level 0, ``mask``)."""
        factor = self.pooling_factor(level)
        return self.mask if factor == 1 else self.mask.view(-1, factor).any(1)

    def node_slots(self, num_nodes: Optional[int] = None) -> Tensor:
        """``[N]`` int64: the slot that holds each node (the one ``mask`` marks), so that
        ``features[tree.node_slots()]`` brings tree-ordered rows back to the input node order.
        ``num_nodes``: :math:`N`, when the caller knows it from its input (which spares reading it
        off ``node_ptr``)."""
        # padding slots write to one spare row past the nodes: no data-dependent shape, which
        # torch.compile would have to break its graph for
        slots = torch.arange(self.num_slots, device=self.index.device)
        num_nodes = self.num_nodes if num_nodes is None else num_nodes
        target = torch.where(self.mask, self.index, num_nodes)
        return self.index.new_empty(num_nodes + 1).scatter_(0, target, slots)[:num_nodes]

    def check(self, node_ptr: Optional[Tensor] = None) -> None:
        """Raise :class:`ValueError` unless the tree is one the models can run on: ``index`` maps
        every slot to a node of the slot's own graph, ``mask`` marks exactly one slot per node, and
        every ``rotated`` entry permutes its level's slots within each graph. The models read and
        write rows through these, so a tree given by hand or read off data is checked before use
        (:math:`O(S)`); a malformed one would mix graphs or leave rows unwritten. ``node_ptr``: the
        graphs' node offsets of the input, which the tree's must equal."""
        if node_ptr is not None and not torch.equal(node_ptr.cpu(), self.node_ptr.cpu()):
            raise ValueError(f"the tree's graphs (node offsets {self.node_ptr.tolist()[:8]}) do not match "
                             f"the input's ({node_ptr.tolist()[:8]}): build the tree with the same batch")
        index, mask, num_nodes = self.index, self.mask, self.num_nodes
        if index.dtype != torch.long or index.dim() != 1 or mask.shape != index.shape or mask.dtype != torch.bool:
            raise ValueError("tree.index must be a 1-D int64 tensor and tree.mask a bool tensor of its shape")
        if int(self.ptr[-1]) != index.numel():
            raise ValueError(f"tree.ptr ends at {int(self.ptr[-1])} but the tree has {index.numel()} slots")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_nodes):
            raise ValueError(f"tree.index must hold node indices in [0, {num_nodes})")
        if not bool((torch.bincount(index[mask], minlength=num_nodes) == 1).all()):
            raise ValueError("tree.mask must mark exactly one slot of every node")
        node_graph = torch.repeat_interleave(torch.arange(self.num_graphs), self.node_ptr.cpu().diff())
        if not torch.equal(node_graph.to(index.device)[index], self.slot_batch(0).to(index.device)):
            raise ValueError("tree.index maps slots to nodes of other graphs")
        for level, permutation in enumerate(self.rotated):
            slot_batch = self.slot_batch(level).to(permutation.device)
            check_permutation(f"tree.rotated[{level}]", permutation, slot_batch.numel())
            if not torch.equal(slot_batch[permutation], slot_batch):
                raise ValueError(f"tree.rotated[{level}] moves slots between graphs")

    def check_build(self, ball_sizes: Optional[Sequence[int]], strides: Optional[Sequence[int]],
                    padding: str, rotate: Optional[float] = None, fix: str = "") -> None:
        """Raise :class:`ValueError` unless the tree was built with ``ball_sizes``, ``strides`` and
        ``padding`` (and, if ``rotate`` is given, rotated by ``rotate`` degrees), naming the first
        difference and ending with ``fix`` (how to build a matching tree). A tree built for other
        balls, strides, padding or angle has valid slots but other balls than the model's own build,
        so its outputs would silently differ."""
        ball_sizes, strides = check_ball_config(ball_sizes, strides)
        fix = f": {fix}" if fix else ""
        for name, built, wanted in (("ball_sizes", self.ball_sizes, ball_sizes), ("strides", self.strides, strides),
                                    ("padding", self.padding, padding)):
            if built != wanted:
                show = (lambda v: None if v is None else list(v)) if name != "padding" else repr
                raise ValueError(f"tree built with {name}={show(built)} but the model uses "
                                 f"{name}={show(wanted)}{fix}")
        if rotate is not None and self.rotate != rotate:
            built = "an unknown angle" if self.rotate is None else (
                "no rotation" if self.rotate == 0 else f"rotate={self.rotate:g}")
            raise ValueError(f"tree built with {built} but the model rotates by {rotate:g}{fix}")

    def check_positions(self, pos: Tensor) -> None:
        """Raise :class:`ValueError` if a pair of leaves of the tree, gathered from ``pos``, is wider
        (relative to its graph's extent) than when the tree was built: the tree belongs to other
        positions (another batch of the same sizes, or positions changed after the tree was built).
        A cheap check, :math:`O(S D)`: it is invariant to translations, rotations and uniform
        scalings of each graph (which leave the partition unchanged except for rotations), and it
        cannot see a tree of other positions whose balls happen to be as tight. No-op without a
        recorded ``radius``."""
        if self.radius is None or self.ball_sizes is None or not self.num_slots:
            return
        group = _radius_group(self.ball_sizes)
        slots = _padded_positions(pos.detach())[self.index.to(pos.device)]
        radius, centre_scale = ball_radii(slots, self.ptr.to(pos.device), group, with_scale=True)
        recorded = self.radius.to(radius.device, radius.dtype)
        if recorded.shape != radius.shape:
            raise ValueError(f"tree.radius has {recorded.numel()} entries but the tree has {radius.numel()} "
                             f"groups of {group} slots: rebuild the tree")
        excess = radius - recorded * (1 + RADIUS_RTOL) - RADIUS_ATOL * centre_scale
        if bool((excess > 0).any()):
            ball = int(excess.argmax())
            graph = int(torch.searchsorted(self.ptr.cpu(), torch.tensor(ball * group), right=True)) - 1
            raise ValueError(
                f"the tree does not fit these positions (its leaves {ball * group}..{ball * group + group - 1}, "
                f"of graph {graph}, span "
                f"{float(radius[ball]):.3g} of its graph's extent, {float(recorded[ball]):.3g} when the tree was "
                "built): the tree was built for other positions (another batch, or pos changed after the "
                "tree transform); rebuild it on these positions")

    def to(self, device) -> "BallTree":
        return replace(self, index=self.index.to(device), mask=self.mask.to(device),
                       ptr=self.ptr.to(device), node_ptr=self.node_ptr.to(device),
                       rotated=[r.to(device) for r in self.rotated],
                       radius=None if self.radius is None else self.radius.to(device))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_graphs={self.num_graphs}, num_nodes={self.num_nodes}, "
                f"num_slots={self.num_slots}, levels={len(self.rotated) or None}, "
                f"ball_sizes={self.ball_sizes}, strides={self.strides}, padding='{self.padding}', "
                f"rotate={self.rotate})")

    def local_rotations(self) -> "BallTree":
        """The same tree with each graph's rotated permutations starting at 0."""
        local = []
        for level, permutation in enumerate(self.rotated):
            level_ptr = self.level_ptr(level)
            local.append(permutation - torch.repeat_interleave(level_ptr[:-1], level_ptr.diff()))
        return replace(self, rotated=local)

    def attach(self, data) -> None:
        """Store the tree on ``data`` as the transforms' attributes.

        ``rotated`` must hold per-graph (local) permutations, see :meth:`local_rotations`.
        """
        setattr(data, INDEX_KEY, self.index)
        setattr(data, MASK_KEY, self.mask)
        setattr(data, BUILD_KEY, build_record(self))
        if self.radius is not None:
            setattr(data, RADIUS_KEY, self.radius)
        for level, permutation in enumerate(self.rotated):
            setattr(data, f"{ROTATED_PREFIX}{level}", permutation)

    @classmethod
    def from_data(cls, data, ball_sizes=None, strides=None, padding: Optional[str] = None) -> "BallTree":
        """Rebuild the batched tree from the attributes the transforms attached.

        Works for one ``Data`` and for a collated ``Batch``: ``tree_index`` was
        offset by PyG's collation, the per-graph ``tree_rotated_<l>`` permutations
        are offset here by each graph's slot offset at that level. The build record
        (``tree_build``) gives the tree's ``ball_sizes``, ``strides``, ``padding`` and
        ``rotate``; every graph of a batch must carry the same one. Given ``ball_sizes``,
        ``strides`` or ``padding``, the record must match them (:meth:`check_build`).

        Raises :class:`ValueError` for partial tree attributes (``tree_index`` without
        ``tree_mask``, ...) and for trees without a build record (built by a version before
        tree format 1): rebuild those with the transforms.
        """
        record = _read_record(data)
        if any(value is not None for value in (ball_sizes, strides, padding)):
            record_tree = cls(index=torch.empty(0, dtype=torch.long), mask=torch.empty(0, dtype=torch.bool),
                              ptr=torch.zeros(1, dtype=torch.long), node_ptr=torch.zeros(1, dtype=torch.long),
                              **record)
            record_tree.check_build(
                record["ball_sizes"] if ball_sizes is None else ball_sizes,
                record["strides"] if ball_sizes is None and strides is None else strides,
                record["padding"] if padding is None else padding,
                fix=f"rebuild the tree attributes with {_transform_call(ball_sizes, strides, padding or 'pow2')}")
        ball_sizes, strides = record["ball_sizes"], record["strides"]
        index = getattr(data, INDEX_KEY)
        mask = getattr(data, MASK_KEY)
        num_nodes = data.num_nodes
        batch = getattr(data, "batch", None)
        node_ptr = node_ptr_from(num_nodes, batch, None)
        if not isinstance(index, Tensor) or not isinstance(mask, Tensor) or index.dim() != 1 \
                or mask.shape != index.shape or mask.dtype != torch.bool:
            raise ValueError("tree_index and tree_mask must be 1-D tensors of equal length (mask bool)")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_nodes):
            raise ValueError("tree_index points outside the graph's nodes")
        # the slots per graph are counted where the index lives: only these B counts reach the host
        node_graph = torch.repeat_interleave(torch.arange(node_ptr.numel() - 1, device=index.device),
                                             node_ptr.to(index.device).diff())
        counts = torch.bincount(node_graph[index], minlength=node_ptr.numel() - 1).cpu()
        ptr = _ptr(counts)
        if int(mask.sum()) != num_nodes:
            raise ValueError(f"tree_mask marks {int(mask.sum())} slots but there are {num_nodes} nodes")
        levels = sorted(int(key[len(ROTATED_PREFIX):]) for key in data.keys()
                        if key.startswith(ROTATED_PREFIX))
        if levels != list(range(len(levels))):
            raise ValueError(f"rotated tree levels must be 0..L-1, found {levels}")
        rotated = []
        for level in levels:
            local = getattr(data, f"{ROTATED_PREFIX}{level}")
            if local.numel() == 0 or index.numel() % local.numel():
                raise ValueError(f"tree_rotated_{level} has {local.numel()} entries, which does not "
                                 f"divide the {index.numel()} tree slots")
            factor = index.numel() // local.numel()
            if bool((ptr % factor).any()):
                raise ValueError(f"tree_rotated_{level} does not match the graphs' slot counts")
            level_counts = counts // factor
            offsets = torch.repeat_interleave(_ptr(level_counts)[:-1], level_counts).to(local.device)
            rotated.append(local + offsets)
        if ball_sizes is not None:
            grain = granularity(ball_sizes, strides)
            if bool((counts % grain).any()):
                raise ValueError(
                    f"the attached trees have {counts.tolist()[:8]} slots per graph, which are not multiples of "
                    f"{grain} (ball_sizes={list(ball_sizes)}, strides={list(strides)}) their build record "
                    f"gives: rebuild them with {_transform_call(ball_sizes, strides, record['padding'])}")
            if rotated and len(rotated) != len(ball_sizes):
                raise ValueError(f"the data carries {len(rotated)} rotated levels but its trees have "
                                 f"{len(ball_sizes)}: rebuild them with RotatedTreeTransform")
        if record["rotate"] and not rotated:
            raise ValueError(f"the build record gives rotate={record['rotate']:g} but the data has no "
                             "tree_rotated_<l> attributes: rebuild them with RotatedTreeTransform")
        device = index.device
        return cls(index=index, mask=mask, ptr=ptr.to(device), node_ptr=node_ptr.to(device),
                   rotated=rotated, **record)


def tree_fix(tree_config: dict, rotate: Optional[float], from_data: bool) -> str:
    """How to build the tree a model with ``tree_config`` (and angle ``rotate``, None if it uses no
    rotation) runs on: the transform call for data attributes, else the model's own build."""
    if not from_data:
        return ("build it with model.build_tree(pos, batch), or build_ball_tree(pos, batch"
                f"{', rotate=model.rotate' if rotate else ''}, **model.tree_config)")
    name = "RotatedTreeTransform(rotate=model.rotate, " if rotate else "BallTreeTransform("
    return (f"use {name}**model.tree_config), here "
            f"{_transform_call(tree_config['ball_sizes'], tree_config['strides'], tree_config['padding'], rotate)}")


def has_tree_attributes(data) -> bool:
    """Whether ``data`` carries any attribute of the tree transforms (``tree_index``, ``tree_mask``,
    ``tree_build``, ``tree_radius``, ``tree_rotated_<l>``): then :meth:`BallTree.from_data` must
    read them, and fail clearly if some are missing, rather than a model building its own tree."""
    return any(key in (INDEX_KEY, MASK_KEY, BUILD_KEY, RADIUS_KEY) or key.startswith(ROTATED_PREFIX)
               for key in data.keys())


def _transform_call(ball_sizes, strides, padding: str, rotate: Optional[float] = None) -> str:
    config = f"ball_sizes={None if ball_sizes is None else list(ball_sizes)}, " \
             f"strides={None if strides is None else list(strides)}, padding={padding!r}"
    if rotate:
        return f"RotatedTreeTransform(rotate={rotate:g}, {config})"
    return f"BallTreeTransform({config})"


def _sizes_text(values: Optional[Sequence[int]]) -> str:
    return "none" if values is None else ",".join(str(v) for v in values)


def _sizes_value(text: str) -> Optional[Tuple[int, ...]]:
    return None if text == "none" else tuple(int(v) for v in text.split(",") if v)


def build_record(tree: BallTree) -> str:
    """The ``tree_build`` string of ``tree``: tree format, ball sizes, strides, padding and angle,
    e.g. ``"format=1;ball_sizes=16,8;strides=2;padding=pow2;rotate=45.0"``. A string, so that PyG's
    collation gathers the graphs' records into a list that :meth:`BallTree.from_data` compares."""
    rotate = 0.0 if tree.rotate is None else float(tree.rotate)
    return (f"format={TREE_FORMAT};ball_sizes={_sizes_text(tree.ball_sizes)};strides={_sizes_text(tree.strides)};"
            f"padding={tree.padding};rotate={rotate!r}")


def _read_record(data) -> dict:
    """The build record of ``data``'s tree attributes, as :class:`BallTree` fields (with ``radius``)."""
    present = sorted(key for key in data.keys() if key in (INDEX_KEY, MASK_KEY, BUILD_KEY, RADIUS_KEY)
                     or key.startswith(ROTATED_PREFIX))
    missing = [key for key in (INDEX_KEY, MASK_KEY) if key not in present]
    if BUILD_KEY not in present:
        if missing:
            raise ValueError(f"the data carries partial tree attributes ({', '.join(present)}; missing "
                             f"{', '.join(missing + [BUILD_KEY])}): apply BallTreeTransform (and "
                             "RotatedTreeTransform) to every graph, or drop the tree_* attributes to let the "
                             "model build its trees")
        raise ValueError("the data carries tree attributes without a tree_build record: they were built by an "
                         f"older torch_geometric_erwin (before tree format {TREE_FORMAT}) or by hand, and "
                         "cannot be checked against the model; rebuild them with BallTreeTransform / "
                         "RotatedTreeTransform (for a dataset's pre_transform, delete its processed/ folder)")
    raw = getattr(data, BUILD_KEY)
    records = [raw] if isinstance(raw, str) else list(raw)
    if not records or not all(isinstance(r, str) for r in records):
        raise ValueError(f"tree_build must be a string (a list of strings in a batch), got {raw!r}")
    if len(set(records)) > 1:
        different = sorted(set(records))
        raise ValueError(f"the graphs of this batch carry trees built differently ({different[0]!r} and "
                         f"{different[1]!r}): build every graph's tree with the same transforms")
    try:
        fields = dict(item.split("=", 1) for item in records[0].split(";"))
        version = int(fields["format"])
    except (KeyError, ValueError):
        raise ValueError(f"tree_build {records[0]!r} is not a tree build record") from None
    if version != TREE_FORMAT:
        raise ValueError(f"the tree attributes are of tree format {version}, this version of torch_geometric_erwin "
                         f"reads format {TREE_FORMAT}: rebuild them with BallTreeTransform / RotatedTreeTransform")
    ball_sizes, strides = _sizes_value(fields["ball_sizes"]), _sizes_value(fields["strides"])
    if ball_sizes is not None and RADIUS_KEY not in present:
        missing.append(RADIUS_KEY)
    if missing:
        raise ValueError(f"the data carries partial tree attributes (missing {', '.join(missing)}): apply "
                         "BallTreeTransform (and RotatedTreeTransform) to every graph again")
    radius = getattr(data, RADIUS_KEY, None) if ball_sizes is not None else None
    return dict(ball_sizes=ball_sizes, strides=strides if ball_sizes is not None else None,
                padding=fields["padding"], rotate=float(fields["rotate"]), radius=radius)


def _radius_group(ball_sizes: Sequence[int]) -> int:
    return min(RADIUS_GROUP, ball_sizes[0])


def ball_radii(slots: Tensor, ptr: Tensor, ball_size: int, with_scale: bool = False):
    r"""Radius of every ball of ``ball_size`` consecutive rows of ``slots`` ``[S, D]`` (positions in tree
    order), relative to the extent of its graph (slots ``ptr[g]:ptr[g+1]``):
    :math:`r_b / R_g` with :math:`r_b = \max_{i \in b} \lVert p_i - c_b \rVert`, :math:`c_b` the ball's
    mean and :math:`R_g = \max_{b \in g} (\lVert c_b - c_g \rVert + r_b)` (:math:`c_g` the mean of the
    graph's ball centres); ``0`` for a graph of coincident points. With ``with_scale``, also the
    largest coordinate of every ball's centre over :math:`R_g`, the scale of the round-off in
    :math:`r_b / R_g`."""
    dtype = torch.promote_types(slots.dtype, torch.float32)
    balls = slots.to(dtype).view(-1, ball_size, slots.shape[1])
    centre = balls.mean(1)
    radius = (balls - centre[:, None]).norm(dim=-1).amax(1)
    counts = (ptr.diff() // ball_size).to(slots.device)
    ball_graph = torch.repeat_interleave(torch.arange(counts.numel(), device=slots.device), counts)
    graph_centre = torch.zeros(counts.numel(), slots.shape[1], dtype=dtype, device=slots.device)
    graph_centre = graph_centre.index_add_(0, ball_graph, centre) / counts.clamp_min(1)[:, None].to(dtype)
    reach = (centre - graph_centre[ball_graph]).norm(dim=-1) + radius
    extent = torch.zeros(counts.numel(), dtype=dtype, device=slots.device)
    extent = extent.scatter_reduce_(0, ball_graph, reach, "amax")[ball_graph]
    tiny = torch.finfo(dtype).tiny
    relative = torch.where(extent > 0, radius / extent.clamp_min(tiny), torch.zeros_like(radius))
    if not with_scale:
        return relative.float()
    scale = torch.where(extent > 0, centre.abs().amax(-1) / extent.clamp_min(tiny), torch.zeros_like(radius))
    return relative, scale


def _padded_positions(pos: Tensor) -> Tensor:
    """Positions in a dtype the rotation is computed in (the input's, at least float32)."""
    return pos if pos.dtype in (torch.float32, torch.float64) else pos.float()


def rotated_partitions(pos: Tensor, tree: BallTree, angle: float,
                       engine_name: Optional[str] = None) -> List[Tensor]:
    r"""Rotated re-partitions of ``tree``, one permutation per level (eq. 11).

    The tree-ordered leaves (padding duplicates included) are rotated by
    ``angle`` degrees (:func:`rotation_matrix`), and at every level the
    level's points are re-partitioned with the same split rule into balls of
    that level's size; between levels the rotated points are mean-pooled in
    groups of ``strides[l]`` consecutive slots of the original tree, as the
    model pools positions.
    """
    if tree.ball_sizes is None:
        raise ValueError("rotated partitions need ball_sizes (one ball size per level)")
    work = _padded_positions(pos.detach()).cpu()
    matrix = rotation_matrix(angle, work.shape[1], dtype=work.dtype)
    leaves = rotate_points(work[tree.index.cpu()], matrix)
    ptr = tree.ptr.cpu()
    rotated = []
    for level, ball_size in enumerate(tree.ball_sizes):
        level_ptr = ptr // tree.pooling_factor(level)
        permutation, _ = engine.partition(leaves.contiguous(), level_ptr, level_ptr, ball_size,
                                          engine_name)
        rotated.append(permutation.to(pos.device))
        if level < len(tree.strides):
            leaves = leaves.view(-1, tree.strides[level], leaves.shape[1]).mean(1)
    return rotated


def build_ball_tree(pos: Tensor, batch: Optional[Tensor] = None, *, ptr: Optional[Tensor] = None,
                    ball_sizes: Optional[Sequence[int]] = None, strides: Optional[Sequence[int]] = None,
                    rotate: float = 0.0, padding: str = "pow2", engine_name: Optional[str] = None) -> BallTree:
    r"""Build the ball trees of a batch of point clouds (paper, Alg. 1 and Sec. 3.2).

    Each node of a tree is split along the dimension of largest spread
    (``max - min``; the first such dimension on ties) at the median: the left
    child gets :math:`\lfloor n/2 \rfloor` points and half of the slots. Each
    graph's tree is completed to a perfect binary tree by repeating the point
    of single-point leaves; ``mask`` marks the repeats (the reference layout:
    ``N = 5`` gives slots ``[1,1, 4,4, 2,2, 0,3]`` for suitable positions).
    Points that tie on the split coordinate are ordered by node index, so the
    result is deterministic.

    Args:
        pos: ``[N, D]`` floating positions, finite, any ``D >= 1``.
        batch: ``[N]`` sorted graph id of every node (PyG's ``batch``), or None.
        ptr: ``[B + 1]`` node offsets per graph, instead of ``batch``.
        ball_sizes: ball size per level (powers of two). Graphs are padded to at
            least :func:`granularity` slots, so no ball or pooling group at any
            level spans two graphs, and small graphs still fit.
        strides: pooling stride after each level but the last (powers of two),
            ``len(ball_sizes) - 1`` entries.
        rotate: angle in degrees of the rotated trees; ``0`` for none.
        padding: ``"pow2"`` (the reference: next power of two, at least the
            granularity) or ``"compact"`` (the next multiple of the granularity:
            a 5000-point cloud at granularity 512 uses 5120 slots instead of
            8192). Compact trees split nodes that span ``k`` blocks of
            granularity size block-proportionally, ``floor(k/2)`` blocks and
            ``floor(n floor(k/2) / k)`` points to the left, which is the median
            split whenever ``k`` is even; inside a block the split rule is the
            paper's.
        engine_name: ``'cpp'``, ``'torch'`` or None for the default engine.

    Returns:
        A :class:`BallTree` whose tensors are on ``pos.device``; it records how it was built
        (``ball_sizes``, ``strides``, ``padding``, ``rotate``) and the radii of its pairs of
        leaves (``radius``), which the models check against their configuration and the positions.
    """
    check_pos(pos)
    ball_sizes, strides = check_ball_config(ball_sizes, strides)
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    check_angle("rotate", rotate)
    if rotate != 0 and ball_sizes is None:
        raise ValueError("rotate != 0 needs ball_sizes: rotated trees are built per level")
    node_ptr = node_ptr_from(pos.shape[0], batch, ptr)

    grain = granularity(ball_sizes, strides)
    slot_ptr = engine.slot_ptr(node_ptr, padding, grain)
    index, mask = engine.partition(_padded_positions(pos), node_ptr, slot_ptr, grain, engine_name)
    tree = BallTree(index=index, mask=mask, ptr=slot_ptr, node_ptr=node_ptr,
                    ball_sizes=ball_sizes, strides=strides, padding=padding, rotate=float(rotate))
    if ball_sizes is not None:
        tree.radius = ball_radii(_padded_positions(pos.detach()).cpu()[index], slot_ptr,
                                 _radius_group(ball_sizes))
    if rotate != 0:
        tree.rotated = rotated_partitions(pos, tree, float(rotate), engine_name)
    return tree if pos.device == index.device else tree.to(pos.device)
