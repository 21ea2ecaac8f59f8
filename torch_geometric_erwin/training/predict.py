"""``<example>.py predict``: a trained checkpoint's predictions and metrics on one split.

``python examples/md.py predict --checkpoint runs/md/erwin/checkpoints/best.pt --split test``
rebuilds the task the run trained (the experiment's task wrapper, with the run's recorded command
line, and the backbone from its recorded configuration), loads the weights and writes, by default
next to the checkpoint's run (``OUT/<model>/predictions/``):

* ``<split>.pt``: ``{"split", "checkpoint", "step", "ptr", "outputs", "metrics"}``; ``outputs`` is
  the task's output (a tensor, or a tuple or dict of tensors) for every node of the split,
  concatenated over the graphs along its node dimension, in the dataset's order; ``ptr`` ``[G + 1]``
  gives each graph's node offsets; ``metrics`` the per-graph metrics (``[G]`` or ``[G, H]``);
* ``<split>_metrics.json``: the mean of every metric over the split, with the split, the checkpoint,
  its training step and the number of graphs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.loader import DataLoader

from torch_geometric_erwin.datasets.io.atomic import atomic_json, atomic_torch_save
from torch_geometric_erwin.nn.models.serialization import load_file
from torch_geometric_erwin.training.distributed import resolve_device
from torch_geometric_erwin.training.errors import UsageError
from torch_geometric_erwin.training.loggers import Progress
from torch_geometric_erwin.training.parser import CommandLineParser, positive_int

SPLITS = ("train", "val", "test")


def build_predict_parser(experiment) -> argparse.ArgumentParser:
    parser = CommandLineParser(prog=f"{experiment.name}.py predict",
                               description="Predictions and metrics of a trained checkpoint on one split.",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a run's checkpoint (OUT/<model>/checkpoints/best.pt or last.pt)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="the split to predict")
    parser.add_argument("--data", default=None, help="dataset root (default: the run's)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: OUT/<model>/predictions of the checkpoint's run)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="graphs per batch (default: the run's evaluation batch size)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--eval-limit", type=positive_int, default=None, metavar="N",
                        help="predict the first N graphs of the split only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


def _backbone_factory(record: Optional[Dict[str, Any]], run: argparse.Namespace, experiment):
    """``(in_channels) -> backbone``: from the recorded class and configuration, or (for a backbone of
    another package, which records none) from the experiment's factory of the run's model."""
    if record is None:
        factory = experiment.backbones[run.model]
        return lambda in_channels: factory(in_channels, run.size, experiment)

    def build(in_channels: int):
        import torch_geometric_erwin.nn as models
        cls = getattr(models, record["class"], None)
        if cls is None or not hasattr(cls, "from_checkpoint"):
            raise UsageError(f"the checkpoint's backbone is a {record['class']}, which this version of "
                             "torch_geometric_erwin does not have")
        if record["config"].get("in_channels") != in_channels:
            raise UsageError(f"the checkpoint's backbone takes {record['config'].get('in_channels')} input "
                             f"channels but the task feeds it {in_channels}: the example's encoder changed "
                             "since the run")
        return cls(**record["config"])
    return build


def _node_dim(value: Tensor, num_nodes: int) -> int:
    for dim, size in enumerate(value.shape):
        if size == num_nodes:
            return dim
    raise ValueError(f"a task output of shape {list(value.shape)} has no node dimension ({num_nodes} nodes)")


def _concat(outputs: List[Any], num_nodes: List[int]) -> Any:
    """Per-batch outputs (tensors, tuples or dicts of them) concatenated along their node dimension."""
    first = outputs[0]
    if isinstance(first, Tensor):
        dim = _node_dim(first, num_nodes[0])
        return torch.cat(outputs, dim=dim)
    if isinstance(first, (tuple, list)):
        return type(first)(_concat([out[i] for out in outputs], num_nodes) for i in range(len(first)))
    if isinstance(first, dict):
        return {key: _concat([out[key] for out in outputs], num_nodes) for key in first}
    raise TypeError(f"the task returns {type(first).__name__}, expected tensors (or tuples/dicts of them)")


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().float().cpu()
    if isinstance(value, (tuple, list)):
        return type(value)(_to_cpu(item) for item in value)
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    return value


def predict(experiment, argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Parse ``argv`` (the words after ``predict``), predict the split, write the files; returns the
    metrics record (what ``<split>_metrics.json`` holds)."""
    args = build_predict_parser(experiment).parse_args(argv)
    payload = load_file(args.checkpoint)
    if payload.get("kind") != "training":
        raise UsageError(f"{args.checkpoint} is a {payload.get('kind')} file; predict needs a run's training "
                         "checkpoint (OUT/<model>/checkpoints/best.pt or last.pt)")
    run_record = payload.get("run") or {}
    if "model" not in run_record or run_record.get("experiment") != experiment.name:
        source = run_record.get("experiment")
        raise UsageError(f"{args.checkpoint} records no {experiment.name} run"
                         + (f" (it is of the {source} example: run examples/{source}.py predict)" if source else
                            " configuration (written outside the examples' command line)"))
    run = argparse.Namespace(**run_record)
    if args.data is not None:
        run.data = args.data
    if experiment.default_data is None:
        experiment.check_root(run.data)
    task = experiment.build_task(_backbone_factory(payload.get("backbone"), run, experiment), run)
    # the run's pre-processing (its model's trees and graph): the processed files of the run are read
    dataset = experiment.load_splits(run, experiment.pre_transform(task.backbone))[SPLITS.index(args.split)]
    if args.eval_limit is not None:
        dataset = dataset[:args.eval_limit]
    task.load_state_dict(payload["model"])
    device = resolve_device(args.device)
    task.to(device).eval()

    outputs, metrics, num_nodes = [], {}, []
    batch_size = args.batch_size or run_record.get("eval_batch_size") or run_record.get("batch_size") or 1
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    progress = Progress(len(loader), desc=f"predict {args.split}", enabled=not args.no_progress, every=None,
                        unit="batch")
    task.show_progress = not args.no_progress
    with torch.no_grad():
        for index, batch in enumerate(loader):
            batch = batch.to(device)
            out = task(batch)
            for key, value in task.metrics(batch, out).items():
                metrics.setdefault(key, []).append(value.detach().double().cpu())
            outputs.append(_to_cpu(out))
            num_nodes.append(batch.num_nodes)
            ptr = batch.ptr.diff().cpu()
            metrics.setdefault("_nodes", []).append(ptr)
            progress.update(index + 1)
    progress.close()
    if not outputs:
        raise UsageError(f"the {args.split} split is empty")
    counts = torch.cat(metrics.pop("_nodes"))
    per_graph = {key: torch.cat(values).float() for key, values in metrics.items()}
    out_dir = args.out or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.checkpoint))),
                                       "predictions")
    os.makedirs(out_dir, exist_ok=True)
    atomic_torch_save({"split": args.split, "checkpoint": os.path.abspath(args.checkpoint),
                       "step": payload.get("step"), "ptr": torch.cat([counts.new_zeros(1), counts.cumsum(0)]),
                       "outputs": _concat(outputs, num_nodes), "metrics": per_graph},
                      os.path.join(out_dir, f"{args.split}.pt"))
    summary = {"experiment": experiment.name, "model": run.model, "split": args.split,
               "checkpoint": os.path.abspath(args.checkpoint), "step": payload.get("step"),
               "num_graphs": int(counts.numel()),
               "metrics": {key: (value.mean(0).item() if value.dim() == 1 else value.mean(0).tolist())
                           for key, value in sorted(per_graph.items())}}
    atomic_json(summary, os.path.join(out_dir, f"{args.split}_metrics.json"))
    print(json.dumps(summary["metrics"]))
    print(f"predictions and metrics of {summary['num_graphs']} {args.split} graphs in {out_dir}", file=sys.stderr)
    return summary
