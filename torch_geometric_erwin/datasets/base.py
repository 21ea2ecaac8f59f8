r"""What every dataset of the package shares: a processed cache keyed by the pre-processing, and
processed files that fail to load with an error naming the file and the fix.

PyG keeps one processed folder per root and only warns when ``pre_transform`` or ``pre_filter``
differ from the ones it was built with, then returns the old samples. Here each pre-processing
gets a folder of its own under ``processed/``, named by a hash of the transforms' descriptions,
so two pipelines (a kNN graph for an MPNN, ball trees for Erwin) can share a root and each reads
what it built. A transform is described by its ``repr`` with memory addresses removed: a custom
transform needs a ``__repr__`` that shows its parameters for two of its settings to get two
folders.
"""
from __future__ import annotations

import hashlib
import os.path as osp
import re
from typing import Any, Optional

from torch_geometric.io import fs


class ProcessedFileError(OSError):
    """A processed file exists but cannot be read (truncated, damaged or from another version)."""


def describe(transform: Any) -> str:
    """``repr(transform)`` without the ``at 0x...`` addresses of objects that show no parameters."""
    return "None" if transform is None else re.sub(r"\s+at\s+0x[0-9a-fA-F]+", "", repr(transform))


def preprocessing_key(pre_transform: Any, pre_filter: Any) -> Optional[str]:
    """The folder name of a pre-processing, or None for none (the plain ``processed/`` folder)."""
    if pre_transform is None and pre_filter is None:
        return None
    text = f"pre_transform={describe(pre_transform)}\npre_filter={describe(pre_filter)}"
    return "pre-" + hashlib.sha256(text.encode()).hexdigest()[:12]


class ProcessedCache:
    r"""Mixin for :class:`torch_geometric.data.Dataset` subclasses (list it first): the processed
    folder is ``<processed_root>/<preprocessing_key>`` when a ``pre_transform`` or ``pre_filter`` is
    given, and :meth:`load_processed` reads a processed file or raises :class:`ProcessedFileError`.
    """

    @property
    def processed_root(self) -> str:
        """The folder that holds the processed folders of every pre-processing."""
        return osp.join(self.root, "processed")

    @property
    def processed_dir(self) -> str:
        key = preprocessing_key(getattr(self, "pre_transform", None), getattr(self, "pre_filter", None))
        return self.processed_root if key is None else osp.join(self.processed_root, key)

    def load_processed(self, path: str) -> Any:
        """``fs.torch_load(path)``; a file that does not load raises :class:`ProcessedFileError`."""
        try:
            return fs.torch_load(path)
        except Exception as error:  # torch and pickle raise many types for a damaged file
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ProcessedFileError(
                f"the processed file '{path}' cannot be read ({reason}): it is damaged or was written by "
                f"another version; delete it or pass force_reload=True to {type(self).__name__} to process "
                "the raw files again") from error
