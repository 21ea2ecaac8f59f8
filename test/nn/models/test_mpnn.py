import pytest
import torch
from torch_geometric.data import Batch, Data

from torch_geometric_erwin.nn.models.mpnn import MPNN

from support.training import knn_edges


def _graph(n=10, dim=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, dim, generator=generator)
    return Data(x=torch.randn(n, 4, generator=generator), pos=pos, edge_index=knn_edges(pos, 3))


def test_matches_explicit_loop_over_receivers():
    torch.manual_seed(0)
    model = MPNN(4, 8, num_layers=2, out_channels=2).eval()
    data = _graph()
    h = model.node_encoder(data.x)
    src, dst = data.edge_index
    e = model.edge_encoder(data.pos[dst] - data.pos[src])
    for layer in model.layers:
        messages = layer.message_mlp(torch.cat([e, h[dst], h[src]], dim=-1))
        agg = torch.stack([messages[dst == i].mean(0) for i in range(h.size(0))])
        h_new = h + layer.node_norm(layer.update_mlp(torch.cat([h, agg], dim=-1)))
        if layer.message_norm is not None:
            e = e + layer.message_norm(messages)
        h = h_new
    assert torch.allclose(model(data), model.lin_out(h), atol=1e-5)


def test_permutation_equivariance_and_batching():
    torch.manual_seed(0)
    model = MPNN(4, 8, num_layers=3, out_channels=2).eval()
    a, b = _graph(seed=1), _graph(n=7, seed=2)
    perm = torch.randperm(10)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(10)
    permuted = Data(x=a.x[perm], pos=a.pos[perm], edge_index=inv[a.edge_index])
    assert torch.allclose(model(permuted), model(a)[perm], atol=1e-5)
    out = model(Batch.from_data_list([a, b]))
    assert torch.allclose(out[:10], model(a), atol=1e-5)
    assert torch.allclose(out[10:], model(b), atol=1e-5)


def test_every_parameter_gets_a_gradient():
    model = MPNN(4, 8, num_layers=2, out_channels=1)
    model(_graph()).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_input():
    with pytest.raises(ValueError, match="hidden_channels"):
        MPNN(4, 0, num_layers=2)
    model = MPNN(4, 8, num_layers=1)
    data = _graph()
    with pytest.raises(ValueError, match="edge_index"):
        model(data.x, data.pos)
    with pytest.raises(ValueError, match="x must have shape"):
        model(data.x[:, :3], data.pos, edge_index=data.edge_index)
    with pytest.raises(ValueError, match=r"edge_index must hold node indices in \[0, 10\)"):
        model(data.x, data.pos, edge_index=torch.tensor([[0, 10], [1, 2]]))
    with pytest.raises(TypeError, match="edge_index must have dtype torch.int64"):
        model(data.x, data.pos, edge_index=data.edge_index.float())
    assert "MPNN(4, 8" in repr(model)


@pytest.mark.parametrize("in_channels, hidden, layers, mlp_layers, dim", [(1, 64, 4, 2, 3), (5, 32, 2, 3, 2)])
def test_parameter_count_is_the_references(in_channels, hidden, layers, mlp_layers, dim):
    # the reference: one Linear + GELU per encoder, MLPs of `mlp_layers` linear layers per step, two
    # LayerNorms per step (the last step's edge norm is dropped here: nothing reads its output)
    def linear(fan_in, fan_out):
        return fan_in * fan_out + fan_out

    def mlp(fan_in):
        return linear(fan_in, hidden) + (mlp_layers - 1) * linear(hidden, hidden)

    per_step = mlp(3 * hidden) + mlp(2 * hidden) + 2 * 2 * hidden
    expected = linear(in_channels, hidden) + linear(dim, hidden) + layers * per_step - 2 * hidden
    model = MPNN(in_channels, hidden, layers, dimensionality=dim, mlp_layers=mlp_layers)
    assert sum(p.numel() for p in model.parameters()) == expected
