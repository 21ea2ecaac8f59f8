"""The result rows of a run: merged with an earlier run's, as a Markdown table and as CSV.

Each trained model gives one row (``experiment``, ``model``, ``size``, ``test`` metrics,
``num_parameters``, ``steps``, ``wall_time_s``, ...); ``OUT/results.{json,md,csv}`` hold the rows of
every model trained into the same ``OUT/``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from typing import Any, Dict, List


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
