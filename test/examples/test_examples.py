"""Every example: two training steps and one evaluation on fixture data; bad command lines."""
import argparse
import json
import math
import os
import subprocess
import sys

import pytest

from support import ROOT
from support.examples import ALL_EXAMPLES, ERWIN_ONLY, EXAMPLES, load_example
from support.examples import fast_args as _fast_args, run_example as _run

#: A small generated N-body set (the example's data are generated on first use).
NBODY_SMALL = ["--num-train", "4", "--num-eval", "2", "--num-particles", "48"]
#: Examples whose data is generated, not read: no missing-root or bad-layout errors to check.
GENERATED = {"nbody", "large_cloud"}


def _this_checkout():
    """The environment of a script run in a subprocess that imports this checkout's package (a script's
    own folder comes first on its path, so the package is otherwise whichever one is installed)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))


def test_every_example_has_synthetic_data():
    for name in ALL_EXAMPLES:
        experiment = load_example(name).EXPERIMENT
        assert (experiment.synthetic_data is None) == (name in GENERATED), name
    assert load_example("nbody").EXPERIMENT.synthetic_options


@pytest.mark.parametrize("name, model", [(name, model) for model in ("mpnn", "erwin") for name in ALL_EXAMPLES
                                         if model == "erwin" or name not in ERWIN_ONLY])
def test_example_trains_two_steps_and_evaluates(name, model, tmp_path, capsys):
    """--synthetic: the example's tiny files in the real format, then two steps and an evaluation."""
    status = _run(name, ["--synthetic", "--data", str(tmp_path / "data"), *_fast_args(tmp_path, model)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert (name in GENERATED) != (tmp_path / "data" / "raw").is_dir()
    out = tmp_path / "out"
    rows = json.loads((out / "results.json").read_text())
    assert [row["model"] for row in rows] == [model]
    assert rows[0]["steps"] == 2 and rows[0]["config"]["synthetic"] is True
    assert rows[0]["test"] and all(math.isfinite(v) for v in rows[0]["test"].values()
                                   if not isinstance(v, list))
    for figure in ("loss_curves.png", "ball_tree.png"):
        assert (out / figure).stat().st_size > 0
    assert (out / model / "checkpoints" / "best.pt").exists()
    assert str(out) in captured.out and "| " + model in captured.out


#: Examples whose clouds do not move between steps: trees and graphs are part of the datasets' pre_transform.
STATIC = {"airfoil", "cosmology", "elasticity", "nbody", "pipe", "plasticity", "shapenet_car"}


def test_static_examples_are_the_ones_declared_static():
    for name in ALL_EXAMPLES:
        experiment = load_example(name).EXPERIMENT
        assert experiment.static == (name in STATIC), name
        assert (experiment.graph is not None) == (name in STATIC), name


def _count_tree_work(monkeypatch):
    """Counts of the trees the ball-tree models build and of those they read from a batch."""
    from torch_geometric_erwin.nn.models.base import BallTreeModel
    from torch_geometric_erwin.tree import BallTree
    counts = {"built": 0, "read": 0}
    build, read = BallTreeModel.build_tree, BallTree.from_data.__func__

    def counted_build(self, *args, **kwargs):
        counts["built"] += 1
        return build(self, *args, **kwargs)

    def counted_read(cls, *args, **kwargs):
        counts["read"] += 1
        return read(cls, *args, **kwargs)
    monkeypatch.setattr(BallTreeModel, "build_tree", counted_build)
    monkeypatch.setattr(BallTree, "from_data", classmethod(counted_read))
    return counts


def _train_counting_trees(name, model, tmp_path, monkeypatch, capsys):
    counts = _count_tree_work(monkeypatch)
    argv = ["--synthetic", "--data", str(tmp_path / "data"), *_fast_args(tmp_path, model)]
    assert _run(name, argv) == 0, capsys.readouterr().err
    return counts


def test_a_static_example_reads_the_trees_it_processed_once(tmp_path, monkeypatch, capsys):
    """Cosmology: Erwin's training, validation and test batches carry the trees of the dataset's pre_transform
    (no tree is built in any step); predict and the same pre-processing later read the processed files again;
    the kNN graph is not stored (``store_graph=False``) but built on every access, for the MPNN too, which
    needs no pre-processing of its own."""
    from torch_geometric_erwin.datasets import Cosmology
    counts = _train_counting_trees("cosmology", "erwin", tmp_path, monkeypatch, capsys)
    assert counts["built"] == 0 and counts["read"] >= 2 + 2  # two steps, then validation and test batches
    assert (tmp_path / "out" / "ball_tree.png").stat().st_size > 0

    def processed():
        return {path.parent.name: path.stat().st_mtime_ns
                for path in (tmp_path / "data" / "processed").glob("pre-*/*.pt")}
    first = processed()
    assert len(first) == 1
    # predict rebuilds the pre-processing from the checkpoint's backbone: it reads the run's processed copy
    best = tmp_path / "out" / "erwin" / "checkpoints" / "best.pt"
    assert _run("cosmology", ["predict", "--checkpoint", str(best), "--eval-limit", "2", "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "out" / "erwin" / "predictions" / "test_metrics.json").read_text())
    result = json.loads((tmp_path / "out" / "erwin" / "results.json").read_text())
    assert metrics["metrics"] == pytest.approx(result["test"], rel=1e-5) and processed() == first
    experiment = load_example("cosmology").EXPERIMENT
    args = argparse.Namespace(data=str(tmp_path / "data"), num_samples=4, num_eval_samples=2)
    for name in ("erwin", "mpnn"):
        pre_transform = experiment.pre_transform(experiment.backbones[name](8, "small", experiment))
        assert (pre_transform is None) == (name == "mpnn")
        stored = Cosmology(args.data, split="train", num_samples=4, pre_transform=pre_transform, log=False)[0]
        assert "edge_index" not in stored and ("tree_index" in stored) == (name == "erwin")
        sample = experiment.load_splits(args, pre_transform)[0][0]
        assert ("tree_index" in sample) == (name == "erwin")
        assert sample.edge_index.shape == (2, 10 * sample.num_nodes)  # the reference's 10 neighbours
        assert not (sample.edge_index[0] == sample.edge_index[1]).any()  # without self-loops
    assert processed() == first  # Erwin's read, not processed again


def test_a_moving_example_builds_a_tree_in_every_step(tmp_path, monkeypatch, capsys):
    counts = _train_counting_trees("md", "erwin", tmp_path, monkeypatch, capsys)
    assert counts["read"] == 0 and counts["built"] >= 2 + 2


def test_synthetic_sets_what_is_not_given_and_data_is_required_without_it(tmp_path):
    from torch_geometric_erwin.training import UsageError
    from torch_geometric_erwin.training.parser import SYNTHETIC_TRAINING, parse_args
    experiment = load_example("md").EXPERIMENT
    args = parse_args(experiment, ["--synthetic", "--out", str(tmp_path), "--steps", "3"])
    assert args.steps == 3 and args.seq_len == 4 and args.batch_size == SYNTHETIC_TRAINING["batch_size"]
    assert args.data == os.path.join(str(tmp_path), "synthetic-data") and args.time_budget is None
    args = parse_args(experiment, ["--synthetic", "--data", "elsewhere", "--seq-len", "6"])
    assert args.data == "elsewhere" and args.seq_len == 6 and args.steps == SYNTHETIC_TRAINING["steps"]
    budget = parse_args(experiment, ["--synthetic", "--time-budget", "30"])
    assert budget.time_budget == 30 and budget.val_every == SYNTHETIC_TRAINING["val_every"]
    with pytest.raises(UsageError, match="--data is required: the md data root .* or pass --synthetic"):
        parse_args(experiment, [])


def test_an_interrupted_synthetic_write_leaves_no_raw_folder(tmp_path):
    from torch_geometric_erwin.training.runner import write_synthetic_data
    experiment = load_example("airfoil").EXPERIMENT
    writer = experiment.synthetic_data

    def interrupted(raw_dir):
        writer(raw_dir)
        raise KeyboardInterrupt

    experiment.synthetic_data = interrupted
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_data(experiment, str(tmp_path / "data"))
    assert os.listdir(tmp_path / "data") == []
    experiment.synthetic_data = writer
    write_synthetic_data(experiment, str(tmp_path / "data"))
    assert os.listdir(tmp_path / "data") == ["raw"]
    from torch_geometric_erwin.datasets import Airfoil
    assert len(Airfoil(str(tmp_path / "data"), split="test")) == 200


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_every_example_runs_with_synthetic_alone(name, tmp_path):
    """What a new user types: the script, --synthetic and an output folder (every other option at its
    default, the default models included)."""
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, f"{name}.py"), "--synthetic", "--out",
                             str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True,
                            env=_this_checkout(), timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["model"] for row in rows] == list(load_example(name).EXPERIMENT.default_models)


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        _run(name, ["--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--data", "--size", "--model", "--steps", "--resume", "--amp", "--compile", "--device"):
        assert option in help_text


def _bad(name, argv, capsys):
    status = _run(name, argv)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("name", sorted(set(ALL_EXAMPLES) - GENERATED))
def test_bad_command_lines(name, tmp_path, capsys):
    from torch_geometric_erwin.training.runner import write_synthetic_data
    data = str(tmp_path / "data")
    write_synthetic_data(load_example(name).EXPERIMENT, data)
    err = _bad(name, ["--data", data, "--size", "huge"], capsys)
    assert "--size" in err and "huge" in err
    err = _bad(name, ["--data", str(tmp_path / "missing")], capsys)
    assert "does not exist" in err and "missing" in err
    (tmp_path / "empty").mkdir()
    err = _bad(name, ["--data", str(tmp_path / "empty"), *_fast_args(tmp_path, "mpnn")], capsys)
    assert "missing" in err


def test_bad_command_line_in_a_subprocess_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, "md.py"), "--data", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=120, env=_this_checkout())
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def _nbody(tmp_path, *extra):
    return _run("nbody", ["--data", str(tmp_path / "data"), *NBODY_SMALL, "--model", "mpnn",
                          "--val-every", "2", "--batch-size", "2", "--out", str(tmp_path / "out"), "--no-progress",
                          "--no-tensorboard", "--seed", "1", *extra])


def test_train_predict_and_resume_on_nbody(tmp_path, capsys):
    """Two steps, then predict on the test split with the best checkpoint: the metrics are the run's
    test metrics, the predictions one row per node; --resume --steps 3 extends the run with the saved
    options (here data options that differ from the defaults), and refuses changed ones."""
    assert _nbody(tmp_path, "--steps", "2") == 0, capsys.readouterr().err
    run = tmp_path / "out" / "mpnn"
    result = json.loads((run / "results.json").read_text())
    assert result["config"]["steps"] == 2 and result["config"]["time_budget"] is None
    assert result["config"]["model"] == "mpnn" and "resume" not in result["config"]
    capsys.readouterr()
    best = str(run / "checkpoints" / "best.pt")
    assert _run("nbody", ["predict", "--checkpoint", best, "--split", "test"]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "predictions" / "test_metrics.json").read_text())
    assert metrics["num_graphs"] == 2 and metrics["split"] == "test" and metrics["step"] == 2
    assert metrics["metrics"] == pytest.approx(result["test"], rel=1e-5)
    import torch
    predictions = torch.load(run / "predictions" / "test.pt", weights_only=True)
    assert predictions["outputs"].shape == (96, 3) and predictions["ptr"].tolist() == [0, 48, 96]

    capsys.readouterr()
    assert _run("nbody", ["--out", str(tmp_path / "out"), "--model", "mpnn", "--resume", "--steps", "3",
                          "--no-progress"]) == 0, capsys.readouterr().err
    resumed = json.loads((run / "results.json").read_text())
    assert resumed["steps"] == 3 and resumed["config"]["num_particles"] == 48
    assert resumed["config"]["batch_size"] == 2 and resumed["config"]["no_tensorboard"] is True  # saved
    err = _bad("nbody", ["--out", str(tmp_path / "out"), "--model", "mpnn", "--resume", "--lr", "0.5",
                         "--batch-size", "4"], capsys)
    assert "--lr 0.5 (saved: 0.001)" in err and "--batch-size 4 (saved: 2)" in err
    err = _bad("nbody", ["--out", str(tmp_path / "out"), "--model", "mpnn", "--resume", "--steps", "3"], capsys)
    assert "does not extend the run, which has trained 3 steps" in err


def test_predict_refuses_other_files_and_debug_shows_tracebacks(tmp_path, capsys):
    from torch_geometric_erwin.nn import MPNN
    model_file = str(tmp_path / "model.pt")
    MPNN(4, 8, 1).save(model_file)
    err = _bad("nbody", ["predict", "--checkpoint", model_file], capsys)
    assert "is a model file; predict needs a run's training checkpoint" in err
    assert "--checkpoint" in _bad("nbody", ["predict"], capsys)
    status = _run("nbody", ["predict", "--checkpoint", str(tmp_path / "missing.pt"), "--debug"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" in err and "no checkpoint at" in err.splitlines()[-1]


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        _run("nbody", ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, default in (("--lr LR", "1e-05"), ("--eval-batch-size", "(default: 8)"), ("--seed", "(default: 0)"),
                            ("--weight-decay", "(default: 0.01)"), ("--schedule", "(default: cosine)")):
        assert option in text and default in text
    assert "(default: None)" not in text and "predict --checkpoint" in text
    with pytest.raises(SystemExit):
        _run("nbody", ["predict", "--help"])
    assert "--split {train,val,test}" in capsys.readouterr().out


def test_missing_optional_packages_stop_the_run_before_any_work(tmp_path, capsys, monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    example = load_example("nbody")
    monkeypatch.setattr(example.EXPERIMENT, "load", lambda args: pytest.fail("data were loaded"))
    for missing, extra, hint in (("tensorboard", [], "or pass --no-tensorboard"),
                                 ("matplotlib", ["--no-tensorboard"], "plots")):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == missing else find_spec(name))
        status = example.run(example.EXPERIMENT, ["--out", str(tmp_path / "out"), "--steps", "1", *extra])
        err = capsys.readouterr().err
        assert status == 2 and f"{missing} is not installed" in err and hint in err


def test_a_model_the_experiment_cannot_build_stops_the_run_before_any_training(tmp_path, capsys):
    """eagle has no Erwin NSA configuration: asking for it after mpnn fails before mpnn trains or data load."""
    data = str(tmp_path / "data")
    err = _bad("eagle", ["--synthetic", "--data", data, *_fast_args(tmp_path, "mpnn"), "--model", "mpnn",
                         "erwin-nsa"], capsys)
    assert "erwin-nsa has no preset for eagle" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()
    err = _bad("nbody", [*_fast_args(tmp_path, "mpnn"), "--activation-checkpointing"], capsys)
    assert "mpnn has no activation checkpointing" in err and not (tmp_path / "out").exists()


def test_results_are_merged_by_model_with_a_csv(tmp_path, capsys):
    """Training mpnn, then erwin, then mpnn again into one --out keeps one row per model (the latest run's) in
    results.json, results.md and results.csv."""
    import csv
    for model, seed in (("mpnn", "1"), ("erwin", "1"), ("mpnn", "2")):
        assert _nbody(tmp_path, "--steps", "1", "--eval-limit", "2", "--model", model, "--seed", seed) == 0, \
            capsys.readouterr().err
    out = tmp_path / "out"
    rows = json.loads((out / "results.json").read_text())
    assert [row["model"] for row in rows] == ["mpnn", "erwin"] and rows[0]["config"]["seed"] == 2
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| mpnn |") and table[3].startswith("| erwin |")
    with open(out / "results.csv") as handle:
        records = list(csv.DictReader(handle))
    assert [r["model"] for r in records] == ["mpnn", "erwin"]
    for record, row in zip(records, rows):
        assert float(record["test_mse"]) == row["test"]["mse"] and int(record["steps"]) == 1
        assert int(record["num_parameters"]) == row["num_parameters"] and record["experiment"] == "nbody"
