r"""One point cloud partitioned over the ranks of a process group along whole subtrees of its ball tree."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from torch import Tensor

from torch_geometric_erwin.distributed.comm import agree, world
from torch_geometric_erwin.distributed.exchange import RotatedExchange
from torch_geometric_erwin.tree import BallTree, granularity
from torch_geometric_erwin.checks import is_power_of_two


@dataclass
class CloudShard:
    r"""This rank's part of one cloud, as :func:`shard_cloud` cuts it.

    Rank :math:`r` of :math:`R` owns the level-0 slots :math:`[r S/R, (r+1) S/R)` of the cloud's
    ball tree (and, at level :math:`l`, the slots :math:`[r S_l/R, (r+1) S_l/R)`), the nodes whose
    slot (the one ``tree.mask`` marks) lies there, and computes the embedding of a sub-graph: every
    node one of its slots holds, and the nodes up to ``halo_hops`` in-edges away from them.

    Attributes:
        x: ``[n, F]`` features of the sub-graph's nodes.
        pos: ``[n, D]`` positions of the sub-graph's nodes.
        edge_index: ``[2, E']`` the edges between the sub-graph's nodes (local ids), or None.
        sub_nodes: ``[n]`` global id of every sub-graph node (ascending).
        slot_nodes: ``[S/R]`` the sub-graph node every local slot holds.
        node_index: ``[N_r]`` global ids of the nodes this rank owns (ascending): the rows of
            :meth:`~torch_geometric_erwin.distributed.ShardedErwin.forward`.
        output_slots: ``[N_r]`` the local slot of every owned node.
        node_counts: owned nodes of every rank.
        exchanges: per level, the :class:`RotatedExchange` of the rotated order, or None.
        num_nodes, num_slots: the whole cloud's nodes :math:`N` and slots :math:`S`.
        rank, world_size, group: where this shard lives.
    """

    x: Tensor
    pos: Tensor
    edge_index: Optional[Tensor]
    sub_nodes: Tensor
    slot_nodes: Tensor
    node_index: Tensor
    output_slots: Tensor
    node_counts: List[int]
    exchanges: List[Optional[RotatedExchange]]
    num_nodes: int
    num_slots: int
    rank: int
    world_size: int
    group: object = field(default=None, repr=False)

    @property
    def num_local_nodes(self) -> int:
        """Nodes this rank owns (rows of its output)."""
        return self.node_index.numel()

    @property
    def num_halo_nodes(self) -> int:
        """Sub-graph nodes this rank embeds without owning them."""
        return self.sub_nodes.numel() - self.node_index.numel()

    def to(self, device) -> "CloudShard":
        """The shard with its tensors on ``device``."""
        moved = {name: getattr(self, name).to(device) for name in
                 ("x", "pos", "sub_nodes", "slot_nodes", "node_index", "output_slots")}
        edge_index = None if self.edge_index is None else self.edge_index.to(device)
        exchanges = [None if e is None else e.to(device) for e in self.exchanges]
        return CloudShard(edge_index=edge_index, node_counts=self.node_counts, exchanges=exchanges,
                          num_nodes=self.num_nodes, num_slots=self.num_slots, rank=self.rank,
                          world_size=self.world_size, group=self.group, **moved)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(rank={self.rank}/{self.world_size}, nodes={self.num_local_nodes} of "
                f"{self.num_nodes}, halo={self.num_halo_nodes}, slots={self.slot_nodes.numel()} of {self.num_slots})")


def _crc(tensor: Optional[Tensor]) -> Optional[int]:
    if tensor is None:
        return None
    return zlib.crc32(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())


def _fingerprint(pos: Tensor, x: Tensor, tree: BallTree, edge_index: Optional[Tensor], halo_hops: int) -> dict:
    return dict(num_nodes=tree.num_nodes, num_slots=tree.num_slots, pos_shape=tuple(pos.shape),
                x_shape=tuple(x.shape), dtypes=(str(pos.dtype), str(x.dtype)), ball_sizes=tree.ball_sizes,
                strides=tree.strides, padding=tree.padding, rotate=tree.rotate, rotated_levels=len(tree.rotated),
                tree_index=_crc(tree.index), tree_rotated=[_crc(p) for p in tree.rotated], pos=_crc(pos),
                x=_crc(x), edge_index=_crc(edge_index), halo_hops=halo_hops)


def _check(pos, x, tree, edge_index, halo_hops: int, world_size: int) -> Optional[str]:
    """What is wrong with this rank's input, or None."""
    for name, value in (("pos", pos), ("x", x)):
        if not isinstance(value, Tensor):
            return f"{name} must be a torch.Tensor, got {type(value).__name__}"
    if pos.dim() != 2 or x.dim() != 2 or pos.shape[0] != x.shape[0]:
        return f"pos [N, D] and x [N, F] must have one row per node, got {tuple(pos.shape)} and {tuple(x.shape)}"
    if pos.shape[0] == 0:
        return "the cloud has no points: every rank must pass the whole (non-empty) cloud"
    if not isinstance(tree, BallTree):
        return f"tree must be a BallTree, got {type(tree).__name__}"
    if tree.num_graphs != 1 or tree.num_nodes != pos.shape[0]:
        return (f"shard_cloud partitions one cloud: the tree must have one graph of {pos.shape[0]} nodes, "
                f"it has {tree.num_graphs} graph(s) and {tree.num_nodes} nodes")
    if tree.ball_sizes is None:
        return "the tree must be built with ball_sizes and strides (use model.tree_config)"
    if isinstance(halo_hops, bool) or not isinstance(halo_hops, int) or halo_hops < 0:
        return f"halo_hops must be an int >= 0, got {halo_hops!r}"
    if halo_hops > 0 and edge_index is None:
        return "halo_hops > 0 needs the cloud's edge_index"
    if not is_power_of_two(world_size):
        return (f"the world size must be a power of two (each rank owns a subtree of the ball tree), got "
                f"{world_size}: launch 1, 2, 4, 8, ... processes")
    grain = granularity(tree.ball_sizes, tree.strides)
    if tree.num_slots % (world_size * grain):
        largest = 1
        while tree.num_slots % (2 * largest * grain) == 0:
            largest *= 2
        return (f"{world_size} ranks would cut balls or pooling groups: each rank's {tree.num_slots} / "
                f"{world_size} slots must be a multiple of {grain} (ball_sizes={list(tree.ball_sizes)}, "
                f"strides={list(tree.strides)}): use at most {largest} rank(s), smaller balls or strides, or "
                "a larger cloud")
    return None


def _halo(members: Tensor, edge_index: Tensor, hops: int) -> Tensor:
    """``members`` (bool ``[N]``) grown by ``hops`` steps along the edges, against their direction."""
    source, target = edge_index
    for _ in range(hops):
        grown = members.clone()
        grown[source[members[target]]] = True
        members = grown
    return members


@torch.no_grad()
def shard_cloud(pos: Tensor, x: Tensor, tree: BallTree, group=None, *, edge_index: Optional[Tensor] = None,
                halo_hops: int = 0, fingerprint: Optional[dict] = None) -> CloudShard:
    r"""Cut one cloud into this rank's :class:`CloudShard` (a collective: every rank of ``group`` calls it).

    Rank :math:`r` of :math:`R` gets the level-0 slots :math:`[r S/R, (r+1) S/R)` of the tree. With
    ``"pow2"`` padding (:math:`S` a power of two and :math:`R` one too) that range is exactly one
    subtree of depth :math:`\log_2 R` below the root, and the median splits give every rank
    :math:`\lfloor N/R \rfloor` or :math:`\lceil N/R \rceil` nodes; with ``"compact"`` padding the
    block-proportional splits cut the same ranges when :math:`R` divides the number of blocks. Every
    ball and pooling group lies inside one rank's range whenever :math:`S/R` is a multiple of the
    tree's granularity, which is checked.

    The embedding of a node after :math:`k` message-passing steps depends on the nodes up to
    :math:`k` in-edges away; so each rank embeds the nodes its slots hold plus a halo of
    ``halo_hops`` (the model's ``mp_steps``) hops, on the edges among them. The halo nodes'
    values are exact as far as the owned nodes read them, which makes the embedding exact without
    communication.

    Every rank passes the whole cloud and the same tree (built once per rank, or loaded); the
    function checks that they agree (checksums of the tensors, one ``all_gather_object``) and
    raises the same :class:`ValueError` on every rank otherwise. The shard copies what it keeps,
    so the full ``x`` can be freed afterwards.

    Args:
        pos: ``[N, D]`` positions of the whole cloud.
        x: ``[N, F]`` features of the whole cloud.
        tree: its :class:`~torch_geometric_erwin.tree.BallTree` (one graph, with ``rotated`` orders when
            the model uses them), built with the model's ``tree_config``.
        group: the process group (``None``: the default one).
        edge_index: ``[2, E]`` the embedding's graph (needed when ``halo_hops > 0``).
        halo_hops: hops of halo nodes (the embedding's message-passing steps).
        fingerprint: more values every rank must agree on (e.g. the model's configuration).
    """
    rank, world_size = world(group)
    error = _check(pos, x, tree, edge_index, halo_hops, world_size)
    agree(error, None if error else dict(_fingerprint(pos, x, tree, edge_index, halo_hops), **(fingerprint or {})),
          group, "clouds, trees or models")

    device = pos.device
    index = tree.index.to(device)
    share = tree.num_slots // world_size
    lo, hi = rank * share, (rank + 1) * share
    node_slots = tree.to(device).node_slots()
    owner = node_slots // share
    node_counts = torch.bincount(owner, minlength=world_size).tolist()
    if min(node_counts) == 0:
        # every rank holds the same agreed tree, so every rank raises here together
        empty = [r for r, count in enumerate(node_counts) if count == 0]
        raise ValueError(f"rank(s) {empty} would own no points of the {tree.num_nodes}-node cloud (nodes per rank: "
                         f"{node_counts}): use fewer ranks, or a larger cloud")
    node_index = (owner == rank).nonzero().squeeze(1)

    members = torch.zeros(tree.num_nodes, dtype=torch.bool, device=device)
    members[index[lo:hi]] = True
    sub_edges = None
    if halo_hops > 0:
        edge_index = edge_index.to(device)
        members = _halo(members, edge_index, halo_hops)
    sub_nodes = members.nonzero().squeeze(1)
    relabel = torch.full((tree.num_nodes,), -1, dtype=torch.long, device=device)
    relabel[sub_nodes] = torch.arange(sub_nodes.numel(), device=device)
    if edge_index is not None:
        keep = members[edge_index[0]] & members[edge_index[1]]
        sub_edges = relabel[edge_index[:, keep]]

    exchanges = []
    for level in range(len(tree.ball_sizes)):
        exchanges.append(RotatedExchange.plan(tree.rotated[level], rank, world_size, group).to(device)
                         if tree.rotated else None)
    return CloudShard(x=x[sub_nodes].clone(), pos=pos[sub_nodes].clone(), edge_index=sub_edges,
                      sub_nodes=sub_nodes, slot_nodes=relabel[index[lo:hi]], node_index=node_index,
                      output_slots=node_slots[node_index] - lo, node_counts=node_counts, exchanges=exchanges,
                      num_nodes=tree.num_nodes, num_slots=tree.num_slots, rank=rank, world_size=world_size,
                      group=group)
