r"""One point cloud sharded over the ranks of a :mod:`torch.distributed` process group.

A cloud too large for one device's memory runs as :class:`ShardedErwin` over ``R`` processes
(``torchrun --nproc_per_node=R``; gloo on CPU, NCCL on GPU): each rank owns whole subtrees of the
ball tree, and only the rotated levels, the BatchNorm statistics and the gradients cross ranks.

.. code-block:: python

    model = Erwin(...)                       # or one loaded from a single-process checkpoint
    sharded = ShardedErwin(model)            # collective: same config everywhere, rank 0's weights
    shard = sharded.shard(pos, x)            # every rank passes the whole cloud, keeps its subtree
    out = sharded(shard)                     # [N_r, C]: the nodes shard.node_index
    loss = ((out - y[shard.node_index]) ** 2).sum() / shard.num_nodes
    loss.backward()
    sharded.all_reduce_gradients()           # the whole cloud's gradient on every rank
"""
from torch_geometric_erwin.distributed.comm import AllReduceSum, AllToAll, all_reduce_sum, all_to_all
from torch_geometric_erwin.distributed.exchange import RotatedExchange
from torch_geometric_erwin.distributed.memory import ActivationMemory
from torch_geometric_erwin.distributed.shard import CloudShard, shard_cloud
from torch_geometric_erwin.distributed.sharded_erwin import ShardedErwin
from torch_geometric_erwin.distributed.sync_batch_norm import ShardedBatchNorm

__all__ = ["ActivationMemory", "AllReduceSum", "AllToAll", "CloudShard", "RotatedExchange", "ShardedBatchNorm", "ShardedErwin",
           "all_reduce_sum", "all_to_all", "shard_cloud"]
