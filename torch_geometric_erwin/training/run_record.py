"""What a run records of its command line, and how ``--resume`` reconciles it with a new one.

A run stores :func:`run_record` in its checkpoints (``run``) and ``results.json`` (``config``): the
options as they were used (``steps`` after ``--time-budget`` or ``--resume`` settled it, the budget
of this model only, the one model trained), never a default that did not apply.

``--resume`` (:func:`resume_run`) continues the saved run: options not given take the saved values;
options given with another value than saved are refused, listing every difference, except the ones
in :data:`CHANGEABLE`, which take the new value. ``--steps N`` beyond the saved step count extends
the run: the learning-rate schedule is laid out over the new total, so it continues from the
current step on the longer schedule.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Optional, Sequence, Set, Tuple

from torch_geometric_erwin.nn.models.serialization import plain
from torch_geometric_erwin.training.errors import UsageError

#: Options a resumed run may change: where data and outputs live, the device and loaders, logging,
#: evaluation, the checkpoint cadence, and the number of steps (to extend the run).
CHANGEABLE = frozenset({"steps", "data", "out", "device", "num_workers", "no_progress", "no_tensorboard", "wandb",
                        "eval_limit", "eval_batch_size", "val_every", "compile", "checkpoint_every",
                        "checkpoint_seconds"})

#: Command-line entries that describe how the program is run, not the run: never recorded or compared.
NOT_RECORDED = frozenset({"resume", "debug", "time_budget"})


def given_options(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> Set[str]:
    """The ``dest`` of every option given in ``argv`` (parsed again with every default suppressed)."""
    defaults = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in defaults:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in defaults:
            action.default = default


def run_record(experiment_name: str, args: argparse.Namespace, model: str, steps: int,
               time_budget: Optional[float]) -> Dict[str, Any]:
    """The command line of one model's run as plain values, as it was used."""
    record = {key: plain(key, value) for key, value in vars(args).items()
              if not key.startswith("_") and key not in NOT_RECORDED}
    record.update(experiment=experiment_name, model=model, steps=int(steps), time_budget=time_budget)
    return record


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def resume_run(args: argparse.Namespace, saved: Dict[str, Any], saved_steps: int, trained_steps: int
               ) -> Tuple[argparse.Namespace, int]:
    """``(args, steps)`` of a resumed run: ``args`` with the saved run's values where an option was not
    given, and the total number of steps (``--steps`` if given, else the saved total). Raises
    :class:`ValueError` listing every option given with another value than the saved run's (outside
    :data:`CHANGEABLE`), and for ``--steps`` not beyond the ``trained_steps`` already done."""
    given = getattr(args, "_given", set())
    if "time_budget" in given:
        raise UsageError("--time-budget does not apply to --resume: the run continues to its saved step count, "
                         "or to --steps N to extend it")
    resumed = argparse.Namespace(**vars(args))
    differences = []
    for key, value in saved.items():
        if key in NOT_RECORDED or key in ("experiment", "model", "steps") or not hasattr(args, key):
            continue
        current = plain(key, getattr(args, key))
        if key in given:
            if current != value and key not in CHANGEABLE:
                differences.append(f"{_option(key)} {current!r} (saved: {value!r})")
        else:
            setattr(resumed, key, value)
    if differences:
        raise UsageError("--resume continues the saved run, which was trained with other options: "
                         + "; ".join(differences) + ". Drop them (the saved values apply) or start a new run "
                         "with another --out")
    steps = saved_steps
    if "steps" in given:
        steps = args.steps
        if steps <= trained_steps:
            raise UsageError(f"--steps {steps} does not extend the run, which has trained {trained_steps} steps: "
                             f"give more than {trained_steps}")
    return resumed, steps


def resolve_resume(args: argparse.Namespace) -> argparse.Namespace:
    """With ``--resume``, :func:`resume_run` against every ``--model``'s ``last.pt`` under ``--out`` (before
    the data are loaded, so that saved data options apply); ``args._resume_steps`` maps each resumed
    model to its total step count. Models without a checkpoint start afresh."""
    from torch_geometric_erwin.training.checkpoint import load_checkpoint
    steps = {}
    if args.resume:
        for model in args.model:
            last = os.path.join(args.out, model, "checkpoints", "last.pt")
            if os.path.isfile(last):
                state = load_checkpoint(last)
                args, steps[model] = resume_run(args, state.get("run") or {}, state["config"]["steps"],
                                                state["step"])
    args._resume_steps = steps
    return args
