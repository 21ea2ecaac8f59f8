"""Small graphs and a tiny task for the training tests (no dataset or model files needed)."""
from __future__ import annotations

import torch
from torch_geometric.data import Data

from torch_geometric_erwin.nn.models.mpnn import MPNN
from torch_geometric_erwin.training import InputEncoder, NodeRegression, Trainer, TrainConfig, seed_everything


def knn_edges(pos: torch.Tensor, k: int) -> torch.Tensor:
    """Brute-force kNN graph, sender -> receiver, without self-loops."""
    dist = torch.cdist(pos, pos)
    dist.fill_diagonal_(float("inf"))
    senders = dist.topk(k, largest=False).indices            # [N, k]
    receivers = torch.arange(pos.size(0)).repeat_interleave(k)
    return torch.stack([senders.reshape(-1), receivers])


def toy_graphs(count: int, seed: int = 0, dim: int = 2, sizes=(12, 20)) -> list:
    """Graphs whose target is the mean offset to the 4 nearest neighbours (learnable by an MPNN)."""
    generator = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(count):
        n = sizes[i % len(sizes)]
        pos = torch.rand(n, dim, generator=generator)
        edge_index = knn_edges(pos, 4)
        offset = torch.zeros(n, dim).index_add_(0, edge_index[1], pos[edge_index[0]] - pos[edge_index[1]])
        graphs.append(Data(pos=pos, x=torch.ones(n, 1), edge_index=edge_index, y=offset / 4))
    return graphs


def toy_task(dim: int = 2, hidden: int = 16, loss: str = "mse") -> NodeRegression:
    backbone = MPNN(8, hidden, num_layers=2, dimensionality=dim)
    encoder = InputEncoder(["x", "pos"], 1 + dim, 8)
    return NodeRegression(backbone, encoder, dim, loss=loss)


def toy_trainer(out_dir, steps: int = 6, **overrides) -> Trainer:
    """A seeded :class:`Trainer` of :func:`toy_task` on 10 training, 3 validation and 3 test graphs."""
    seed_everything(0)
    config = TrainConfig(steps=steps, batch_size=4, lr=3e-3, val_every=3, log_every=1, progress=False,
                         tensorboard=False, max_grad_norm=1.0, **overrides)
    data = toy_graphs(16)
    return Trainer(toy_task(), data[:10], data[10:13], data[13:], config, str(out_dir))
