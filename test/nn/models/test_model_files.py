"""Model files and training checkpoints that rebuild their model: config, save, from_checkpoint."""
import os

import pytest
import torch
from torch_geometric.data import Data

from torch_geometric_erwin.nn import MPNN, Erwin
from torch_geometric_erwin.nn.models.erwin_nsa import ErwinNSA
from torch_geometric_erwin.training import InputEncoder, NodeRegression, Trainer, TrainConfig

from support.training import knn_edges, toy_graphs

ERWIN = dict(hidden_channels=[8, 16], ball_sizes=[8, 4], enc_num_heads=[2, 4], enc_depths=[2, 2],
             dec_num_heads=[2], dec_depths=[2], strides=[2], rotate=30.0, mp_steps=1, dimensionality=2)
MODELS = {"erwin": lambda: Erwin(6, **ERWIN, out_channels=3),
          "nsa": lambda: ErwinNSA(6, channels=16, depth=2, num_heads=2, compress_ball_size=4, local_ball_size=8,
                                  num_selected=2, dimensionality=2, mp_steps=1, query_chunk_size=16),
          "mpnn": lambda: MPNN(6, 16, 2, out_channels=3, dimensionality=2)}


def _graph(n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, 2, generator=generator)
    return Data(x=torch.randn(n, 6, generator=generator), pos=pos, edge_index=knn_edges(pos, 4))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_saved_model_rebuilds_with_its_configuration_and_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    path = str(tmp_path / "model.pt")
    model.save(path)
    assert os.listdir(tmp_path) == ["model.pt"]
    loaded = type(model).from_checkpoint(path)
    assert loaded.config == model.config and not loaded.training
    data = _graph()
    with torch.no_grad():
        torch.testing.assert_close(loaded(data), model(data))
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "torch_geometric_erwin" and payload["format_version"] == 1
    assert payload["package_version"] == __import__("torch_geometric_erwin").__version__


def test_config_records_every_constructor_argument_with_defaults():
    model = Erwin.from_preset("md-small", in_channels=7)
    assert model.config["in_channels"] == 7 and model.config["padding"] == "pow2" and model.config["knn"] == 16
    assert type(model)(**model.config).config == model.config
    assert MPNN(4, 8, 2).config == dict(in_channels=4, hidden_channels=8, num_layers=2, out_channels=None, dimensionality=3,
                                        mlp_layers=2, aggr="mean")


def test_old_foreign_newer_and_other_class_files_are_refused(tmp_path):
    model = MODELS["mpnn"]()
    path = str(tmp_path / "model.pt")
    model.save(path)
    with pytest.raises(ValueError, match="holds a model of class MPNN, not Erwin: use MPNN.from_checkpoint"):
        Erwin.from_checkpoint(path)
    old = str(tmp_path / "old.pt")
    torch.save({"model": model.state_dict(), "step": 3, "val": {"loss": 1.0}}, old)  # a 0.1 best.pt
    with pytest.raises(ValueError, match="no 'format'.*holds weights only"):
        MPNN.from_checkpoint(old)
    foreign = str(tmp_path / "foreign.pt")
    torch.save({"optimizer": torch.optim.SGD}, foreign)
    with pytest.raises(ValueError, match="does not load with torch.load\\(weights_only=True\\)"):
        MPNN.from_checkpoint(foreign)
    newer = torch.load(path, weights_only=True)
    newer["format_version"] = 2
    torch.save(newer, path)
    with pytest.raises(ValueError, match="checkpoint format version 2.*upgrade"):
        MPNN.from_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        MPNN.from_checkpoint(str(tmp_path / "missing.pt"))


class _Scaled(MPNN):
    """A user's subclass: its own constructor's arguments are the configuration."""

    def __init__(self, scale: float, act: torch.nn.Module = None):
        super().__init__(6, 8, 1, dimensionality=2)
        self.scale, self.act = scale, act


def test_subclasses_record_their_own_arguments_and_unsaveable_ones_are_named(tmp_path):
    model = _Scaled(2.0)
    assert model.config == {"scale": 2.0, "act": None}
    model.save(str(tmp_path / "scaled.pt"))
    assert _Scaled.from_checkpoint(str(tmp_path / "scaled.pt")).scale == 2.0
    with pytest.raises(TypeError, match="act=Identity\\(\\) is not a plain value"):
        _Scaled(1.0, torch.nn.Identity()).save(str(tmp_path / "unused.pt"))


def test_trainer_checkpoints_rebuild_the_backbone(tmp_path):
    """best.pt and last.pt of a training run load as tensors and plain values and rebuild the trained
    backbone, whose features equal the task's."""
    torch.manual_seed(0)
    graphs = toy_graphs(8, dim=2)
    task = NodeRegression(Erwin(8, **ERWIN), InputEncoder(["x", "pos"], 3, 8), 2)
    config = TrainConfig(steps=3, batch_size=4, val_every=3, tensorboard=False, progress=False)
    trainer = Trainer(task, graphs[:4], graphs[4:6], None, config, str(tmp_path), run_config={"model": "erwin"})
    trainer.fit()
    for path in (trainer.best_path, trainer.last_path):
        payload = torch.load(path, weights_only=True)
        assert payload["kind"] == "training" and payload["run"] == {"model": "erwin"}
        backbone = Erwin.from_checkpoint(path)
        assert backbone.config == task.backbone.config
        batch = next(iter(__import__("torch_geometric.loader", fromlist=["DataLoader"]).DataLoader(graphs, 4)))
        task.eval()
        with torch.no_grad():
            features = task.encoder(batch)
            expected = task.backbone(features, batch.pos, batch.batch, batch.edge_index)
            torch.testing.assert_close(backbone(features, batch.pos, batch.batch, batch.edge_index), expected)
    task.train()
    with pytest.raises(ValueError, match="holds a model of class Erwin, not MPNN"):
        MPNN.from_checkpoint(trainer.best_path)


def test_mpnn_files_of_version_0_1_load(tmp_path):
    """Model files that recorded the MPNN's spatial dimension as ``dim`` load under its current name."""
    model = MPNN(6, 16, 2, out_channels=3, dimensionality=2)
    model.save(tmp_path / "mpnn.pt")
    payload = torch.load(tmp_path / "mpnn.pt", weights_only=True)
    payload["config"]["dim"] = payload["config"].pop("dimensionality")
    torch.save(payload, tmp_path / "old.pt")
    loaded = MPNN.from_checkpoint(tmp_path / "old.pt")
    assert loaded.dimensionality == 2 and loaded.config == model.config
