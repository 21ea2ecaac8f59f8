"""Node-level regression (cosmology, ShapeNet-Car, the PDE benchmarks, N-body)."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from torch import Tensor, nn
from torch_geometric.data import Data

from torch_geometric_erwin.training.metrics import per_graph_mse, per_graph_relative_l2
from torch_geometric_erwin.training.tasks.base import Task


class NodeRegression(Task):
    r"""Predict ``batch[target]`` at every node: encoder, backbone, MLP head.

    Losses:

    * ``"mse"``: mean squared error over all nodes and channels of the batch (in the
      normalised units the dataset returns);
    * ``"rel_l2"``: mean over graphs of :math:`\lVert \hat y - y\rVert_2 / \lVert y\rVert_2`,
      computed after ``denormalize`` (the PDE benchmarks).

    Metrics per graph: ``loss``, ``mse`` (normalised units), ``rel_l2``, and if
    ``denormalize`` is given ``mse_phys`` (MSE after denormalising, e.g. ShapeNet-Car's
    pressure MSE).

    Args:
        backbone: see :class:`~torch_geometric_erwin.training.tasks.base.Task`.
        encoder: module mapping a batch to ``[N, c_in]`` features.
        out_channels: target width.
        loss: ``"mse"`` or ``"rel_l2"``.
        target: batch attribute holding the target (``[N]`` or ``[N, out_channels]``).
        denormalize: maps normalised targets back to physical units.
    """

    def __init__(self, backbone: nn.Module, encoder: nn.Module, out_channels: int, loss: str = "mse",
                 target: str = "y", denormalize: Optional[Callable[[Tensor], Tensor]] = None):
        super().__init__(backbone, encoder, out_channels)
        if loss not in ("mse", "rel_l2"):
            raise ValueError(f"loss must be 'mse' or 'rel_l2', got {loss!r}")
        self.loss_name, self.target, self.denormalize = loss, target, denormalize
        self.out_channels = out_channels

    def _target(self, batch: Data) -> Tensor:
        return batch[self.target].reshape(batch.num_nodes, self.out_channels)

    def _physical(self, value: Tensor) -> Tensor:
        return value if self.denormalize is None else self.denormalize(value)

    def forward(self, batch: Data) -> Tensor:
        return self.head(self.features(batch))

    def loss(self, batch: Data, out: Tensor) -> Tuple[Tensor, int]:
        target = self._target(batch)
        if self.loss_name == "mse":
            return (out - target).square().mean(), out.numel()
        rel = per_graph_relative_l2(self._physical(out), self._physical(target), batch.batch,
                                    batch.num_graphs)
        return rel.mean(), batch.num_graphs

    def metrics(self, batch: Data, out: Tensor) -> Dict[str, Tensor]:
        target = self._target(batch)
        values = {"mse": per_graph_mse(out, target, batch.batch, batch.num_graphs),
                  "rel_l2": per_graph_relative_l2(self._physical(out), self._physical(target),
                                                  batch.batch, batch.num_graphs)}
        if self.denormalize is not None:
            values["mse_phys"] = per_graph_mse(self._physical(out), self._physical(target),
                                               batch.batch, batch.num_graphs)
        values["loss"] = values["mse" if self.loss_name == "mse" else "rel_l2"]
        return values
