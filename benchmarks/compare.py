"""Every model trained for the same wall-clock budget on the same data: one table of test error,
steps, time per step, peak memory and parameters.

The models are the examples' ``--model`` choices, built exactly as the examples build them
(``examples/<task>.py``: the same encoder, head, loss, optimiser settings and presets); the tasks
are small versions of two examples:

- ``nbody``: :class:`~torch_geometric_erwin.datasets.SyntheticNBody` (3-D gravity, generated):
  ``--nbody-graphs`` training graphs of ``--nbody-particles`` particles; metric: test MSE of the
  accelerations (normalised units).
- ``airfoil``: the Geo-FNO Airfoil format (2-D, relative L2 of the Mach number), on the package's
  fixture files with a learnable field (``write_airfoil(smooth=True)``: a wave over the grid,
  ``--airfoil-grid`` points per sample, the real split sizes) or, with ``--airfoil-data``, on the
  real files.

Each (task, model) trains in a fresh Python process: the number of steps that fits ``--budget``
seconds on this machine is measured first (:func:`~torch_geometric_erwin.training.trainer.steps_for_budget`,
as the examples' ``--time-budget`` does), then the model trains that many steps with the example's
schedule and ``--batch-size``, validates once at the end and is tested on ``--eval-samples`` samples
of the test split.
"ms/step" is the median wall time of the optimiser steps; "train s" the whole training loop (its
one validation and checkpoint included).
Peak memory is measured in a second fresh process: the growth of the peak resident set (``VmHWM``,
reset through ``/proc/self/clear_refs``) during one training step after a warm-up step on the same
batch, over the resident set before it, with glibc returning freed blocks at once
(``MALLOC_MMAP_THRESHOLD_``); it counts activations, gradients and temporaries, not parameters,
optimiser state or data. On CUDA it is ``torch.cuda.max_memory_allocated`` during that step.
"parameters" counts the backbone's. A model that fails (``erwin-nsa`` has no preset for these
tasks) gets a row saying why. Machines are noisy: compare within one run.

    python benchmarks/compare.py [--budget 10] [--tasks nbody airfoil] [--models erwin mpnn ...]
    python benchmarks/compare.py --budget 6 --output compare.md    # also write the table to a file
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import cpu_model, log  # noqa: E402
from nsa import measure_peak_mb, run_fresh  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("erwin", "mpnn", "transolver", "pointnet2", "ptv3")
#: task -> metric reported (the task's ``loss`` metric) and its name in the table
TASKS = {"nbody": "test MSE", "airfoil": "test rel. L2"}


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT


def example_argv(spec: dict) -> list:
    """The example's command line for ``spec``: its data, the model, one validation at the end."""
    argv = ["--data", spec["data"], "--model", spec["model"], "--seed", str(spec["seed"]), "--device",
            spec["device"], "--batch-size", str(spec["batch_size"]), "--no-progress", "--no-tensorboard",
            "--val-every", str(10**9)]
    if spec["task"] == "nbody":
        argv += ["--num-train", str(spec["nbody_graphs"]), "--num-eval", str(spec["eval_samples"]),
                 "--num-particles", str(spec["nbody_particles"])]
    return argv


def setup(spec: dict):
    """``(experiment, args, splits, task, context)`` of ``spec``, as the example's command line builds them."""
    from torch_geometric_erwin.training.checkpoint import seed_everything
    from torch_geometric_erwin.training.parser import parse_args
    from torch_geometric_erwin.training.distributed import DistributedContext, resolve_device

    experiment = load_example(spec["task"])
    args = parse_args(experiment, example_argv(spec))
    seed_everything(args.seed)
    factory = experiment.backbones[spec["model"]]
    task = experiment.build_task(lambda c_in: factory(c_in, args.size, experiment), args)
    train, val, test = experiment.load_splits(args, experiment.pre_transform(task.backbone))
    splits = (train, val[:spec["eval_samples"]], test[:spec["eval_samples"]])
    return experiment, args, splits, task, DistributedContext(device=resolve_device(args.device))


def run_case(spec: dict) -> dict:
    """``--case``: train for the budget (``mode`` ``"train"``) or measure one step's memory (``"memory"``)."""
    from torch_geometric_erwin.training.parser import train_config
    from torch_geometric_erwin.training.sampler import ResumableBatchSampler
    from torch_geometric_erwin.training.trainer import Trainer, steps_for_budget
    from torch_geometric.loader import DataLoader

    _, args, splits, task, context = setup(spec)
    config = train_config(args)
    with tempfile.TemporaryDirectory() as out_dir:
        if spec["mode"] == "memory":
            trainer = Trainer(task, *splits, config, out_dir, context)
            batch = next(iter(DataLoader(splits[0], batch_sampler=ResumableBatchSampler(**trainer.sampler_args))))
            trainer.train_step(batch)  # warm-up: optimiser state, thread pools, caches
            return {"peak_mb": measure_peak_mb(lambda: trainer.train_step(batch), str(context.device))}
        config.steps = steps_for_budget(task, splits[0], splits[1], config, spec["budget"], context, probe_steps=2)
        trainer = Trainer(task, *splits, config, out_dir, context)
        step_ms = []
        train_step = trainer.train_step

        def timed_step(batch):
            tic = time.perf_counter()
            loss = train_step(batch)  # returns a Python float: the step has finished on any device
            step_ms.append(1e3 * (time.perf_counter() - tic))
            return loss
        trainer.train_step = timed_step
        summary = trainer.fit()
    return {"metric": summary["test"]["loss"], "steps": summary["steps"], "train_s": summary["train_time_s"],
            "ms_per_step": statistics.median(step_ms),
            "parameters": sum(p.numel() for p in task.backbone.parameters())}


def prepare_data(task: str, args, root: str) -> str:
    """The data root of ``task`` (generated or written once here, read by every case)."""
    if task == "airfoil" and args.airfoil_data:
        return args.airfoil_data
    data = os.path.join(root, task)
    if task == "airfoil":
        from torch_geometric_erwin.testing import write_airfoil
        write_airfoil(os.path.join(data, "raw"), grid=tuple(args.airfoil_grid), smooth=True)
    spec = case_spec(task, MODELS[0], "train", data, args)
    # generates (nbody) or processes (airfoil) the files of the first model's pre-processing once; a model with
    # another (its own trees) processes its copy in its first case, before anything is measured
    setup(spec)
    return data


def case_spec(task: str, model: str, mode: str, data: str, args) -> dict:
    return dict(task=task, model=model, mode=mode, data=data, budget=args.budget, seed=args.seed,
                device=args.device, batch_size=args.batch_size, eval_samples=args.eval_samples, nbody_graphs=args.nbody_graphs,
                nbody_particles=args.nbody_particles)


def measure(task: str, model: str, data: str, args) -> dict:
    """One row: the training run and, on CPU, the memory run, each in a fresh process."""
    def fresh(mode, memory):
        command = [os.path.abspath(__file__), "--case", json.dumps(case_spec(task, model, mode, data, args))]
        return json.loads(run_fresh(command, args.threads, memory=memory, what=f"{task}/{model} {mode}"))
    try:
        row = fresh("train", memory=False)
        row["peak_mb"] = fresh("memory", memory=args.device == "cpu")["peak_mb"]
    except RuntimeError as error:
        last = [line for line in str(error).strip().splitlines() if line.strip()][-1]
        return {"error": re.sub(r"^[\w.]+\.(\w+: )", r"\1", last)[-300:]}  # "UsageError: ...", not its module
    return row


def table(results: dict) -> str:
    header = ["task", "model", "test metric", "steps", "train s", "ms/step (median)", "peak MB", "parameters"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, rows in results.items():
        for model, row in rows.items():
            if "error" in row:
                cells = [f"failed: {row['error'].replace('|', '/')}"] + [""] * (len(header) - 3)
            else:
                cells = [f"{row['metric']:.4g}", str(row["steps"]), f"{row['train_s']:.1f}",
                         f"{row['ms_per_step']:.0f}" if row["ms_per_step"] >= 100 else f"{row['ms_per_step']:.1f}",
                         f"{row['peak_mb']:.0f}", f"{row['parameters']:,}"]
            lines.append("| " + " | ".join([f"{task} ({TASKS[task]})", model] + cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=10.0, help="training seconds per model and task")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        help="the examples' --model names (erwin-nsa has no preset for these tasks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per case (CPU)")
    parser.add_argument("--batch-size", type=int, default=4, help="graphs per training batch (every model)")
    parser.add_argument("--eval-samples", type=int, default=16, help="validation and test samples per task")
    parser.add_argument("--nbody-graphs", type=int, default=64, help="nbody training graphs")
    parser.add_argument("--nbody-particles", type=int, default=512, help="particles per nbody graph")
    parser.add_argument("--airfoil-grid", type=int, nargs=2, default=[45, 11], metavar=("H", "W"),
                        help="grid of the airfoil fixture (the real one is 221 x 51)")
    parser.add_argument("--airfoil-data", default=None, help="root of the real Airfoil data instead of the fixture")
    parser.add_argument("--data-dir", default=None, help="where to generate the data (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="also write the Markdown table to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget:g}")
    for option in ("batch_size", "eval_samples", "nbody_graphs", "nbody_particles"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be positive, got {getattr(args, option)}")
    known = sorted(load_example("nbody").backbones)
    unknown = [model for model in args.models if model not in known]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_model()
    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            data = prepare_data(task, args, args.data_dir or tmp)
            results[task] = {}
            for model in args.models:
                results[task][model] = measure(task, model, data, args)
                log(f"{task}/{model}: {results[task][model]}")
    text = (f"device: {args.device} ({device}), {os.cpu_count()} logical cores, torch {torch.__version__}; "
            f"budget {args.budget:g} s per model; {time.strftime('%Y-%m-%d')}\n\n{table(results)}")
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")
    log(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
