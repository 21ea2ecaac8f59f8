"""Gaussian mean + variance prediction trained by negative log-likelihood (molecular dynamics)."""
from __future__ import annotations

from typing import Dict, Tuple

from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from torch_geometric_erwin.training.metrics import gaussian_nll, per_graph_mse
from torch_geometric_erwin.training.tasks.base import Task


class GaussianRegression(Task):
    r"""Predict a diagonal Gaussian over ``batch[target]`` at every node.

    The head outputs :math:`2K` values split into the mean :math:`\mu` and a raw scale
    :math:`s`; :math:`\sigma = 10^{-6} + \operatorname{softplus}(s)`. The loss is the
    negative log-likelihood averaged over nodes and components; metrics per graph are
    ``loss`` (NLL) and ``mse`` of the mean.

    Args:
        backbone, encoder: see :class:`~torch_geometric_erwin.training.tasks.base.Task`.
        out_channels: :math:`K`, the target width.
        target: batch attribute holding the ``[N, K]`` target.
    """

    min_std = 1e-6

    def __init__(self, backbone: nn.Module, encoder: nn.Module, out_channels: int, target: str = "y"):
        super().__init__(backbone, encoder, 2 * out_channels)
        self.out_channels, self.target = out_channels, target

    def forward(self, batch: Data) -> Tuple[Tensor, Tensor]:
        mean, raw = self.head(self.features(batch)).chunk(2, dim=-1)
        return mean, self.min_std + nn.functional.softplus(raw)

    def loss(self, batch: Data, out: Tuple[Tensor, Tensor]) -> Tuple[Tensor, int]:
        nll = gaussian_nll(*out, batch[self.target])
        return nll.mean(), nll.numel()

    def metrics(self, batch: Data, out: Tuple[Tensor, Tensor]) -> Dict[str, Tensor]:
        target = batch[self.target]
        nll = gaussian_nll(*out, target).mean(dim=-1)
        return {"loss": scatter(nll, batch.batch, 0, batch.num_graphs, reduce="mean"),
                "mse": per_graph_mse(out[0], target, batch.batch, batch.num_graphs)}
