"""Exact neighbour search: ours (C++ and PyTorch engines) against scipy's cKDTree.

k-nearest (k = 16, no self-loops) and radius graphs (max 16 neighbours, the radius of ~16
expected neighbours) of uniform and clustered 3-D clouds; median wall times in ms over the
rounds, and ratios (cKDTree time / our C++ time: > 1 means we are faster). Every timed call
builds its tree and returns the neighbours (cKDTree with ``workers=-1``; for the radius graph
``query_ball_point`` returns every neighbour, not only the nearest 16, so it does less ranking
and more output). Machines are noisy: compare within one run.

    python benchmarks/neighbour_search.py [--sizes 10000 100000] [--large] [--repeats 3] [--no-torch]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from torch_geometric_erwin.tree.engine import cpp_available
from torch_geometric_erwin.tree.neighbour_search import neighbour_search, radius_sq_bound

K = 16


def cloud(kind: str, n: int, generator: torch.Generator) -> torch.Tensor:
    if kind == "uniform":
        return torch.rand(n, 3, generator=generator)
    centres = torch.rand(max(1, n // 1000), 3, generator=generator)
    pick = torch.randint(0, centres.shape[0], (n,), generator=generator)
    return centres[pick] + 0.01 * torch.randn(n, 3, generator=generator)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - tic))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--large", action="store_true", help="add n = 1e6")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch engine")
    args = parser.parse_args()
    from scipy.spatial import cKDTree

    sizes = args.sizes + ([1_000_000] if args.large else [])
    generator = torch.Generator().manual_seed(0)
    print(f"threads {torch.get_num_threads()}, k = {K}")
    print(f"{'cloud':>9} {'n':>8} {'graph':>6} {'C++ ms':>9} {'cKDTree ms':>11} {'torch ms':>9} "
          f"{'cKDTree/C++':>11} {'torch/C++':>9}")
    for kind in ("uniform", "clustered"):
        for n in sizes:
            pos = cloud(kind, n, generator)
            array = pos.numpy().astype(np.float64)
            ptr = torch.tensor([0, n])
            # the radius holding ~K points on average
            tree = cKDTree(array)
            radius = float(np.median(tree.query(array[:2000], K + 1)[0][:, -1]))
            radius_sq = radius_sq_bound(radius)
            for graph in ("knn", "radius"):
                count, bound = (K, math.inf) if graph == "knn" else (K, radius_sq)
                runs = {}
                if cpp_available():
                    runs["cpp"] = lambda: neighbour_search(pos, ptr, count, bound, False, "cpp")
                if graph == "knn":
                    runs["ckdtree"] = lambda: cKDTree(array).query(array, K + 1, workers=-1)
                else:
                    runs["ckdtree"] = lambda: cKDTree(array).query_ball_point(array, radius, workers=-1)
                if not args.no_torch:
                    runs["torch"] = lambda: neighbour_search(pos, ptr, count, bound, False, "torch")
                ms = {name: median_ms(fn, args.repeats) for name, fn in runs.items()}
                cpp = ms.get("cpp", math.nan)
                print(f"{kind:>9} {n:>8} {graph:>6} {cpp:>9.1f} {ms['ckdtree']:>11.1f} "
                      f"{ms.get('torch', math.nan):>9.1f} {ms['ckdtree'] / cpp:>11.2f} "
                      f"{ms.get('torch', math.nan) / cpp:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
