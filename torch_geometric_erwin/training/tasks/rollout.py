"""Autoregressive mesh rollout with boundary forcing (EAGLE)."""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from torch_geometric_erwin.training.loggers import Progress
from torch_geometric_erwin.training.metrics import per_graph_cumulative_rmse
from torch_geometric_erwin.training.tasks.base import Task


class AutoregressiveRollout(Task):
    r"""Predict a trajectory of node states step by step from the first frame.

    For :math:`t = 1 .. W-1`, with :math:`\hat s_0 = s_0` (``batch.x``):

    .. math::
        \hat s_t = \hat s_{t-1} + \mathrm{head}\big(\mathrm{backbone}(\mathrm{enc}(\hat s_{t-1},
        \text{type}_{t-1}, \mathbf{p}_{t-1}),\ \mathbf{p}_{t-1},\ \mathcal{E}_{t-1})\big)

    on the mesh positions :math:`\mathbf{p}_{t-1}` (``mesh_pos[:, t-1]``) and edges
    :math:`\mathcal{E}_{t-1}` (``edge_index_seq`` where ``edge_step == t-1``) of the previous
    frame; nodes whose type at :math:`t` is in ``forced_types`` (inflow, wall, disabled) are
    set to the ground truth (boundary forcing). Gradients flow through the whole rollout.

    The loss compares each predicted increment with :math:`s_t - \hat s_{t-1}` (ground truth
    minus the *predicted* previous state): a weighted MSE over channel groups
    (EAGLE: velocity weight 1, pressure weight 0.1), averaged over nodes and steps.
    Metrics per graph, after ``denormalize``: for each group, ``rmse_<group>`` (per-node RMSE
    over the group's channels, averaged over nodes and steps) and ``cumulative_rmse_<group>``
    ``[B, W-1]`` (entry :math:`h-1` averages steps :math:`1..h`, EAGLE's test metric).

    The encoder reads the per-step fields ``state`` (:math:`\hat s_{t-1}`), ``node_type``
    (type at :math:`t-1`) and ``pos`` (:math:`\mathbf{p}_{t-1}`) of a step ``Data``.

    Args:
        backbone, encoder: see :class:`~torch_geometric_erwin.training.tasks.base.Task`.
        state_channels: channels of the state.
        groups: ``{name: (channel slice start, stop, loss weight)}``.
        forced_types: node types whose state is forced to the ground truth.
        denormalize: maps normalised states ``[..., state_channels]`` to physical units.
    """

    def __init__(self, backbone: nn.Module, encoder: nn.Module, state_channels: int,
                 groups: Dict[str, Tuple[int, int, float]], forced_types: Sequence[int],
                 denormalize: Callable[[Tensor], Tensor]):
        super().__init__(backbone, encoder, state_channels, head="linear")
        self.state_channels, self.groups = state_channels, dict(groups)
        self.register_buffer("forced_types", torch.tensor(list(forced_types), dtype=torch.long),
                             persistent=False)
        self.denormalize = denormalize

    def step(self, batch: Data, state: Tensor, t: int) -> Tensor:
        """``[N, C]`` the increment predicted from ``state`` at frame ``t - 1``."""
        pos = batch.mesh_pos[:, t - 1]
        edge_index = batch.edge_index_seq[:, batch.edge_step == t - 1]
        step_data = Data(state=state, node_type=batch.node_type[:, t - 1], pos=pos)
        x = self.encoder(step_data)
        return self.head(self.backbone(x, pos, batch.batch, edge_index))

    def forward(self, batch: Data) -> Dict[str, Tensor]:
        """Rollout over the window: ``delta``, ``target`` and ``state``, each ``[W-1, N, C]``."""
        state = batch.x
        deltas, targets, states = [], [], []
        frames = batch.y.size(1)
        progress = Progress(frames, desc="rollout", enabled=self.show_progress and not self.training, every=None,
                            unit="frame", leave=False)
        for t in range(1, frames + 1):
            truth = batch.y[:, t - 1]
            delta = self.step(batch, state, t)
            deltas.append(delta)
            targets.append(truth - state)
            forced = torch.isin(batch.node_type[:, t], self.forced_types).unsqueeze(-1)
            state = torch.where(forced, truth, state + delta)
            states.append(state)
            progress.update(t)
        progress.close()
        return {"delta": torch.stack(deltas), "target": torch.stack(targets), "state": torch.stack(states)}

    def loss(self, batch: Data, out: Dict[str, Tensor]) -> Tuple[Tensor, int]:
        error = (out["delta"] - out["target"]).square()
        loss = sum(weight * error[..., lo:hi].mean() for lo, hi, weight in self.groups.values())
        return loss, error.size(0) * error.size(1)

    def metrics(self, batch: Data, out: Dict[str, Tensor]) -> Dict[str, Tensor]:
        pred = self.denormalize(out["state"])
        truth = self.denormalize(batch.y.transpose(0, 1))
        values: Dict[str, Tensor] = {}
        for name, (lo, hi, _) in self.groups.items():
            cumulative = per_graph_cumulative_rmse(pred[..., lo:hi], truth[..., lo:hi], batch.batch,
                                                   batch.num_graphs)
            values[f"cumulative_rmse_{name}"] = cumulative
            values[f"rmse_{name}"] = cumulative[:, -1]
        error = (out["delta"] - out["target"]).square()
        per_node = sum(weight * error[..., lo:hi].mean(dim=(0, 2)) for lo, hi, weight in self.groups.values())
        values["loss"] = scatter(per_node, batch.batch, 0, batch.num_graphs, reduce="mean")
        return values
