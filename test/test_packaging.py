"""The source distribution: it carries the C++ sources, the typing marker and its own tests, which run."""
import os
import subprocess
import sys
import tarfile

import pytest

from support import ROOT


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("sdist")
    done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), ROOT],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (archive,) = out.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    (folder,) = [path for path in out.iterdir() if path.is_dir()]
    return folder


def test_sdist_carries_sources_and_tests(sdist):
    for name in ("csrc/bindings.cpp", "csrc/ball_tree.h", "torch_geometric_erwin/py.typed", "CITATION.cff",
                 "LICENSE", "test/conftest.py", "test/test_checks.py", "examples/nbody.py",
                 "benchmarks/model.py", "docs/index.md"):
        assert (sdist / name).is_file(), name
    assert not list(sdist.rglob("*.so")) and not list(sdist.rglob("__pycache__"))


def test_sdist_tests_run(sdist):
    # the unpacked package (PyTorch engine: nothing is compiled there) runs its own test module
    env = {**os.environ, "TORCH_GEOMETRIC_ERWIN_ENGINE": "torch"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test/test_checks.py", "-k", "not thread_count"],
                          cwd=sdist, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout
    imported = subprocess.run([sys.executable, "-c", "import torch_geometric_erwin as t; print(t.__file__)"],
                              cwd=sdist, capture_output=True, text=True, env=env)
    assert imported.stdout.strip().startswith(str(sdist))
