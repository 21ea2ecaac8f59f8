"""Fixtures shared by the test modules."""
import uuid

import pytest
from torch_geometric.io import fs


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
