import math
import os

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from torch_geometric_erwin.training import (Progress, ResumableBatchSampler, SinusoidalEncoding,
                                            TimestepEmbedding, TrainConfig, cosine_schedule, gaussian_nll,
                                            per_graph_cumulative_rmse, per_graph_mse, per_graph_relative_l2,
                                            read_metrics_csv, warmup_cosine_schedule)

from support import TESTS
from support.training import toy_trainer


def _lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _opt(lr=1e-3):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_cosine_schedule_matches_torch_cosine_annealing():
    ours = _lrs(cosine_schedule(_opt(), 50, eta_min=1e-6), 50)
    opt = _opt()
    ref = _lrs(CosineAnnealingLR(opt, T_max=50, eta_min=1e-6), 50)
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_warmup_cosine_matches_reference_construction():
    ours = _lrs(warmup_cosine_schedule(_opt(), 100, 10, eta_min=1e-7), 100)
    opt = _opt()
    warm = LinearLR(opt, start_factor=1e-8, end_factor=1.0, total_iters=10)
    cos = CosineAnnealingLR(opt, T_max=90, eta_min=1e-7)
    ref = _lrs(SequentialLR(opt, [warm, cos], milestones=[10]), 100)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("kwargs", [dict(total_steps=0), dict(total_steps=10, warmup_steps=10),
                                    dict(total_steps=10, warmup_steps=2, eta_min=1.0)])
def test_schedule_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        warmup_cosine_schedule(_opt(), **{"warmup_steps": 0, **kwargs})


def test_gaussian_nll_equals_normal_log_prob():
    mean, std, target = torch.randn(5, 3), torch.rand(5, 3) + 0.1, torch.randn(5, 3)
    ref = -torch.distributions.Normal(mean, std).log_prob(target)
    assert torch.allclose(gaussian_nll(mean, std, target), ref, atol=1e-6)


def test_per_graph_metrics_against_loops():
    pred, target = torch.randn(9, 2), torch.randn(9, 2)
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    mse = per_graph_mse(pred, target, batch, 3)
    rel = per_graph_relative_l2(pred, target, batch, 3)
    for g in range(3):
        p, t = pred[batch == g], target[batch == g]
        assert mse[g].item() == pytest.approx(((p - t) ** 2).mean().item(), rel=1e-6)
        assert rel[g].item() == pytest.approx(((p - t).norm() / t.norm()).item(), rel=1e-6)


def test_cumulative_rmse_against_loops():
    steps, pred, target = 4, torch.randn(4, 5, 2), torch.randn(4, 5, 2)
    batch = torch.tensor([0, 0, 1, 1, 1])
    got = per_graph_cumulative_rmse(pred, target, batch, 2)
    assert got.shape == (2, steps)
    for g in range(2):
        per_step = []
        for t in range(steps):
            nodes = [math.sqrt(((pred[t, i] - target[t, i]) ** 2).mean().item())
                     for i in range(5) if batch[i] == g]
            per_step.append(sum(nodes) / len(nodes))
            assert got[g, t].item() == pytest.approx(sum(per_step) / len(per_step), rel=1e-5)


def test_sinusoidal_encoding_uses_every_coordinate():
    enc = SinusoidalEncoding(2, 16)
    pos = torch.rand(6, 2)
    moved = pos.clone()
    moved[:, 1] += 0.1
    assert enc(pos).shape == (6, 16)
    assert not torch.allclose(enc(pos), enc(moved))
    with pytest.raises(ValueError, match="out_channels"):
        SinusoidalEncoding(3, 16)


def test_timestep_embedding_shape_and_values():
    emb = TimestepEmbedding(8)(torch.tensor([0, 3]))
    assert emb.shape == (2, 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_sampler_is_independent_of_world_size_and_resumes():
    single = iter(ResumableBatchSampler(10, 4, seed=3))
    ranks = [iter(ResumableBatchSampler(10, 4, seed=3, rank=r, world_size=2)) for r in range(2)]
    resumed = iter(ResumableBatchSampler(10, 4, seed=3, start_step=3))
    batches = [next(single) for _ in range(6)]
    for step, batch in enumerate(batches):
        assert next(ranks[0]) + next(ranks[1]) == batch
        if step >= 3:
            assert next(resumed) == batch
    assert len(set(batches[0] + batches[1])) == 8          # no repeats inside an epoch
    assert batches[0] + batches[1] != batches[2] + batches[3]  # a new permutation each epoch
    with pytest.raises(ValueError, match="divisible"):
        ResumableBatchSampler(10, 3, world_size=2)


def test_resume_continues_with_identical_losses(tmp_path):
    full = toy_trainer(tmp_path / "full").fit()
    first = toy_trainer(tmp_path / "split").fit(stop_at=4)
    assert first["steps"] == 4 and "test" not in first
    second = toy_trainer(tmp_path / "split").fit(resume=True)
    assert first["train_loss"] + second["train_loss"] == full["train_loss"]
    assert second["test"] == full["test"]
    rows = read_metrics_csv(os.path.join(tmp_path / "split", "metrics.csv"))
    assert [r["step"] for r in rows if r["split"] == "train" and r["name"] == "loss"] == list(range(1, 7))


def test_training_reduces_loss_and_tests_best_checkpoint(tmp_path):
    trainer = toy_trainer(tmp_path, steps=30, schedule="warmup-cosine", warmup_ratio=0.1)
    summary = trainer.fit()
    losses = summary["train_loss"]
    assert sum(losses[-5:]) < sum(losses[:5])
    best = torch.load(trainer.best_path, weights_only=False)
    assert best["val"]["loss"] == summary["best_val_loss"] == min(
        r["value"] for r in read_metrics_csv(os.path.join(tmp_path, "metrics.csv"))
        if r["split"] == "val" and r["name"] == "loss")
    trainer.task.load_state_dict(best["model"])
    assert summary["test"]["loss"] == pytest.approx(trainer.evaluate(trainer.test_set)["loss"].item())
    assert set(summary["test"]) == {"loss", "mse", "rel_l2"}


def test_bf16_autocast_trains(tmp_path):
    summary = toy_trainer(tmp_path, steps=3, amp="bf16").fit()
    assert all(math.isfinite(v) for v in summary["train_loss"])


def test_config_validation():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8")


def test_progress_fallback_prints_rate_and_eta(capsys):
    bar = Progress(4, every=2)
    bar._bar = None
    for step in range(1, 5):
        bar.update(step, loss=1.0)
    err = capsys.readouterr().err
    assert "4/4" in err and "step/s" in err


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    eager = toy_trainer(tmp_path / "eager", steps=3).fit()
    compiled = toy_trainer(tmp_path / "compiled", steps=3, compile=True).fit()
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)


def test_a_checkpoint_write_that_fails_leaves_the_previous_checkpoint(tmp_path):
    from torch_geometric_erwin.training.checkpoint import load_checkpoint, save_checkpoint

    path = str(tmp_path / "last.pt")
    save_checkpoint(path, step=3, weights=torch.arange(4.0))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    # The failure comes after part of the archive has been streamed to the temporary file.
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, step=4, weights=torch.arange(1 << 16, dtype=torch.float64), tail=Unpicklable())
    assert os.listdir(tmp_path) == ["last.pt"]
    state = load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["weights"], torch.arange(4.0))


#: A toy run killed with SIGKILL: at the start of step ``kill`` (mode "step") or in the middle of the
#: ``kill``-th write of last.pt, after part of the file has reached the disk (mode "write").
_KILLED_RUN = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from support.training import toy_trainer
import torch_geometric_erwin.training.checkpoint as checkpoint
from torch_geometric_erwin.datasets.io.atomic import atomic_write

out, steps, every, mode, kill = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
trainer = toy_trainer(out, steps=steps, checkpoint_every=every, checkpoint_seconds=None)
if mode == "step":
    train_step = trainer.train_step
    def killed_step(batch):
        if trainer.step + 1 == kill:
            os.kill(os.getpid(), signal.SIGKILL)
        return train_step(batch)
    trainer.train_step = killed_step
else:
    writes = []
    save = checkpoint.atomic_torch_save
    def killed_save(obj, path):
        writes.append(path)
        if len(writes) == kill:
            with atomic_write(path) as handle:
                handle.write(b"PK\x03\x04" + bytes(4096))
                handle.flush()
                os.fsync(handle.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        save(obj, path)
    checkpoint.atomic_torch_save = killed_save
trainer.fit()
"""


@pytest.mark.parametrize("mode, steps, every", [("step", 8, 3), ("step", 8, 100), ("write", 8, 1)])
def test_a_run_killed_at_a_random_point_resumes_to_the_uninterrupted_result(mode, steps, every, tmp_path):
    """SIGKILL at a random step (or inside a random write of last.pt) loses at most the steps since the
    last write, which is there from before the first step; the resumed run ends bit-identical to an
    uninterrupted one: the same weights, optimiser state and losses."""
    import random
    import subprocess
    import sys

    # Write 1 is the one before step 1; the best.pt writes (at validation) count too, and are just as safe.
    kill = random.randrange(1, steps + 1) if mode == "step" else random.randrange(2, steps + 2)
    out = tmp_path / "killed"
    result = subprocess.run([sys.executable, "-c", _KILLED_RUN, TESTS, str(out), str(steps),
                             str(every), mode, str(kill)], capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, f"kill={kill}: {result.stderr}"
    leftovers = [f for f in os.listdir(out / "checkpoints") if ".tmp-" in f]
    assert len(leftovers) == (mode == "write"), leftovers  # a killed write leaves its temporary file only
    resumed_trainer = toy_trainer(out, steps=steps, checkpoint_every=every, checkpoint_seconds=None)
    resumed = resumed_trainer.fit(resume=True)
    done = steps - len(resumed["train_loss"])
    if mode == "step":  # the last write before step `kill`: a multiple of `every`, or step 0
        assert done == (kill - 1) // every * every, f"kill={kill}"
    full_trainer = toy_trainer(tmp_path / "full", steps=steps, checkpoint_every=every, checkpoint_seconds=None)
    full = full_trainer.fit()
    assert resumed["train_loss"] == full["train_loss"][done:], f"kill={kill}"
    assert resumed["test"] == full["test"]
    for key, value in full_trainer.task.state_dict().items():
        assert torch.equal(resumed_trainer.task.state_dict()[key], value), (key, kill)
    resumed_adam = resumed_trainer.optimizer.state_dict()["state"]
    for index, state in full_trainer.optimizer.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(resumed_adam[index][name], value), (index, name, kill)


@pytest.mark.parametrize("seconds, writes", [(None, [0, 6]), (1e-9, [0, 1, 2, 3, 4, 5, 6])])
def test_last_checkpoint_is_written_first_and_on_the_time_cadence(seconds, writes, tmp_path):
    trainer = toy_trainer(tmp_path, steps=6, checkpoint_every=100, checkpoint_seconds=seconds)
    steps = []
    save = trainer.save
    trainer.save = lambda: (steps.append(trainer.step), save())
    trainer.fit()
    assert steps == writes


def test_checkpoint_cadence_validation():
    with pytest.raises(ValueError, match="checkpoint_every must be a positive int"):
        TrainConfig(checkpoint_every=0)
    with pytest.raises(ValueError, match="checkpoint_seconds must be positive or None"):
        TrainConfig(checkpoint_seconds=0)


def _experiment(**kwargs):
    from torch_geometric_erwin.training import Experiment
    return Experiment(**{**dict(name="toy", description="toy", dimensionality=3, preset="shapenet", load=None, build_task=None,
                                train=dict(steps=1, batch_size=1, lr=1e-3), layout="none"), **kwargs})


def test_pre_transform_is_the_graph_then_the_backbones_tree_transform():
    """A static experiment's pre-processing: its graph for a baseline, the graph and the model's own tree
    transforms (ball tree, rotated orders) for Erwin; nothing where the clouds move."""
    from torch_geometric_erwin.training.registry import DEFAULT_BACKBONES
    from torch_geometric_erwin.transforms import BallTreeTransform, KNNGraphTransform, RotatedTreeTransform
    graph = KNNGraphTransform(8, loop=True)
    experiment = _experiment(static=True, graph=graph)
    erwin = DEFAULT_BACKBONES["erwin"](8, "small", experiment)
    mpnn = DEFAULT_BACKBONES["mpnn"](8, "small", experiment)
    transforms = experiment.pre_transform(erwin).transforms
    assert [type(t) for t in transforms] == [KNNGraphTransform, BallTreeTransform, RotatedTreeTransform]
    assert transforms[0] is graph and repr(transforms[1:]) == repr(erwin.tree_transform().transforms)
    assert experiment.pre_transform(mpnn).transforms == [graph]
    assert _experiment().pre_transform(erwin) is None
    assert _experiment(static=True).pre_transform(mpnn) is None
    with pytest.raises(ValueError, match="static=True"):
        _experiment(graph=graph)


def test_models_with_the_same_pre_transform_share_the_loaded_splits():
    """One load per distinct pre-processing, kept while a later model needs it, dropped after."""
    import argparse

    from torch_geometric_erwin.training.runner import ModelSplits
    from torch_geometric_erwin.transforms import KNNGraphTransform
    loads = []

    def load(args, pre_transform):
        loads.append(repr(pre_transform))
        return [object(), object()], list(range(5)), list(range(5))

    graph, tree = KNNGraphTransform(8), KNNGraphTransform(4)
    args = argparse.Namespace(model=["a", "b", "c", "d"], eval_limit=2)
    # "b" has an equal graph of its own: the same description, the same processed files
    splits = ModelSplits(_experiment(static=True, graph=graph, load=load), args,
                         {"a": graph, "b": KNNGraphTransform(8), "c": tree, "d": graph})
    a, b = splits("a"), splits("b")
    assert a is b and loads == [repr(graph)] and a[1] == [0, 1] and a[2] == [0, 1]
    assert splits("c") is not a and loads == [repr(graph), repr(tree)]
    assert splits("d") is a and len(loads) == 2 and not splits.loaded
    assert splits.first_sample is a[0][0]
