import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from torch_geometric_erwin.training import (AutoregressiveRollout, GaussianRegression, InputEncoder,
                                            NodeRegression, OneHot)


class ConstantBackbone(nn.Module):
    """Returns its input features unchanged (a backbone with out_channels = in_channels)."""

    def __init__(self, channels):
        super().__init__()
        self.out_channels = channels
        self.scale = nn.Parameter(torch.ones(()))

    def reset_parameters(self):
        nn.init.ones_(self.scale)

    def forward(self, x, pos=None, batch=None, edge_index=None):
        if isinstance(x, Data):
            x = x.x
        return x * self.scale


def _rollout_graph(n=5, steps=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    node_type = torch.zeros(n, steps, dtype=torch.long)
    node_type[0, :] = 4          # inflow: forced
    node_type[1, 2:] = 6         # becomes a wall at t = 2
    edges = torch.tensor([[0, 1], [1, 0]])
    return Data(x=torch.randn(n, 4, generator=generator), y=torch.randn(n, steps - 1, 4, generator=generator),
                mesh_pos=torch.rand(n, steps, 2, generator=generator), node_type=node_type,
                edge_index_seq=edges.repeat(1, steps - 1), edge_step=torch.arange(steps - 1).repeat_interleave(2),
                num_nodes=n)


def _rollout_task():
    encoder = InputEncoder(["state", "node_type"], 13, 8, encodings={"node_type": OneHot(9)})
    return AutoregressiveRollout(ConstantBackbone(8), encoder, 4,
                                 groups={"velocity": (0, 2, 1.0), "pressure": (2, 4, 0.1)},
                                 forced_types=(2, 4, 6), denormalize=lambda s: 2 * s + 1)


def test_rollout_forces_boundaries_and_targets_the_predicted_state():
    torch.manual_seed(0)
    task = _rollout_task()
    batch = Batch.from_data_list([_rollout_graph(seed=1), _rollout_graph(seed=2)])
    out = task(batch)
    steps = batch.y.size(1)
    assert out["state"].shape == (steps, batch.num_nodes, 4)
    state = batch.x
    for t in range(1, steps + 1):
        truth = batch.y[:, t - 1]
        assert torch.allclose(out["target"][t - 1], truth - state)
        forced = torch.isin(batch.node_type[:, t], torch.tensor([2, 4, 6]))
        expected = torch.where(forced.unsqueeze(-1), truth, state + out["delta"][t - 1])
        assert torch.allclose(out["state"][t - 1], expected)
        state = expected
    assert torch.equal(out["state"][:, 0], batch.y[0])  # the inflow node follows the truth
    loss, weight = task.loss(batch, out)
    error = (out["delta"] - out["target"]).square()
    assert loss.item() == pytest.approx((error[..., :2].mean() + 0.1 * error[..., 2:].mean()).item(), rel=1e-6)
    assert weight == steps * batch.num_nodes
    loss.backward()  # gradients flow through the whole rollout
    assert task.backbone.scale.grad is not None


def test_rollout_metrics_cumulative_rmse_in_physical_units():
    torch.manual_seed(0)
    task = _rollout_task().eval()
    batch = Batch.from_data_list([_rollout_graph(seed=3)])
    metrics = task.evaluate(batch)
    out = task(batch)
    pred, truth = 2 * out["state"] + 1, 2 * batch.y.transpose(0, 1) + 1
    per_step = (pred[..., :2] - truth[..., :2]).square().mean(-1).sqrt().mean(-1)
    assert torch.allclose(metrics["cumulative_rmse_velocity"][0],
                          per_step.cumsum(0) / torch.arange(1, per_step.numel() + 1), atol=1e-5)
    assert metrics["rmse_velocity"][0].item() == pytest.approx(per_step.mean().item(), rel=1e-5)


def test_gaussian_regression_loss_is_nll_and_std_positive():
    torch.manual_seed(0)
    task = GaussianRegression(ConstantBackbone(6), InputEncoder(["x"], 4, 6), out_channels=3)
    batch = Batch.from_data_list([Data(x=torch.randn(4, 4), y=torch.randn(4, 3)) for _ in range(2)])
    mean, std = task(batch)
    assert (std > 0).all()
    loss, weight = task.loss(batch, (mean, std))
    ref = -torch.distributions.Normal(mean, std).log_prob(batch.y).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5) and weight == 24


def test_node_regression_rel_l2_uses_physical_units():
    torch.manual_seed(0)
    task = NodeRegression(ConstantBackbone(4), InputEncoder(["x"], 4, 4), 1, loss="rel_l2",
                          denormalize=lambda v: 3 * v + 10)
    batch = Batch.from_data_list([Data(x=torch.randn(5, 4), y=torch.randn(5)) for _ in range(3)])
    out = task(batch)
    loss, weight = task.loss(batch, out)
    pred, y = 3 * out.view(-1) + 10, 3 * batch.y + 10
    ref = torch.stack([(pred[batch.batch == g] - y[batch.batch == g]).norm() / y[batch.batch == g].norm()
                       for g in range(3)]).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5) and weight == 3


def test_input_encoder_checks_widths():
    with pytest.raises(ValueError, match="not in fields"):
        InputEncoder(["x"], 4, 8, encodings={"pos": OneHot(2)})
    encoder = InputEncoder(["x"], 5, 8)
    with pytest.raises(ValueError, match="in_channels=5"):
        encoder(Data(x=torch.randn(3, 4)))


def test_evaluation_and_rollout_show_progress(tmp_path, capsys, monkeypatch):
    """The trainer's evaluation shows a bar over batches and a rollout one over frames (the plain-line
    fallback where tqdm is absent), both silent with progress=False and in training."""
    import builtins
    from torch_geometric_erwin.training import Trainer, TrainConfig
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name.startswith("tqdm") else real_import(name, *a, **k))
    graphs = [_rollout_graph(seed=s, steps=11) for s in range(4)]
    for progress in (True, False):
        trainer = Trainer(_rollout_task(), graphs, graphs, None, TrainConfig(steps=1, batch_size=1, progress=progress,
                                                                             tensorboard=False), str(tmp_path))
        trainer.evaluate(graphs, "val")
        err = capsys.readouterr().err
        if progress:
            assert "train val 4/4" in err and "batch/s" in err
            assert "rollout 10/10" in err and "frame/s" in err
        else:
            assert err == ""
    trainer.task.show_progress = True
    trainer.task.train()
    trainer.task(Batch.from_data_list(graphs[:1]))
    assert capsys.readouterr().err == ""
