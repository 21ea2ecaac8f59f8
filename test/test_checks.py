"""Bad input is rejected with a ValueError/TypeError naming the argument, before any work."""
import os
import subprocess
import sys

import pytest
import torch

from torch_geometric_erwin.tree import build_ball_tree, granularity

POS = torch.rand(10, 3)
BATCH = torch.tensor([0] * 4 + [1] * 6)


@pytest.mark.parametrize("pos, error, match", [
    (POS.numpy(), TypeError, "pos must be a torch.Tensor"),
    (torch.arange(30).view(10, 3), TypeError, "pos must be a floating-point"),
    (torch.rand(10), ValueError, r"pos must have shape \[num_nodes, dim\]"),
    (torch.rand(0, 3), ValueError, "pos is empty"),
    (torch.rand(4, 0), ValueError, "pos has zero spatial dimensions"),
    (torch.tensor([[0.0, float("nan")]]), ValueError, "pos contains NaN or Inf"),
    (torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), ValueError, "pos contains NaN or Inf"),
])
def test_bad_positions(pos, error, match):
    with pytest.raises(error, match=match):
        build_ball_tree(pos)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(batch=BATCH[:-1]), ValueError, "batch has 9 entries but pos has 10 nodes"),
    (dict(batch=BATCH.flip(0)), ValueError, "batch must be sorted"),
    (dict(batch=BATCH - 1), ValueError, "batch must not contain negative"),
    (dict(batch=BATCH.float()), TypeError, "batch must be an integer tensor"),
    (dict(batch=BATCH.view(2, 5)), ValueError, "batch must be one-dimensional"),
    (dict(batch=BATCH, ptr=torch.tensor([0, 4, 10])), ValueError, "either batch or ptr"),
    (dict(ptr=torch.tensor([0, 4, 9])), ValueError, "ptr must start at 0 and end at num_nodes = 10"),
    (dict(ptr=torch.tensor([0, 6, 4, 10])), ValueError, "ptr must be non-decreasing"),
    (dict(ball_sizes=[12]), ValueError, "ball_sizes must contain powers of two"),
    (dict(ball_sizes=[8.0]), TypeError, "ball_sizes must contain ints"),
    (dict(ball_sizes=[]), ValueError, "ball_sizes must not be empty"),
    (dict(ball_sizes=8), TypeError, "ball_sizes must be a list"),
    (dict(ball_sizes=[8, 8], strides=[3]), ValueError, "strides must contain powers of two"),
    (dict(ball_sizes=[8, 8], strides=[2, 2]), ValueError, r"strides must have len\(ball_sizes\) - 1 = 1"),
    (dict(ball_sizes=[8, 8]), ValueError, r"strides must have len\(ball_sizes\) - 1 = 1"),
    (dict(strides=[2]), ValueError, "strides were given without ball_sizes"),
    (dict(padding="next"), ValueError, "padding must be one of"),
    (dict(rotate=45.0), ValueError, "rotate != 0 needs ball_sizes"),
    (dict(ball_sizes=[2**31]), ValueError, r"need at least 2147483648 \(2\*\*31\) tree slots per graph"),
    (dict(ball_sizes=[8], rotate=float("nan")), TypeError, "rotate must be a finite angle"),
    (dict(ball_sizes=[8], rotate="45"), TypeError, "rotate must be a finite angle"),
    (dict(engine_name="fortran"), ValueError, "engine must be 'cpp' or 'torch'"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_ball_tree(POS, **kwargs)


def test_granularity():
    assert granularity() == 1
    assert granularity([128], []) == 128
    # level 1 balls of 64 pooled 4x are 256 level-0 slots
    assert granularity([128, 64], [4]) == 256
    assert granularity([128, 128, 128, 64, 32], [2, 2, 2, 2]) == 512


SCRIPT = """
import hashlib, torch
from torch_geometric_erwin.tree import build_ball_tree
torch.manual_seed(0)
sizes = torch.tensor([1, 5000, {large}, 3, 900])
pos = torch.randn(int(sizes.sum()), 3)
pos[:2000] = pos[:2000].round()  # ties
batch = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
digest = hashlib.sha256()
for _ in range(2):
    tree = build_ball_tree(pos, batch, ball_sizes=[128, 64, 32], strides=[2, 2], rotate=45, engine_name="{engine}")
    for tensor in [tree.index, tree.mask, *tree.rotated]:
        digest.update(tensor.numpy().tobytes())
print(digest.hexdigest())
"""


@pytest.mark.parametrize("engine", ["cpp", "torch"])
def test_deterministic_for_any_thread_count(engine):
    from torch_geometric_erwin.tree.engine import cpp_available

    if engine == "cpp" and not cpp_available():
        pytest.skip("C++ engine not built")
    digests = set()
    for threads in ("1", "2", "5"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        # the C++ engine splits large graphs across threads: give it one big enough to do so
        script = SCRIPT.format(engine=engine, large=70000 if engine == "cpp" else 20000)
        result = subprocess.run([sys.executable, "-c", script], env=env,
                                capture_output=True, text=True, check=True)
        digests.add(result.stdout.strip())
    assert len(digests) == 1
