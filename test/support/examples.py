"""The examples as modules: loading one, running its command line in-process, a fast training budget."""
import importlib.util
import os

from support import ROOT

EXAMPLES = os.path.join(ROOT, "examples")
#: Examples that train Erwin only (their clouds carry no graph for the MPNN baseline).
ERWIN_ONLY = {"large_cloud"}
#: Examples with a command line of their own rather than the experiment runner's, tested in their own files.
STANDALONE = {"sharded_cloud"}
ALL_EXAMPLES = sorted(f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py") and f[:-3] not in STANDALONE)


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name, argv):
    return load_example(name).run(load_example(name).EXPERIMENT, argv)


def fast_args(tmp_path, model):
    return ["--model", model, "--steps", "2", "--val-every", "2", "--batch-size", "2",
            "--out", str(tmp_path / "out"), "--no-progress", "--no-tensorboard", "--seed", "1", "--eval-limit", "2"]
