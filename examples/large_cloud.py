"""One large synthetic point cloud, end to end: Erwin (an MD preset) trained with activation checkpointing
on clouds of --num-points points, then run for inference on a cloud of --infer-points, the ball tree and the
kNN graph built by the model inside every call. The target is every point's mass-weighted local density,
log(sum of the masses of its 16 nearest neighbours / distance to the 16th^3), standardised. Prints the
training time per step, the inference time and the peak memory of each, and refuses, before any work, a run
whose predicted peak memory exceeds what the machine has available (or --memory-budget)."""
import sys
import time

import torch

from torch_geometric_erwin.training import Experiment, InputEncoder, NodeRegression, erwin_backbone, run

C_IN = 16
#: Neighbours of the density target (the model's own graph is its ``knn``, also 16).
KNN = 16
#: Gaussian clusters of a clustered cloud, and the share of its points spread uniformly between them.
CLUSTERS, BACKGROUND = 64, 0.1


def generate(num_points: int, cloud: str, seed: int, target: bool = True):
    """A cloud of ``num_points`` points in the unit cube with log-normal masses ``x`` and, if ``target``,
    the standardised mass-weighted density ``y``."""
    from torch_geometric.data import Data
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(num_points, 3, generator=generator)
    if cloud == "clustered":
        clustered = int(num_points * (1 - BACKGROUND))
        centres = torch.rand(CLUSTERS, 3, generator=generator)
        which = torch.randint(CLUSTERS, (clustered,), generator=generator)
        spread = 0.02 + 0.06 * torch.rand(CLUSTERS, 1, generator=generator)
        pos[:clustered] = (centres[which] + spread[which] * torch.randn(clustered, 3, generator=generator)).clamp(0, 1)
    mass = torch.exp(0.5 * torch.randn(num_points, 1, generator=generator))
    data = Data(pos=pos, x=mass)
    if target:
        data.y = density(pos, mass)
    return data


def density(pos, mass):
    """``[N, 1]`` standardised log of the mass of every point's 16 nearest neighbours (itself included)
    over the cube of the distance to the farthest of them."""
    from torch_geometric_erwin.nn import knn_graph
    source, target = knn_graph(pos, KNN, loop=True)
    reach = torch.zeros(pos.shape[0]).scatter_reduce_(0, target, (pos[source] - pos[target]).norm(dim=1), "amax")
    summed = torch.zeros(pos.shape[0]).index_add_(0, target, mass[source, 0])
    value = torch.log(summed) - 3 * torch.log(reach.clamp_min(1e-6))
    return ((value - value.mean()) / value.std()).unsqueeze(1)


def check_memory(args):
    """Refuse the run before any work if its predicted peak memory exceeds the budget."""
    from torch_geometric_erwin.nn import Erwin
    from torch_geometric_erwin.utils import available_memory
    from torch_geometric_erwin.utils.memory import format_bytes
    budget = args.memory_budget * 2**30 if args.memory_budget is not None else available_memory()
    source = "--memory-budget" if args.memory_budget is not None else "available now"
    model = Erwin.from_preset(f"md-{args.size}", in_channels=C_IN)
    # parameters, their gradients and AdamW's two moments; the clouds (positions, mass, target)
    state = 4 * sum(p.numel() * p.element_size() for p in model.parameters())

    def training(points: int, checkpointing: bool) -> int:  # validation and testing need less than a step
        return (state + (args.num_train + 2) * points * 5 * 4
                + model.estimate_memory(points, training=True, activation_checkpointing=checkpointing))

    def inference(points: int) -> int:
        return state + (args.num_train + 2) * args.num_points * 5 * 4 + points * 4 * 4 + model.estimate_memory(points)

    def largest(points: int, fits) -> int:
        while points > 512 and not fits(points):
            points //= 2
        return points

    need = max(training(args.num_points, args.activation_checkpointing), inference(args.infer_points))
    if need <= budget:
        return
    fixes = []
    if training(args.num_points, args.activation_checkpointing) > budget:
        if not args.activation_checkpointing and training(args.num_points, True) <= budget:
            fixes.append("drop --no-activation-checkpointing")
        else:
            fixes.append(f"--num-points {largest(args.num_points, lambda n: training(n, True) <= budget)}")
    if inference(args.infer_points) > budget:
        fixes.append(f"--infer-points {largest(args.infer_points, lambda n: inference(n) <= budget)}")
    raise ValueError(
        f"this run is predicted to need {format_bytes(need)} of memory at its peak (md-{args.size}, training on "
        f"{args.num_points} points, activation checkpointing {'on' if args.activation_checkpointing else 'off'}, "
        f"inference on {args.infer_points}), more than the {format_bytes(budget)} {source}: try "
        f"{' and '.join(fixes)}{', or --size small' if args.size != 'small' else ''}, or raise --memory-budget if "
        "the estimate is too cautious")


def load(args, pre_transform):  # None: the model builds the tree and the graph, which the example measures
    if args.num_points < 512:
        raise ValueError(f"--num-points must be at least 512 (the md presets' smallest tree), got {args.num_points}")
    if args.num_train < 1:
        raise ValueError(f"--num-train must be at least 1, got {args.num_train}")
    if args.infer_points is None:
        args.infer_points = args.num_points
    check_memory(args)
    tic = time.perf_counter()
    splits = tuple([generate(args.num_points, args.cloud, args.data_seed + 1000 * i + j) for j in range(count)]
                   for i, count in enumerate((args.num_train, 1, 1)))
    print(f"generated {args.num_train} + 1 + 1 {args.cloud} clouds of {args.num_points} points in "
          f"{time.perf_counter() - tic:.1f} s", file=sys.stderr)
    return splits


def build_task(factory, args):
    return NodeRegression(factory(C_IN), InputEncoder(["x"], 1, C_IN), out_channels=1)


def report(task, trainer, summary, args, out_dir):
    """Training time and peak memory so far, then inference on a cloud of ``--infer-points``."""
    from torch_geometric.data import Batch
    from torch_geometric_erwin.utils.memory import format_bytes, peak_rss, reset_peak_rss
    train_peak = peak_rss()
    step_s = summary["train_time_s"] / max(summary["steps"], 1)
    cloud = Batch.from_data_list([generate(args.infer_points, args.cloud, args.data_seed + 7, target=False)])
    cloud = cloud.to(next(task.parameters()).device)
    task.eval()
    measured = reset_peak_rss()
    tic = time.perf_counter()
    with torch.no_grad():
        out = task(cloud)
    infer_s = time.perf_counter() - tic
    infer_peak = peak_rss() if measured else None
    backbone = task.backbone
    predicted = backbone.estimate_memory(args.infer_points)
    print(f"training: {summary['steps']} steps on {args.num_points} points, {step_s:.2f} s per step, process peak "
          f"{format_bytes(train_peak) if train_peak else 'unknown'}")
    print(f"inference: {args.infer_points} points in {infer_s:.2f} s (tree, graph and model), process peak "
          f"{format_bytes(infer_peak) if infer_peak else 'unknown'} (predicted for the call: {format_bytes(predicted)})")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("inference produced non-finite values")
    return {"num_points": args.num_points, "infer_points": args.infer_points, "train_step_s": step_s,
            "train_peak_bytes": train_peak, "infer_s": infer_s, "infer_peak_bytes": infer_peak,
            "infer_predicted_bytes": predicted}


def power_of_two_or_int(text: str) -> int:
    """``"2^20"`` or ``"1048576"``."""
    base, _, exponent = text.partition("^")
    return int(base) ** int(exponent) if exponent else int(text)


def add_arguments(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--num-points", type=power_of_two_or_int, default=2**18,
                       help="points of every training, validation and test cloud (an int or 2^K)")
    group.add_argument("--infer-points", type=power_of_two_or_int, default=None,
                       help="points of the cloud inferred at the end (default: --num-points)")
    group.add_argument("--num-train", type=int, default=2, help="training clouds")
    group.add_argument("--cloud", choices=["clustered", "uniform"], default="clustered",
                       help="64 Gaussian clusters over 10%% uniform background, or uniform in the cube")
    group.add_argument("--data-seed", type=int, default=0, help="seed of the generated clouds")
    group.add_argument("--memory-budget", type=float, default=None, metavar="GB",
                       help="memory the run may use (default: what /proc/meminfo or psutil says is available)")
    parser.add_argument("--no-activation-checkpointing", dest="activation_checkpointing", action="store_false",
                        help="keep every block's activations (on by default in this example)")
    parser.set_defaults(activation_checkpointing=True)


EXPERIMENT = Experiment(
    name="large_cloud", description=__doc__, dimensionality=3, preset="md", sizes=("small", "medium", "large"),
    train=dict(steps=20, batch_size=1, lr=1e-3, eta_min=1e-5, val_every=20, max_grad_norm=1.0),
    load=load, build_task=build_task, add_arguments=add_arguments, report=report,
    backbones={"erwin": erwin_backbone}, default_models=("erwin",), default_data="data/large_cloud",
    synthetic_options=dict(num_points=1024, num_train=2),
    layout="generated in memory, nothing is read (--data is unused)")

if __name__ == "__main__":
    sys.exit(run(EXPERIMENT))
