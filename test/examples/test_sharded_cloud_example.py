"""examples/sharded_cloud.py: two steps on two gloo ranks under torchrun train the model exactly as two
steps in one process on the whole cloud do, within a memory budget that one process exceeds, and a run
resumed on one rank continues it."""
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from support import ROOT
from support.examples import load_example

SCRIPT = os.path.join(ROOT, "examples", "sharded_cloud.py")
SMALL = ["--model", "tiny", "--num-particles", "500", "--dtype", "float64", "--lr", "1e-2", "--device", "cpu",
         "--log-every", "1"]


def _reference(example, data, steps, lr=1e-2, max_grad_norm=1.0):
    """The same training in one process with the plain model on the whole cloud."""
    from torch_geometric_erwin.datasets import SyntheticNBody
    cloud = SyntheticNBody(data, split="train", num_graphs=1, num_particles=500, log=False)[0]
    x, y = cloud.x.double(), cloud.y.double()
    torch.manual_seed(0)
    model = example.build_model("tiny", 1, 3, 3, torch.float64).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    for _ in range(steps):
        optimizer.zero_grad()
        (model(x, cloud.pos) - y).pow(2).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
    return model.state_dict()


def _assert_same_state(actual, expected):
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        if value.is_floating_point():
            assert torch.allclose(actual[name], value, rtol=0, atol=1e-9), name
        else:
            assert torch.equal(actual[name], value), name


@pytest.mark.timeout(300)
def test_two_ranks_train_as_one_process_within_budget_and_resume(tmp_path, capsys):
    from torch_geometric_erwin.nn import Erwin
    data, out = str(tmp_path / "data"), tmp_path / "out"
    # the tiny model keeps about 11 MiB of float64 activations on this cloud in one process, 6 per rank on two
    budget = ["--memory-budget-mib", "8"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", SCRIPT, *SMALL, *budget,
               "--steps", "2", "--data", data, "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, ERWIN_DIST_TIMEOUT="120")
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "500 points on 2 rank(s)" in result.stdout and "step 2/2 | loss" in result.stdout
    kept = re.search(r"activations per rank: ([\d.]+), ([\d.]+) MiB \(budget 8 MiB; ([\d.]+) MiB in all\)",
                     result.stdout)
    assert kept and max(float(kept[1]), float(kept[2])) <= 8 < float(kept[3]), result.stdout

    example = load_example("sharded_cloud")
    expected = _reference(example, data, steps=2)
    _assert_same_state(torch.load(out / "model.pt", weights_only=True)["state_dict"], expected)
    assert isinstance(Erwin.from_checkpoint(str(out / "model.pt")), Erwin)  # a model file of one process
    checkpoint = torch.load(out / "last.pt", weights_only=False)
    assert checkpoint["step"] == 2 and checkpoint["world_size"] == 2

    # the same budget on one rank: refused before the backward pass, pointing at two ranks
    assert example.main([*SMALL, *budget, "--steps", "1", "--data", data, "--out", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    assert "over --memory-budget-mib 8" in err and "launch at least 2 ranks" in err, err
    assert not (tmp_path / "one" / "last.pt").exists()

    # one step, then resumed to two, on a single rank (a process group of one)
    resumed = str(tmp_path / "resumed")
    assert example.main([*SMALL, "--steps", "1", "--data", data, "--out", resumed]) == 0
    assert torch.load(os.path.join(resumed, "last.pt"), weights_only=False)["step"] == 1
    assert example.main([*SMALL, "--steps", "2", "--data", data, "--out", resumed, "--resume"]) == 0
    _assert_same_state(torch.load(os.path.join(resumed, "model.pt"), weights_only=True)["state_dict"], expected)


def test_bad_command_lines_and_clouds(tmp_path, capsys):
    example = load_example("sharded_cloud")
    for argv, text in ((["--steps", "0"], "--steps must be at least 1"),
                       (["--resume", "--out", str(tmp_path / "none")], "no checkpoint"),
                       (["--memory-budget-mib", "-1"], "--memory-budget-mib non-negative"),
                       (["--cloud", str(tmp_path / "missing.pt")], "does not exist")):
        with pytest.raises(SystemExit) as info:
            example.main(argv)
        assert info.value.code == 2 and text in capsys.readouterr().err
    # clouds that do not fit: an error, no traceback
    for name, cloud, text in (("rows", {"pos": torch.rand(8, 3), "x": torch.rand(8, 1), "y": torch.rand(7, 3)},
                               "one row per point"),
                              ("keys", {"pos": torch.rand(8, 3), "x": torch.rand(8, 1)}, "'pos', 'x' and 'y'"),
                              ("nan", {"pos": torch.rand(8, 3).index_fill(0, torch.tensor([3]), float("nan")),
                                       "x": torch.rand(8, 1), "y": torch.rand(8, 3)}, "rank 0: pos")):
        torch.save(cloud, tmp_path / f"{name}.pt")
        assert example.main(["--model", "tiny", "--cloud", str(tmp_path / f"{name}.pt"), "--device", "cpu",
                             "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and text in err and "Traceback" not in err, err


@pytest.mark.timeout(200)
def test_a_cloud_too_small_for_the_ranks_ends_every_rank(tmp_path):
    # 20 points fill 32 slots: 16 per rank, less than one coarsest ball with its pooling group (32)
    torch.save({"pos": torch.rand(20, 3), "x": torch.rand(20, 1), "y": torch.rand(20, 3)}, tmp_path / "cloud.pt")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", SCRIPT, "--model", "tiny",
               "--cloud", str(tmp_path / "cloud.pt"), "--device", "cpu", "--out", str(tmp_path / "out")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, ERWIN_DIST_TIMEOUT="60")
    # a rank left waiting in a collective would outlive the timeout
    result = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env)
    assert result.returncode != 0
    assert "error: rank 0: 2 ranks would cut balls" in result.stderr and "use at most 1 rank(s)" in result.stderr
    assert "rank 1: 2 ranks would cut balls" in result.stderr  # each rank found it; both say so
    # each rank stops with status 2; torchrun may end the second with its SIGTERM first
    assert result.stderr.count("exitcode  : 2") >= 1, result.stderr[-3000:]
    assert "[rank0]: Traceback" not in result.stderr and "[rank1]: Traceback" not in result.stderr
