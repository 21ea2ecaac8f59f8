"""Exact neighbour search: both engines against a brute-force oracle, edge for edge."""
import math

import pytest
import torch

from torch_geometric_erwin.nn import knn_graph, radius_graph
from torch_geometric_erwin.transforms import RadiusGraphTransform
from torch_geometric_erwin.tree.engine import cpp_available
from torch_geometric_erwin.tree.neighbour_search import neighbour_search, radius_sq_bound

ENGINES = ["torch"] + (["cpp"] if cpp_available() else [])


def oracle(pos, sizes, count, radius, loop):
    """Every pair's float64 distance (torch.cdist), the nearest `count` within `radius` by a stable
    sort on (distance, index); edges by centre, then by neighbour index."""
    sources, targets, start = [], [], 0
    for size in sizes:
        p = pos[start:start + size].double()
        dist = torch.cdist(p, p, compute_mode="donot_use_mm_for_euclid_dist")
        if not loop:
            dist.fill_diagonal_(math.nan)  # never <= radius, sorted last
        for i in range(size):
            order = torch.sort(dist[i], stable=True).indices  # equal distances stay in index order
            chosen = order[dist[i][order] <= radius][:count]
            chosen = torch.sort(chosen).values + start
            sources.append(chosen)
            targets.append(torch.full_like(chosen, start + i))
        start += size
    return torch.stack([torch.cat(sources), torch.cat(targets)])


def cloud(kind, n, dim, generator, dtype):
    if kind == "uniform":
        return torch.rand(n, dim, generator=generator, dtype=torch.float64).to(dtype)
    if kind == "clustered":
        centres = torch.rand(4, dim, generator=generator, dtype=torch.float64) * 10
        pick = torch.randint(0, 4, (n,), generator=generator)
        return (centres[pick] + 0.01 * torch.randn(n, dim, generator=generator, dtype=torch.float64)).to(dtype)
    if kind == "duplicates":
        base = torch.rand(max(1, n // 4), dim, generator=generator, dtype=torch.float64)
        return base[torch.randint(0, base.shape[0], (n,), generator=generator)].to(dtype)
    return torch.randint(0, 4, (n, dim), generator=generator).to(dtype)  # integer grid: many ties


CASES = [(kind, dim, seed) for kind in ("uniform", "clustered", "duplicates", "grid")
         for dim in (1, 2, 3, 4, 8) for seed in range(6)]


@pytest.mark.parametrize("kind,dim,seed", CASES)
def test_matches_brute_force(kind, dim, seed):
    generator = torch.Generator().manual_seed(1000 * dim + seed)
    dtype = torch.float32 if seed % 2 else torch.float64
    sizes = torch.randint(1, 90, (1 + seed % 4,), generator=generator).tolist()
    if seed == 5:
        sizes = [3, 0, 120, 7]  # an empty graph and graphs smaller than k
    pos = cloud(kind, sum(sizes), dim, generator, dtype)
    ptr = torch.tensor([0] + sizes).cumsum(0)
    loop = bool(seed % 3 == 0)
    spacing = 1.0 if kind == "grid" else (0.02 if kind == "clustered" else 0.3)
    for count, radius in [(1 + seed * 3, math.inf), (5, spacing), (200, 1.5 * spacing)]:
        expected = oracle(pos, sizes, count, radius, loop)
        for engine in ENGINES:
            got = neighbour_search(pos, ptr, count, radius_sq_bound(radius), loop, engine)
            assert got.dtype == torch.long
            assert torch.equal(got, expected), (engine, count, radius)


def test_public_functions_match_oracle_and_engines_agree():
    generator = torch.Generator().manual_seed(3)
    pos = torch.rand(500, 3, generator=generator)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([100, 350, 50]))
    assert torch.equal(knn_graph(pos, 16, batch, loop=True), oracle(pos, [100, 350, 50], 16, math.inf, True))
    expected = oracle(pos, [100, 350, 50], 8, 0.2, False)  # binding: most nodes have more than 8
    assert torch.equal(radius_graph(pos, 0.2, batch, max_num_neighbors=8), expected)
    big = torch.rand(20000, 3, generator=generator)  # deep trees, several chunks in torch
    ptr = torch.tensor([0, 20000])
    if cpp_available():
        for count, radius_sq in [(16, math.inf), (32, 0.05 ** 2)]:
            assert torch.equal(neighbour_search(big, ptr, count, radius_sq, False, "cpp"),
                               neighbour_search(big, ptr, count, radius_sq, False, "torch"))


def test_radius_is_inclusive_and_exact_at_the_boundary():
    pos = torch.tensor([[0.0], [0.1], [0.3]], dtype=torch.float64)
    edges = radius_graph(pos, 0.1)
    assert edges.T.tolist() == [[1, 0], [0, 1]]
    bound = radius_sq_bound(0.1)
    assert math.sqrt(bound) <= 0.1 < math.sqrt(math.nextafter(bound, math.inf))


def test_small_chunks_of_the_torch_search(monkeypatch):
    import torch_geometric_erwin.tree.neighbour_search as module
    monkeypatch.setattr(module, "PAIRS_PER_CHUNK", 200)
    pos = torch.rand(300, 2, generator=torch.Generator().manual_seed(0))
    ptr = torch.tensor([0, 120, 300])
    assert torch.equal(neighbour_search(pos, ptr, 6, math.inf, False, "torch"),
                       oracle(pos, [120, 180], 6, math.inf, False))


def test_bad_inputs_are_rejected():
    pos = torch.rand(6, 2)
    with pytest.raises(ValueError, match="k must"):
        knn_graph(pos, 0)
    with pytest.raises(ValueError, match="r must"):
        radius_graph(pos, 0.0)
    with pytest.raises(ValueError, match="r must"):
        radius_graph(pos, math.inf)
    with pytest.raises(ValueError, match="max_num_neighbors"):
        radius_graph(pos, 0.5, max_num_neighbors=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        knn_graph(torch.tensor([[0.0, math.inf]] * 3), 2)
    with pytest.raises(ValueError, match="sorted"):
        knn_graph(pos, 2, torch.tensor([0, 1, 0, 1, 1, 1]))
    with pytest.raises(TypeError, match="pos"):
        knn_graph(pos.long(), 2)
    with pytest.raises(ValueError, match="engine"):
        neighbour_search(pos, torch.tensor([0, 6]), 2, math.inf, False, "gpu")


def test_radius_graph_transform():
    from torch_geometric.data import Data
    pos = torch.rand(40, 3, generator=torch.Generator().manual_seed(1))
    data = RadiusGraphTransform(0.4, loop=True, max_num_neighbors=5)(Data(pos=pos))
    assert torch.equal(data.edge_index, oracle(pos, [40], 5, 0.4, True))
    assert repr(RadiusGraphTransform(0.4)) == "RadiusGraphTransform(r=0.4, loop=False, max_num_neighbors=32)"
    with pytest.raises(ValueError, match="r must"):
        RadiusGraphTransform(-1.0)
