"""One cloud sharded over processes: train Erwin on a single N-body cloud split by its ball tree's top
levels over the ranks of torchrun, each rank holding a subtree's activations, the gradients summed over
ranks as DDP sums them. The cloud does not move: its tree and kNN graph are built once, when it is
sharded, and every step reuses the shard.

    torchrun --nproc-per-node 4 examples/sharded_cloud.py --device cpu    # gloo on CPU
    torchrun --nproc-per-node 8 examples/sharded_cloud.py --device cuda   # NCCL, one GPU per rank

The cloud is SyntheticNBody's (the targets are every particle's exact gravitational acceleration, which
needs the whole cloud) or any ``--cloud FILE`` holding a dict of ``pos [N, D]``, ``x [N, F]`` and
``y [N, C]``. Without torchrun the script runs as one rank.

Memory budget: ``--memory-budget-mib`` bounds what each process keeps for the backward pass (the
activations: the memory that grows with the cloud and that the ranks divide between them), measured
in the first step's forward pass by :class:`torch_geometric_erwin.distributed.ActivationMemory` (every
tensor autograd saves, once per storage, parameters excluded). Over the budget on any rank, every rank
stops before the backward pass with an error that says how many ranks would fit. The default run (the
"small" model on 16384 particles) keeps about 300 MiB in one process against a budget of 128 MiB, and
about 84 MiB per rank on 4 ranks: a laptop-sized stand-in for a 10^7-point cloud on 80 GB GPUs.
Parameters, optimiser state and the inputs (every rank reads the whole cloud's positions, features and
targets, a few floats per point, before keeping its shard) are not counted.
"""
import argparse
import datetime
import math
import os
import resource
import sys
import time

import torch
import torch.distributed as dist

#: Erwin configurations by size; "small" is examples/nbody.py's backbone, "tiny" fits a few hundred points.
MODELS = {
    "tiny": dict(hidden_channels=[16, 32], ball_sizes=[16, 16], enc_num_heads=[2, 4], enc_depths=[2, 2],
                 dec_num_heads=[2], dec_depths=[2], strides=[2], mp_steps=1, knn=8),
    "small": dict(hidden_channels=[32, 64, 128, 256], ball_sizes=[64, 64, 64, 16], enc_num_heads=[2, 4, 8, 16],
                  enc_depths=[2, 2, 2, 2], dec_num_heads=[2, 4, 8], dec_depths=[2, 2, 2], strides=[4, 4, 4],
                  mp_steps=2),
    "medium": dict(hidden_channels=[64, 128, 256, 512], ball_sizes=[64, 64, 64, 16], enc_num_heads=[2, 4, 8, 16],
                   enc_depths=[2, 2, 2, 2], dec_num_heads=[2, 4, 8], dec_depths=[2, 2, 2], strides=[4, 4, 4],
                   mp_steps=2),
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_model(name, in_channels, out_channels, dim, dtype, activation_checkpointing=False):
    from torch_geometric_erwin.nn import Erwin
    return Erwin(in_channels, out_channels=out_channels, dimensionality=dim, rotate=45.0,
                 activation_checkpointing=activation_checkpointing, **MODELS[name]).to(dtype)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="data/sharded_cloud", help="SyntheticNBody root (generated on first use)")
    data.add_argument("--num-particles", type=int, default=16384, help="particles of the generated cloud")
    data.add_argument("--dim", type=int, default=3, choices=(2, 3), help="dimensions of the generated cloud")
    data.add_argument("--data-seed", type=int, default=0, help="seed of the generated cloud")
    data.add_argument("--cloud", default=None, help="a torch file of {'pos', 'x', 'y'} to train on instead")
    train = parser.add_argument_group("training")
    train.add_argument("--model", default="small", choices=sorted(MODELS), help="Erwin size")
    train.add_argument("--steps", type=int, default=200, help="optimizer steps (in total, resumed ones included)")
    train.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (cosine to lr / 100)")
    train.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: none)")
    train.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="parameters and activations")
    train.add_argument("--activation-checkpointing", action="store_true",
                       help="re-run every transformer block in the backward pass (less activation memory)")
    train.add_argument("--memory-budget-mib", type=float, default=128.0,
                       help="activations each rank may keep for the backward pass (0: no budget)")
    train.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda (one GPU per rank)")
    run = parser.add_argument_group("output")
    run.add_argument("--out", default="runs/sharded_cloud", help="folder of last.pt and model.pt")
    run.add_argument("--log-every", type=int, default=10, help="steps between progress lines")
    run.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (last.pt)")
    run.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    args = parser.parse_args(argv)
    for name in ("num_particles", "steps", "log_every", "checkpoint_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.lr <= 0 or args.max_grad_norm < 0 or args.memory_budget_mib < 0:
        parser.error("--lr must be positive, --max-grad-norm and --memory-budget-mib non-negative")
    if args.cloud is not None and not os.path.isfile(args.cloud):
        parser.error(f"--cloud {args.cloud} does not exist")
    if args.resume and not os.path.isfile(os.path.join(args.out, "last.pt")):
        parser.error(f"--resume: there is no checkpoint {os.path.join(args.out, 'last.pt')}")
    return args


def init(device):
    """This process's rank, world size and device, with a process group up (of one without torchrun)."""
    from torch_geometric_erwin.training.distributed import init_distributed
    context = init_distributed(device)
    if not dist.is_initialized():  # no torchrun: a group of one, so that the same code runs
        dist.init_process_group("nccl" if context.device.type == "cuda" else "gloo", store=dist.HashStore(),
                                rank=0, world_size=1, timeout=datetime.timedelta(seconds=60))
    return context


def load_cloud(args, rank):
    """The whole cloud ``(pos, x, y)`` on every rank; rank 0 generates it once, the others read its cache."""
    if args.cloud is not None:
        cloud = torch.load(args.cloud, map_location="cpu", weights_only=True)
        if not (isinstance(cloud, dict) and all(isinstance(cloud.get(k), torch.Tensor) and cloud[k].dim() == 2
                                                for k in ("pos", "x", "y"))):
            raise ValueError(f"--cloud {args.cloud} must hold a dict of 2-D tensors 'pos', 'x' and 'y'")
        if not cloud["pos"].shape[0] == cloud["x"].shape[0] == cloud["y"].shape[0]:
            raise ValueError(f"--cloud {args.cloud}: pos, x and y must have one row per point, got "
                             f"{[tuple(cloud[k].shape) for k in ('pos', 'x', 'y')]}")
        return cloud["pos"], cloud["x"], cloud["y"]
    from torch_geometric_erwin.datasets import SyntheticNBody

    def dataset():
        return SyntheticNBody(args.data, split="train", num_graphs=1, num_particles=args.num_particles,
                              dimensionality=args.dim, seed=args.data_seed, log=False)
    if rank == 0:
        dataset()
    dist.barrier()
    data = dataset()[0]
    return data.pos, data.x, data.y


def peak_memory_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def check_budget(activation_bytes, budget_mib, context):
    """Every rank's activation MiB (one all-reduce, on the device the backend takes); the same ValueError on
    every rank if one is over budget."""
    kept = torch.zeros(context.world_size, dtype=torch.float64, device=context.device)
    kept[context.rank] = activation_bytes / 2**20
    context.all_reduce_(kept)
    if budget_mib and float(kept.max()) > budget_mib:
        ranks = context.world_size
        while ranks * budget_mib < float(kept.max()) * context.world_size:
            ranks *= 2  # the activations divide by the ranks (halo and padding aside)
        raise ValueError(f"rank {int(kept.argmax())} keeps {float(kept.max()):.1f} MiB of activations for the backward "
                         f"pass, over --memory-budget-mib {budget_mib:g} (the whole cloud: {float(kept.sum()):.1f} "
                         f"MiB over {context.world_size} rank(s)): launch at least {ranks} ranks, pass "
                         "--activation-checkpointing, or raise the budget")
    return kept.tolist()


def train(args, context):
    from torch_geometric_erwin.distributed import ActivationMemory, ShardedErwin
    from torch_geometric_erwin.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
    rank, device, dtype = context.rank, context.device, DTYPES[args.dtype]
    pos, x, y = load_cloud(args, rank)
    pos, x, y = pos.to(device), x.to(device, dtype), y.to(device, dtype)
    torch.manual_seed(args.seed)
    model = build_model(args.model, x.shape[1], y.shape[1], pos.shape[1], dtype,
                        args.activation_checkpointing).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    step = 0
    last = os.path.join(args.out, "last.pt")
    if args.resume:
        state = load_checkpoint(last, map_location=str(device))
        if state["config"] != model.config:
            raise ValueError(f"--resume: {last} holds another model ({state['config']}); pass the same --model "
                             "and --dtype, or another --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step = state["step"]
    # the cosine of the current --steps, from the step reached: a resumed run with more steps continues
    # as a run of that many steps from the start would have
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
        last_epoch=step - 1)

    # collective: checks that every rank has the same model and cloud, and copies rank 0's weights
    sharded = ShardedErwin(model)
    shard = sharded.shard(pos, x)
    target = y[shard.node_index]
    num_values = y.numel()
    del pos, x, y  # the shard holds what this rank needs
    if rank == 0:
        print(f"{shard.num_nodes} points on {context.world_size} rank(s) ({device.type}); rank 0: {shard}",
              flush=True)

    def checkpoint(path):
        if rank == 0:
            save_checkpoint(path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            step=step, config=model.config, rng=rng_state(),
                            world_size=context.world_size)

    model.train()
    started, window, losses = time.perf_counter(), 0, []
    while step < args.steps:
        optimizer.zero_grad(set_to_none=True)
        with ActivationMemory(exclude=model.parameters()) as memory:
            out = sharded(shard)
            # this rank's part of the whole cloud's mean squared error
            loss = (out - target).pow(2).sum() / num_values
        if not losses:  # the same graph every step: measured once, before the backward pass needs it
            kept = check_budget(memory.bytes, args.memory_budget_mib, context)
            if rank == 0:
                print(f"activations per rank: {', '.join(f'{k:.1f}' for k in kept)} MiB (budget "
                      f"{args.memory_budget_mib:g} MiB; {sum(kept):.1f} MiB in all)", flush=True)
        loss.backward()
        sharded.all_reduce_gradients()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        window += 1
        total = loss.detach().clone()
        context.all_reduce_(total)
        losses.append(float(total))
        if step % args.log_every == 0 or step == args.steps:
            seconds = (time.perf_counter() - started) / window
            if rank == 0:
                print(f"step {step}/{args.steps} | loss {losses[-1]:.4g} | {seconds:.3f} s/step | "
                      f"peak {peak_memory_mib(device):.0f} MiB on rank 0", flush=True)
            started, window = time.perf_counter(), 0
        if step % args.checkpoint_every == 0 or step == args.steps:
            checkpoint(last)
    if rank == 0:
        model.save(os.path.join(args.out, "model.pt"))  # loads into one process: Erwin.from_checkpoint
        print(f"model in {os.path.join(args.out, 'model.pt')}, checkpoint in {last}", flush=True)
    return losses


def main(argv=None) -> int:
    args = parse_args(argv)
    from torch_geometric_erwin.training.distributed import destroy_distributed
    context = init(args.device)
    try:
        train(args, context)
    except ValueError as error:  # raised on every rank together (bad cloud, world size, resume)
        if context.rank == 0:
            print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        destroy_distributed(context)
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
