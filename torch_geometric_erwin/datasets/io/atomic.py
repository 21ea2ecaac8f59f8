r"""Files that appear whole or not at all, on any :mod:`fsspec` file system.

:func:`atomic_write` opens a temporary file beside the target (named
``<target>.tmp-<random>``) and moves it onto the target only when the block
ends without an error, so an interrupted run, a full disk or a ``kill -9``
never leaves a truncated file under the target's name; the temporary file is
removed on an error. On a local disk the move is a rename, which is atomic;
object stores have no rename, and fsspec copies there.
"""
from __future__ import annotations

import contextlib
import json
import os.path as osp
import uuid
from typing import IO, Any, Iterator

import torch
from torch_geometric.io import fs

#: Infix of temporary files: ``<target><TMP_MARK><random hex>``.
TMP_MARK = ".tmp-"


def temporary_path(path: str) -> str:
    """A fresh temporary name beside ``path``."""
    return f"{path}{TMP_MARK}{uuid.uuid4().hex}"


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` (a local path or an fsspec URL) in ``mode`` (``"wb"`` or
    ``"w"``), yield it, and move it onto ``path`` when the block ends; on an error (or an interrupt) the
    temporary file is removed and ``path`` is left as it was. The parent folder is created."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = str(path)
    filesystem = fs.get_fs(path)
    parent = osp.dirname(path)
    if parent:
        filesystem.makedirs(parent, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with filesystem.open(tmp, mode) as handle:
            yield handle
        filesystem.mv(tmp, path)
    finally:
        if filesystem.exists(tmp):
            filesystem.rm(tmp)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`, streamed to the file (no in-memory copy
    of the serialised bytes)."""
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_json(obj: Any, path: str) -> None:
    """``obj`` as indented JSON in ``path`` through :func:`atomic_write`."""
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2)
