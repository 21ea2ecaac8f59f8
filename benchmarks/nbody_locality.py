"""How local is the SyntheticNBody target? Fraction of its variance that local information explains.

For graphs of ``SyntheticNBody`` (generated in memory), every particle's target acceleration is
compared with what a local model could see at best: the exact contribution of the particles inside
its neighbourhood (k nearest neighbours; the L-hop receptive field of a k-NN message-passing
network, messages flowing from each node's k nearest neighbours to it; a radius ball), and the best
rotation-equivariant linear fit from local features. For contrast, a coarse *global* view: the
exact contribution of the particle's own ball of a ball tree plus every other ball as a point mass
at its centre of mass (the full sum explains 100% by construction).

Scores are R^2 = 1 - sum|y - y_hat|^2 / sum|y - mean(y)|^2 over every particle and component of
the graphs (pooled). Prints a Markdown table.

    python benchmarks/nbody_locality.py [--num-graphs 16] [--dim 3] [--softening 0.05] [--time]
"""
from __future__ import annotations

import argparse
import time
import uuid

import torch

from torch_geometric_erwin.datasets import SyntheticNBody


def pair_terms(pos: torch.Tensor, mass: torch.Tensor, softening: float) -> torch.Tensor:
    """``T[i, j] = m_j (x_j - x_i) / (|x_j - x_i|^2 + eps^2)^{3/2}``, ``[N, N, D]`` float64."""
    pos, mass = pos.double(), mass.double()
    diff = pos.unsqueeze(0) - pos.unsqueeze(1)
    r2 = diff.pow(2).sum(-1) + softening ** 2
    return diff * (mass.unsqueeze(0) / r2.pow(1.5)).unsqueeze(-1)


def knn_index(pos: torch.Tensor, k: int) -> torch.Tensor:
    """``[N, k]`` indices of each particle's k nearest other particles."""
    dist = torch.cdist(pos.double(), pos.double())
    dist.fill_diagonal_(float("inf"))
    return dist.topk(k, largest=False).indices


def hop_masks(pos: torch.Tensor, k: int, hops: int) -> list:
    """Receptive fields ``[N, N]`` (bool) of 1..hops layers of a k-NN MPNN (i receives from its kNN)."""
    index = knn_index(pos, k)
    field = torch.eye(pos.size(0), dtype=torch.bool)
    field[torch.arange(pos.size(0)).unsqueeze(1), index] = True
    masks = [field]
    for _ in range(hops - 1):
        # i sees what its neighbours (and itself) saw one layer earlier
        field = masks[-1] | masks[-1][index].any(dim=1)
        masks.append(field)
    return masks


def ball_groups(pos: torch.Tensor, ball_size: int) -> torch.Tensor:
    """Ball id of every particle: recursive median bisection along the widest axis."""
    groups = torch.zeros(pos.size(0), dtype=torch.long)
    todo, next_id = [torch.arange(pos.size(0))], 0
    while todo:
        members = todo.pop()
        if members.numel() <= ball_size:
            groups[members] = next_id
            next_id += 1
            continue
        points = pos[members]
        axis = int((points.max(0).values - points.min(0).values).argmax())
        order = points[:, axis].argsort()
        half = members.numel() // 2
        todo += [members[order[:half]], members[order[half:]]]
    return groups


def near_far_field(pos, mass, near, groups, softening):
    """Exact over ``near`` (a ``[N, N]`` bool mask, each particle's neighbourhood), plus every ball
    of ``groups`` *minus* the particle's neighbourhood as one point mass at its centre of mass."""
    pos, mass = pos.double(), mass.double()
    onehot = torch.nn.functional.one_hot(groups).double()  # [N, B]
    far = (~near).double() * mass.unsqueeze(0)  # far[i, j] = m_j if j is not near i
    ball_mass = far @ onehot  # [N, B]
    moment = torch.stack([far @ (onehot * pos[:, d:d + 1]) for d in range(pos.size(1))], dim=-1)
    centre = moment / ball_mass.clamp_min(1e-300).unsqueeze(-1)
    diff = centre - pos.unsqueeze(1)  # [N, B, D]
    r2 = diff.pow(2).sum(-1) + softening ** 2
    far_field = (diff * (ball_mass / r2.pow(1.5)).unsqueeze(-1)).sum(1)
    return far_field + (pair_terms(pos, mass, softening) * near.unsqueeze(-1)).sum(1)


def r2_score(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    return float(1 - (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum())


def linear_fit_r2(y: torch.Tensor, features: list) -> float:
    """Best fit ``y ~ sum_f c_f * feature_f`` with scalar (rotation-equivariant) coefficients."""
    design = torch.stack([f.reshape(-1) for f in features], dim=1)
    coef = torch.linalg.lstsq(design, y.reshape(-1, 1)).solution
    return r2_score(y, (design @ coef).reshape(y.shape))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-graphs", type=int, default=16, help="graphs to analyse (test split)")
    parser.add_argument("--num-particles", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=3, choices=(2, 3))
    parser.add_argument("--softening", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time", action="store_true",
                        help="also time generating 1000 train graphs (default size) with the current threads")
    args = parser.parse_args()

    if args.time:
        tic = time.perf_counter()
        SyntheticNBody(f"memory://nbody-time-{uuid.uuid4().hex}", split="train", num_graphs=1000,
                       num_particles=args.num_particles, dimensionality=args.dim, softening=args.softening,
                       seed=args.seed, log=False)
        print(f"generated 1000 + {SyntheticNBody.calibration_graphs} (calibration) graphs of "
              f"{args.num_particles} particles in {time.perf_counter() - tic:.1f} s "
              f"with {torch.get_num_threads()} threads\n")

    dataset = SyntheticNBody(f"memory://nbody-locality-{uuid.uuid4().hex}", split="test",
                             num_graphs=args.num_graphs, num_particles=args.num_particles, dimensionality=args.dim,
                             softening=args.softening, seed=args.seed, log=False)
    ks, hops, radii, balls = (16, 32, 64), 4, (0.05, 0.1, 0.2), (128, 32, 8)
    rows = {}  # name -> (predictions, neighbourhood sizes)

    def add(name, prediction, size):
        predictions, sizes = rows.setdefault(name, ([], []))
        predictions.append(prediction)
        sizes.append(size)

    targets, fit_features = [], [[], [], []]
    for data in dataset:
        pos, mass = data.pos, dataset.denormalize(data.x.squeeze(-1), "mass")
        y = dataset.denormalize(data.y.double())
        targets.append(y)
        terms = pair_terms(pos, mass, args.softening)
        rows_index = torch.arange(pos.size(0)).unsqueeze(1)
        index = knn_index(pos, max(ks))
        for k in ks:
            add(f"exact sum over the {k} nearest neighbours", terms[rows_index, index[:, :k]].sum(1), k)
        for hop, mask in enumerate(hop_masks(pos, 16, hops), start=1):
            add(f"exact sum over the receptive field of {hop} layer(s) of a 16-NN MPNN",
                (terms * mask.unsqueeze(-1)).sum(1), float(mask.sum(1).double().mean()) - 1)
        dist = torch.cdist(pos.double(), pos.double())
        for radius in radii:
            mask = dist <= radius
            add(f"exact sum within radius {radius}", (terms * mask.unsqueeze(-1)).sum(1),
                float(mask.sum(1).double().mean()) - 1)
        near = index[:, :max(ks)]
        offsets = pos.double()[near] - pos.double().unsqueeze(1)
        fit_features[0].append(terms[rows_index, near].sum(1))
        fit_features[1].append((mass.double()[near].unsqueeze(-1) * offsets).sum(1))
        fit_features[2].append(offsets.mean(1))
        near = torch.zeros(pos.size(0), pos.size(0), dtype=torch.bool)
        near[rows_index, index[:, :max(ks)]] = True
        near.fill_diagonal_(True)
        for ball in balls:
            add(f"global: {max(ks)} nearest exact + far field as balls of {ball}",
                near_far_field(pos, mass, near, ball_groups(pos, ball), args.softening),
                pos.size(0) // ball)

    y = torch.cat(targets)
    print(f"SyntheticNBody, {args.num_graphs} test graphs of {args.num_particles} particles, "
          f"dim={args.dim}, softening={args.softening}, seed={args.seed}\n")
    print("| prediction | particles seen (mean) | R^2 |")
    print("|---|---|---|")
    for name, (predictions, sizes) in rows.items():
        if name.startswith("global"):
            continue
        print(f"| {name} | {sum(sizes) / len(sizes):.0f} | {r2_score(y, torch.cat(predictions)):.2f} |")
    fit = linear_fit_r2(y, [torch.cat(f) for f in fit_features])
    print(f"| best linear fit from the {max(ks)} nearest neighbours (local sum, mass-weighted and "
          f"plain centroid offsets) | {max(ks)} | {fit:.2f} |")
    for ball in balls:
        predictions, sizes = rows[f"global: {max(ks)} nearest exact + far field as balls of {ball}"]
        print(f"| global: the {max(ks)} nearest neighbours exactly, the rest as {sizes[0]} point masses "
              f"(balls of {ball} particles, minus those neighbours, at their centres of mass) | "
              f"{max(ks)} + {sizes[0]} | {r2_score(y, torch.cat(predictions)):.2f} |")
    print(f"| global: exact sum over all particles (the target) | {args.num_particles} | 1.00 |")


if __name__ == "__main__":
    main()
