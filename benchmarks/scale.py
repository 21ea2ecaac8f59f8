"""How time and memory grow with the size of one cloud, from 2^12 to 2^23 points.

For one uniform 3-D cloud of n points (16 input features), every stage of a large-system run,
each in a fresh Python process:

- ``tree``: the ball tree of the ``md-small`` preset with its rotated orders (C++ engine);
- ``knn`` and ``ckdtree``: the embedding's graph, 16 nearest neighbours with the node itself,
  by our search and by scipy's ``cKDTree`` (``workers=-1``, build and query);
- ``infer``: ``md-small`` inference end to end (eval, ``no_grad``, the tree and the graph built
  by the model);
- ``train`` and ``train-ckpt``: a training step end to end (forward building the tree and the
  graph, mean-square loss, backward), without and with activation checkpointing;
- ``ref-infer`` and ``ref-train``: the reference model with the same configuration, given the
  tree and the graph (built before the timed call: the reference builds neither itself without
  its optional packages), at the sizes it fits;
- with ``--models``, ``<model>-infer`` and ``<model>-train`` of each baseline named (its
  stages of ``--stages`` among ``infer`` and ``train``): the backbone the examples build for
  ``--model <model> --size small`` on a 3-D task with the MD presets (its ``md-small`` preset
  where it has one, else its generic small size), end to end (Transolver, PointNet++ and the
  serialized transformer build their neighbourhoods and orders themselves; the MPNN is given
  the kNN-16 graph, built before the timed call as for the reference).

Peak memory is the growth of the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) during the first call at size n over the resident set just before it,
after a warm-up call at the smallest size; glibc returns every freed block above 128 KiB at once
(``MALLOC_MMAP_THRESHOLD_``), so the resident set follows the live tensors. Times are the median
of the calls in that same process (the first included), so every large allocation is fresh,
page-faulted memory: all stages and sizes pay that alike. A case is skipped, not run, when the
previous size's peak memory or time, scaled to n, predicts more than ``--memory-budget`` or
``--case-seconds``. Exponents are least-squares slopes of log(time) and log(memory) over
log(n), over the sizes from ``--fit-from`` on. Results go to a JSON file after every case, and
a rerun with the same file only measures what is missing.

    python benchmarks/scale.py [--min-log2 12] [--max-log2 23] [--reference PATH] [--markdown]
    python benchmarks/scale.py --min-log2 12 --max-log2 14 --repeats 1     # a smoke run
    python benchmarks/scale.py --stages infer train --models erwin transolver pointnet2 ptv3 mpnn
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Callable, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _reference import load_reference_erwin  # noqa: E402
from _table import print_table  # noqa: E402
from model import exponent, log  # noqa: E402
from nsa import run_fresh, status_mb  # noqa: E402

from torch_geometric_erwin.nn import Erwin, knn_graph  # noqa: E402
from torch_geometric_erwin.nn.models.presets import PRESETS  # noqa: E402
from torch_geometric_erwin.training.registry import DEFAULT_BACKBONES  # noqa: E402
from torch_geometric_erwin.tree import build_ball_tree  # noqa: E402

PRESET = "md-small"
KNN = 16
IN_CHANNELS = PRESETS[PRESET]["in_channels"]
STAGES = ("tree", "knn", "ckdtree", "infer", "train", "train-ckpt", "ref-infer", "ref-train")
#: The models of ``--models`` besides Erwin (the examples' ``--model`` names) and the stages they run.
BASELINES = ("transolver", "pointnet2", "ptv3", "mpnn")
BASELINE_STAGES = ("infer", "train")
#: How a stage's memory and time grow per doubling of n, for the prediction that skips a case.
GROWTH = 2.2


def reference_config() -> dict:
    """The ``md-small`` preset in the reference constructor's argument names."""
    preset = PRESETS[PRESET]
    names = ("ball_sizes", "enc_num_heads", "enc_depths", "dec_num_heads", "dec_depths", "strides", "rotate",
             "mp_steps", "mlp_ratio", "dimensionality")
    return dict(c_in=preset["in_channels"], c_hidden=preset["hidden_channels"],
                **{name: preset[name] for name in names})


def cloud(n: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=generator), torch.randn(n, IN_CHANNELS, generator=generator)


def baseline(name: str) -> torch.nn.Module:
    """The backbone of the examples' ``--model name --size small`` on a 3-D task with the MD presets."""
    return DEFAULT_BACKBONES[name](IN_CHANNELS, "small", SimpleNamespace(preset=PRESET.split("-")[0], dimensionality=3))


def make_case(stage: str, n: int, reference_path: Optional[str]) -> Callable[[], None]:
    """A zero-argument callable running ``stage`` on the cloud of ``n`` points (inputs built here, untimed)."""
    pos, x = cloud(n)
    name = stage.rsplit("-", 1)[0]
    if stage == "tree":
        model = Erwin.from_preset(PRESET)
        return lambda: model.build_tree(pos)
    if stage == "knn":
        return lambda: knn_graph(pos, KNN, loop=True)
    if stage == "ckdtree":
        from scipy.spatial import cKDTree
        points = pos.numpy()
        return lambda: cKDTree(points).query(points, k=KNN, workers=-1)
    if stage.startswith("ref-"):
        reference = load_reference_erwin(reference_path)
        model = reference.ErwinTransformer(**reference_config())
        config = PRESETS[PRESET]
        tree = build_ball_tree(pos, None, ball_sizes=config["ball_sizes"], strides=config["strides"],
                               rotate=config["rotate"])
        edge_index = knn_graph(pos, KNN, loop=True)
        batch = torch.zeros(n, dtype=torch.long)

        def call():
            # the reference pops its rotated orders off the list it is given
            return model(x, pos, batch, edge_index, tree_idx=tree.index, tree_mask=tree.mask,
                         tree_idx_rot=list(tree.rotated))
    elif name in BASELINES:
        model = baseline(name)
        edge_index = knn_graph(pos, KNN, loop=True) if name == "mpnn" else None

        def call():
            return model(x, pos, None, edge_index)
    else:
        model = Erwin.from_preset(PRESET, **({"activation_checkpointing": True} if stage == "train-ckpt" else {}))

        def call():
            return model(x, pos)
    if stage.endswith("infer"):
        model.eval()

        def infer():
            with torch.no_grad():
                call()
        return infer
    model.train()

    def train():
        model.zero_grad(set_to_none=True)
        call().square().mean().backward()
    return train


def run_case(spec: dict) -> dict:
    """``--case``: warm up at ``spec["warmup"]`` points, then peak memory and times at ``spec["n"]``."""
    make_case(spec["stage"], spec["warmup"], spec["reference"])()
    fn = make_case(spec["stage"], spec["n"], spec["reference"])
    gc.collect()
    base = status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident set
    times = []
    for _ in range(spec["repeats"]):
        tic = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - tic))
        if not times[1:]:
            peak = status_mb("VmHWM") - base
    return dict(ms=statistics.median(times), peak_mb=peak, calls=len(times))


def save(path: str, results: dict) -> None:
    """Write ``results`` to ``path`` atomically (an interrupted run keeps the previous file)."""
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        json.dump(results, handle, indent=1, sort_keys=True)
    os.replace(handle.name, path)


def skip_reason(previous: Optional[dict], args) -> Optional[str]:
    """Why the next size of a stage is not run, predicted from the previous size's measurement."""
    if previous is None:
        return None
    if "ms" not in previous:
        return "a smaller size was not measured"
    memory_gb = previous["peak_mb"] * GROWTH / 1024
    if memory_gb > args.memory_budget:
        return f"predicted {memory_gb:.1f} GB > --memory-budget {args.memory_budget} GB"
    seconds = previous["ms"] * GROWTH / 1e3 * args.repeats
    if seconds > args.case_seconds:
        return f"predicted {seconds:.0f} s > --case-seconds {args.case_seconds}"
    return None


def tables(results: dict, stages: List[str], sizes: List[int], fit_from: int, markdown: bool) -> None:
    def cell(stage, n, key, scale=1.0, digits=0):
        entry = results.get(stage, {}).get(str(n))
        if entry is None:
            return "-"
        if "skipped" in entry or "error" in entry:
            return "skipped" if "skipped" in entry else "failed"
        return f"{entry[key] * scale:.{digits}f}"

    def slopes(key):
        row = []
        for stage in stages:
            points = [(n, results[stage][str(n)][key]) for n in sizes
                      if n >= fit_from and "ms" in results.get(stage, {}).get(str(n), {})]
            row.append(f"{exponent(*map(list, zip(*points))):.2f}" if len(points) >= 3 else "-")
        return row

    header = ["n"] + [f"{stage} ms" for stage in stages]
    rows = [[f"2^{int(math.log2(n))}"] + [cell(stage, n, "ms") for stage in stages] for n in sizes]
    if "knn" in stages and "ckdtree" in stages:
        header.append("cKDTree / ours")
        for row, n in zip(rows, sizes):
            ours, theirs = (results.get(s, {}).get(str(n), {}).get("ms") for s in ("knn", "ckdtree"))
            row.append(f"{theirs / ours:.2f}x" if ours and theirs else "-")
    rows.append([f"exponent (2^{int(math.log2(fit_from))}+)"] + slopes("ms") + [""] * (len(header) - len(stages) - 1))
    what = f"{PRESET}" + (" (baselines: their MD size)" if any(s.split("-")[0] in BASELINES for s in stages) else "")
    print_table(header, rows, markdown, f"Time (ms), one cloud, {what}")

    header = ["n"] + [f"{stage} MB (B/point)" for stage in stages]
    rows = [[f"2^{int(math.log2(n))}"] + [
        f"{cell(stage, n, 'peak_mb')} ({cell(stage, n, 'peak_mb', 2**20 / n)})"
        if "peak_mb" in results.get(stage, {}).get(str(n), {}) else cell(stage, n, "peak_mb") for stage in stages]
        for n in sizes]
    rows.append([f"exponent (2^{int(math.log2(fit_from))}+)"] + slopes("peak_mb"))
    print_table(header, rows, markdown, f"Peak memory (MB, bytes per point), one cloud, {what}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-log2", type=int, default=12)
    parser.add_argument("--max-log2", type=int, default=23)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--models", nargs="+", default=["erwin"], choices=("erwin",) + BASELINES,
                        help="erwin runs --stages; each baseline its stages of --stages among infer and train")
    parser.add_argument("--reference", default=os.environ.get("ERWIN_REFERENCE"),
                        help="checkout of the reference code (default: $ERWIN_REFERENCE); without it the ref-* "
                             "stages are left out")
    parser.add_argument("--repeats", type=int, default=3, help="calls per case (median time)")
    parser.add_argument("--memory-budget", type=float, default=20.0, help="GB a case may be predicted to need")
    parser.add_argument("--case-seconds", type=float, default=900.0, help="seconds a case may be predicted to take")
    parser.add_argument("--fit-from", type=int, default=14, help="log2 of the smallest size in the exponent fits")
    parser.add_argument("--results", default="scale_results.json", help="JSON file of the measurements")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return

    stages = [stage for stage in args.stages if args.reference or not stage.startswith("ref-")] \
        if "erwin" in args.models else []
    stages += [f"{name}-{stage}" for name in args.models if name != "erwin"
               for stage in args.stages if stage in BASELINE_STAGES]
    if not stages:
        parser.error("nothing to run: the baselines run the stages infer and train only")
    sizes = [2**k for k in range(args.min_log2, args.max_log2 + 1)]
    results = {}
    if os.path.exists(args.results):
        with open(args.results) as handle:
            results = json.load(handle)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    for stage in stages:
        measured = results.setdefault(stage, {})
        previous = None
        for n in sizes:
            if str(n) not in measured:
                reason = skip_reason(previous, args)
                if reason:
                    measured[str(n)] = {"skipped": reason}
                else:
                    spec = dict(stage=stage, n=n, warmup=sizes[0], repeats=args.repeats, reference=args.reference)
                    try:
                        measured[str(n)] = json.loads(run_fresh([os.path.abspath(__file__), "--case", json.dumps(spec)],
                                                                None, memory=True, what=f"{stage} at n = {n}"))
                    except RuntimeError as error:
                        measured[str(n)] = {"error": str(error)[-500:]}
                save(args.results, results)
                log(f"{stage} n=2^{int(math.log2(n))}: {measured[str(n)]}")
            previous = measured[str(n)]
    tables(results, stages, sizes, 2**args.fit_from, args.markdown)


if __name__ == "__main__":
    main()
