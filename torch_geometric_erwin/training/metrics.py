r"""Losses and metrics of the Erwin experiments, per graph where the papers average per sample.

Every ``per_graph_*`` function returns one value per graph (shape ``[B]`` or ``[B, H]``),
so that evaluation can average over samples across batches and processes.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.utils import scatter


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")


def _node_values(values: Tensor) -> Tensor:
    """``[N, ...]`` -> ``[N]`` mean over everything but the node dimension."""
    return values.reshape(values.size(0), -1).mean(dim=-1)


def per_graph_mse(pred: Tensor, target: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    r"""``[B]`` mean squared error of each graph, averaged over its nodes and components."""
    _check_pair(pred, target)
    return scatter(_node_values((pred - target).square()), batch, 0, num_graphs, reduce="mean")


def gaussian_nll(mean: Tensor, std: Tensor, target: Tensor) -> Tensor:
    r"""Element-wise negative log-likelihood of ``target`` under :math:`\mathcal{N}(\mu, \sigma^2)`.

    .. math::
        -\log p(y) = \frac{(y - \mu)^2}{2\sigma^2} + \log \sigma + \tfrac12 \log 2\pi

    (``-torch.distributions.Normal(mean, std).log_prob(target)``, the MD loss).
    """
    _check_pair(mean, target)
    _check_pair(std, target)
    return (target - mean).square() / (2 * std.square()) + std.log() + 0.5 * math.log(2 * math.pi)


def per_graph_relative_l2(pred: Tensor, target: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    r"""``[B]`` relative L2 error :math:`\lVert \hat y - y \rVert_2 / \lVert y \rVert_2` of each graph,
    over all its nodes and channels flattened (the PDE benchmarks' loss and metric)."""
    _check_pair(pred, target)
    err = scatter((pred - target).square().reshape(pred.size(0), -1).sum(-1), batch, 0, num_graphs)
    ref = scatter(target.square().reshape(target.size(0), -1).sum(-1), batch, 0, num_graphs)
    return err.sqrt() / ref.sqrt()


def per_graph_cumulative_rmse(pred: Tensor, target: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    r"""``[B, H]`` cumulative per-horizon RMSE of a rollout (EAGLE's test metric).

    For rollout step :math:`t` the node error is :math:`\sqrt{\operatorname{mean}_c (\hat y - y)^2}`,
    averaged over the graph's nodes; entry :math:`h - 1` is the mean of these over steps
    :math:`1..h`.

    Shapes: ``pred``, ``target`` :math:`[H, N, C]`; ``batch`` :math:`[N]`.
    """
    _check_pair(pred, target)
    if pred.dim() != 3:
        raise ValueError(f"pred must have shape [H, N, C], got {tuple(pred.shape)}")
    node_rmse = (pred - target).square().mean(dim=-1).sqrt()                 # [H, N]
    step_rmse = scatter(node_rmse, batch, 1, num_graphs, reduce="mean").T    # [B, H]
    horizon = torch.arange(1, step_rmse.size(1) + 1, device=pred.device, dtype=step_rmse.dtype)
    return step_rmse.cumsum(dim=1) / horizon
