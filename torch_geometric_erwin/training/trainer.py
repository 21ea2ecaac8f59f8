"""The training loop shared by every example: :class:`Trainer` and :class:`TrainConfig`."""
from __future__ import annotations

import dataclasses
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset
from torch_geometric.loader import DataLoader

from torch_geometric_erwin.checks import check_int
from torch_geometric_erwin.nn.models.serialization import file_header, model_record
from torch_geometric_erwin.training.checkpoint import (load_checkpoint, rng_state, save_checkpoint,
                                                       set_rng_state)
from torch_geometric_erwin.training.distributed import DistributedContext
from torch_geometric_erwin.training.loggers import MetricLogger, Progress
from torch_geometric_erwin.training.sampler import ResumableBatchSampler
from torch_geometric_erwin.training.schedules import build_schedule
from torch_geometric_erwin.training.tasks.base import Task


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings of one run.

    ``steps`` counts optimiser steps (the reference's ``num_epochs``); ``batch_size`` is the
    global batch over all processes. ``schedule`` is ``"cosine"`` or ``"warmup-cosine"``
    (warm-up over ``warmup_ratio * steps``), both ending at ``eta_min``. ``max_grad_norm``
    ``None`` disables clipping. Validation runs every ``val_every`` steps and at the end.
    The resumable checkpoint ``last.pt`` is written before the first step, then every
    ``checkpoint_every`` steps (default: at each validation), after any step that ends at least
    ``checkpoint_seconds`` after the previous write (``None``: no time cadence), and at the end,
    so that a run killed at any point loses at most that much work. ``amp`` is ``None`` or
    ``"bf16"``.
    """

    steps: int = 1000
    batch_size: int = 8
    eval_batch_size: Optional[int] = None
    lr: float = 1e-3
    weight_decay: float = 0.01
    schedule: str = "cosine"
    eta_min: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: Optional[float] = None
    val_every: int = 500
    checkpoint_every: Optional[int] = None
    checkpoint_seconds: Optional[float] = 300.0
    log_every: int = 10
    seed: int = 0
    amp: Optional[str] = None
    compile: bool = False
    num_workers: int = 0
    tensorboard: bool = True
    wandb_project: Optional[str] = None
    progress: bool = True
    find_unused_parameters: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size", "val_every", "log_every"):
            value = getattr(self, name)
            check_int(name, value)
        if self.checkpoint_every is None:
            self.checkpoint_every = self.val_every
        if isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int) \
                or self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive int or None, got {self.checkpoint_every!r}")
        if self.checkpoint_seconds is not None and not self.checkpoint_seconds > 0:
            raise ValueError(f"checkpoint_seconds must be positive or None, got {self.checkpoint_seconds!r}")
        if self.eval_batch_size is None:
            self.eval_batch_size = self.batch_size
        if self.amp not in (None, "bf16"):
            raise ValueError(f"amp must be None or 'bf16', got {self.amp!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm!r}")


def _float(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.float()
    if isinstance(out, (tuple, list)):
        return type(out)(_float(item) for item in out)
    return out


def num_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class Trainer:
    r"""AdamW + reference schedule, clipping, validation, best checkpoint, exact resume, final test.

    Files in ``out_dir``: ``metrics.csv`` (and ``tensorboard/``), ``checkpoints/last.pt``
    (everything needed to resume: model, optimizer, scheduler, step, best validation loss,
    RNG states) and ``checkpoints/best.pt`` (the model with the lowest validation loss). Both
    carry the checkpoint format and package versions, the backbone's class and configuration
    (``backbone``, so that ``Erwin.from_checkpoint(path)`` rebuilds it) and ``run_config``
    (``run``); both load with ``torch.load(weights_only=True)``.
    The data order is a function of the seed and the step only
    (:class:`~torch_geometric_erwin.training.sampler.ResumableBatchSampler`), so a run
    resumed from ``last.pt`` — on any number of processes — continues with the same
    losses as an uninterrupted one.

    Under ``torchrun`` (``context.world_size > 1``) the task is wrapped in
    ``DistributedDataParallel``; each process takes its share of every global batch and the
    loss is weighted so that the averaged gradient equals the single-process gradient of
    the whole global batch. Only rank 0 logs and writes files.

    Args:
        task: a :class:`~torch_geometric_erwin.training.tasks.base.Task`.
        train_set, val_set, test_set: datasets of ``Data`` objects (``test_set`` may be ``None``).
        config: a :class:`TrainConfig`.
        out_dir: output folder.
        context: the process's :class:`~torch_geometric_erwin.training.distributed.DistributedContext`.
        name: label of the progress bar and the wandb run.
        run_config: plain values describing how the task was built (the command line's), stored in
            the checkpoints as ``run`` for ``predict`` and ``--resume``.
    """

    def __init__(self, task: Task, train_set: Dataset, val_set: Optional[Dataset],
                 test_set: Optional[Dataset], config: TrainConfig, out_dir: str,
                 context: Optional[DistributedContext] = None, name: str = "train",
                 run_config: Optional[Dict[str, Any]] = None):
        if not isinstance(task, Task):
            raise TypeError(f"task must be a Task, got {type(task).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.context = context or DistributedContext()
        self.config, self.out_dir, self.name = config, out_dir, name
        self.run_config = dict(run_config or {})
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.device = self.context.device
        self.task = task.to(self.device)
        self.optimizer = torch.optim.AdamW(self.task.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.scheduler = build_schedule(config.schedule, self.optimizer, config.steps, config.eta_min,
                                        config.warmup_ratio)
        self.sampler_args = dict(num_samples=len(train_set), global_batch_size=config.batch_size,
                                 seed=config.seed, rank=self.context.rank,
                                 world_size=self.context.world_size)
        ResumableBatchSampler(**self.sampler_args)  # validate the batch size before any work
        model: nn.Module = self.task
        if self.context.enabled:
            model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters)
        self.model = torch.compile(model) if config.compile else model
        self.step, self.best_val, self.best_val_metrics = 0, math.inf, {}
        self.checkpoint_dir = os.path.join(out_dir, "checkpoints")

    # ----------------------------------------------------------------------------- state
    @property
    def last_path(self) -> str:
        return os.path.join(self.checkpoint_dir, "last.pt")

    @property
    def best_path(self) -> str:
        return os.path.join(self.checkpoint_dir, "best.pt")

    def model_state(self) -> Dict[str, Any]:
        """What ``best.pt`` holds and ``last.pt`` starts with: the file header, the task's weights,
        the backbone's class and configuration (None for a backbone of another package) and the run."""
        backbone = model_record(self.task.backbone)
        if backbone is not None:
            backbone["prefix"] = "backbone."
        return {**file_header("training"), "model": self.task.state_dict(), "backbone": backbone,
                "run": self.run_config}

    def state_dict(self) -> Dict[str, Any]:
        return {**self.model_state(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step,
                "best_val": self.best_val, "best_val_metrics": self.best_val_metrics,
                "rng": rng_state(),
                "config": dataclasses.asdict(self.config)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.task.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best_val = state["step"], state["best_val"]
        self.best_val_metrics = state["best_val_metrics"]
        set_rng_state(state["rng"])

    def save(self) -> None:
        """Write ``last.pt`` (rank 0 only)."""
        if self.context.is_main:
            save_checkpoint(self.last_path, **self.state_dict())
        self.context.barrier()

    def _checkpoint_due(self, end: int, last_write: float) -> bool:
        """Whether ``last.pt`` is written after this step: on the step cadence, at ``end``, or once
        ``checkpoint_seconds`` have passed since the last write. Clocks differ between processes, so
        rank 0's clock decides for all of them (every process must join the write's barrier)."""
        config = self.config
        if self.step % config.checkpoint_every == 0 or self.step == end:
            return True
        if config.checkpoint_seconds is None:
            return False
        due = time.monotonic() - last_write >= config.checkpoint_seconds
        if self.context.enabled:
            flag = torch.tensor(float(due and self.context.is_main), device=self.device)
            due = self.context.all_reduce_(flag).item() > 0
        return due

    def autocast(self):
        if self.config.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ----------------------------------------------------------------------------- eval
    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        shard = Subset(dataset, range(self.context.rank, len(dataset), self.context.world_size))
        return DataLoader(shard, batch_size=self.config.eval_batch_size, shuffle=False,
                          num_workers=self.config.num_workers)

    @torch.no_grad()
    def evaluate(self, dataset: Dataset, desc: str = "eval") -> Dict[str, Tensor]:
        """Mean over the samples of ``dataset`` of every per-graph metric of the task, with a progress
        bar over the batches (and the task's own, such as a rollout's over frames) labelled ``desc``."""
        was_training = self.task.training
        self.task.eval()
        sums: Dict[str, Tensor] = {}
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        loader = self._eval_loader(dataset)
        enabled = self.config.progress and self.context.is_main
        progress = Progress(len(loader), desc=f"{self.name} {desc}", enabled=enabled, every=None, unit="batch",
                            leave=False)
        self.task.show_progress = enabled
        try:
            for index, batch in enumerate(loader):
                batch = batch.to(self.device)
                with self.autocast():
                    metrics = self.task.evaluate(batch)
                for key, value in metrics.items():
                    total = value.double().sum(dim=0)
                    sums[key] = sums[key] + total if key in sums else total
                count += batch.num_graphs
                progress.update(index + 1)
        finally:
            progress.close()
            self.task.show_progress = False
        if was_training:
            self.task.train()
        keys = sorted(sums)
        if self.context.enabled:  # every rank must hold every key, even with an empty shard
            for key in keys:
                self.context.all_reduce_(sums[key])
            self.context.all_reduce_(count)
        return {key: (sums[key] / count).float().cpu() for key in keys}

    # ----------------------------------------------------------------------------- train
    def train_step(self, batch) -> float:
        """One optimiser step on this process's share of a global batch; returns the global loss."""
        batch = batch.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.model(batch)
        loss, weight = self.task.loss(batch, _float(out))
        stats = torch.stack([loss.detach().double() * weight,
                             torch.tensor(float(weight), dtype=torch.float64, device=loss.device)])
        self.context.all_reduce_(stats)
        global_weight = stats[1].item()
        (loss * (weight * self.context.world_size / global_weight)).backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.task.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return (stats[0] / stats[1]).item()

    def fit(self, resume: bool = False, stop_at: Optional[int] = None) -> Dict[str, Any]:
        """Train until ``config.steps`` (or until ``stop_at``, leaving a resumable checkpoint).

        With ``resume`` the run continues from ``checkpoints/last.pt``. After the last step,
        the best checkpoint is evaluated on the test set. Returns a summary: ``train_loss``
        (the global loss of each step this call ran), ``val`` (the best validation metrics),
        ``test``, ``steps``, ``train_time_s``, ``num_parameters``.
        """
        config = self.config
        if resume:
            self.load_state_dict(load_checkpoint(self.last_path, map_location=str(self.device)))
        end = config.steps if stop_at is None else min(stop_at, config.steps)
        logger = MetricLogger(self.out_dir, config.tensorboard, config.wandb_project, self.name,
                              dataclasses.asdict(config), self.step if resume else None) \
            if self.context.is_main else None
        progress = Progress(config.steps, self.step, self.name,
                            enabled=config.progress and self.context.is_main)
        loader = DataLoader(self.train_set, num_workers=config.num_workers,
                            batch_sampler=ResumableBatchSampler(start_step=self.step,
                                                                **self.sampler_args))
        losses: List[float] = []
        self.task.train()
        if not resume:  # a run killed before its first cadence write still resumes, from step 0
            self.save()
        last_write = time.monotonic()
        start = time.perf_counter()
        window: List[float] = []
        try:
            for batch in loader:
                if self.step >= end:
                    break
                loss = self.train_step(batch)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the training loss is {loss} at step {self.step}; "
                                             "lower --lr or set a gradient clip")
                losses.append(loss)
                window.append(loss)
                if logger is not None and (self.step % config.log_every == 0 or self.step == end):
                    logger.log(self.step, "train", {"loss": sum(window) / len(window),
                                                    "lr": self.scheduler.get_last_lr()[0]})
                    window = []
                progress.update(self.step, loss=loss)
                if self.val_set is not None and (self.step % config.val_every == 0
                                                 or self.step == config.steps):
                    metrics = self.evaluate(self.val_set, "val")
                    scalars = {k: v.item() for k, v in metrics.items() if v.dim() == 0}
                    if logger is not None:
                        logger.log(self.step, "val", scalars)
                    progress.write(f"step {self.step}: val " +
                                   " ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
                    if scalars["loss"] < self.best_val:
                        self.best_val, self.best_val_metrics = scalars["loss"], scalars
                        if self.context.is_main:
                            save_checkpoint(self.best_path, **self.model_state(), step=self.step,
                                            val=scalars)
                if self._checkpoint_due(end, last_write):
                    self.save()
                    last_write = time.monotonic()
        finally:
            progress.close()
        train_time = time.perf_counter() - start
        summary: Dict[str, Any] = {"steps": self.step, "train_loss": losses, "train_time_s": train_time,
                                   "num_parameters": num_parameters(self.task), "val": self.best_val_metrics,
                                   "best_val_loss": self.best_val}
        if self.step >= config.steps and self.test_set is not None:
            summary["test"] = self.test()
            if logger is not None:
                logger.log(self.step, "test", {k: v for k, v in summary["test"].items()
                                               if not isinstance(v, list)})
        if logger is not None:
            logger.close()
        return summary

    def test(self) -> Dict[str, Any]:
        """Metrics of the best checkpoint (the current model if none was saved) on the test set."""
        self.context.barrier()
        if os.path.isfile(self.best_path):
            self.task.load_state_dict(load_checkpoint(self.best_path, str(self.device))["model"])
        metrics = self.evaluate(self.test_set, "test")
        return {k: v.item() if v.dim() == 0 else v.tolist() for k, v in metrics.items()}


def steps_for_budget(task: Task, train_set: Dataset, val_set: Optional[Dataset], config: TrainConfig,
                     budget_s: float, context: Optional[DistributedContext] = None,
                     probe_steps: int = 3) -> int:
    """The number of steps that makes a run of ``config`` take about ``budget_s`` seconds.

    Times ``probe_steps`` optimiser steps (after one warm-up step) and one validation pass
    on a copy of ``task``, then solves ``steps * (t_step + t_val / val_every) = budget_s``.
    The RNG states and ``task`` itself are left untouched. Under DDP every process gets
    the same answer (timings are averaged over processes).
    """
    import copy
    import tempfile

    if budget_s <= 0:
        raise ValueError(f"the time budget must be positive, got {budget_s!r}")
    context = context or DistributedContext()
    saved = rng_state()
    probe_config = dataclasses.replace(config, steps=probe_steps + 1, tensorboard=False, progress=False,
                                       wandb_project=None, compile=config.compile)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(copy.deepcopy(task), train_set, None, None, probe_config, tmp, context)
        loader = iter(DataLoader(train_set, batch_sampler=ResumableBatchSampler(**trainer.sampler_args),
                                 num_workers=0))
        trainer.train_step(next(loader))
        start = time.perf_counter()
        for _ in range(probe_steps):
            trainer.train_step(next(loader))
        timings = [(time.perf_counter() - start) / probe_steps, 0.0]
        if val_set is not None:
            start = time.perf_counter()
            trainer.evaluate(val_set)
            timings[1] = time.perf_counter() - start
    set_rng_state(saved)
    mean = context.all_reduce_(torch.tensor(timings, dtype=torch.float64)) / context.world_size
    per_step = mean[0].item() + mean[1].item() / config.val_every
    return max(1, int(budget_s / per_step))
