"""benchmarks/compare.py: every model of the examples on both tasks at a tiny budget, one table row each;
bad command lines fail before any work."""
import math
import os
import subprocess
import sys

import pytest

from support import ROOT

SCRIPT = os.path.join(ROOT, "benchmarks", "compare.py")
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
MODELS = ["erwin", "mpnn", "transolver", "pointnet2", "ptv3"]


def backbone_parameters(task, model):
    """Parameters of the backbone the example builds for ``--model model`` (its encoder's width as input)."""
    from support.examples import load_example
    module = load_example(task)
    experiment = module.EXPERIMENT
    width = module.C_IN if task == "nbody" else 64  # geo_fno_experiment's encoder width
    return sum(p.numel() for p in experiment.backbones[model](width, "small", experiment).parameters())


def rows_of(table):
    """``{(task, model): cells}`` of the Markdown table in ``table``."""
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["task", "model", "test metric", "steps", "train s", "ms/step (median)", "peak MB",
                      "parameters"]
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[(cells[0].split()[0], cells[1])] = dict(zip(header[2:], cells[2:]))
    return rows


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 22 fresh processes: minutes on a busy 2-core machine
def test_tiny_budget_gives_a_sane_row_per_model(tmp_path):
    output = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, SCRIPT, "--budget", "0.3", "--models", *MODELS, "erwin-nsa", "--nbody-graphs", "4",
         "--nbody-particles", "64", "--eval-samples", "2", "--airfoil-grid", "9", "5", "--batch-size", "2",
         "--threads", "1", "--data-dir", str(tmp_path / "data"), "--output", str(output)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    text = output.read_text()
    assert text.strip() in result.stdout and "budget 0.3 s per model" in text
    rows = rows_of(text)
    assert list(rows) == [(task, model) for task in ("nbody", "airfoil") for model in MODELS + ["erwin-nsa"]]
    for (task, model), row in rows.items():
        if model == "erwin-nsa":  # the NSA paper has no preset for either task
            assert row["test metric"].startswith("failed: UsageError: erwin-nsa has no preset for " + task)
            continue
        metric = float(row["test metric"])
        assert math.isfinite(metric) and metric > 0, (task, model, row)
        assert int(row["steps"]) >= 1 and float(row["train s"]) > 0 and float(row["ms/step (median)"]) > 0
        assert float(row["peak MB"]) >= 0
        assert int(row["parameters"].replace(",", "")) == backbone_parameters(task, model), (task, model)


@pytest.mark.parametrize("argv, message", [
    (["--models", "erwin", "pointnet"], "--models: unknown pointnet"),
    (["--budget", "0"], "--budget must be positive"),
])
def test_bad_command_lines_fail_before_any_work(argv, message, tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, *argv, "--data-dir", str(tmp_path)], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert os.listdir(tmp_path) == []
