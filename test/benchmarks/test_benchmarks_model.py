"""benchmarks/model.py runs end to end (a smoke run of our model alone) and rejects a bad reference path."""
import os
import subprocess
import sys

import pytest

from support import ROOT

SCRIPT = os.path.join(ROOT, "benchmarks", "model.py")


@pytest.mark.slow
def test_quick_run_prints_every_table():
    result = subprocess.run([sys.executable, SCRIPT, "--quick", "--markdown"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "attention kernel (ours): forward " in out
    for title, header in (
            ("Time, reference README configuration", "| batch x points | fwd ours ms | fwd+bwd ours ms |"),
            ("Peak memory, reference README configuration", "| batch x points | fwd ours MB | fwd+bwd ours MB |"),
            ("Runtime exponent, batch 1", "| points | slots | ours fwd ms | ours fwd+bwd ms |"),
            ("Padding, batch 1 x 5000 points", "| configuration | padding | slots per cloud | fwd ms | fwd+bwd ms |"),
            ("Minor page faults per call", "| batch x points | fwd ours | fwd+bwd ours |")):
        assert title in out and header in out, (title, out)
    assert "| exponent (least squares) |" in out
    assert "| compact |" in out and "| pow2 |" in out


@pytest.mark.slow
def test_steady_heap_runs_under_the_glibc_settings():
    result = subprocess.run([sys.executable, SCRIPT, "--quick", "--markdown", "--sections", "readme", "--steady-heap"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "heap: steady (--steady-heap)" in result.stdout
    assert "Minor page faults per call" in result.stdout


@pytest.mark.slow
def test_separate_processes_time_each_model_in_a_worker():
    result = subprocess.run([sys.executable, SCRIPT, "--quick", "--markdown", "--sections", "readme",
                             "--separate-processes", "--repeats", "2"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "README models timed each in its own process" in result.stdout
    assert "| 1 x 1024 (2048 slots) |" in result.stdout
    rounds = [line for line in result.stderr.splitlines() if "rounds: ours" in line]
    assert len(rounds) == 2 and all(len(line.split(" ms")[0].split("ours ")[1].split()) == 2 for line in rounds)


def test_bad_reference_path_fails_before_any_work(tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, "--quick", "--reference", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--reference" in result.stderr and "models/erwin.py" in result.stderr
    assert "Time, reference README configuration" not in result.stdout
