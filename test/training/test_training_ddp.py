"""Data-parallel training under a gloo process group on CPU (two processes)."""
import os

import pytest
import torch
import torch.multiprocessing as mp

from torch_geometric_erwin.training import (Trainer, TrainConfig, destroy_distributed, init_distributed,
                                            seed_everything)

from support import ROOT
from support.distributed import free_port
from support.training import toy_graphs, toy_task

STEPS = 4


def _config():
    return TrainConfig(steps=STEPS, batch_size=4, lr=3e-3, val_every=2, log_every=1, progress=False,
                       tensorboard=False, max_grad_norm=1.0)


def _make(out_dir, context=None):
    seed_everything(0)
    data = toy_graphs(16)
    return Trainer(toy_task(), data[:10], data[10:13], data[13:], _config(), out_dir, context)


def _worker(rank, world_size, port, out_dir, stop_at, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), ERWIN_DIST_TIMEOUT="120")
    torch.set_num_threads(1)
    context = init_distributed("cpu")
    try:
        trainer = _make(out_dir, context)
        summary = trainer.fit(stop_at=stop_at)
        torch.save({"losses": summary["train_loss"], "val": summary["val"],
                    "params": [p.detach().clone() for p in trainer.task.parameters()]},
                   os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        destroy_distributed(context)


def _spawn(tmp_path, out_dir, stop_at=None):
    result_dir = tmp_path / "results"
    result_dir.mkdir(exist_ok=True)
    mp.spawn(_worker, args=(2, free_port(), str(out_dir), stop_at, str(result_dir)), nprocs=2, join=True)
    return [torch.load(result_dir / f"rank{r}.pt") for r in range(2)]


# Two gloo processes, ~15 s. Ranks that deadlock while tearing down their process group (see
# distributed._RECENT_COLLECTIVES) would use up the whole CI run: the deadline turns a hang into a failure.
@pytest.mark.timeout(300)
def test_two_processes_match_one_process_and_resume_on_one(tmp_path, gloo_works):
    ranks = _spawn(tmp_path, tmp_path / "ddp")
    for a, b in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(a, b)
    assert ranks[0]["losses"] == ranks[1]["losses"]
    single = _make(str(tmp_path / "single"))
    summary = single.fit()
    assert ranks[0]["losses"] == pytest.approx(summary["train_loss"], rel=1e-5)
    assert ranks[0]["val"]["loss"] == pytest.approx(summary["val"]["loss"], rel=1e-4)
    for a, b in zip(ranks[0]["params"], single.task.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    # interrupted on two processes, resumed on one
    first = _spawn(tmp_path, tmp_path / "switch", stop_at=2)
    resumed = _make(str(tmp_path / "switch")).fit(resume=True)
    assert first[0]["losses"] + resumed["train_loss"] == pytest.approx(summary["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_torchrun_runs_an_example_on_two_processes(tmp_path):
    import json
    import subprocess
    import sys

    from torch_geometric_erwin.testing import write_polymer_md
    write_polymer_md(str(tmp_path / "data" / "raw"))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               os.path.join(ROOT, "examples", "md.py"), "--data", str(tmp_path / "data"), "--seq-len", "4",
               "--model", "mpnn", "--steps", "4", "--val-every", "2", "--batch-size", "2", "--device", "cpu",
               "--out", str(tmp_path / "out"), "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert rows[0]["steps"] == 4 and rows[0]["test"]
