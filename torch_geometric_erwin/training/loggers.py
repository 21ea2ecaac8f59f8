"""Metric sinks (CSV, TensorBoard, optional Weights & Biases) and a progress bar with rate and ETA."""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from typing import Dict, List, Optional

CSV_FIELDS = ("step", "split", "name", "value")


def read_metrics_csv(path: str) -> List[dict]:
    """Rows of a metrics CSV as dicts with ``step`` int and ``value`` float."""
    with open(path, newline="") as handle:
        return [{"step": int(row["step"]), "split": row["split"], "name": row["name"],
                 "value": float(row["value"])} for row in csv.DictReader(handle)]


class MetricLogger:
    """Writes ``(step, split, name, value)`` rows to ``metrics.csv`` and, if asked, TensorBoard / wandb.

    On resume (``resume_step`` given) rows logged after that step by an interrupted run
    are dropped first, so the file reads as one uninterrupted run.

    Args:
        folder: output folder.
        tensorboard: also write TensorBoard event files under ``folder/tensorboard``.
        wandb_project: log to Weights & Biases under this project (needs ``wandb`` installed).
        run_name, config: wandb run name and configuration.
        resume_step: the step a resumed run continues from.
    """

    def __init__(self, folder: str, tensorboard: bool = True, wandb_project: Optional[str] = None,
                 run_name: Optional[str] = None, config: Optional[dict] = None,
                 resume_step: Optional[int] = None):
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, "metrics.csv")
        rows = []
        if resume_step is not None and os.path.isfile(self.path):
            rows = [row for row in read_metrics_csv(self.path) if row["step"] <= resume_step]
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)
        self._file = open(self.path, "a", newline="")
        self._csv = csv.DictWriter(self._file, CSV_FIELDS)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("tensorboard is not installed; logging to CSV only "
                      "(pip install tensorboard)", file=sys.stderr)
            else:
                self._tb = SummaryWriter(os.path.join(folder, "tensorboard"),
                                         purge_step=None if resume_step is None else resume_step + 1)
        self._wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as error:
                raise ImportError("--wandb needs the wandb package: pip install wandb") from error
            self._wandb = wandb.init(project=wandb_project, name=run_name, config=config,
                                     resume="allow")

    def log(self, step: int, split: str, values: Dict[str, float]) -> None:
        for name, value in values.items():
            self._csv.writerow({"step": step, "split": split, "name": name, "value": repr(float(value))})
            if self._tb is not None:
                self._tb.add_scalar(f"{split}/{name}", value, step)
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({f"{split}/{name}": value for name, value in values.items()}, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """A progress bar over steps with rate and ETA: tqdm when installed, plain lines otherwise.

    Args:
        total: the last step.
        initial: the step it starts from (resume).
        desc: label.
        enabled: ``False`` silences it (non-zero ranks).
        every: with the plain fallback, print every this many steps (``None``: about every tenth of
            ``total``).
        unit: what a step is (``"step"``, ``"batch"``, ``"frame"``).
        leave: keep the finished tqdm bar on screen (the evaluation bars do not).
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "train", enabled: bool = True,
                 every: Optional[int] = 50, unit: str = "step", leave: bool = True):
        every = max(1, total // 10) if every is None else every
        self.total, self.step, self.desc, self.enabled, self.every = total, initial, desc, enabled, every
        self.unit = unit
        self._start, self._initial, self._postfix, self._bar = time.perf_counter(), initial, "", None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                                 unit=unit, file=sys.stderr, leave=leave)

    def update(self, step: int, **postfix: float) -> None:
        if not self.enabled:
            return
        self._postfix = " ".join(f"{key}={value:.4g}" for key, value in postfix.items())
        if self._bar is not None:
            self._bar.update(step - self.step)
            if postfix:
                self._bar.set_postfix_str(self._postfix, refresh=False)
        elif step % self.every == 0 or step == self.total:
            elapsed = time.perf_counter() - self._start
            rate = (step - self._initial) / elapsed if elapsed > 0 else float("nan")
            eta = (self.total - step) / rate if rate > 0 else float("inf")
            print(f"{self.desc} {step}/{self.total} [{_clock(elapsed)}<{_clock(eta)}, "
                  f"{rate:.2f} {self.unit}/s] {self._postfix}", file=sys.stderr, flush=True)
        self.step = step

    def write(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
