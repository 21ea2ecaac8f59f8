"""Fixtures shared by the test modules."""
import os
import subprocess
import sys
import uuid

import pytest
import torch
from torch_geometric.io import fs

from support import TESTS


def pytest_addoption(parser):
    parser.addoption("--device", default=None,
                     help="device of the tests that take the `device` fixture: cpu (default) or cuda[:index]; "
                          "ERWIN_TEST_DEVICE sets it too")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The device under test: ``--device``, else ``$ERWIN_TEST_DEVICE``, else the CPU. A CUDA device on
    a machine without one skips the test."""
    name = request.config.getoption("--device") or os.environ.get("ERWIN_TEST_DEVICE") or "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise pytest.UsageError(f"--device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    if device.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--device {name!r}: the tests know cpu and cuda")
    return device


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    """A dataset root: a local folder, then a fresh ``memory://`` fsspec URL (removed afterwards)."""
    if request.param == "local":
        yield str(tmp_path / "data")
    else:
        url = f"memory://{uuid.uuid4().hex}"
        yield url
        if fs.exists(url):
            fs.rm(url)


@pytest.fixture(scope="module")
def gloo_works():
    """Skip (with the reason) where two local processes cannot form a gloo group at all, e.g. a sandbox
    without a loopback interface. Runs in a subprocess with a deadline, so nothing can hang the suite."""
    code = ("import sys, torch.multiprocessing as mp; sys.path.insert(0, sys.argv[1]); "
            "import support.distributed as t; mp.spawn(t.gloo_preflight, args=(2, t.free_port()), nprocs=2)")
    try:
        result = subprocess.run([sys.executable, "-c", code, TESTS], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("two local gloo processes did not connect within 120 s on this machine")
    if result.returncode != 0:
        pytest.skip(f"two local gloo processes cannot connect on this machine: {result.stderr[-500:]}")
