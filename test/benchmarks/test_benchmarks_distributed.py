"""benchmarks/distributed.py measures what it says: no exchange on one rank, the gradient all-reduce's payload
equal to the parameters' bytes on any number of ranks, activations that shrink with the ranks."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from support import ROOT

SCRIPT = os.path.join(ROOT, "benchmarks", "distributed.py")
ENV = dict(os.environ, PYTHONPATH=ROOT)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_one_and_two_ranks():
    from torch_geometric_erwin.nn import Erwin
    result = subprocess.run([sys.executable, SCRIPT, "--points", "2048", "--ranks", "1", "2", "--repeats", "1",
                             "--json"], cwd=ROOT, capture_output=True, text=True, timeout=850, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = json.loads(result.stdout.strip().splitlines()[-1])
    parameters = sum(p.numel() for p in Erwin.from_preset("md-small").parameters())
    for row in (one, two):
        assert row["gradients_mb"] * 2**20 == 4 * parameters  # one float32 all-reduce of every parameter
        assert row["batch_norm_mb"] > 0 and row["step_s"] > 0 and row["peak_mb"] > 0
    assert one["exchange_mb"] == 0 and one["nodes"] == 2048 and one["halo"] == 0
    assert two["exchange_mb"] > 0 and two["nodes"] == 1024 and two["halo"] > 0
    assert two["activations_mb"] < one["activations_mb"]


def test_bad_world_sizes_are_refused_before_any_process_starts():
    spec = importlib.util.spec_from_file_location("benchmark_distributed", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    for ranks, text in ((3, "powers of two"), (8, "use more points or fewer ranks")):
        with pytest.raises(ValueError, match=text):
            benchmark.measure(2048, "md-small", ranks)
    with pytest.raises(ValueError, match="unknown Erwin preset"):
        benchmark.measure(2048, "md-huge", 2)
