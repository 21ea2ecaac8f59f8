"""Checks shared by the tests of the Erwin and ErwinNSA models."""
import torch


def assert_rows_follow_permutation(model, data, seed: int = 1) -> torch.Tensor:
    """Permuting the input nodes (and relabelling the edges) permutes the output rows the same way.

    Returns the output on the unpermuted graph.
    """
    count = data.num_nodes
    perm = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    inverse = torch.argsort(perm)
    with torch.no_grad():
        out = model(data.x, data.pos, edge_index=data.edge_index)
        out_perm = model(data.x[perm], data.pos[perm], edge_index=inverse[data.edge_index])
    torch.testing.assert_close(out_perm, out[perm], atol=1e-5, rtol=1e-4)
    return out
