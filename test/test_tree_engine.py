"""Engine selection: the C++ extension when built, the PyTorch fallback otherwise, said once."""
import os
import subprocess
import sys

import pytest

# Runs in a fresh interpreter; BLOCK_EXTENSION hides the compiled module as if no compiler existed.
SCRIPT = """
import os, sys, warnings
if os.environ.get("BLOCK_EXTENSION"):
    sys.modules["torch_geometric_erwin._C"] = None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import torch
    from torch_geometric_erwin.tree import build_ball_tree, engine_name
    tree = build_ball_tree(torch.rand(100, 3), ball_sizes=[16], rotate=45)
    build_ball_tree(torch.rand(50, 2))
assert int(tree.mask.sum()) == 100
messages = [str(w.message) for w in caught if "ball-tree engine" in str(w.message)]
print(engine_name(), len(messages))
"""


def run(env_var=None, block=False):
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_GEOMETRIC_ERWIN_ENGINE", "BLOCK_EXTENSION")}
    if env_var is not None:
        env["TORCH_GEOMETRIC_ERWIN_ENGINE"] = env_var
    if block:
        env["BLOCK_EXTENSION"] = "1"
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True)


def test_missing_extension_falls_back_and_warns_once():
    result = run(block=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["torch", "1"]


def test_environment_variable_forces_the_fallback_silently():
    result = run("torch")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["torch", "0"]


def test_forcing_cpp_without_the_extension_is_an_error():
    result = run("cpp", block=True)
    assert result.returncode != 0 and "C++ extension is not built" in result.stderr


def test_unknown_engine_name_is_an_error():
    result = run("fortran")
    assert result.returncode != 0 and "must be 'cpp' or 'torch'" in result.stderr


def test_default_is_cpp_when_built():
    from torch_geometric_erwin.tree.engine import cpp_available

    if not cpp_available():
        pytest.skip("C++ engine not built")
    result = run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cpp", "0"]
