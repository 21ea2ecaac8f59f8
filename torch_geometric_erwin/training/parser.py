"""The examples' command line: :func:`build_parser` and :func:`parse_args` of an
:class:`~torch_geometric_erwin.training.experiment.Experiment`.

It offers ``--data``, ``--size``, ``--model`` (one or several, trained one after the other on the
same data), ``--out``, the optimisation settings (defaulting to the reference values), ``--resume``,
``--compile``, ``--amp``, ``--device``, ``--seed`` and logging switches, and the experiment's own
options. ``--synthetic`` runs a script without the real data: tiny files in the benchmark's real
format (:mod:`torch_geometric_erwin.testing`) and a short run (:data:`SYNTHETIC_TRAINING`). Errors
are :class:`~torch_geometric_erwin.training.errors.UsageError`, which the runner prints as one line.
"""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Union

from torch_geometric_erwin.training.errors import UsageError
from torch_geometric_erwin.training.run_record import given_options
from torch_geometric_erwin.training.trainer import TrainConfig

if TYPE_CHECKING:
    from torch_geometric_erwin.training.experiment import Experiment


#: What ``--synthetic`` sets where not given: a run of about a minute on a few tiny samples.
SYNTHETIC_TRAINING = dict(steps=10, batch_size=2, eval_batch_size=2, val_every=5, eval_limit=4)


class CommandLineParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are :class:`UsageError` (one line, no usage block)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with every option's default, except where the help text states it already, or the
    default is None (nothing) or a flag's False."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    """An argument type: an int of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argument type: a float above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser(experiment: "Experiment") -> argparse.ArgumentParser:
    """The command line of ``experiment`` (its own options included)."""
    defaults = TrainConfig(**experiment.train)
    parser = CommandLineParser(prog=f"{experiment.name}.py", description=experiment.description,
                               formatter_class=_HelpFormatter,
                               epilog=f"To predict with a trained run: {experiment.name}.py predict --checkpoint "
                                      f"OUT/<model>/checkpoints/best.pt --split test (see {experiment.name}.py "
                                      "predict --help)")
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
    group.add_argument("--steps", type=positive_int, default=None,
                       help=f"optimiser steps (default: {defaults.steps}"
                            + (", or what fits --time-budget)" if experiment.time_budget else ")"))
    group.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                       help="choose the number of steps so that each model trains for about this long, "
                            "measured on this machine" + (f" (default: {_describe_budget(experiment.time_budget)} "
                                                          "unless --steps is given)" if experiment.time_budget else ""))
    group.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                       help="global batch size (over all processes)")
    group.add_argument("--eval-batch-size", type=positive_int, default=defaults.eval_batch_size,
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
    group.add_argument("--val-every", type=positive_int, default=defaults.val_every,
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
    run.add_argument("--eval-limit", type=positive_int, default=None, metavar="N",
                     help="validate and test on the first N samples of each split only (a quick check)")
    run.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                     help="write the resumable OUT/<model>/checkpoints/last.pt every N steps (default: at each "
                          "validation); it is also written before the first step, at the end, and on the time "
                          "cadence of --checkpoint-seconds")
    run.add_argument("--checkpoint-seconds", type=positive_float, default=TrainConfig.checkpoint_seconds,
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


def parse_args(experiment: "Experiment", argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
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
    """The :class:`~torch_geometric_erwin.training.TrainConfig` of parsed options."""
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
                       lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
                       eta_min=args.eta_min, warmup_ratio=args.warmup_ratio,
                       max_grad_norm=args.max_grad_norm, val_every=args.val_every,
                       checkpoint_every=args.checkpoint_every, checkpoint_seconds=args.checkpoint_seconds,
                       seed=args.seed,
                       amp=None if args.amp == "none" else args.amp, compile=args.compile,
                       num_workers=args.num_workers, tensorboard=not args.no_tensorboard,
                       wandb_project=args.wandb, progress=not args.no_progress)

