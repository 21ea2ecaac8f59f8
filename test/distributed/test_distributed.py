"""One cloud sharded over 2 and 4 gloo processes equals the single-process Erwin (outputs, gradients,
BatchNorm statistics), and bad input fails on every rank instead of hanging."""
import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torch_geometric_erwin.nn import Erwin

CONFIG = dict(in_channels=4, hidden_channels=[16, 32, 64], ball_sizes=[16, 16, 16], enc_num_heads=[2, 4, 4],
              enc_depths=[2, 2, 2], dec_num_heads=[2, 4], dec_depths=[2, 2], strides=[2, 2], rotate=45.0,
              mp_steps=2, knn=8, out_channels=3)
NUM_NODES = 400  # not a power of two: the tree repeats points in its padding slots
#: (dtype, training, activation checkpointing: on every rank, on none, or on rank 0 only)
CASES = [(torch.float64, True, False), (torch.float32, True, False), (torch.float64, False, False),
         (torch.float64, True, True), (torch.float32, True, "rank 0")]
#: the cases of each world size in the default run (the slow run takes every case on 4 ranks too)
FAST_CASES = {2: CASES, 4: [CASES[0], CASES[4]]}
NUM_BLOCKS = sum(CONFIG["enc_depths"]) + sum(CONFIG["dec_depths"])


def _cloud(num_nodes, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(num_nodes, 3, generator=generator, dtype=torch.float64).to(dtype)
    # clustered, so the subtrees hold different volumes and the rotated balls cross ranks unevenly
    pos[: num_nodes // 3] *= 0.2
    x = torch.randn(num_nodes, 4, generator=generator, dtype=torch.float64).to(dtype)
    y = torch.randn(num_nodes, 3, generator=generator, dtype=torch.float64).to(dtype)
    return pos, x, y


def _model(dtype, **overrides):
    torch.manual_seed(0)
    return Erwin(**dict(CONFIG, **overrides)).to(dtype)


def _single(dtype, train, num_nodes=NUM_NODES):
    """The reference: the model on the whole cloud in this process."""
    model = _model(dtype).train(train)
    pos, x, y = _cloud(num_nodes, dtype)
    out = model(x, pos)
    ((out - y) ** 2).sum().div(num_nodes).backward()
    return out.detach(), {k: p.grad for k, p in model.named_parameters()}, _buffers(model)


def _buffers(model):
    return {k: b.clone() for k, b in model.named_buffers() if "running" in k}


def _sharded(dtype, train, checkpointing, rank, num_nodes):
    from torch_geometric_erwin.distributed import ShardedErwin
    model = _model(dtype, activation_checkpointing=checkpointing is True or (checkpointing == "rank 0" and rank == 0))
    model.train(train)
    block_calls = [0]
    for stage in [*model.encoder, *model.decoder]:
        for block in stage.blocks:
            # a pre-hook of the block's first layer: a recomputation may stop before the block's end
            block.norm1.register_forward_pre_hook(lambda *_: block_calls.__setitem__(0, block_calls[0] + 1))
    sharded = ShardedErwin(model)
    pos, x, y = _cloud(num_nodes, dtype)
    shard = sharded.shard(pos, x)
    out = sharded(shard)
    ((out - y[shard.node_index]) ** 2).sum().div(num_nodes).backward()
    sharded.all_reduce_gradients()
    return dict(out=sharded.gather(out.detach(), shard), grads={k: p.grad for k, p in model.named_parameters()},
                buffers=_buffers(model), counts=shard.node_counts, halo=shard.num_halo_nodes,
                rows_sent=[e.rows_sent for e in shard.exchanges], block_calls=block_calls[0],
                checkpointed=model.activation_checkpointing)


def _route(rows, plans, index, send, recv):
    """What the all-to-alls of ``plans`` deliver: ``rows[r]`` of rank r sent in the order ``index`` with the
    counts ``send`` and received with the counts ``recv`` (the attribute names of one direction)."""
    world_size = len(plans)
    parts = [list(rows[r].index_select(0, getattr(plans[r], index)).split(getattr(plans[r], send)))
             for r in range(world_size)]
    received = [torch.cat([parts[source][r] for source in range(world_size)]) for r in range(world_size)]
    for r in range(world_size):
        assert [p.shape[0] for p in received[r].split(getattr(plans[r], recv))] == getattr(plans[r], recv)
    return received


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_rotated_exchange_delivers_whole_chunks_and_keeps_rows_home(world_size):
    import itertools

    from torch_geometric_erwin.distributed import RotatedExchange
    from torch_geometric_erwin.tree import build_ball_tree
    pos, _, _ = _cloud(1 << 14, torch.float32)
    tree = build_ball_tree(pos, ball_sizes=[16, 16, 16], strides=[2, 2], rotate=45.0)
    improved = False
    for permutation in tree.rotated:
        share = permutation.numel() // world_size
        plans = [RotatedExchange.plan(permutation, r, world_size) for r in range(world_size)]
        slots = [torch.arange(r * share, (r + 1) * share) for r in range(world_size)]  # every rank's rows
        received = _route(slots, plans, "send_index", "send_counts", "recv_counts")
        rotated = [received[r].index_select(0, plans[r].recv_inverse) for r in range(world_size)]
        # every rank gets one whole chunk of the rotated order, in rotated order; together all chunks
        chunks = []
        for rows in rotated:
            start = int((permutation == rows[0]).nonzero())
            assert start % share == 0 and torch.equal(rows, permutation[start:start + share])
            chunks.append(start // share)
        assert sorted(chunks) == list(range(world_size))
        # and the way back returns every row to its slot
        back = _route(rotated, plans, "recv_slots", "recv_counts", "send_counts")
        for r in range(world_size):
            assert torch.equal(back[r].index_select(0, plans[r].send_inverse), slots[r])
        # rows that stay: at least those of giving chunk r to rank r, and at least half the best matching's
        owner = (permutation // share).view(world_size, share)
        overlap = torch.stack([torch.bincount(row, minlength=world_size) for row in owner])  # [chunk, rank]
        kept = sum(plan.send_counts[r] for r, plan in enumerate(plans))
        assert kept >= int(overlap.diagonal().sum())
        improved |= kept > int(overlap.diagonal().sum())
        if world_size <= 4:
            best = max(sum(int(overlap[c, r]) for c, r in enumerate(p))
                       for p in itertools.permutations(range(world_size)))
            assert 2 * kept >= best
    if world_size > 2:  # on this cloud, some levels' plain and rotated chunks pair up off the diagonal
        assert improved


def _expect_error(name, errors, function):
    try:
        function()
    except ValueError as error:
        errors[name] = str(error)
    else:
        errors[name] = None


def _bad_inputs(rank, world_size):
    from torch_geometric_erwin.distributed import ShardedErwin, shard_cloud
    from torch_geometric_erwin.tree import build_ball_tree
    errors = {}
    model = _model(torch.float64)
    pos, x, _ = _cloud(NUM_NODES, torch.float64)
    sharded = ShardedErwin(model)
    # rank 1 built its tree for other balls than the model's
    tree = model.build_tree(pos) if rank != 1 else build_other_tree(pos)
    _expect_error("tree", errors, lambda: sharded.shard(pos, x, tree))
    # trees each valid on their own, but rotated by other angles on rank 1
    rotated = build_ball_tree(pos, ball_sizes=[16, 16, 16], strides=[2, 2], rotate=30.0 if rank == 1 else 45.0)
    _expect_error("trees_differ", errors, lambda: shard_cloud(pos, x, rotated))
    # another rank has another cloud, or none at all
    _expect_error("cloud", errors, lambda: sharded.shard(pos if rank else pos + 1, x))
    _expect_error("empty", errors, lambda: sharded.shard(pos[:0] if rank == world_size - 1 else pos,
                                                         x[:0] if rank == world_size - 1 else x))
    # too few slots per rank for a whole ball of the coarsest level
    small_pos, small_x, _ = _cloud(32 * world_size - 28, torch.float64)  # 64 or 128 slots
    _expect_error("too_small", errors, lambda: sharded.shard(small_pos, small_x))
    # models that differ, and models that differ only in activation checkpointing (allowed)
    _expect_error("model", errors, lambda: ShardedErwin(_model(torch.float64, mp_steps=1 if rank else 2)))
    _expect_error("checkpointing", errors,
                  lambda: ShardedErwin(_model(torch.float64, activation_checkpointing=rank == 0)))
    # a tree of a batch of two clouds
    batch = torch.repeat_interleave(torch.tensor([0, 1]), torch.tensor([200, 200]))
    _expect_error("batch", errors, lambda: shard_cloud(pos, x, model.build_tree(pos, batch)))
    if world_size == 4:
        # three points on four ranks of one slot each: the median splits leave rank 1 without a point
        tiny = pos[:3]
        _expect_error("no_points", errors,
                      lambda: shard_cloud(tiny, x[:3], build_ball_tree(tiny, ball_sizes=[1], strides=[])))
        three = dist.new_group([0, 1, 2])
        if rank < 3:
            _expect_error("world_size", errors, lambda: shard_cloud(pos, x, model.build_tree(pos), three))
    return errors


def build_other_tree(pos):
    from torch_geometric_erwin.tree import build_ball_tree
    return build_ball_tree(pos, ball_sizes=[8, 8, 8], strides=[2, 2], rotate=45.0)


def _worker(rank, world_size, cases, store, result_dir):
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = {case: _sharded(*case, rank, NUM_NODES) for case in cases}
        results["errors"] = _bad_inputs(rank, world_size)
        torch.save(results, os.path.join(result_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, world_size, cases):
    result_dir = tmp_path / f"results{world_size}"
    result_dir.mkdir()
    mp.spawn(_worker, args=(world_size, cases, str(tmp_path / f"store{world_size}"), str(result_dir)),
             nprocs=world_size, join=True)
    return [torch.load(result_dir / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


def _close(a, b, dtype):
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    return float((a - b).abs().max()) <= tolerance * max(1.0, float(b.abs().max()))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("world_size, cases", [(2, FAST_CASES[2]), (4, FAST_CASES[4]),
                                               pytest.param(4, CASES, marks=pytest.mark.slow)],
                         ids=["2", "4", "4-all"])
def test_sharded_erwin_equals_one_process(tmp_path, world_size, cases):
    ranks = _spawn(tmp_path, world_size, cases)
    for dtype, train, checkpointing in cases:
        out, grads, buffers = _single(dtype, train)
        for rank, results in enumerate(ranks):
            result = results[(dtype, train, checkpointing)]
            case = (rank, dtype, train, checkpointing)
            assert _close(result["out"], out, dtype), case
            assert result["grads"].keys() == grads.keys()
            for name, grad in grads.items():
                assert _close(result["grads"][name], grad, dtype), (*case, name)
            for name, buffer in buffers.items():
                assert _close(result["buffers"][name], buffer, dtype), (*case, name)
            # checkpointed blocks run again in the backward pass
            runs = 2 if train and result["checkpointed"] else 1
            assert result["block_calls"] == runs * NUM_BLOCKS, case
        counts = ranks[0][(dtype, train, checkpointing)]["counts"]
        assert sum(counts) == NUM_NODES and max(counts) - min(counts) <= 1  # median splits: balanced nodes
        assert sum(ranks[0][(dtype, train, checkpointing)]["rows_sent"]) > 0  # the rotated balls did cross ranks
        assert ranks[0][(dtype, train, checkpointing)]["halo"] > 0
    assert [r[(torch.float32, True, "rank 0")]["checkpointed"] for r in ranks] == [True] + [False] * (world_size - 1)
    expected = {"tree": "rank 1: tree built with ball_sizes=[8, 8, 8] but the model uses ball_sizes=[16, 16, 16]",
                "trees_differ": "rank(s) [1] differ from rank 0 (differing: rotate, tree_rotated)",
                "cloud": "differing: pos)", "empty": f"rank {world_size - 1}: the cloud has no points",
                "too_small": f"use at most {world_size // 2} rank(s)",
                "model": "different model configurations: rank(s) [1",
                "batch": "one graph"}
    if world_size == 4:
        expected["no_points"] = "rank(s) [1] would own no points"
    for rank, results in enumerate(ranks):
        errors = results["errors"]
        for name, text in expected.items():
            assert errors[name] is not None and text in errors[name], (rank, name, errors[name])
        assert "differing: mp_steps" in errors["model"]
        assert errors["checkpointing"] is None
        if world_size == 4 and rank < 3:
            assert "power of two" in errors["world_size"]
