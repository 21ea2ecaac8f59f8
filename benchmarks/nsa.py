"""Training speed and peak memory of ErwinNSA against Erwin at the NSA paper's Table 3 settings.

For each task (point clouds the size of the paper's data: cosmology 5000 points, MD 900 beads,
ShapeNet-Car 3586 surface points) and batch size (1 and 8), both models run full training
steps (forward, loss, backward, AdamW step) on the same random clouds and kNN graphs, with the
ball trees precomputed as the data transforms would. ErwinNSA uses the task's NSA preset
(Table 3 of the NSA paper); Erwin uses the task's "small" preset (the paper's baseline).

Every (task, model, batch) case runs in a fresh subprocess so that its memory is its own.
Peak memory approximates ``torch.cuda.max_memory_allocated`` (which the paper reports) on CPU:
the bytes of the parameters and optimizer state, plus the growth of the process's resident set
during the timed steps over its size after warm-up (Linux peak-RSS counter ``VmHWM``, reset
through ``/proc/self/clear_refs``), which covers gradients, activations and temporaries. glibc
is told to return every block above 128 KiB to the system on free (``MALLOC_MMAP_THRESHOLD_``), so
freed activations do not linger in the resident set; code pages and library buffers touched
during warm-up are excluded; that memory run is a second process with one timed step, since
returning every freed block makes each large allocation page-fault anew and would distort the
speed. On CUDA it is ``torch.cuda.max_memory_allocated``, from the timed run. Steps per second
are the median over the timed steps after warm-up. "GFLOP/step" counts the floating-point
operations of the matrix products (linear layers, attention) of one training step, recomputed
chunks included (``torch.utils.flop_counter``): on a CPU, where a step is bound by those products,
their ratio bounds what speed ratio either model can reach. Machines are noisy: compare within one run.

    python benchmarks/nsa.py [--steps 5] [--warmup 2] [--batch-sizes 1 8] [--markdown]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from torch_geometric_erwin.nn import knn_graph

#: task -> (points per cloud, input features, kNN neighbours, NSA preset, Erwin preset)
TASKS = {
    "cosmology": (5000, 3, 10, "cosmology-base", "cosmology-small"),
    "md": (900, 16, 4, "md-base", "md-small"),
    "shapenet": (3586, 3, 8, "shapenet-base", "shapenet-small"),
}
MODELS = ("Erwin", "ErwinNSA")


def status_mb(key: str) -> float:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key} (Linux only)")


def measure_peak_mb(fn, device: str = "cpu") -> float:
    """Peak memory (MiB) that one call of ``fn`` adds to what is allocated before it: on CPU the growth of
    the process's peak resident set over its resident set before the call (run it in a process started
    by :func:`run_fresh` with ``memory=True``), on CUDA ``torch.cuda.max_memory_allocated`` over
    ``torch.cuda.memory_allocated``."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base = status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident set
    fn()
    return status_mb("VmHWM") - base


def tensor_mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def build_model(name: str, task: str, in_channels: int):
    from torch_geometric_erwin.nn import Erwin, ErwinNSA

    _, _, _, nsa_preset, erwin_preset = TASKS[task]
    if name == "ErwinNSA":
        return ErwinNSA.from_preset(nsa_preset, in_channels=in_channels)
    return Erwin.from_preset(erwin_preset, in_channels=in_channels)


def run_case(task: str, name: str, batch_size: int, steps: int, warmup: int, device: str) -> dict:
    """One case, in the current process: returns steps/s and peak memory (MB) over ``steps`` steps."""
    torch.manual_seed(0)
    points, features, neighbours, _, _ = TASKS[task]
    pos = torch.rand(batch_size * points, 3)
    batch = torch.arange(batch_size).repeat_interleave(points)
    x = torch.randn(pos.shape[0], features)
    edge_index = knn_graph(pos, neighbours, batch)
    target = torch.randn(pos.shape[0], 1)

    model = build_model(name, task, features).to(device)
    head = torch.nn.Linear(model.out_channels, 1).to(device)
    tree = model.build_tree(pos, batch).to(device)
    pos, batch, x, edge_index, target = (t.to(device) for t in (pos, batch, x, edge_index, target))
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        optimizer.zero_grad(set_to_none=True)
        out = head(model(x, pos, batch, edge_index=edge_index, tree=tree))
        torch.nn.functional.mse_loss(out, target).backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    # one more untimed step, counting the floating-point operations of the matrix products
    with FlopCounterMode(display=False) as flop_counter:
        step()
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    parameters = list(model.parameters()) + list(head.parameters())
    state = tensor_mb(parameters) + tensor_mb(t for s in optimizer.state.values() for t in s.values()
                                              if torch.is_tensor(t))
    if device == "cpu":
        base = status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = state + status_mb("VmHWM") - base
    return {"steps_per_s": 1 / statistics.median(times), "peak_mb": peak,
            "gflop": flop_counter.get_total_flops() / 1e9,
            "parameters": sum(p.numel() for p in model.parameters())}


def run_fresh(command: list, threads, memory: bool, what: str) -> str:
    """Run ``command`` (a case of a benchmark script) in a fresh Python process; its last stdout line.

    ``memory`` tells glibc to return every freed block above 128 KiB to the system at once, so that
    the resident set follows the live tensors. That makes every large allocation page-fault anew,
    so speed is measured in processes without it.
    """
    command = [sys.executable, *command] + (["--threads", str(threads)] if threads else [])
    env = dict(os.environ)
    if memory:
        # overrides model.py's --steady-heap, which would keep freed memory resident
        env = {**{k: v for k, v in env.items() if k not in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")},
               "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def run_memory_and_time(script: str, spec: dict, threads) -> dict:
    """``spec`` with what ``script --case`` measures of it: memory in one fresh process (freed blocks
    returned at once), time in another (see :func:`run_fresh`)."""
    result = dict(spec)
    for what in ("memory", "time"):
        line = run_fresh([os.path.abspath(script), "--case", json.dumps({**spec, "what": what})], threads,
                         memory=what == "memory", what=f"{what} case {spec}")
        result.update(json.loads(line))
    return result


def run_case_fresh(args, task: str, name: str, batch_size: int, steps: int, memory: bool) -> dict:
    """:func:`run_case` in a fresh process; on CPU, speed and memory come from separate ones."""
    command = [os.path.abspath(__file__), "--case", task, name, str(batch_size), "--steps", str(steps),
               "--warmup", str(args.warmup), "--device", args.device]
    return json.loads(run_fresh(command, args.threads, memory, f"case {task}/{name}/{batch_size}"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per case (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per case (CPU)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--case", nargs=3, metavar=("TASK", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.case:
        task, name, batch_size = args.case
        print(json.dumps(run_case(task, name, int(batch_size), args.steps, args.warmup, args.device)))
        return

    rows = []
    for task in args.tasks:
        for batch_size in args.batch_sizes:
            result = {}
            for name in MODELS:
                timed = run_case_fresh(args, task, name, batch_size, args.steps, memory=False)
                if args.device == "cpu":
                    timed["peak_mb"] = run_case_fresh(args, task, name, batch_size, 1, memory=True)["peak_mb"]
                result[name] = timed
            rows.append((task, batch_size, result))
            print(f"{task} batch {batch_size}: " + ", ".join(
                f"{name} {r['steps_per_s']:.2f} steps/s {r['peak_mb']:.0f} MB" for name, r in result.items()),
                file=sys.stderr, flush=True)

    memory = "peak MB"
    header = (f"| task | batch | Erwin steps/s | ErwinNSA steps/s | speed NSA/Erwin | Erwin {memory} | "
              f"ErwinNSA {memory} | memory NSA/Erwin | GFLOP/step Erwin / NSA | params Erwin / NSA |")
    lines = [header, "|" + "---|" * 10]
    for task, batch_size, result in rows:
        erwin, nsa = result["Erwin"], result["ErwinNSA"]
        lines.append(f"| {task} | {batch_size} | {erwin['steps_per_s']:.2f} | {nsa['steps_per_s']:.2f} | "
                     f"{nsa['steps_per_s'] / erwin['steps_per_s']:.2f} | {erwin['peak_mb']:.0f} | "
                     f"{nsa['peak_mb']:.0f} | {nsa['peak_mb'] / erwin['peak_mb']:.2f} | "
                     f"{erwin['gflop']:.1f} / {nsa['gflop']:.1f} | "
                     f"{erwin['parameters'] / 1e6:.2f}M / {nsa['parameters'] / 1e6:.2f}M |")
    print(f"device: {args.device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), torch {torch.__version__}")
    print("\n".join(lines) if args.markdown else "\n".join(line.replace("|", " ") for line in lines))


if __name__ == "__main__":
    main()
