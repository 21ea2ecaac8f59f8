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


def test_build_path_helpers_agree_with_their_fallbacks(monkeypatch):
    """all_finite, batch_ptr and slot_ptr give the same answers in C++ and in numpy/torch."""
    import numpy as np
    import torch

    from torch_geometric_erwin.tree import engine

    if not engine.cpp_available():
        pytest.skip("C++ engine not built")
    generator = np.random.default_rng(0)
    positions = [torch.rand(50, 3), torch.rand(7, 2, dtype=torch.float64), torch.full((4, 1), 1e30)]
    for bad in (float("nan"), float("inf"), -float("inf")):
        spoilt = torch.rand(30, 3)
        spoilt[17, 1] = bad
        positions.append(spoilt)
    batches = [np.repeat(np.arange(5), generator.integers(0, 4, 5)), np.zeros(0, np.int64),
               np.array([0, 0, 2, 2, 5]), np.array([0, 1, 1, 0]), np.array([-1, 0, 1]), np.array([1, 0, -2])]
    node_ptrs = [torch.tensor([0, 1, 2, 5, 5, 1000, 1033]), torch.tensor([0, 4096, 4097])]
    cases = [(engine.all_finite, (p,)) for p in positions]
    cases += [(engine.batch_ptr, (b.astype(np.int64),)) for b in batches]
    cases += [(engine.slot_ptr, (ptr, padding, grain)) for ptr in node_ptrs
              for padding in ("pow2", "compact") for grain in (1, 16, 512)]
    compiled = [fn(*args) for fn, args in cases]
    monkeypatch.setattr(engine, "cpp_available", lambda: False)
    for (fn, args), expected in zip(cases, compiled):
        got = fn(*args)
        if isinstance(expected, tuple):
            assert got[0] == expected[0], (fn.__name__, args)
            assert (got[1] is None) == (expected[1] is None) and (got[1] is None or torch.equal(got[1], expected[1]))
        elif isinstance(expected, torch.Tensor):
            assert torch.equal(got, expected), (fn.__name__, args)
        else:
            assert got == expected, (fn.__name__, args)
    assert compiled[:len(positions)] == [True, True, True, False, False, False]
