"""The device check: everything worth measuring on one GPU machine, in one run of at most 8 minutes.

Stages, each with its own time budget inside a global deadline (``--deadline``, default 450 s); a
stage that fails or runs out of time is recorded (its error, or how far it got) and the next
one runs. Everything measured is written to ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``,
rewritten after every stage, so that a run cut short keeps what it measured.

1. ``environment``: device, memory, torch and CUDA versions, which attention backends run.
2. ``tests``: ``pytest --device cuda`` on the device tests (``test/test_device.py``, the layers,
   models and tree build on the device against the CPU in float64) and the attention backends'
   tests (``test/nn/test_attention_backends.py``, flex's backward pass included).
3. ``model``: Erwin against the reference model (``--reference`` or ``$ERWIN_REFERENCE``, when
   the checkout is there), reference README configuration, forward and forward+backward time
   and peak memory (``torch.cuda.max_memory_allocated`` during one call over the memory
   allocated before it), float32 and bfloat16 autocast, our model with every attention backend
   side by side (functions of ``benchmarks/model.py``). The first call of each case is timed
   apart ("first call": flex attention compiles there).
4. ``nsa``: ErwinNSA against Erwin on the MD preset (``benchmarks/nsa.py``'s ``run_case``):
   training steps per second and peak memory (parameters and optimizer state included).
5. ``tree_build``: ball trees (MD balls, rotations) of clouds on the device: the default
   engine, the PyTorch engine, and a round trip through the host's C++ engine.
6. ``capacity``: the largest single cloud that trains (forward+backward) and that infers with
   ``md-small`` in the device's memory, doubling the size until an out-of-memory error or the
   stage's budget. Edges: each point's 16 neighbours in ball-tree order, a kNN stand-in that
   costs O(N) to build at millions of points (the embedding's cost depends on the number of
   edges, not on which ones).

``--dry-run`` runs the same stages on the CPU at tiny sizes in seconds (a check of the script).

    python benchmarks/gpu_check.py --out gpu_check_out [--reference PATH] [--deadline 450]
    python benchmarks/gpu_check.py --out /tmp/check --dry-run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _reference import load_reference_erwin  # noqa: E402
from model import OURS, README_CONFIG, REFERENCE, make_inputs, make_models, step_fn  # noqa: E402
from nsa import TASKS, run_case  # noqa: E402

from torch_geometric_erwin.nn import Erwin, set_attention_backend  # noqa: E402
from torch_geometric_erwin.nn.ball_attention import ATTENTION_BACKENDS, flex_attention, flex_supported  # noqa: E402
from torch_geometric_erwin.tree import build_ball_tree  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The stages in order, with their time budgets in seconds (full run, dry run).
STAGES = {"environment": (15, 10), "tests": (100, 20), "model": (130, 20), "nsa": (60, 20),
          "tree_build": (30, 10), "capacity": (100, 15)}
#: Our model's attention backends, side by side in the model stage.
MODEL_BACKENDS = ("auto", "flex", "sdpa", "math")
#: A small configuration for the dry run (the README's has a granularity of 2048 points).
DRY_CONFIG = dict(README_CONFIG, c_hidden=[16, 32], ball_sizes=[16, 16], enc_num_heads=[2, 2], enc_depths=[1, 1],
                  dec_num_heads=[2], dec_depths=[1], strides=[2], mp_steps=1)
MD_BALLS, MD_STRIDES = [128, 128, 128, 64, 32], [2, 2, 2, 2]


class StageTimeout(Exception):
    """A stage ran past its budget."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raises :class:`StageTimeout` in the block after ``seconds`` (SIGALRM: the main thread, between
    Python bytecodes, so a long CUDA call ends first)."""
    def expire(signum, frame):
        raise StageTimeout(f"ran past its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Check:
    """The run's settings, clock and results."""

    def __init__(self, args):
        self.args = args
        self.dry = args.dry_run
        self.device = torch.device("cpu" if self.dry else args.device)
        self.start = time.perf_counter()
        self.stage_end = math.inf
        self.results: Dict[str, dict] = {}

    def left(self) -> float:
        """Seconds left in the current stage."""
        return self.stage_end - time.perf_counter()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def peak_mb(self, fn: Callable[[], None]) -> Optional[float]:
        """Peak memory of one call of ``fn`` over what was allocated before it (CUDA; None on CPU)."""
        if self.device.type != "cuda":
            fn()
            return None
        self.sync()
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        fn()
        return (torch.cuda.max_memory_allocated(self.device) - base) / 2**20

    def free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def timed(check: Check, fn: Callable[[], None], repeats: int) -> dict:
    """First call (compilation, warm-up) and the median of ``repeats`` more, in ms, and one call's peak MB."""
    tic = time.perf_counter()
    fn()
    first = 1e3 * (time.perf_counter() - tic)
    times = []
    for _ in range(repeats):
        if check.left() < 2 * first / 1e3 and times:
            break  # keep the stage's budget for the cases after this one
        tic = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - tic))
    return {"first_ms": first, "ms": statistics.median(times) if times else first, "calls": len(times),
            "peak_mb": check.peak_mb(fn)}


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:500]


# ---------------------------------------------------------------------------------------------- stages
def environment(check: Check, out: dict) -> None:
    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    out["python"] = platform.python_version()
    out["cpu_cores"] = os.cpu_count()
    out["device"] = str(check.device)
    if check.device.type == "cuda":
        properties = torch.cuda.get_device_properties(check.device)
        out["device_name"] = properties.name
        out["device_memory_gib"] = round(properties.total_memory / 2**30, 1)
        out["capability"] = f"{properties.major}.{properties.minor}"
    probe = torch.empty(0, device=check.device)
    out["flex_attention_available"] = flex_attention is not None
    out["auto_picks_flex"] = {str(dtype).removeprefix("torch."): flex_supported(probe.to(dtype), 16, 128)
                              for dtype in (torch.float32, torch.bfloat16)}
    out["backends"] = list(ATTENTION_BACKENDS)


def tests(check: Check, out: dict) -> None:
    files = ["test/test_device.py", "test/nn/test_attention_backends.py"]
    command = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", "--device", str(check.device)]
    if check.dry:
        command += ["-k", "tree_build"]
    out["command"] = " ".join(command[1:])
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(check.left() - 5, 1))
    except subprocess.TimeoutExpired as expired:
        out["output_tail"] = (expired.stdout or b"")[-4000:].decode(errors="replace") if isinstance(
            expired.stdout, bytes) else (expired.stdout or "")[-4000:]
        raise StageTimeout("pytest ran past the stage's budget") from None
    out["returncode"] = done.returncode
    text = done.stdout + done.stderr
    out["summary"] = {kind: int(count) for count, kind in
                      re.findall(r"(\d+) (passed|failed|skipped|error|errors|xfailed|xpassed|deselected)", text)}
    out["failures"] = re.findall(r"^(?:FAILED|ERROR) .*$", text, flags=re.M)
    out["output_tail"] = text[-4000:]
    if done.returncode not in (0, 5):
        raise RuntimeError(f"pytest exited {done.returncode}: {out['summary']}")


def model(check: Check, out: dict) -> None:
    reference_path = check.args.reference or os.environ.get("ERWIN_REFERENCE")
    reference = load_reference_erwin(reference_path) if reference_path else None
    out["reference"] = reference_path or "not given (--reference PATH or ERWIN_REFERENCE): our model only"
    config = DRY_CONFIG if check.dry else README_CONFIG
    sizes = [(1, 64)] if check.dry else [(16, 2048), (16, 8192)]
    repeats = 0 if check.dry else 3  # the dry run: the first call only
    device = str(check.device)
    rows = out["rows"] = []
    models = make_models(config, "pow2", device, reference)
    variants = [(OURS, backend) for backend in MODEL_BACKENDS] + ([(REFERENCE, None)] if reference else [])
    for num_graphs, num_points in sizes:
        inputs = make_inputs(num_graphs, num_points, config, "pow2", device)
        for precision in ("float32", "bfloat16"):
            for name, backend in variants:
                if name == OURS:
                    set_attention_backend(models[OURS], backend)
                for mode in ("fwd", "train"):
                    row = dict(batch=num_graphs, points=num_points, precision=precision,
                               model=name if backend is None else f"{name} ({backend})", mode=mode)
                    rows.append(row)
                    if check.left() < 5:
                        row["error"] = "skipped: stage budget spent"
                        continue
                    step = step_fn(name, models[name], inputs, mode, device)
                    if precision == "bfloat16":
                        step = autocast(step, check.device.type)
                    try:
                        row.update(timed(check, step, repeats))
                    except StageTimeout:
                        row["error"] = "stage budget spent during this case"
                        raise
                    except Exception as error:  # recorded; the other cases still run
                        row["error"] = error_text(error)
                        check.free()
        del inputs
        check.free()


def autocast(fn: Callable[[], None], device_type: str) -> Callable[[], None]:
    def run():
        with torch.autocast(device_type, dtype=torch.bfloat16):
            fn()
    return run


def nsa(check: Check, out: dict) -> None:
    rows = out["rows"] = []
    batch_sizes, steps, warmup = ([1], 1, 0) if check.dry else ([1, 8], 5, 2)
    task = "md"
    if check.dry:  # the MD presets on clouds of 64 points
        task = "md-dry-run"
        TASKS.setdefault(task, (64, *TASKS["md"][1:]))
    for batch_size in batch_sizes:
        for name in ("Erwin", "ErwinNSA"):
            row = dict(task=task, model=name, batch=batch_size)
            rows.append(row)
            if check.left() < 5:
                row["error"] = "skipped: stage budget spent"
                continue
            try:
                row.update(run_case(task, name, batch_size, steps, warmup, check.device.type))
            except StageTimeout:
                row["error"] = "stage budget spent during this case"
                raise
            except Exception as error:
                row["error"] = error_text(error)
                check.free()


def tree_build(check: Check, out: dict) -> None:
    rows = out["rows"] = []
    cases = [(2, 1024)] if check.dry else [(16, 4096), (16, 16384), (1, 2**20)]
    config = dict(ball_sizes=MD_BALLS, strides=MD_STRIDES, rotate=45.0)
    generator = torch.Generator().manual_seed(0)
    for num_graphs, num_points in cases:
        pos = torch.rand(num_graphs * num_points, 3, generator=generator).to(check.device)
        batch = torch.arange(num_graphs, device=check.device).repeat_interleave(num_points)

        def on_device(engine):
            tree = build_ball_tree(pos, batch, engine_name=engine, **config)
            check.sync()
            return tree

        def round_trip():
            tree = build_ball_tree(pos.cpu(), batch.cpu(), engine_name="cpp", **config).to(check.device)
            check.sync()
            return tree

        runs = {"default engine, device input": lambda: on_device(None),
                "PyTorch engine, device input": lambda: on_device("torch"),
                "C++ engine, host round trip": round_trip}
        row = dict(batch=num_graphs, points=num_points)
        rows.append(row)
        expected = None
        for label, fn in runs.items():
            if check.left() < 3:
                row[label] = "skipped: stage budget spent"
                continue
            try:
                tree = fn()
                times = []
                for _ in range(1 if check.dry else 5):
                    tic = time.perf_counter()
                    fn()
                    times.append(1e3 * (time.perf_counter() - tic))
                row[f"{label} ms"] = statistics.median(times)
                same = expected is None or all(torch.equal(getattr(tree, k).cpu(), getattr(expected, k).cpu())
                                               for k in ("index", "mask", "ptr"))
                row[f"{label} same tree"] = bool(same)
                expected = expected if expected is not None else tree
            except StageTimeout:
                raise
            except Exception as error:
                row[label] = error_text(error)


def order_edges(tree, k: int, device) -> torch.Tensor:
    """Each point's ``k`` neighbours in the tree's slot order (a kNN stand-in, O(N))."""
    nodes = tree.index[tree.mask].to(device)
    count = nodes.shape[0]
    offsets = torch.arange(1, k // 2 + 1, device=device)
    position = torch.arange(count, device=device)
    targets = torch.cat([(position[:, None] + offsets) % count, (position[:, None] - offsets) % count], dim=1)
    return torch.stack([nodes[targets].flatten(), nodes.repeat_interleave(targets.shape[1])])


def capacity(check: Check, out: dict) -> None:
    torch.manual_seed(0)
    net = Erwin.from_preset("md-small").to(check.device)
    start, stop = (2**10, 2**11) if check.dry else (2**15, 2**27)
    out["preset"] = "md-small"
    for mode in ("train", "infer"):
        trials = out[f"{mode}_trials"] = []
        share = check.left() / (2 if mode == "train" else 1)
        mode_end = time.perf_counter() + share
        points = start if mode == "train" or not out.get("train_largest") else out["train_largest"]
        last_seconds = 0.0
        while points <= stop:
            if time.perf_counter() + 3 * last_seconds + 2 > mode_end:
                trials.append(dict(points=points, error="not tried: the stage's budget would not cover it"))
                break
            trial = dict(points=points)
            trials.append(trial)
            tic = time.perf_counter()
            try:
                pos = torch.rand(points, 3)
                tree = net.build_tree(pos).to(check.device)
                pos = pos.to(check.device)
                x = torch.randn(points, net.in_channels, device=check.device)
                edges = order_edges(tree, 16, check.device)

                def step():
                    if mode == "train":
                        net.train()
                        net.zero_grad(set_to_none=True)
                        net(x, pos, edge_index=edges, tree=tree).square().mean().backward()
                    else:
                        net.eval()
                        with torch.no_grad():
                            net(x, pos, edge_index=edges, tree=tree)
                    check.sync()

                step_tic = time.perf_counter()
                trial["peak_mb"] = check.peak_mb(step)
                trial["ms"] = 1e3 * (time.perf_counter() - step_tic)
                out[f"{mode}_largest"] = points
            except torch.cuda.OutOfMemoryError as error:
                trial["error"] = error_text(error)
                break
            except StageTimeout:
                trial["error"] = "stage budget spent during this size"
                raise
            finally:
                x = edges = tree = pos = None
                net.zero_grad(set_to_none=True)
                check.free()
            last_seconds = time.perf_counter() - tic
            points *= 2


STAGE_FUNCTIONS = {"environment": environment, "tests": tests, "model": model, "nsa": nsa,
                   "tree_build": tree_build, "capacity": capacity}


# ---------------------------------------------------------------------------------------------- output
def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value).replace("|", "/").replace("\n", " ")


def table(rows: List[dict]) -> List[str]:
    columns = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key in columns) + " |" for row in rows]
    return lines


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = [f"# Device check ({'dry run on the CPU' if meta['dry_run'] else meta['device']})", "",
             f"Started {meta['started']}, {meta['seconds']:.0f} s of a {meta['deadline_s']:.0f} s deadline.", ""]
    for name, stage in report["stages"].items():
        lines += [f"## {name}", "", f"status: **{stage['status']}**, {stage['seconds']:.1f} s of "
                  f"{stage['budget_s']:.0f} s" + (f"; {stage['error']}" if stage.get("error") else ""), ""]
        results = stage.get("results", {})
        scalars = {k: v for k, v in results.items() if not isinstance(v, list) and k != "output_tail"}
        for key, value in scalars.items():
            lines.append(f"- {key}: {cell(value)}")
        for key, value in results.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                lines += ["", f"**{key}**", ""] + table(value)
            elif isinstance(value, list):
                lines += ["", f"**{key}**: " + (", ".join(cell(v) for v in value) or "none")]
        if results.get("output_tail"):
            lines += ["", "```", results["output_tail"][-1500:].strip(), "```"]
        lines.append("")
    return "\n".join(lines)


def write(report: dict, out_dir: str) -> None:
    with open(os.path.join(out_dir, "gpu_check.json"), "w") as handle:
        json.dump(report, handle, indent=1, default=str)
    with open(os.path.join(out_dir, "gpu_check.md"), "w") as handle:
        handle.write(markdown(report))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="cuda", help="the device to check (default: cuda)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds for the whole run (default: 450, or 60 with --dry-run)")
    parser.add_argument("--reference", metavar="PATH", default=None,
                        help="a local checkout of the reference code, for the model stage")
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--dry-run", action="store_true", help="the same stages on the CPU at tiny sizes")
    args = parser.parse_args(argv)
    if args.deadline is None:
        args.deadline = 60.0 if args.dry_run else 450.0
    if args.deadline <= 0:
        raise ValueError(f"--deadline must be positive, got {args.deadline}")
    if not args.dry_run and torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here (use --dry-run for a check on the CPU)")
    os.makedirs(args.out, exist_ok=True)
    check = Check(args)
    report = {"meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "dry_run": args.dry_run,
                       "device": str(check.device), "deadline_s": args.deadline, "seconds": 0.0},
              "stages": {}}
    for name in args.stages:
        budget = STAGES[name][1 if args.dry_run else 0]
        left = args.deadline - (time.perf_counter() - check.start)
        budget = min(budget, left)
        stage = report["stages"][name] = {"status": "ok", "budget_s": budget, "seconds": 0.0, "results": {}}
        tic = time.perf_counter()
        check.stage_end = tic + budget
        print(f"[{time.strftime('%H:%M:%S')}] {name} (budget {budget:.0f} s)", file=sys.stderr, flush=True)
        if budget < 1:
            stage.update(status="skipped", error="the global deadline has passed")
        else:
            try:
                with time_limit(budget):
                    STAGE_FUNCTIONS[name](check, stage["results"])
            except StageTimeout as error:
                stage.update(status="timeout", error=str(error))
            except Exception as error:  # recorded; the next stage runs
                stage.update(status="error", error=error_text(error), traceback=traceback.format_exc()[-3000:])
            check.free()
        stage["seconds"] = time.perf_counter() - tic
        report["meta"]["seconds"] = time.perf_counter() - check.start
        write(report, args.out)
    return report


if __name__ == "__main__":
    main()
