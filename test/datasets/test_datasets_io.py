"""datasets/io: atomic files and the streaming MATLAB reader against scipy.io.loadmat."""
import io
import json

import numpy as np
import pytest
import torch

from torch_geometric_erwin.datasets.io import (MatFormatError, atomic_json, atomic_torch_save, atomic_write,
                                               mat5_variables, read_mat5)


def test_atomic_write_moves_whole_files_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    with atomic_write(str(target)) as handle:
        handle.write(b"new")
        assert not target.exists()  # nothing under the name until the block ends
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError):
        with atomic_write(str(target)) as handle:
            handle.write(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    atomic_torch_save({"a": torch.arange(3)}, str(target))
    assert torch.equal(torch.load(target)["a"], torch.arange(3))
    atomic_json({"b": 1}, str(tmp_path / "x.json"))
    assert json.loads((tmp_path / "x.json").read_text()) == {"b": 1}
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(str(target), "a"):
            pass


def test_atomic_write_on_an_fsspec_memory_filesystem():
    with atomic_write("memory://io-test/f.txt", "w") as handle:
        handle.write("text")
    import fsspec
    with fsspec.open("memory://io-test/f.txt", "r") as handle:
        assert handle.read() == "text"


@pytest.mark.parametrize("compressed", [False, True])
def test_mat5_reader_equals_loadmat(compressed):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    arrays = {"input": rng.normal(size=(7, 5)), "output": rng.normal(size=(7, 5, 3, 4, 2)).astype(np.float32),
              "ints": np.arange(6, dtype=np.int16).reshape(2, 3), "i": np.array([[1.5]]),
              "text": "not numeric", "z": np.ones((2, 2)) * 1j}
    buffer = io.BytesIO()
    scipy_io.savemat(buffer, arrays, do_compression=compressed)
    variables = mat5_variables(buffer)
    assert sorted(variables) == ["i", "input", "ints", "output"]  # strings and complex arrays left out
    expected = scipy_io.loadmat(io.BytesIO(buffer.getvalue()))
    for name, variable in variables.items():
        assert variable.shape == expected[name].shape and variable.compressed == compressed
        for chunk_bytes in (1, 64, 1 << 20):  # slabs of one column, a few dimensions, everything
            out = read_mat5(buffer, variable, np.empty(variable.shape, dtype=np.float64), chunk_bytes=chunk_bytes)
            np.testing.assert_array_equal(out, expected[name])
    with pytest.raises(ValueError, match="shape"):
        read_mat5(buffer, variables["input"], np.empty((5, 7)))


def test_mat5_reader_refuses_other_files():
    with pytest.raises(MatFormatError, match="level-5"):
        mat5_variables(io.BytesIO(b"\x89HDF" + b"\0" * 200))
    with pytest.raises(MatFormatError, match="7.3"):
        mat5_variables(io.BytesIO(b"MATLAB 7.3 MAT-file" + b" " * 200))
