"""Fixtures shared by the test modules."""
import os
import uuid

import pytest
import torch
from torch_geometric.io import fs


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
