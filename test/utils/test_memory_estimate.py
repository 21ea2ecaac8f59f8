"""Erwin.estimate_memory against peaks measured in fresh processes, and the large-cloud example's
refusal of a run predicted not to fit."""
import json
import os
import subprocess
import sys

import pytest

from torch_geometric_erwin.nn import Erwin
from torch_geometric_erwin.utils import available_memory, estimate_erwin_memory

from support import ROOT
from support.examples import load_example

#: The estimate is meant as an upper bound within this factor of the measured peak.
FACTOR = 3.0


def measured_peak_bytes(stage: str, n: int) -> float:
    """Peak resident-set growth of one ``stage`` call of ``md-small`` on ``n`` points (the scale benchmark's
    case, a fresh process whose resident set follows the live tensors), after a warm-up at ``n / 4``."""
    spec = dict(stage=stage, n=n, warmup=n // 4, repeats=1, reference=None)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "scale.py"), "--case", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"] * 2**20


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["infer", "train", "train-ckpt"])
@pytest.mark.parametrize("n", [2**12, 2**14])
def test_estimate_bounds_the_measured_peak_within_a_factor(stage, n):
    model = Erwin.from_preset("md-small")
    predicted = model.estimate_memory(n, training=stage != "infer", activation_checkpointing=stage == "train-ckpt")
    measured = measured_peak_bytes(stage, n)
    assert measured <= predicted <= FACTOR * measured, (stage, n, measured / 2**20, predicted / 2**20)


def test_estimate_follows_the_configuration():
    model = Erwin.from_preset("md-small")
    n = 2**16
    infer = model.estimate_memory(n)
    plain = model.estimate_memory(n, training=True)
    checkpointed = model.estimate_memory(n, training=True, activation_checkpointing=True)
    assert infer < checkpointed < plain
    # linear in the slots: a graph of 2^16 + 1 points pads to 2^17 slots, two graphs of 2^16 take twice one
    assert model.estimate_memory([n, n], training=True) == pytest.approx(2 * plain, rel=1e-6)
    assert model.estimate_memory(n + 1, training=True) > 1.9 * plain
    # the model's own checkpointing setting is the default
    model.activation_checkpointing = True
    assert model.estimate_memory(n, training=True) == checkpointed
    assert model.estimate_memory(n) == infer == estimate_erwin_memory(model, n)
    # wider levels need more
    assert Erwin.from_preset("md-medium").estimate_memory(n, training=True) > plain
    assert available_memory() > 0


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "1000", [], [100, 0]])
def test_estimate_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="num_nodes"):
        Erwin.from_preset("md-small").estimate_memory(bad)


def _large_cloud(argv, tmp_path, capsys):
    module = load_example("large_cloud")
    status = module.run(module.EXPERIMENT, [*argv, "--out", str(tmp_path / "out"), "--no-progress", "--no-tensorboard"])
    return status, capsys.readouterr().err.strip()


def test_large_cloud_refuses_a_run_that_will_not_fit(tmp_path, capsys):
    model = Erwin.from_preset("md-small", in_channels=16)
    n = 2**20
    checkpointed_gb = model.estimate_memory(n, training=True, activation_checkpointing=True) / 2**30
    plain_gb = model.estimate_memory(n, training=True) / 2**30
    budget = (checkpointed_gb + plain_gb) / 2  # checkpointing fits, the plain step does not
    status, err = _large_cloud(["--num-points", "2^20", "--no-activation-checkpointing",
                                "--memory-budget", f"{budget:.2f}"], tmp_path, capsys)
    assert status == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "predicted to need" in err and "1048576 points" in err and "--memory-budget" in err
    assert "drop --no-activation-checkpointing" in err
    # nothing was generated or trained
    assert not (tmp_path / "out").exists() and "generated" not in err

    status, err = _large_cloud(["--num-points", "2^20", "--size", "medium", "--memory-budget", "1"], tmp_path, capsys)
    assert status == 2 and "predicted to need" in err and "activation checkpointing on" in err
    assert "--size small" in err
    suggested = int(err.split("--num-points ")[1].split()[0])
    assert suggested < n and model.estimate_memory(suggested, training=True, activation_checkpointing=True) < 2**30


def test_large_cloud_rejects_too_few_points(tmp_path, capsys):
    status, err = _large_cloud(["--num-points", "100"], tmp_path, capsys)
    assert status == 2 and "--num-points" in err and "512" in err
    status, err = _large_cloud(["--num-points", "1024", "--num-train", "0"], tmp_path, capsys)
    assert status == 2 and "--num-train" in err
