"""The command line every example shares: :class:`Experiment` and :func:`run`.

An example script describes its benchmark (datasets, task wrapper, reference training
settings, model sizes) as an :class:`Experiment` and calls :func:`run`. The command line
then offers ``--data``, ``--size``, ``--model`` (one or several, trained one after the
other on the same data), ``--out``, the optimisation settings (defaulting to the reference
values), ``--resume``, ``--compile``, ``--amp``, ``--device``, ``--seed`` and logging
switches; it works under ``torchrun``. Each model's run goes to ``OUT/<model>/``
(``metrics.csv``, ``tensorboard/``, ``checkpoints/``, ``results.json``); ``OUT/`` gets
``results.json``, ``results.md`` and ``results.csv`` (one row per model, merged with the rows of
earlier runs into the same ``OUT/``, so training one model again keeps the others'), ``loss_curves.png`` and
``ball_tree.png`` (the ball-tree partition of the first training sample).

``<example>.py predict --checkpoint OUT/<model>/checkpoints/best.pt --split test`` writes a trained
run's predictions and metrics (:mod:`~torch_geometric_erwin.training.predict`). ``--resume`` continues a
run with its saved options, refusing changed ones, and ``--steps N`` extends it
(:mod:`~torch_geometric_erwin.training.run_record`).

``--synthetic`` runs a script without the real data: tiny files in the benchmark's real format
(:mod:`torch_geometric_erwin.testing`) and a short run (:data:`SYNTHETIC_TRAINING`).

Bad input (unknown choice, missing data root, a root without the expected layout) ends
the program with one line on stderr and exit status 2, never a traceback (``--debug`` shows it).
"""
from __future__ import annotations

import argparse
import importlib
import csv
import io
import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch_geometric.io import fs

from torch_geometric_erwin.datasets.io.atomic import atomic_json, atomic_write, temporary_path
from torch_geometric_erwin.training.checkpoint import seed_everything
from torch_geometric_erwin.training.distributed import (DistributedContext, destroy_distributed,
                                                        init_distributed)
from torch_geometric_erwin.training.run_record import given_options, resolve_resume, run_record
from torch_geometric_erwin.training.tasks import NodeRegression
from torch_geometric_erwin.training.tasks.base import Task
from torch_geometric_erwin.training.trainer import Trainer, TrainConfig, steps_for_budget
from torch_geometric_erwin.transforms import KNNGraphTransform

#: Signature of a backbone factory: ``(in_channels, size, experiment) -> module`` with ``out_channels``.
BackboneFactory = Callable[[int, str, "Experiment"], nn.Module]

#: MPNN baseline widths per size: (hidden channels, message-passing steps).
MPNN_SIZES = {"small": (64, 4), "medium": (128, 6), "large": (256, 8)}


def pde_training(epochs: int, train_size: int, batch_size: int, lr: float) -> Dict[str, Any]:
    """The reference settings of the four PDE benchmarks: ``epochs * train_size // batch_size`` steps,
    5 % linear warm-up then cosine to 1e-7, weight decay 1e-5, clipping at 1.0, validation every 1000."""
    return dict(steps=epochs * train_size // batch_size, batch_size=batch_size, lr=lr, weight_decay=1e-5,
                schedule="warmup-cosine", warmup_ratio=0.05, eta_min=1e-7, max_grad_norm=1.0,
                val_every=1000)


def split_views(dataset) -> Tuple[Any, Any, Any]:
    """Train, validation and test views of a dataset loaded with ``split=None``, from its
    ``get_idx_split()`` (the processed file is read once, not once per split)."""
    split = dataset.get_idx_split()
    return tuple(dataset[split[key]] for key in ("train", "valid", "test"))


def geo_fno_experiment(name: str, dataset: str, description: str, encoder: Callable[[int], nn.Module],
                       out_channels: int, train: Dict[str, Any], layout: str) -> "Experiment":
    """One of the four Geo-FNO PDE benchmarks (airfoil, pipe, elasticity, plasticity) as the reference
    runs them: 2-D, the ``<name>-small`` preset, the reference's graph (8 nearest neighbours, the node
    itself included), a node-wise regression head trained by relative L2 and reported on the
    denormalised fields.

    Args:
        dataset: the class name in :mod:`torch_geometric_erwin.datasets` (``"Airfoil"``).
        encoder: ``(width) -> module`` embedding the raw node fields into ``width`` channels.
        train: :func:`pde_training` of the benchmark.
    """
    width = 64

    def dataset_class():
        import torch_geometric_erwin.datasets as datasets
        return getattr(datasets, dataset)

    def load(args):
        return split_views(dataset_class()(args.data, split=None, transform=KNNGraphTransform(8, loop=True)))

    def build_task(backbone, args):
        return NodeRegression(backbone(width), encoder(width), out_channels=out_channels, loss="rel_l2",
                              denormalize=lambda v: dataset_class().denormalize(v))

    def synthetic_data(raw_dir):
        import torch_geometric_erwin.testing as testing
        getattr(testing, f"write_{name}")(raw_dir)

    return Experiment(name=name, description=description, dim=2, preset=name, sizes=("small",), train=train,
                      load=load, build_task=build_task,
                      layout=f"raw/{layout} (Geo-FNO 'PDE Benchmarks' folder)", synthetic_data=synthetic_data)


class UsageError(Exception):
    """A problem with the command line or the data that the user can fix; printed as one line."""


def erwin_backbone(in_channels: int, size: str, experiment: "Experiment") -> nn.Module:
    """The paper's Erwin preset ``<experiment.preset>-<size>``."""
    from torch_geometric_erwin.nn import Erwin
    return Erwin.from_preset(f"{experiment.preset}-{size}", in_channels=in_channels)


def erwin_nsa_backbone(in_channels: int, size: str, experiment: "Experiment") -> nn.Module:
    """The NSA paper's preset for the experiment (one size)."""
    from torch_geometric_erwin.nn.models.erwin_nsa import PRESETS, ErwinNSA
    if experiment.nsa_preset not in PRESETS:
        raise UsageError(f"erwin-nsa has no preset for {experiment.name} (the NSA paper has "
                         f"{', '.join(sorted(PRESETS))}); choose another --model")
    return ErwinNSA.from_preset(experiment.nsa_preset, in_channels=in_channels,
                                dimensionality=experiment.dim)


def mpnn_backbone(in_channels: int, size: str, experiment: "Experiment") -> nn.Module:
    """The MPNN baseline at the width and depth of :data:`MPNN_SIZES`."""
    from torch_geometric_erwin.nn.models.mpnn import MPNN
    hidden, layers = MPNN_SIZES[size]
    return MPNN(in_channels, hidden, layers, dimensionality=experiment.dim)


def baseline_backbone(module: str, name: str) -> BackboneFactory:
    """The baseline ``name`` of :mod:`torch_geometric_erwin.nn.models.<module>`: its preset
    ``<experiment.preset>-<size>`` where it has one, else its generic ``size_config(size)``; in the
    experiment's dimension."""
    def factory(in_channels: int, size: str, experiment: "Experiment") -> nn.Module:
        models = importlib.import_module(f"torch_geometric_erwin.nn.models.{module}")
        preset = f"{experiment.preset}-{size}"
        config = dict(models.PRESETS[preset]) if preset in models.PRESETS else models.size_config(size)
        return getattr(models, name)(in_channels, **{**config, "dimensionality": experiment.dim})
    factory.__doc__ = f"The {name} baseline: its preset for the experiment and size, or its generic size."
    return factory


DEFAULT_BACKBONES: Dict[str, BackboneFactory] = {
    "erwin": erwin_backbone, "erwin-nsa": erwin_nsa_backbone, "mpnn": mpnn_backbone,
    "transolver": baseline_backbone("transolver", "Transolver"),
    "pointnet2": baseline_backbone("pointnet2", "PointNet2"),
    "ptv3": baseline_backbone("serialized_transformer", "SerializedTransformer")}


@dataclass
class Experiment:
    """One benchmark as the examples run it.

    Args:
        name: command name (``"cosmology"``).
        description: first line of ``--help``.
        dim: spatial dimension.
        preset: prefix of the Erwin presets (``"<preset>-<size>"``).
        train: reference :class:`TrainConfig` values (``steps``, ``batch_size``, ``lr``, ...).
        load: ``(args) -> (train, val, test)`` datasets read from ``args.data``.
        build_task: ``(backbone_factory, args) -> Task``; calls the factory with the encoder width.
        layout: the expected layout under ``--data``, for error messages.
        nsa_preset: name of the Erwin NSA preset, if the NSA paper has one.
        sizes: the sizes ``--size`` accepts.
        backbones: model name -> factory (defaults: erwin, erwin-nsa, mpnn, transolver, pointnet2, ptv3).
        default_models: what ``--model`` trains when not given.
        default_data: ``--data`` default (``None``: required).
        add_arguments: adds experiment-specific options to the parser.
        report: ``(task, trainer, summary, args, out_dir) -> dict``: extra results and plots
            after testing (rank 0).
        time_budget: ``--time-budget`` default: seconds of training per model, or a dict
            model name -> seconds (``None``: use ``--steps``).
        synthetic_data: ``(raw_dir) -> Any``: writes tiny raw files in the benchmark's real format and
            layout under ``raw_dir`` (a writer of :mod:`torch_geometric_erwin.testing`), for
            ``--synthetic``; ``None`` where the data are generated anyway.
        synthetic_options: the experiment's options that ``--synthetic`` sets where they are not given
            (``dict(seq_len=4)``: what the tiny files need), on top of :data:`SYNTHETIC_TRAINING`.
    """

    name: str
    description: str
    dim: int
    preset: str
    train: Dict[str, Any]
    load: Callable[[argparse.Namespace], Tuple[Any, Any, Any]]
    build_task: Callable[[Callable[[int], nn.Module], argparse.Namespace], Task]
    layout: str
    nsa_preset: Optional[str] = None
    sizes: Sequence[str] = ("small", "medium", "large")
    backbones: Dict[str, BackboneFactory] = field(default_factory=lambda: dict(DEFAULT_BACKBONES))
    default_models: Sequence[str] = ("erwin",)
    default_data: Optional[str] = None
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None
    report: Optional[Callable[..., Dict[str, Any]]] = None
    time_budget: Optional[Union[float, Dict[str, float]]] = None
    synthetic_data: Optional[Callable[[str], Any]] = None
    synthetic_options: Dict[str, Any] = field(default_factory=dict)


#: What ``--synthetic`` sets where not given: a run of about a minute on a few tiny samples.
SYNTHETIC_TRAINING = dict(steps=10, batch_size=2, eval_batch_size=2, val_every=5, eval_limit=4)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise UsageError(f"{message} (see {self.prog} --help)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with every option's default, except where the help text states it already, or the
    default is None (nothing) or a flag's False."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser(experiment: Experiment) -> argparse.ArgumentParser:
    defaults = TrainConfig(**experiment.train)
    parser = _Parser(prog=f"{experiment.name}.py", description=experiment.description,
                     formatter_class=_HelpFormatter,
                     epilog=f"To predict with a trained run: {experiment.name}.py predict --checkpoint "
                            f"OUT/<model>/checkpoints/best.pt --split test (see {experiment.name}.py predict --help)")
    parser.add_argument("--data", default=experiment.default_data,
                        help="dataset root (local path or any fsspec URL); layout: " + experiment.layout
                             + ("" if experiment.default_data else " (required unless --synthetic)"))
    parser.add_argument("--synthetic", action="store_true",
                        help="try the script in about a minute without the real data: tiny generated files in "
                             "the real format and layout (torch_geometric_erwin.testing), written to --data "
                             "(default: OUT/synthetic-data) unless already there, and "
                             + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                         {**SYNTHETIC_TRAINING, **experiment.synthetic_options}.items())
                             + " where not given")
    parser.add_argument("--size", default="small", choices=list(experiment.sizes), help="model size preset")
    parser.add_argument("--model", nargs="+", default=list(experiment.default_models),
                        choices=sorted(experiment.backbones), help="model(s) to train, one after the other")
    parser.add_argument("--out", default=os.path.join("runs", experiment.name), help="output folder")
    group = parser.add_argument_group("optimisation (defaults: the reference settings)")
    group.add_argument("--steps", type=_positive_int, default=None,
                       help=f"optimiser steps (default: {defaults.steps}"
                            + (", or what fits --time-budget)" if experiment.time_budget else ")"))
    group.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                       help="choose the number of steps so that each model trains for about this long, "
                            "measured on this machine" + (f" (default: {_describe_budget(experiment.time_budget)} "
                                                          "unless --steps is given)" if experiment.time_budget else ""))
    group.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                       help="global batch size (over all processes)")
    group.add_argument("--eval-batch-size", type=_positive_int, default=defaults.eval_batch_size,
                       help="graphs per validation and test batch")
    group.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate (AdamW)")
    group.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay")
    group.add_argument("--schedule", choices=["cosine", "warmup-cosine"], default=defaults.schedule,
                       help="learning-rate schedule over --steps")
    group.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio,
                       help="share of the steps spent warming up (warmup-cosine)")
    group.add_argument("--eta-min", type=float, default=defaults.eta_min, help="final learning rate")
    group.add_argument("--max-grad-norm", type=float, default=defaults.max_grad_norm,
                       help="gradient clipping norm (none by default where the reference does not clip)")
    group.add_argument("--val-every", type=_positive_int, default=defaults.val_every,
                       help="validate (and keep the best checkpoint) every N steps")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="seed of the model, the data order and the RNGs")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--amp", choices=["none", "bf16"], default="none", help="autocast precision")
    run.add_argument("--compile", action="store_true", help="torch.compile the model")
    run.add_argument("--activation-checkpointing", action="store_true",
                     help="recompute every transformer block in the backward pass (erwin, erwin-nsa): "
                          "a fraction of the activation memory for about a third more time")
    run.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    run.add_argument("--eval-limit", type=_positive_int, default=None, metavar="N",
                     help="validate and test on the first N samples of each split only (a quick check)")
    run.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                     help="write the resumable OUT/<model>/checkpoints/last.pt every N steps (default: at each "
                          "validation); it is also written before the first step, at the end, and on the time "
                          "cadence of --checkpoint-seconds")
    run.add_argument("--checkpoint-seconds", type=_positive_float, default=TrainConfig.checkpoint_seconds,
                     metavar="S",
                     help="also write last.pt after any step ending S seconds or more after the previous write")
    run.add_argument("--resume", action="store_true",
                     help="continue from OUT/<model>/checkpoints/last.pt with its saved options (changed ones are "
                          "refused, see the docs); --steps N extends the run")
    run.add_argument("--debug", action="store_true", help="show the traceback of an error")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-tensorboard", action="store_true", help="CSV metrics only")
    run.add_argument("--wandb", metavar="PROJECT", default=None,
                     help="also log to Weights & Biases (needs wandb installed)")
    if experiment.add_arguments is not None:
        experiment.add_arguments(parser)
    return parser


def _describe_budget(budget: Union[float, Dict[str, float]]) -> str:
    if isinstance(budget, dict):
        return ", ".join(f"{name} {seconds:g} s" for name, seconds in budget.items())
    return f"{budget:g} s"


def parse_args(experiment: Experiment, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line, with ``--steps`` and ``--time-budget`` resolved: an explicit ``--steps`` wins
    over the experiment's default budget, an explicit ``--time-budget`` over the default steps."""
    parser = build_parser(experiment)
    args = parser.parse_args(argv)
    args._given = given_options(parser, argv)
    if args.synthetic:
        synthetic = {**SYNTHETIC_TRAINING, **experiment.synthetic_options}
        if "time_budget" in args._given:
            synthetic.pop("steps")
        for key, value in synthetic.items():
            if key not in args._given:
                setattr(args, key, value)
        if "data" not in args._given:
            args.data = os.path.join(args.out, "synthetic-data")
    elif args.data is None:
        raise UsageError(f"--data is required: the {experiment.name} data root (layout: {experiment.layout}); "
                         "or pass --synthetic to try the script on tiny generated files")
    if args.time_budget is not None and args.steps is not None:
        raise UsageError("give --steps or --time-budget, not both")
    if args.time_budget is not None and args.time_budget <= 0:
        raise UsageError(f"--time-budget must be positive, got {args.time_budget:g}")
    if args.steps is None:
        args.steps = TrainConfig(**experiment.train).steps
        if args.time_budget is None:
            args.time_budget = experiment.time_budget
    return args


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
                       lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
                       eta_min=args.eta_min, warmup_ratio=args.warmup_ratio,
                       max_grad_norm=args.max_grad_norm, val_every=args.val_every,
                       checkpoint_every=args.checkpoint_every, checkpoint_seconds=args.checkpoint_seconds,
                       seed=args.seed,
                       amp=None if args.amp == "none" else args.amp, compile=args.compile,
                       num_workers=args.num_workers, tensorboard=not args.no_tensorboard,
                       wandb_project=args.wandb, progress=not args.no_progress)


def _check_root(experiment: Experiment, root: str) -> None:
    if not fs.exists(root):
        raise UsageError(f"data root '{root}' does not exist; download the {experiment.name} data "
                         f"there (layout: {experiment.layout}) or pass --data")


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


def merge_results(path: str, rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The rows of ``path`` (an earlier ``results.json`` of the same ``--out``) with this run's rows in place
    of the same models' and new models appended, so that training one model again keeps the others' rows.
    A file that does not parse is replaced (with a note on stderr)."""
    merged: List[Dict[str, Any]] = []
    if os.path.isfile(path):
        try:
            with open(path) as handle:
                merged = [row for row in json.load(handle) if isinstance(row, dict) and "model" in row]
        except (ValueError, TypeError) as error:
            print(f"note: {path} does not parse ({error}); writing a new one", file=sys.stderr)
            merged = []
    by_model = {row["model"]: row for row in merged}
    by_model.update((row["model"], row) for row in rows)  # a model's new row keeps its old row's place
    return list(by_model.values())


def _metric_names(rows: List[Dict[str, Any]]) -> List[str]:
    return sorted({k for row in rows for k, v in row.get("test", {}).items() if not isinstance(v, list)})


def results_csv(rows: List[Dict[str, Any]]) -> str:
    """The rows of :func:`results_table` as CSV, with the experiment and size, values unrounded."""
    names = _metric_names(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["experiment", "model", "size", *[f"test_{name}" for name in names], "num_parameters",
                     "steps", "wall_time_s", "train_time_s"])
    for row in rows:
        test = row.get("test", {})
        writer.writerow([row.get("experiment", ""), row["model"], row.get("size", ""),
                         *[test.get(name, "") for name in names], row["num_parameters"], row["steps"],
                         row["wall_time_s"], row.get("train_time_s", "")])
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def results_table(rows: List[Dict[str, Any]]) -> str:
    """A Markdown table: model, test metrics, parameters, steps, wall time."""
    metric_names = _metric_names(rows)
    header = ["model", *[f"test {name}" for name in metric_names], "parameters", "steps", "wall time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        test = row.get("test", {})
        cells = [row["model"], *[_fmt(test.get(name, "")) for name in metric_names],
                 f"{row['num_parameters']:,}", str(row["steps"]), f"{row['wall_time_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def with_activation_checkpointing(backbone: nn.Module, model_name: str) -> nn.Module:
    """``backbone`` with its ``activation_checkpointing`` switched on (``--activation-checkpointing``)."""
    if not hasattr(backbone, "activation_checkpointing"):
        raise UsageError(f"--activation-checkpointing: {model_name} has no activation checkpointing (erwin and "
                         "erwin-nsa have); drop the flag for it")
    backbone.activation_checkpointing = True
    return backbone


def train_models(experiment: Experiment, args: argparse.Namespace, context: DistributedContext,
                 splits: Tuple[Any, Any, Any]) -> List[Dict[str, Any]]:
    """Train every ``--model`` on ``splits``; returns one result row per model."""
    from torch_geometric_erwin.training.plots import plot_loss_curves
    rows = []
    for model_name in args.model:
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


def check_models(experiment: Experiment, args: argparse.Namespace) -> None:
    """Build every ``--model``'s backbone once, at a placeholder input width, before any data or training
    work: a model the experiment cannot build (``erwin-nsa`` where neither paper has a configuration, an
    option it does not take) stops the run before the models listed before it have trained."""
    for model_name in args.model:
        backbone = experiment.backbones[model_name](_PROBE_WIDTH, args.size, experiment)
        if getattr(args, "activation_checkpointing", False):
            with_activation_checkpointing(backbone, model_name)


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
    check_models(experiment, args)
    if args.synthetic:
        write_synthetic_data(experiment, args.data)
    elif experiment.default_data is None:
        _check_root(experiment, args.data)
    context = init_distributed(args.device)
    try:
        torch.set_float32_matmul_precision("high")
        seed_everything(args.seed)
        splits = experiment.load(args)
        if args.eval_limit is not None:
            splits = (splits[0], *(split[:args.eval_limit] for split in splits[1:]))
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
            plot_first_sample_tree(splits[0][0], os.path.join(args.out, "ball_tree.png"))
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
