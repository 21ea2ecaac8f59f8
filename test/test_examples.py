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


FIXTURES = {"md": write_md, "eagle": write_eagle, "cosmology": write_cosmology,
            "shapenet_car": write_shapenet_car, "airfoil": geo_fno("airfoil"), "pipe": geo_fno("pipe"),
            "elasticity": geo_fno("elasticity"), "plasticity": geo_fno("plasticity"), "nbody": write_nbody}
#: Examples whose data is generated, not read: no missing-root or bad-layout errors to check.
GENERATED = {"nbody"}
ALL_EXAMPLES = sorted(f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py"))


def _run(name, argv):
    return load_example(name).run(load_example(name).EXPERIMENT, argv)


def _fast_args(tmp_path, model):
    return ["--model", model, "--steps", "2", "--val-every", "2", "--batch-size", "2",
            "--out", str(tmp_path / "out"), "--no-progress", "--no-tensorboard", "--seed", "1", "--eval-limit", "2"]


def test_every_example_has_a_fixture():
    assert set(FIXTURES) == set(ALL_EXAMPLES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("model", ["mpnn", "erwin"])
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
