"""Every example: two training steps and one evaluation on fixture data; bad command lines."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_md(root):
    from torch_geometric_erwin.datasets.fixtures_md_eagle import write_polymer_md
    write_polymer_md(os.path.join(root, "raw"))
    return ["--seq-len", "4"]


def write_eagle(root):
    from torch_geometric_erwin.datasets.fixtures_md_eagle import write_eagle as write
    write(os.path.join(root, "raw"))
    return ["--train-window", "3", "--test-window", "4"]


def write_cosmology(root):
    from torch_geometric_erwin.datasets.fixtures_cosmology_shapenet import write_cosmology as write
    write(os.path.join(root, "raw"))
    return ["--num-samples", "4", "--num-eval-samples", "2"]


def write_shapenet_car(root):
    from torch_geometric_erwin.datasets.fixtures_cosmology_shapenet import write_shapenet_car as write
    write(os.path.join(root, "raw"), cars_per_param=(99,) * 8 + (97,), num_points=24)  # the real 889 cars
    return []


def geo_fno(name):
    def write(root):
        from torch_geometric_erwin.datasets import fixtures_geo_fno
        getattr(fixtures_geo_fno, f"write_{name}")(os.path.join(root, "raw"))
        return []
    return write


def write_nbody(root):
    return ["--num-train", "4", "--num-eval", "2", "--num-particles", "48"]  # generated on first use


def write_large_cloud(root):
    return ["--num-points", "1024", "--num-train", "2"]  # generated in memory


FIXTURES = {"md": write_md, "eagle": write_eagle, "cosmology": write_cosmology,
            "shapenet_car": write_shapenet_car, "airfoil": geo_fno("airfoil"), "pipe": geo_fno("pipe"),
            "elasticity": geo_fno("elasticity"), "plasticity": geo_fno("plasticity"), "nbody": write_nbody,
            "large_cloud": write_large_cloud}
#: Examples whose data is generated, not read: no missing-root or bad-layout errors to check.
GENERATED = {"nbody", "large_cloud"}
#: Examples that train Erwin only (their clouds carry no graph for the MPNN baseline).
ERWIN_ONLY = {"large_cloud"}
ALL_EXAMPLES = sorted(f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py"))


def _run(name, argv):
    return load_example(name).run(load_example(name).EXPERIMENT, argv)


def _fast_args(tmp_path, model):
    return ["--model", model, "--steps", "2", "--val-every", "2", "--batch-size", "2",
            "--out", str(tmp_path / "out"), "--no-progress", "--no-tensorboard", "--seed", "1", "--eval-limit", "2"]


def test_every_example_has_a_fixture():
    assert set(FIXTURES) == set(ALL_EXAMPLES)


@pytest.mark.parametrize("name, model", [(name, model) for model in ("mpnn", "erwin") for name in sorted(FIXTURES)
                                         if model == "erwin" or name not in ERWIN_ONLY])
def test_example_trains_two_steps_and_evaluates(name, model, tmp_path, capsys):
    extra = FIXTURES[name](str(tmp_path / "data"))
    status = _run(name, ["--data", str(tmp_path / "data"), *extra, *_fast_args(tmp_path, model)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    out = tmp_path / "out"
    rows = json.loads((out / "results.json").read_text())
    assert [row["model"] for row in rows] == [model]
    assert rows[0]["steps"] == 2
    assert rows[0]["test"] and all(math.isfinite(v) for v in rows[0]["test"].values()
                                   if not isinstance(v, list))
    for figure in ("loss_curves.png", "ball_tree.png"):
        assert (out / figure).stat().st_size > 0
    assert (out / model / "checkpoints" / "best.pt").exists()
    assert str(out) in captured.out and "| " + model in captured.out


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


@pytest.mark.parametrize("name", sorted(set(FIXTURES) - GENERATED))
def test_bad_command_lines(name, tmp_path, capsys):
    data = str(tmp_path / "data")
    FIXTURES[name](data)
    err = _bad(name, ["--data", data, "--size", "huge"], capsys)
    assert "--size" in err and "huge" in err
    err = _bad(name, ["--data", str(tmp_path / "missing")], capsys)
    assert "does not exist" in err and "missing" in err
    (tmp_path / "empty").mkdir()
    err = _bad(name, ["--data", str(tmp_path / "empty"), *_fast_args(tmp_path, "mpnn")], capsys)
    assert "missing" in err


def test_bad_command_line_in_a_subprocess_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, "md.py"), "--data", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def _nbody(tmp_path, *extra):
    return _run("nbody", ["--data", str(tmp_path / "data"), *write_nbody(None), "--model", "mpnn",
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
