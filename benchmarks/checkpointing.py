"""Peak memory and time of a training step with and without activation checkpointing.

One training step (train mode, forward, mean square of the output, backward; no optimizer) of a
preset on one random cloud of ``n`` points (uniform in the unit cube) with a kNN-16 graph; the graph
and the ball tree are built beforehand, as a dataset's transforms would. Every measurement runs in a
fresh Python process:

* memory: after a warm-up step on a cloud of one tree granule, the growth of the peak resident set
  (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) during the step over the resident set
  just before it, with glibc told to give every freed block above 128 KiB back to the system so that
  the resident set follows the live tensors (as ``benchmarks/model.py`` measures). Activations,
  saved tensors, gradients and temporaries count; parameters and inputs exist before and do not.
  On CUDA, ``torch.cuda.max_memory_allocated`` during the step over the memory allocated before it.
* time: the median wall time of ``--repeats`` steps after one warm-up step on the same cloud, in a
  process without those glibc settings (which make every large allocation page-fault anew).

    python benchmarks/checkpointing.py                       # md-small, 2^16 points
    python benchmarks/checkpointing.py --points 4096 --preset md-small --model erwin-nsa --nsa-preset md-base
    python benchmarks/checkpointing.py --markdown --repeats 3

:func:`measure` is the reusable part: ``measure(n, preset, checkpoint) -> dict``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from typing import Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _table import print_table  # noqa: E402
from nsa import run_memory_and_time, status_mb  # noqa: E402

from torch_geometric_erwin.nn import Erwin, knn_graph  # noqa: E402
from torch_geometric_erwin.nn.models.erwin_nsa import ErwinNSA  # noqa: E402
from torch_geometric_erwin.nn.models.presets import PRESETS  # noqa: E402
from torch_geometric_erwin.tree import granularity  # noqa: E402

KNN = 16
MODELS = ("erwin", "erwin-nsa")


def build_model(model: str, preset: str, checkpoint: bool, device: str) -> torch.nn.Module:
    """``Erwin.from_preset(preset)`` or ``ErwinNSA.from_preset(preset)`` (input width 16 for the latter)."""
    torch.manual_seed(0)
    if model == "erwin":
        built = Erwin.from_preset(preset, activation_checkpointing=checkpoint)
    else:
        built = ErwinNSA.from_preset(preset, in_channels=16, activation_checkpointing=checkpoint)
    return built.to(device).train()


def make_inputs(model: torch.nn.Module, n: int, device: str, seed: int = 0) -> dict:
    """A random cloud of ``n`` points, its kNN graph and the model's ball tree (built here, never measured)."""
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, model.dimensionality, generator=generator)
    x = torch.randn(n, model.in_channels, generator=generator)
    edge_index = knn_graph(pos, KNN, loop=True)
    tree = model.build_tree(pos)
    return dict(x=x.to(device), pos=pos.to(device), edge_index=edge_index.to(device), tree=tree.to(device))


def train_step(model: torch.nn.Module, inputs: dict, device: str) -> None:
    model.zero_grad(set_to_none=True)
    model(inputs["x"], inputs["pos"], edge_index=inputs["edge_index"], tree=inputs["tree"]).square().mean().backward()
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _granule(model: torch.nn.Module) -> int:
    if isinstance(model, Erwin):
        return granularity(model.ball_sizes, model.strides)
    return model.region_size


def case(spec: dict) -> dict:
    """One measurement (``spec["what"]``: ``"memory"`` or ``"time"``) in this process (run it in a fresh one)."""
    device = spec["device"]
    model = build_model(spec["model"], spec["preset"], spec["checkpoint"], device)
    if spec["what"] == "time":
        inputs = make_inputs(model, spec["n"], device)
        train_step(model, inputs, device)
        times = []
        for _ in range(spec["repeats"]):
            tic = time.perf_counter()
            train_step(model, inputs, device)
            times.append(time.perf_counter() - tic)
        return {"step_s": statistics.median(times)}
    # two coarsest slots per BatchNorm at least: a warm-up cloud of two granules
    train_step(model, make_inputs(model, 2 * _granule(model), device), device)
    inputs = make_inputs(model, spec["n"], device)
    model.zero_grad(set_to_none=True)
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        train_step(model, inputs, device)
        return {"peak_mb": (torch.cuda.max_memory_allocated() - base) / 2**20}
    base = status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident set
    train_step(model, inputs, device)
    return {"peak_mb": status_mb("VmHWM") - base}


def measure(n: int, preset: str, checkpoint: bool, model: str = "erwin", device: str = "cpu",
            repeats: int = 1, threads: Optional[int] = None) -> dict:
    """Peak memory (MiB) and median step time (s) of one training step of ``model`` with ``preset`` on
    ``n`` points, with or without activation checkpointing, each from a fresh process."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if model == "erwin" and preset not in PRESETS:
        raise ValueError(f"unknown Erwin preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    spec = dict(n=n, preset=preset, checkpoint=bool(checkpoint), model=model, device=device, repeats=repeats)
    return run_memory_and_time(__file__, spec, threads)


def print_results(rows: list, markdown: bool) -> None:
    plain = next(row for row in rows if not row["checkpoint"])
    header = ["activation checkpointing", "peak MiB", "step s", "memory vs none", "time vs none"]
    lines = [[("block" if row["checkpoint"] else "none"), f"{row['peak_mb']:.0f}", f"{row['step_s']:.2f}",
              f"{row['peak_mb'] / plain['peak_mb']:.2f}", f"{row['step_s'] / plain['step_s']:.2f}"] for row in rows]
    print_table(header, lines, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=2**16)
    parser.add_argument("--model", choices=MODELS, default="erwin")
    parser.add_argument("--preset", default=None,
                        help="Erwin preset (default md-small) or, with --model erwin-nsa, NSA preset (default md-base)")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per case (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case is not None:
        print(json.dumps(case(json.loads(args.case))))
        return
    preset = args.preset or ("md-small" if args.model == "erwin" else "md-base")
    rows = [measure(args.points, preset, checkpoint, args.model, args.device, args.repeats, args.threads)
            for checkpoint in (False, True)]
    print(f"{args.model} {preset}, one training step on {args.points} points, {args.device}, "
          f"{torch.get_num_threads()} threads")
    print_results(rows, args.markdown)


if __name__ == "__main__":
    main()
