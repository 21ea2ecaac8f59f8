"""Ball-tree construction: ours (C++ and PyTorch engines) against balltree-erwin and scikit-learn.

Runs every implementation on the same inputs in one process and prints median times and
ratios (reference time / our C++ time; > 1 means we are faster). Machines are noisy:
compare within one run. Optional competitors: ``pip install balltree-erwin scikit-learn joblib``.

    python benchmarks/tree_build.py [--repeats 7] [--markdown]
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from contextlib import ExitStack

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _table import print_table  # noqa: E402

from torch_geometric_erwin.tree import build_ball_tree  # noqa: E402
from torch_geometric_erwin.tree.engine import cpp_available  # noqa: E402

MD_BALLS, MD_STRIDES = [128, 128, 128, 64, 32], [2, 2, 2, 2]


def round_times(runs: dict, repeats: int, min_seconds: float) -> dict:
    """Wall time in ms of each callable in every round. Implementations take turns within every
    round, so a burst of load from elsewhere on the machine hits all of them alike. Each round
    takes them in a new random order: a call that follows scikit-learn + joblib (Python threads)
    finds the OpenMP workers asleep and pays to wake them, one that follows an OpenMP library finds
    them spinning, and a fixed order would give every round the same neighbours. Rounds continue
    until ``repeats`` rounds and ``min_seconds`` have passed."""
    for fn in runs.values():
        fn()  # warm-up (thread pools, allocations)
    names = list(runs)
    times = {name: [] for name in names}
    order = random.Random(0)
    start = time.perf_counter()
    while min(len(t) for t in times.values()) < repeats or time.perf_counter() - start < min_seconds:
        for name in order.sample(names, len(names)):
            tic = time.perf_counter()
            runs[name]()
            times[name].append(1e3 * (time.perf_counter() - tic))
    return times


def median_ms(runs: dict, repeats: int, min_seconds: float) -> dict:
    """Median wall time in ms of each callable over the rounds of :func:`round_times`."""
    return {name: statistics.median(t) for name, t in round_times(runs, repeats, min_seconds).items()}


def competitors(pos: torch.Tensor, batch: torch.Tensor, rotations: bool, stack: ExitStack):
    """name -> zero-argument callable building the same trees (``stack`` keeps joblib's thread
    pool alive between calls, so that no call pays for starting or stopping it)."""
    config = dict(ball_sizes=MD_BALLS, strides=MD_STRIDES, rotate=45.0) if rotations else {}
    runs = {}
    if cpp_available():
        runs["ours (C++)"] = lambda: build_ball_tree(pos, batch, engine_name="cpp", **config)
    runs["ours (PyTorch)"] = lambda: build_ball_tree(pos, batch, engine_name="torch", **config)
    try:
        import balltree
    except ImportError:
        balltree = None
    if balltree is not None:
        if rotations:
            runs["balltree-erwin"] = lambda: balltree.build_balltree_with_rotations(pos, batch, MD_STRIDES,
                                                                                    MD_BALLS, 45.0)
        else:
            runs["balltree-erwin"] = lambda: balltree.build_balltree(pos, batch)
    try:
        from joblib import Parallel, delayed
        from sklearn.neighbors import BallTree
    except ImportError:
        BallTree = None
    if BallTree is not None and not rotations:
        counts = torch.bincount(batch).tolist()
        clouds = np.split(pos.numpy(), np.cumsum(counts)[:-1])
        parallel = stack.enter_context(Parallel(n_jobs=os.cpu_count(), prefer="threads"))
        runs["scikit-learn + joblib"] = lambda: parallel(delayed(BallTree)(cloud, leaf_size=1) for cloud in clouds)
    return runs


def cases(quick: bool):
    sizes = [1024, 2048] if quick else [1024, 2048, 4096, 8192, 16384]
    for n in sizes:
        yield f"batch 16 x {n // 1024}k", 16, n, False
    yield "one 2^20 cloud", 1, 2**20, False
    for n in sizes[:3]:
        yield f"MD preset + rotations, 16 x {n // 1024}k", 16, n, True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="least timed rounds per case (median reported)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="least time spent per case")
    parser.add_argument("--quick", action="store_true", help="fewer sizes (a smoke run)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} torch threads, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    generator = torch.Generator().manual_seed(0)
    rows, names = [], []
    for label, num_graphs, num_nodes, rotations in cases(args.quick):
        pos = torch.rand(num_graphs * num_nodes, 3, generator=generator)
        batch = torch.arange(num_graphs).repeat_interleave(num_nodes)
        with ExitStack() as stack:
            timings = median_ms(competitors(pos, batch, rotations, stack), args.repeats, args.min_seconds)
        names += [name for name in timings if name not in names]
        rows.append((label, timings))
        print(label, {name: round(ms, 2) for name, ms in timings.items()}, flush=True)

    ours = "ours (C++)" if cpp_available() else "ours (PyTorch)"
    others = [name for name in names if name != ours]
    header = ["case"] + [f"{name} ms" for name in names] + [f"{name} / {ours}" for name in others]
    table = []
    for label, timings in rows:
        cells = [label] + [f"{timings[name]:.2f}" if name in timings else "-" for name in names]
        cells += [f"{timings[name] / timings[ours]:.2f}x" if name in timings else "-" for name in others]
        table.append(cells)
    print_table(header, table, args.markdown)


if __name__ == "__main__":
    main()
