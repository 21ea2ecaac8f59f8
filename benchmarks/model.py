"""Speed and peak memory of the Erwin model, against the reference implementation when given.

Three measurements, all on random clouds (uniform in the unit cube) with a kNN-16 graph:

1. The reference README configuration (``c_hidden`` 32..512, ball size 128 at every level,
   strides 2, heads 2..32, depths 2/2/2/6/2 and 2/2/2/2, ``rotate`` 45, ``mp_steps`` 3) at
   batch 16 x {1024, 2048, 4096} points: forward and forward+backward time and peak memory.
2. The runtime exponent: the same model on one cloud of n = 1k, 2k, ..., 64k points, and the
   least-squares slope of log(time) over log(n).
3. Tree padding: power-of-two against compact padding on batches of 5000-point clouds, for the
   README configuration (granularity 2048) and the same model with the MD preset's ball sizes
   128/128/128/64/32 (granularity 512).

The ball tree and the kNN graph are built once per case, outside the timed region, and both
models run on the same tree and edges (the reference takes them as ``tree_idx``, ``tree_mask``
and ``tree_idx_rot``), so they do identical maths. "Forward" is inference (eval mode, no
autograd); "forward+backward" is a training step without the optimizer (train mode, forward,
mean-square of the output, backward). Times are medians over ``--repeats`` rounds after one
warm-up call; our model and the reference take turns within every round, so load from
elsewhere on the machine hits both alike. In the README measurement the speed-up is the median,
over rounds, of the reference's time over ours in the same round: a shared machine's speed
drifts over minutes, and a ratio within a round cancels the drift that a ratio of two medians
keeps. Compare ratios within one run.

On CPU the README measurement also counts the minor page faults of every call (``getrusage``):
memory the allocator has just taken from the system is zeroed by the kernel on first touch, and
on a VM that costs as much as a good part of the arithmetic. Under glibc's default settings both
models page-fault on every step, the reference more (it materialises larger temporaries), and how
much a fault costs swings with the machine's load. ``--steady-heap`` runs the whole benchmark
under glibc settings that keep freed memory in the heap (``MALLOC_MMAP_MAX_=0``,
``MALLOC_TRIM_THRESHOLD_``): after the warm-up no call faults, and the times compare arithmetic
and memory traffic alone. In one process the two models also share glibc's heap: whichever runs
after the other inherits the thresholds that the other's frees raised. ``--separate-processes``
times each model of the README measurement in a process of its own, stepped in turns, as each
would run in a user's training job.

Peak memory is measured for every (model, mode, size) in a fresh subprocess. On CPU it is the
growth of the process's peak resident set (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``) during one call over the resident set just before it, after a warm-up
call on a small cloud; glibc is told to give every freed block above 128 KiB back to the system
(``MALLOC_MMAP_THRESHOLD_``) so freed activations do not linger. It counts activations, saved
tensors, gradients and temporaries; parameters and inputs exist before the call and are not
counted. On CUDA it is ``torch.cuda.max_memory_allocated`` during the call minus the memory
allocated before it.

    python benchmarks/model.py [--reference PATH] [--repeats 3] [--device cpu] [--markdown]
    python benchmarks/model.py --quick      # small sizes, a smoke run
    python benchmarks/model.py --reference PATH --sections readme   # one measurement only
    python benchmarks/model.py --reference PATH --sections readme --steady-heap   # without page faults
    python benchmarks/model.py --reference PATH --sections readme --separate-processes
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _reference import load_reference_erwin  # noqa: E402
from _table import print_table  # noqa: E402
from nsa import measure_peak_mb, run_fresh  # noqa: E402
from tree_build import median_ms, round_times  # noqa: E402

from torch_geometric_erwin.nn import Erwin, knn_graph  # noqa: E402
from torch_geometric_erwin.tree import build_ball_tree, granularity  # noqa: E402

#: The configuration of the reference README (its ``rotate`` 0 there disables the rotated trees;
#: the benchmark uses 45 degrees, as the paper's experiments do), in the reference's argument names.
README_CONFIG = dict(c_in=32, c_hidden=[32, 64, 128, 256, 512], ball_sizes=[128, 128, 128, 128, 128],
                     enc_num_heads=[2, 4, 8, 16, 32], enc_depths=[2, 2, 2, 6, 2], dec_num_heads=[4, 4, 8, 16],
                     dec_depths=[2, 2, 2, 2], strides=[2, 2, 2, 2], rotate=45, mlp_ratio=4, dimensionality=3,
                     mp_steps=3)
#: The README configuration with the MD preset's ball sizes (granularity 512 instead of 2048).
MD_BALLS_CONFIG = dict(README_CONFIG, ball_sizes=[128, 128, 128, 64, 32])
CONFIGS = {"readme": README_CONFIG, "md-balls": MD_BALLS_CONFIG}
KNN = 16
OURS, REFERENCE = "ours", "reference"
#: glibc settings of ``--steady-heap``: never serve a block by mmap, never give the heap's top back.
STEADY_HEAP_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


# ---------------------------------------------------------------------------------------------- inputs, models
def make_inputs(num_graphs: int, num_points: int, config: dict, padding: str, device: str, seed: int = 0) -> dict:
    """Random clouds, their kNN graph and ball tree (built here, never timed)."""
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(num_graphs * num_points, config["dimensionality"], generator=generator)
    x = torch.randn(pos.shape[0], config["c_in"], generator=generator)
    batch = torch.arange(num_graphs).repeat_interleave(num_points)
    edge_index = knn_graph(pos, KNN, batch)
    tree = build_ball_tree(pos, batch, ball_sizes=config["ball_sizes"], strides=config["strides"],
                           rotate=float(config["rotate"]), padding=padding)
    return dict(x=x.to(device), pos=pos.to(device), batch=batch.to(device), edge_index=edge_index.to(device),
                tree=tree.to(device))


def make_models(config: dict, padding: str, device: str, reference, seed: int = 0) -> Dict[str, torch.nn.Module]:
    """Our model and, with a reference module, the reference model with the same weights."""
    torch.manual_seed(seed)
    if reference is None:
        ours = Erwin(config["c_in"], config["c_hidden"], config["ball_sizes"], config["enc_num_heads"],
                     config["enc_depths"], config["dec_num_heads"], config["dec_depths"], config["strides"],
                     rotate=float(config["rotate"]), mlp_ratio=config["mlp_ratio"],
                     dimensionality=config["dimensionality"], mp_steps=config["mp_steps"], padding=padding)
        return {OURS: ours.to(device)}
    ref = reference.ErwinTransformer(**config)
    ours = Erwin.from_reference(ref.state_dict(), **config, padding=padding)
    return {OURS: ours.to(device), REFERENCE: ref.to(device)}


def call(name: str, model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    x, pos, batch, edge_index, tree = (inputs[k] for k in ("x", "pos", "batch", "edge_index", "tree"))
    if name == OURS:
        return model(x, pos, batch, edge_index, tree=tree)
    # the reference pops its rotated orders off the list it is given
    return model(x, pos, batch, edge_index, tree_idx=tree.index, tree_mask=tree.mask,
                 tree_idx_rot=list(tree.rotated))


def step_fn(name: str, model: torch.nn.Module, inputs: dict, mode: str, device: str) -> Callable[[], None]:
    """A zero-argument callable: ``mode`` ``"fwd"`` (eval, no autograd) or ``"train"`` (forward+backward)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def forward():
        model.eval()
        with torch.no_grad():
            call(name, model, inputs)
        sync()

    def train():
        model.train()
        model.zero_grad(set_to_none=True)
        call(name, model, inputs).square().mean().backward()
        sync()

    return forward if mode == "fwd" else train


def counting_faults(fn: Callable[[], None], faults: List[int]) -> Callable[[], None]:
    """``fn`` that appends the minor page faults of the process during each call to ``faults``."""
    def counted():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counted


def attention_kernels(config: dict, device: str) -> Dict[str, str]:
    """The scaled-dot-product-attention kernels our model runs, per mode, read off the profiler on a small cloud."""
    inputs = make_inputs(1, granularity(config["ball_sizes"], config["strides"]), config, "pow2", device)
    model = make_models(config, "pow2", device, None)[OURS]
    kernels = {}
    for mode in ("fwd", "train"):
        fn = step_fn(OURS, model, inputs, mode, device)
        with torch.profiler.profile() as prof:
            fn()
        names = {event.key.removeprefix("aten::") for event in prof.key_averages()
                 if "attention" in event.key.lower() and "backward" not in event.key.lower()
                 and event.key not in ("aten::scaled_dot_product_attention", "aten::_fused_sdp_choice")}
        kernels[mode] = ", ".join(sorted(names)) or "none found"
    return kernels


# ---------------------------------------------------------------------------------------------- one model per process
def step_worker(spec: dict) -> None:
    """``--step-worker``: one model's step on one case, once per ``step`` line on stdin; prints
    ``ready`` after a warm-up call, then one JSON line (wall ms, minor page faults) per step."""
    reference = load_reference_erwin(spec["reference"]) if spec["reference"] else None
    model = make_models(README_CONFIG, "pow2", spec["device"], reference)[spec["model"]]
    inputs = make_inputs(spec["num_graphs"], spec["num_points"], README_CONFIG, "pow2", spec["device"])
    faults = []
    step = counting_faults(step_fn(spec["model"], model, inputs, spec["mode"], spec["device"]), faults)
    step()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        tic = time.perf_counter()
        step()
        print(json.dumps({"ms": 1e3 * (time.perf_counter() - tic), "faults": faults[-1]}), flush=True)


def rounds_in_processes(names: List[str], spec: dict, repeats: int,
                        threads) -> Tuple[Dict[str, List[float]], Dict[str, List[int]]]:
    """Like :func:`round_times`, with every model in a Python process of its own (started one after
    the other, then stepped in turns, in a new random order every round): each model's heap is then
    its own, as in a user's training process. Returns the rounds' wall times and page faults."""
    workers = {}
    try:
        for name in names:
            command = [sys.executable, os.path.abspath(__file__), "--step-worker", json.dumps({**spec, "model": name})]
            worker = subprocess.Popen(command + (["--threads", str(threads)] if threads else []), text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            workers[name] = worker
            while (line := worker.stdout.readline()) and line.strip() != "ready":
                pass
            if not line:
                raise RuntimeError(f"step worker {name} for {spec} exited: {worker.wait()}")
        times, faults = {name: [] for name in names}, {name: [] for name in names}
        order = random.Random(0)
        for _ in range(repeats):
            for name in order.sample(names, len(names)):
                workers[name].stdin.write("step\n")
                workers[name].stdin.flush()
                result = json.loads(workers[name].stdout.readline())
                times[name].append(result["ms"])
                faults[name].append(result["faults"])
        return times, faults
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()


# ---------------------------------------------------------------------------------------------- peak memory
def measure_memory(spec: dict) -> float:
    """Peak memory (MiB) of one call, in this process (run it in a fresh one)."""
    device = spec["device"]
    reference = load_reference_erwin(spec["reference"]) if spec["model"] == REFERENCE else None
    config = CONFIGS[spec["config"]]
    models = make_models(config, spec["padding"], device, reference)
    model = models[spec["model"]]
    del models
    small = make_inputs(1, granularity(config["ball_sizes"], config["strides"]), config, spec["padding"], device)
    step_fn(spec["model"], model, small, spec["mode"], device)()  # warm-up: thread pools, kernels, allocator
    inputs = make_inputs(spec["num_graphs"], spec["num_points"], config, spec["padding"], device)
    fn = step_fn(spec["model"], model, inputs, spec["mode"], device)
    model.zero_grad(set_to_none=True)
    del small
    return measure_peak_mb(fn, device)


def peak_memory(model: str, mode: str, num_graphs: int, num_points: int, args, config: str = "readme",
                padding: str = "pow2") -> float:
    spec = dict(model=model, mode=mode, num_graphs=num_graphs, num_points=num_points, config=config,
                padding=padding, device=args.device, reference=args.reference)
    return float(run_fresh([os.path.abspath(__file__), "--memory-case", json.dumps(spec)], args.threads,
                           memory=True, what=f"memory case {spec}"))



def fmt_ms(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


def exponent(sizes: List[int], times: List[float]) -> float:
    """Least-squares slope of log(time) over log(size)."""
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- sections
def readme_section(args, reference) -> None:
    num_graphs, sizes = (1, [1024]) if args.quick else (16, [1024, 2048, 4096])
    names = [OURS] + ([REFERENCE] if reference else [])
    models = make_models(README_CONFIG, "pow2", args.device, reference)
    time_rows, memory_rows, fault_rows = [], [], []
    for num_points in sizes:
        inputs = make_inputs(num_graphs, num_points, README_CONFIG, "pow2", args.device)
        slots = inputs["tree"].index.numel() // num_graphs
        times, speedups, faults = {}, {}, {}
        for mode in ("fwd", "train"):
            if args.separate_processes:
                spec = dict(num_graphs=num_graphs, num_points=num_points, mode=mode, device=args.device,
                            reference=args.reference)
                rounds, calls = rounds_in_processes(names, spec, args.repeats, args.threads)
            else:
                calls = {name: [] for name in names}
                runs = {name: counting_faults(step_fn(name, models[name], inputs, mode, args.device), calls[name])
                        for name in names}
                rounds = round_times(runs, args.repeats, 0.0)
                calls = {name: counts[1:] for name, counts in calls.items()}  # without the warm-up call
            times[mode] = {name: statistics.median(t) for name, t in rounds.items()}
            faults[mode] = {name: statistics.median(counts) for name, counts in calls.items()}
            if reference:
                speedups[mode] = statistics.median(r / o for r, o in zip(rounds[REFERENCE], rounds[OURS]))
            log(f"batch {num_graphs} x {num_points} {mode}, rounds: "
                + ", ".join(f"{name} {' '.join(f'{ms:.0f}' for ms in t)} ms" for name, t in rounds.items())
                + "; minor page faults: "
                + ", ".join(f"{name} {' '.join(str(c) for c in counts)}" for name, counts in calls.items()))
        memory = {mode: {name: peak_memory(name, mode, num_graphs, num_points, args) for name in names}
                  for mode in ("fwd", "train")}
        log(f"batch {num_graphs} x {num_points} peak MB: {memory}")
        label = f"{num_graphs} x {num_points} ({slots} slots)"
        time_row, memory_row = [label], [label]
        fault_rows.append([label] + [f"{faults[mode][name] / 1e3:.0f}" for mode in ("fwd", "train") for name in names])
        for mode in ("fwd", "train"):
            time_row += [fmt_ms(times[mode][name]) for name in names]
            memory_row += [f"{memory[mode][name]:.0f}" for name in names]
            if reference:
                time_row.append(f"{speedups[mode]:.2f}x")
                memory_row.append(f"{memory[mode][OURS] / memory[mode][REFERENCE]:.2f}")
        time_rows.append(time_row)
        memory_rows.append(memory_row)
    header_time, header_memory = ["batch x points"], ["batch x points"]
    for mode in ("fwd", "fwd+bwd"):
        header_time += [f"{mode} {name} ms" for name in names]
        header_memory += [f"{mode} {name} MB" for name in names]
        if reference:
            header_time.append(f"{mode} speed-up (ref / ours)")
            header_memory.append(f"{mode} memory ours / ref")
    print_table(header_time, time_rows, args.markdown, "Time, reference README configuration")
    print_table(header_memory, memory_rows, args.markdown, "Peak memory, reference README configuration")
    if args.device == "cpu":
        header_faults = ["batch x points"] + [f"{mode} {name}" for mode in ("fwd", "fwd+bwd") for name in names]
        print_table(header_faults, fault_rows, args.markdown,
                    "Minor page faults per call (thousands, median over rounds), reference README configuration")


def scaling_section(args, reference) -> None:
    sizes = [1024 * 2**i for i in range(3 if args.quick else 7)]
    models = make_models(README_CONFIG, "pow2", args.device, reference)
    columns = [(OURS, "fwd"), (OURS, "train")] + ([(REFERENCE, "train")] if reference else [])
    results = {column: [] for column in columns}
    rows = []
    for num_points in sizes:
        inputs = make_inputs(1, num_points, README_CONFIG, "pow2", args.device)
        runs = {column: step_fn(column[0], models[column[0]], inputs, column[1], args.device) for column in columns}
        times = median_ms(runs, args.repeats, 0.0)
        for column in columns:
            results[column].append(times[column])
        log(f"scaling n={num_points}: " + ", ".join(f"{c[0]} {c[1]} {ms:.0f} ms" for c, ms in times.items()))
        row = [str(num_points), str(inputs["tree"].index.numel())] + [fmt_ms(times[c]) for c in columns]
        if reference:
            row.append(f"{times[(REFERENCE, 'train')] / times[(OURS, 'train')]:.2f}x")
        rows.append(row)
    fit = ["exponent (least squares)", ""] + [f"{exponent(sizes, results[c]):.2f}" for c in columns]
    rows.append(fit + ([""] if reference else []))
    if len(sizes) > 4:
        tail = ["exponent (8k..64k)", ""] + [f"{exponent(sizes[3:], results[c][3:]):.2f}" for c in columns]
        rows.append(tail + ([""] if reference else []))
    header = ["points", "slots", "ours fwd ms", "ours fwd+bwd ms"]
    if reference:
        header += ["reference fwd+bwd ms", "fwd+bwd speed-up (ref / ours)"]
    print_table(header, rows, args.markdown, "Runtime exponent, batch 1, reference README configuration")


def padding_section(args, reference=None) -> None:
    """Our model only: the reference has no compact padding."""
    num_graphs, num_points = (1, 5000) if args.quick else (16, 5000)
    configs = ["readme"] if args.quick else ["readme", "md-balls"]
    rows = []
    for config_name in configs:
        config = CONFIGS[config_name]
        grain = granularity(config["ball_sizes"], config["strides"])
        runs, slots = {}, {}
        for padding in ("pow2", "compact"):
            model = make_models(config, padding, args.device, None)[OURS]
            inputs = make_inputs(num_graphs, num_points, config, padding, args.device)
            slots[padding] = inputs["tree"].index.numel() // num_graphs
            for mode in ("fwd", "train"):
                runs[(padding, mode)] = step_fn(OURS, model, inputs, mode, args.device)
        times = median_ms(runs, args.repeats, 0.0)
        log(f"padding {config_name}: " + ", ".join(f"{k[0]} {k[1]} {ms:.0f} ms" for k, ms in times.items()))
        balls = "/".join(str(b) for b in config["ball_sizes"])
        for padding in ("pow2", "compact"):
            rows.append([f"balls {balls} (granularity {grain})", padding, str(slots[padding]),
                         fmt_ms(times[(padding, "fwd")]), fmt_ms(times[(padding, "train")]),
                         "" if padding == "pow2" else
                         f"{times[('pow2', 'fwd')] / times[('compact', 'fwd')]:.2f}x / "
                         f"{times[('pow2', 'train')] / times[('compact', 'train')]:.2f}x"])
    header = ["configuration", "padding", "slots per cloud", "fwd ms", "fwd+bwd ms",
              "speed-up of compact (fwd / fwd+bwd)"]
    print_table(header, rows, args.markdown, f"Padding, batch {num_graphs} x {num_points} points")


SECTIONS = {"readme": readme_section, "scaling": scaling_section, "padding": padding_section}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", metavar="PATH", default=None,
                        help="a local checkout of the reference code (https://github.com/maxxxzdn/erwin): "
                             "time its model on the same inputs and print ratios")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case, median reported "
                        "(default: 3, or 1 with --quick)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU; default: torch's)")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--markdown", action="store_true", help="print the tables in Markdown")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS),
                        help="which measurements to run (default: all)")
    parser.add_argument("--steady-heap", action="store_true",
                        help="time under glibc settings that keep freed memory in the heap, so that no call "
                             "page-faults after the warm-up (peak memory is measured as without it)")
    parser.add_argument("--separate-processes", action="store_true",
                        help="README measurement: time each model in a process of its own (its own heap, as "
                             "in a user's training run) instead of both in this one")
    parser.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--step-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steady_heap = all(os.environ.get(k) == v for k, v in STEADY_HEAP_ENV.items())
    if args.steady_heap and not steady_heap:
        # glibc reads these when the process starts: run the benchmark again under them
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **STEADY_HEAP_ENV})
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_case:
        print(measure_memory(json.loads(args.memory_case)))
        return
    if args.step_worker:
        step_worker(json.loads(args.step_worker))
        return
    reference = None
    if args.reference:
        if not os.path.isfile(os.path.join(args.reference, "models", "erwin.py")):
            raise ValueError(f"--reference {args.reference}: no models/erwin.py there")
        reference = load_reference_erwin(args.reference)

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_model()
    print(f"device: {args.device} ({device}), {os.cpu_count()} logical cores, {torch.get_num_threads()} torch "
          f"threads, torch {torch.__version__}; repeats {args.repeats}; reference: "
          f"{'yes' if reference else 'no'}; heap: {'steady (--steady-heap)' if steady_heap else 'glibc defaults'}; "
          f"README models timed {'each in its own process' if args.separate_processes else 'in this process'}")
    kernels = attention_kernels(README_CONFIG, args.device)
    print(f"attention kernel (ours): forward {kernels['fwd']}; forward+backward {kernels['train']}")
    start = time.perf_counter()
    for section in args.sections:
        SECTIONS[section](args, reference)
    log(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
