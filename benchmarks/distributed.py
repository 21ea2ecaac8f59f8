"""One cloud sharded over 1, 2, 4, ... gloo ranks: peak memory per rank, time per step, and the bytes
communicated per step against the activations.

Every world size ``R`` runs in a fresh group of ``R`` processes (``torch.multiprocessing.spawn``, gloo on
loopback, a file store), each rank holding :class:`~torch_geometric_erwin.distributed.ShardedErwin`'s
share of one random cloud (uniform in the unit cube, Gaussian features) for an Erwin preset. A step is
what training does per step bar the optimiser: the forward pass on the rank's shard, the rank's share
of the mean square of the output, the backward pass and the gradient all-reduce. Per rank:

* peak memory: after a warm-up step, the growth of the peak resident set (Linux ``VmHWM``, reset
  through ``/proc/self/clear_refs``) during one step over the resident set just before it, in
  processes where glibc returns every freed block above 128 KiB to the system (so the resident set
  follows the live tensors, as ``benchmarks/checkpointing.py`` measures it);
* activations: the bytes the forward pass keeps for the backward pass
  (:class:`~torch_geometric_erwin.distributed.ActivationMemory`, parameters excluded);
* time: the median over ``--repeats`` steps (after a warm-up step) of the slowest rank's step, in a
  second group of processes without those glibc settings;
* communication: the bytes one step hands to the collectives, counted by wrapping
  ``torch.distributed.all_to_all_single`` and ``all_reduce``: the rotated levels' all-to-alls (rows sent
  to other ranks, forward and backward), the BatchNorm statistics and the gradient all-reduce
  (its payload: a ring all-reduce moves ``2 (R - 1) / R`` times that per rank).

With 2 cores, 4 ranks oversubscribe the machine: each rank gets one thread, as with 2 ranks.

    python benchmarks/distributed.py                                 # md-small on 8192 points, 1/2/4 ranks
    python benchmarks/distributed.py --points 16384 --ranks 1 2 --markdown
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _table import print_table  # noqa: E402
from nsa import run_memory_and_time, status_mb  # noqa: E402

from torch_geometric_erwin.nn import Erwin  # noqa: E402
from torch_geometric_erwin.nn.models.presets import PRESETS  # noqa: E402
from torch_geometric_erwin.tree import granularity  # noqa: E402


class CollectiveBytes:
    """Bytes this rank hands to ``all_to_all_single`` (rows bound for other ranks) and ``all_reduce``
    (the payload), by ``phase``, while installed."""

    def __init__(self, rank: int):
        self.rank, self.phase, self.bytes = rank, "forward/backward", {}
        self._originals = (dist.all_to_all_single, dist.all_reduce)

    def _add(self, what: str, count: int) -> None:
        self.bytes[what] = self.bytes.get(what, 0) + count

    def install(self) -> "CollectiveBytes":
        all_to_all_single, all_reduce = self._originals

        def counted_all_to_all(output, input, output_split_sizes=None, input_split_sizes=None, **kwargs):
            row = input[0].numel() * input.element_size() if input.shape[0] else 0
            self._add("exchange", row * (sum(input_split_sizes) - input_split_sizes[self.rank]))
            return all_to_all_single(output, input, output_split_sizes, input_split_sizes, **kwargs)

        def counted_all_reduce(tensor, *args, **kwargs):
            self._add("gradients" if self.phase == "gradients" else "batch_norm", tensor.numel() * tensor.element_size())
            return all_reduce(tensor, *args, **kwargs)

        dist.all_to_all_single, dist.all_reduce = counted_all_to_all, counted_all_reduce
        return self

    def uninstall(self) -> None:
        dist.all_to_all_single, dist.all_reduce = self._originals


def make_cloud(spec: dict):
    generator = torch.Generator().manual_seed(0)
    preset = PRESETS[spec["preset"]]
    pos = torch.rand(spec["points"], preset["dimensionality"], generator=generator)
    x = torch.randn(spec["points"], preset["in_channels"], generator=generator)
    return pos, x


def worker(rank: int, spec: dict, store: str, out_dir: str) -> None:
    from torch_geometric_erwin.distributed import ActivationMemory, ShardedErwin
    torch.set_num_threads(spec["threads"])
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=spec["ranks"],
                            timeout=datetime.timedelta(seconds=600))
    try:
        torch.manual_seed(0)
        model = Erwin.from_preset(spec["preset"]).train()
        sharded = ShardedErwin(model)
        pos, x = make_cloud(spec)
        shard = sharded.shard(pos, x)
        del pos, x
        counter = CollectiveBytes(rank).install()

        def step():
            model.zero_grad(set_to_none=True)
            counter.phase = "forward/backward"
            with ActivationMemory(exclude=model.parameters()) as memory:
                loss = sharded(shard).square().sum() / (shard.num_nodes * model.out_channels)
            loss.backward()
            counter.phase = "gradients"
            sharded.all_reduce_gradients()
            return memory.bytes

        step()
        result = dict(rank=rank, nodes=shard.num_local_nodes, halo=shard.num_halo_nodes)
        if spec["what"] == "memory":
            model.zero_grad(set_to_none=True)
            gc.collect()
            dist.barrier()
            base = status_mb("VmRSS")
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets VmHWM to the current resident set
            result["activations_mb"] = step() / 2**20
            result["peak_mb"] = status_mb("VmHWM") - base
        else:
            times = []
            for _ in range(spec["repeats"]):
                dist.barrier()
                counter.bytes = {}
                tic = time.perf_counter()
                step()
                times.append(time.perf_counter() - tic)
            result["times"] = times
            result["bytes"] = counter.bytes
        counter.uninstall()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(result, handle)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def case(spec: dict) -> dict:
    """One world size's measurement (``spec["what"]``: ``"memory"`` or ``"time"``) in ``spec["ranks"]`` fresh
    processes spawned from this one; the ranks' results combined."""
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(spec, os.path.join(folder, "store"), folder), nprocs=spec["ranks"], join=True)
        ranks = [json.load(open(os.path.join(folder, f"rank{r}.json"))) for r in range(spec["ranks"])]
    result = dict(nodes=max(r["nodes"] for r in ranks), halo=max(r["halo"] for r in ranks))
    if spec["what"] == "memory":
        result.update(peak_mb=max(r["peak_mb"] for r in ranks), activations_mb=max(r["activations_mb"] for r in ranks))
    else:
        result["step_s"] = statistics.median(max(r["times"][i] for r in ranks) for i in range(spec["repeats"]))
        for what in ("exchange", "batch_norm", "gradients"):
            result[f"{what}_mb"] = max(r["bytes"].get(what, 0) for r in ranks) / 2**20
    return result


def measure(points: int, preset: str, ranks: int, repeats: int = 2, threads: int = 0) -> dict:
    """Peak memory, activations, step time and communication of ``preset`` on ``points`` points over
    ``ranks`` gloo ranks (two fresh groups of processes)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown Erwin preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    grain = granularity(PRESETS[preset]["ball_sizes"], PRESETS[preset]["strides"])
    slots = 1 << (points - 1).bit_length()
    if ranks < 1 or ranks & (ranks - 1):
        raise ValueError(f"--ranks must be powers of two (each rank owns a subtree), got {ranks}")
    if slots < ranks * grain:
        raise ValueError(f"{ranks} ranks need at least {ranks * grain} slots ({preset}'s granules of {grain} slots), "
                         f"{points} points fill {slots}: use more points or fewer ranks")
    threads = threads or max(1, (os.cpu_count() or 1) // ranks)
    spec = dict(points=points, preset=preset, ranks=ranks, repeats=repeats, threads=threads)
    return run_memory_and_time(__file__, spec, None)


def print_results(rows: list, markdown: bool) -> None:
    header = ["ranks", "points per rank (halo)", "peak MiB per rank", "activations MiB per rank", "step s",
              "exchanged MiB per rank", "BatchNorm KiB", "gradients MiB", "exchanged / activations"]
    lines = [[str(row["ranks"]), f"{row['nodes']} ({row['halo']})", f"{row['peak_mb']:.0f}",
              f"{row['activations_mb']:.0f}", f"{row['step_s']:.2f}", f"{row['exchange_mb']:.1f}",
              f"{row['batch_norm_mb'] * 1024:.1f}", f"{row['gradients_mb']:.1f}",
              f"{row['exchange_mb'] / row['activations_mb']:.3f}"] for row in rows]
    print_table(header, lines, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=8192, help="points of the cloud")
    parser.add_argument("--preset", default="md-small", help="Erwin preset")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4], help="world sizes")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per world size (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: cores / ranks, at least 1)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(json.loads(args.case))))
        return
    if args.points < 1 or args.repeats < 1 or args.threads < 0:
        parser.error("--points and --repeats must be at least 1, --threads at least 0")
    try:
        rows = [measure(args.points, args.preset, ranks, args.repeats, args.threads) for ranks in args.ranks]
    except ValueError as error:
        parser.error(str(error))
    if args.json:
        print(json.dumps(rows))
    else:
        print_results(rows, args.markdown)


if __name__ == "__main__":
    main()
