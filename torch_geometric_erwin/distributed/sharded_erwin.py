r"""Erwin on one cloud sharded over the ranks of a process group."""
from __future__ import annotations

import copy
from typing import List, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from torch_geometric_erwin.distributed.comm import _RECENT_COLLECTIVES, agree, world
from torch_geometric_erwin.distributed.shard import CloudShard, shard_cloud
from torch_geometric_erwin.distributed.sync_batch_norm import ShardedBatchNorm
from torch_geometric_erwin.nn.ball_attention import BallGeometry
from torch_geometric_erwin.nn.models.erwin import Erwin, ErwinStage
from torch_geometric_erwin.tree import BallTree


def _with_sharded_norm(layer: nn.Module, group) -> nn.Module:
    """A shallow copy of a pooling or unpooling layer whose ``norm`` is a :class:`ShardedBatchNorm` of the
    original: the same parameters, buffers and ``forward``."""
    if not hasattr(layer, "norm"):  # the parameter-free identity pooling
        return layer
    twin = copy.copy(layer)
    twin._modules = dict(layer._modules, norm=ShardedBatchNorm(layer.norm, group))
    return twin


class ShardedErwin(nn.Module):
    r"""Runs an :class:`~torch_geometric_erwin.nn.Erwin` on one cloud split over ``R`` ranks.

    Each rank holds a :class:`~torch_geometric_erwin.distributed.CloudShard`: a subtree of
    :math:`S/R` slots of the ball tree. Everything Erwin does inside a subtree runs locally:
    the embedding (on the rank's nodes plus a halo of ``mp_steps`` hops), the blocks on the plain
    tree's balls, pooling and unpooling. Three things cross ranks:

    - the odd blocks of every level attend in the rotated tree's balls: the rows whose rotated
      ball another rank computes are sent there and back
      (:class:`~torch_geometric_erwin.distributed.exchange.RotatedExchange`, an all-to-all with
      autograd, routes planned once per tree);
    - the BatchNorm of pooling and unpooling takes its training-mode statistics over all ranks
      (:class:`~torch_geometric_erwin.distributed.ShardedBatchNorm`);
    - the parameter gradients, summed over ranks by :meth:`all_reduce_gradients`.

    With every rank's loss its share of the whole cloud's loss (e.g. a sum over its nodes divided
    by the cloud's :math:`N`), the outputs and the summed gradients equal those of ``model`` on the
    whole cloud in one process, in training and in eval mode (tested to 1e-10 in float64).

    The wrapper owns no parameters of its own: ``module`` is ``model`` itself, so a checkpoint of
    the single-process model loads into ``sharded.module`` and back. Constructing it is a collective:
    the ranks check that their models have the same configuration and, like
    :class:`~torch.nn.parallel.DistributedDataParallel`, copy rank 0's parameters and buffers to all.

    Args:
        model (Erwin): the model, the same architecture on every rank.
        group: the process group (``None``: the default one), gloo on CPU or NCCL on GPU.
        broadcast (bool): copy rank 0's parameters and buffers to every rank. (default: :obj:`True`)

    Shapes: ``forward(shard) -> [N_r, C_out]``, the rows of the nodes ``shard.node_index`` (or, with
    ``decode=False``, the rank's ``[S_{L-1}/R, C_{L-1}]`` bottleneck slots).

    Every rank must run the forward and the backward pass (of a loss that depends on its output,
    which may be empty), in the same order, as every rank takes part in the collectives.
    """

    def __init__(self, model: Erwin, group=None, broadcast: bool = True):
        super().__init__()
        world(group)
        error = None if isinstance(model, Erwin) else f"model must be an Erwin, got {type(model).__name__}"
        agree(error, None if error else self._config(model), group, "model configurations")
        self.module = model
        self.group = group
        self._pool = [_with_sharded_norm(layer, group) for layer in model.pool]
        self._unpool = [_with_sharded_norm(layer, group) for layer in model.unpool] if model.decode else []
        if broadcast:
            self._broadcast_state()

    @staticmethod
    def _config(model: Erwin) -> dict:
        # activation checkpointing is left out: it changes no collective (see _stage), so each rank
        # may choose it for its own memory
        config = {name: value for name, value in model.config.items() if name != "activation_checkpointing"}
        return dict(config, shapes=[tuple(t.shape) for t in model.state_dict().values()],
                    dtype=str(next(model.parameters()).dtype))

    @torch.no_grad()
    def _broadcast_state(self) -> None:
        source = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        for tensor in list(self.module.parameters()) + list(self.module.buffers()):
            _RECENT_COLLECTIVES.append(tensor)
            dist.broadcast(tensor.data, source, group=self.group)

    # ------------------------------------------------------------------ sharding
    def shard(self, pos: Tensor, x: Tensor, tree: Optional[BallTree] = None,
              edge_index: Optional[Tensor] = None) -> CloudShard:
        r"""This rank's :class:`CloudShard` of the whole cloud ``pos [N, D]``, ``x [N, F]`` (a collective).

        ``tree`` (default: ``model.build_tree(pos)``) and ``edge_index`` (default:
        ``model.build_graph(pos)`` when ``mp_steps > 0``) are of the whole cloud, as the model would
        use them in one process; every rank passes the same ones (they are checked).
        """
        model = self.module
        error = None
        try:
            if isinstance(pos, Tensor) and pos.dim() == 2 and pos.shape[0] > 0:  # else shard_cloud says why
                # the model's own checks, tree and graph, as its forward would take them
                pos, edge_index, tree = model._prepare(x, pos, None, edge_index, tree, False)
        except (TypeError, ValueError) as failure:
            error = str(failure)
        if error is not None:
            # raises here; the other ranks meet this all_gather in shard_cloud's own check
            agree(error, None, self.group, "clouds")
        return shard_cloud(pos, x, tree, self.group, edge_index=edge_index if model.mp_steps > 0 else None,
                           halo_hops=model.mp_steps,
                           fingerprint={f"model.{k}": v for k, v in self._config(model).items()})

    # ------------------------------------------------------------------ forward
    def forward(self, shard: CloudShard) -> Tensor:
        if not isinstance(shard, CloudShard):
            raise TypeError(f"forward takes a CloudShard (from ShardedErwin.shard), got {type(shard).__name__}")
        model = self.module
        h = model.embedding(shard.x, shard.pos, shard.edge_index, check_edges=False).index_select(0, shard.slot_nodes)
        level_pos = [shard.pos.index_select(0, shard.slot_nodes).detach()]
        checkpointed = model.activation_checkpointing and model.training and torch.is_grad_enabled()
        orders, skips = [], []
        levels = len(model.ball_sizes)
        for level in range(levels):
            orders.append(self._orders(level_pos[level], shard, level, checkpointed))
            h = self._stage(model.encoder[level], h, orders[level], checkpointed)
            if level < levels - 1:
                skips.append(h)
                h, centres = self._pool[level](h, level_pos[level])
                level_pos.append(centres)
        if not model.decode:
            return h
        for level in reversed(range(levels - 1)):
            h = self._unpool[level](h, level_pos[level + 1], skips[level], level_pos[level])
            h = self._stage(model.decoder[level], h, orders[level], checkpointed)
        out = h.index_select(0, shard.output_slots)
        return out if model.head is None else model.head(out)

    def _orders(self, pos: Tensor, shard: CloudShard, level: int, checkpointed: bool):
        """The level's balls and, with rotation, its exchange and rotated balls: as
        :class:`BallGeometry`, or as the ``[S_l/R, D]`` positions a checkpointed block forms its
        geometry from (so that the distances are not kept between the passes)."""
        ball_size = self.module.ball_sizes[level]
        exchange = shard.exchanges[level]
        rotated_pos = (exchange.rotate_positions(pos) if self.module.uses_rotation and exchange is not None
                       else None)
        if checkpointed:
            return pos, None if rotated_pos is None else (exchange, rotated_pos)
        geometry = BallGeometry.from_pos(pos, ball_size)
        if rotated_pos is None:
            return geometry, None
        return geometry, (exchange, BallGeometry.from_pos(rotated_pos, ball_size))

    @staticmethod
    def _stage(stage: ErwinStage, x: Tensor, orders, checkpointed: bool) -> Tensor:
        # ErwinStage.forward's alternation, with the rotated order's rows brought across ranks. Under
        # checkpointing only the block runs again in the backward pass, never an exchange: the
        # collectives then happen once per pass on every rank whatever each rank's setting.
        def run(block, x, where):
            if checkpointed:
                return activation_checkpoint(_block_on_positions, block, x, where, stage.ball_size,
                                             use_reentrant=False)
            return block(x, geometry=where)

        plain, rotated = orders
        for i, block in enumerate(stage.blocks):
            if i % 2 and rotated is not None:
                exchange, where = rotated
                x = exchange.from_rotated(run(block, exchange.to_rotated(x), where))
            else:
                x = run(block, x, plain)
        return x

    # ------------------------------------------------------------------ gradients and outputs
    @torch.no_grad()
    def all_reduce_gradients(self) -> None:
        r"""Sum every parameter's gradient over the ranks (one all-reduce of a flat buffer).

        A sum, not DDP's mean: each rank's loss is its part of one cloud's loss, so the cloud's
        gradient is the sum of the parts. Parameters without a gradient count as zero.
        """
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        _RECENT_COLLECTIVES.append(flat)
        dist.all_reduce(flat, group=self.group)
        offset = 0
        for p in params:
            part = flat[offset:offset + p.numel()].view_as(p)
            if p.grad is None:
                p.grad = part.clone()
            else:
                p.grad.copy_(part)
            offset += p.numel()

    @torch.no_grad()
    def gather(self, out: Tensor, shard: CloudShard) -> Tensor:
        """The whole cloud's ``[N, C]`` output in the input node order, on every rank, from every rank's
        ``forward(shard)`` (a collective; no autograd). For tests and evaluation: it holds all ``N`` rows."""
        if out.shape[0] != shard.num_local_nodes:
            raise ValueError(f"out has {out.shape[0]} rows but this rank owns {shard.num_local_nodes} nodes")
        full = out.new_empty((shard.num_nodes,) + tuple(out.shape[1:]))
        for part, nodes in zip(_all_gather_rows(out, shard), _all_gather_rows(shard.node_index, shard)):
            full[nodes] = part
        return full

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.module!r})"


def _block_on_positions(block: nn.Module, x: Tensor, pos: Tensor, ball_size: int) -> Tensor:
    """``block`` on the balls of ``pos`` (tree order), their geometry formed here so that a checkpointed
    block keeps no distances between the passes."""
    return block(x, geometry=BallGeometry.from_pos(pos, ball_size))


def _all_gather_rows(rows: Tensor, shard: CloudShard) -> List[Tensor]:
    """Every rank's ``rows`` (``shard.node_counts[r]`` of them on rank ``r``), padded for the collective."""
    padded = rows.new_zeros((max(shard.node_counts),) + tuple(rows.shape[1:]))
    padded[:rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in range(shard.world_size)]
    _RECENT_COLLECTIVES.extend([padded, *parts])
    dist.all_gather(parts, padded, group=shard.group)
    return [part[:count] for part, count in zip(parts, shard.node_counts)]
