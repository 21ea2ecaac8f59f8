"""The examples' runner: :func:`run` an :class:`~torch_geometric_erwin.training.experiment.Experiment`.

:func:`main` parses the command line (:mod:`~torch_geometric_erwin.training.parser`), builds every
``--model`` once to check it, loads the datasets with each model's ``pre_transform``
(:meth:`~torch_geometric_erwin.training.experiment.Experiment.pre_transform`: the tree and the graph
of a static experiment; models with the same one share the loaded splits), and trains the models one
after the other; it works under ``torchrun``. Each model's run goes to ``OUT/<model>/``
(``metrics.csv``, ``tensorboard/``, ``checkpoints/``, ``results.json``); ``OUT/`` gets
``results.json``, ``results.md`` and ``results.csv`` (one row per model, merged with the rows of
earlier runs into the same ``OUT/``, so training one model again keeps the others'; see
:mod:`~torch_geometric_erwin.training.results`), ``loss_curves.png`` and ``ball_tree.png`` (the
ball-tree partition of the first training sample).

``<example>.py predict --checkpoint OUT/<model>/checkpoints/best.pt --split test`` writes a trained
run's predictions and metrics (:mod:`~torch_geometric_erwin.training.predict`). ``--resume`` continues a
run with its saved options, refusing changed ones, and ``--steps N`` extends it
(:mod:`~torch_geometric_erwin.training.run_record`).

Bad input (unknown choice, missing data root, a root without the expected layout) ends
the program with one line on stderr and exit status 2, never a traceback (``--debug`` shows it).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch_geometric.io import fs

from torch_geometric_erwin.datasets.base import describe
from torch_geometric_erwin.datasets.io.atomic import atomic_json, atomic_write, temporary_path
from torch_geometric_erwin.training.checkpoint import seed_everything
from torch_geometric_erwin.training.distributed import (DistributedContext, destroy_distributed,
                                                        init_distributed)
from torch_geometric_erwin.training.errors import UsageError
from torch_geometric_erwin.training.experiment import Experiment
from torch_geometric_erwin.training.parser import parse_args, train_config
from torch_geometric_erwin.training.results import merge_results, results_csv, results_table
from torch_geometric_erwin.training.run_record import resolve_resume, run_record
from torch_geometric_erwin.training.trainer import Trainer, steps_for_budget

#: ``(train, val, test)`` datasets.
Splits = Tuple[Any, Any, Any]


def write_synthetic_data(experiment: Experiment, root: str) -> None:
    """``--synthetic``: the experiment's tiny raw files under ``root/raw``, unless already there. They are
    written to a temporary folder beside it and moved in place whole, so an interrupted write leaves
    nothing that a later run would take for complete."""
    raw = root.rstrip("/") + "/raw"
    if experiment.synthetic_data is None or fs.exists(raw):
        return
    filesystem = fs.get_fs(raw)
    tmp = temporary_path(raw)
    try:
        experiment.synthetic_data(tmp)
        filesystem.mv(tmp, raw, recursive=True)
    finally:
        if filesystem.exists(tmp):
            filesystem.rm(tmp, recursive=True)


def with_activation_checkpointing(backbone: nn.Module, model_name: str) -> nn.Module:
    """``backbone`` with its ``activation_checkpointing`` switched on (``--activation-checkpointing``)."""
    if not hasattr(backbone, "activation_checkpointing"):
        raise UsageError(f"--activation-checkpointing: {model_name} has no activation checkpointing (erwin and "
                         "erwin-nsa have); drop the flag for it")
    backbone.activation_checkpointing = True
    return backbone


def train_models(experiment: Experiment, args: argparse.Namespace, context: DistributedContext,
                 splits_of: Callable[[str], Splits]) -> List[Dict[str, Any]]:
    """Train every ``--model`` on its ``splits_of(model_name)`` (:class:`ModelSplits`); returns one
    result row per model."""
    from torch_geometric_erwin.training.plots import plot_loss_curves
    rows = []
    for model_name in args.model:
        splits = splits_of(model_name)
        factory = experiment.backbones[model_name]
        seed_everything(args.seed)
        if getattr(args, "activation_checkpointing", False):
            backbone = lambda c_in: with_activation_checkpointing(factory(c_in, args.size, experiment), model_name)
        else:
            backbone = lambda c_in: factory(c_in, args.size, experiment)
        task = experiment.build_task(backbone, args)
        out_dir = os.path.join(args.out, model_name)
        config, budget = train_config(args), None
        if model_name in getattr(args, "_resume_steps", {}):
            config.steps = args._resume_steps[model_name]
        elif args.time_budget is not None:
            budget = args.time_budget.get(model_name) if isinstance(args.time_budget, dict) else args.time_budget
            if budget is None:
                raise UsageError(f"the default time budget has no entry for {model_name}: pass --steps or "
                                 "--time-budget")
            config.steps = steps_for_budget(task, splits[0], splits[1], config, budget, context)
            if context.is_main:
                print(f"{model_name}: {config.steps} steps fit a budget of {budget:g} s",
                      file=sys.stderr)
        record = run_record(experiment.name, args, model_name, config.steps, budget)
        trainer = Trainer(task, *splits, config, out_dir, context, name=f"{experiment.name}/{model_name}",
                          run_config=record)
        start = time.perf_counter()
        summary = trainer.fit(resume=args.resume)
        row = {"experiment": experiment.name, "model": model_name, "size": args.size,
               "num_parameters": summary["num_parameters"], "steps": summary["steps"],
               "wall_time_s": time.perf_counter() - start, "train_time_s": summary["train_time_s"],
               "best_val": summary["val"], "test": summary.get("test", {}),
               "final_train_loss": summary["train_loss"][-1] if summary["train_loss"] else None,
               "config": record}
        if experiment.report is not None and context.is_main:
            row.update(experiment.report(task, trainer, summary, args, out_dir))
        if context.is_main:
            atomic_json(row, os.path.join(out_dir, "results.json"))
            plot_loss_curves({model_name: os.path.join(out_dir, "metrics.csv")},
                             os.path.join(out_dir, "loss_curves.png"))
        rows.append(row)
    return rows


#: Input width the backbones are built with by :func:`check_models` (any width builds the same model).
_PROBE_WIDTH = 8


def check_models(experiment: Experiment, args: argparse.Namespace) -> Dict[str, Optional[Callable]]:
    """Build every ``--model``'s backbone once, at a placeholder input width, before any data or training
    work: a model the experiment cannot build (``erwin-nsa`` where neither paper has a configuration, an
    option it does not take) stops the run before the models listed before it have trained. Returns
    every model's datasets ``pre_transform`` (:meth:`Experiment.pre_transform`)."""
    pre_transforms = {}
    for model_name in args.model:
        backbone = experiment.backbones[model_name](_PROBE_WIDTH, args.size, experiment)
        if getattr(args, "activation_checkpointing", False):
            with_activation_checkpointing(backbone, model_name)
        pre_transforms[model_name] = experiment.pre_transform(backbone)
    return pre_transforms


class ModelSplits:
    """``splits(model_name) -> (train, val, test)``, called once per ``--model`` in order: the
    experiment's datasets loaded with the model's ``pre_transform`` (validation and test cut to
    ``--eval-limit``), once per distinct pre-processing and kept only while a later model needs them.

    Args:
        pre_transforms: model name -> its ``pre_transform`` (:func:`check_models`).
    """

    def __init__(self, experiment: Experiment, args: argparse.Namespace,
                 pre_transforms: Dict[str, Optional[Callable]]):
        self.experiment, self.args, self.pre_transforms = experiment, args, pre_transforms
        self.remaining = list(args.model)
        self.loaded: Dict[str, Splits] = {}
        #: The first training sample loaded (the ball-tree plot's).
        self.first_sample = None

    def __call__(self, model_name: str) -> Splits:
        self.remaining.remove(model_name)
        key = describe(self.pre_transforms[model_name])
        if key not in self.loaded:
            splits = self.experiment.load_splits(self.args, self.pre_transforms[model_name])
            if self.args.eval_limit is not None:
                splits = (splits[0], *(split[:self.args.eval_limit] for split in splits[1:]))
            self.loaded[key] = splits
        splits = self.loaded[key]
        if self.first_sample is None:
            self.first_sample = splits[0][0]
        for unused in set(self.loaded) - {describe(self.pre_transforms[name]) for name in self.remaining}:
            del self.loaded[unused]
        return splits


def check_run_dependencies(args: argparse.Namespace) -> None:
    """Raise :class:`ImportError` before any data or training work for an optional package this run will
    need: matplotlib (the run's plots), tensorboard (unless ``--no-tensorboard``) and wandb (``--wandb``).
    A dataset's own format packages (h5py, ...) are asked for when it is loaded, which also comes first."""
    import importlib.util
    needed = [("matplotlib", "the run's plots (loss_curves.png, ball_tree.png) need it")]
    if not args.no_tensorboard:
        needed.append(("tensorboard", "TensorBoard logging needs it; or pass --no-tensorboard"))
    if args.wandb:
        needed.append(("wandb", "--wandb needs it"))
    for module, why in needed:
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"{module} is not installed: {why} (pip install {module})")


def main(experiment: Experiment, argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Parse ``argv``, train and test every requested model, write the results; returns the rows."""
    from torch_geometric_erwin.training.plots import plot_first_sample_tree, plot_loss_curves
    args = resolve_resume(parse_args(experiment, argv))
    check_run_dependencies(args)
    pre_transforms = check_models(experiment, args)
    if args.synthetic:
        write_synthetic_data(experiment, args.data)
    elif experiment.default_data is None:
        experiment.check_root(args.data)
    context = init_distributed(args.device)
    try:
        torch.set_float32_matmul_precision("high")
        seed_everything(args.seed)
        splits = ModelSplits(experiment, args, pre_transforms)
        rows = train_models(experiment, args, context, splits)
        if context.is_main:
            os.makedirs(args.out, exist_ok=True)
            merged = merge_results(os.path.join(args.out, "results.json"), rows)
            atomic_json(merged, os.path.join(args.out, "results.json"))
            table = results_table(merged)
            with atomic_write(os.path.join(args.out, "results.md"), "w") as handle:
                handle.write(table + "\n")
            with atomic_write(os.path.join(args.out, "results.csv"), "w") as handle:
                handle.write(results_csv(merged))
            plot_loss_curves({row["model"]: os.path.join(args.out, row["model"], "metrics.csv") for row in merged},
                             os.path.join(args.out, "loss_curves.png"))
            plot_first_sample_tree(splits.first_sample, os.path.join(args.out, "ball_tree.png"))
            print(table)
            print(f"results, checkpoints and plots in {os.path.abspath(args.out)}")
        return rows
    finally:
        destroy_distributed(context)


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return re.sub(r"\s*\n\s*", " ", text).strip()


def run(experiment: Experiment, argv: Optional[Sequence[str]] = None) -> int:
    """:func:`main` (or, for ``predict ...``, :func:`~torch_geometric_erwin.training.predict.predict`) with
    user errors reported as one line on stderr, or with their traceback under ``--debug``; returns the
    exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["predict"]:
            from torch_geometric_erwin.training.predict import predict
            predict(experiment, argv[1:])
        else:
            main(experiment, argv)
    except (UsageError, ValueError, TypeError, FileNotFoundError, ImportError, OSError) as error:
        if "--debug" in argv:
            traceback.print_exc()
        print(f"{experiment.name}.py: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{experiment.name}.py: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0
