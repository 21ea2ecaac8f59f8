r"""The one place that loads the C++ extension ``_C`` and says what it can do.

Layers and the tree engine ask :func:`available` (and the other ops of this package), never
``_C``: a build without a compiler leaves ``_C`` out, and every op then reports itself unavailable
so that its caller takes its PyTorch path.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

try:
    from torch_geometric_erwin import _C
except ImportError:  # built without a C++ compiler: the PyTorch paths serve
    _C = None
if _C is not None and not hasattr(_C, "capabilities"):
    # an extension built from older sources, whose kernels this package no longer calls
    warnings.warn("torch_geometric_erwin._C is from an older build of the package and is not used: rebuild "
                  "it (pip install -e . or python setup.py build_ext --inplace)", RuntimeWarning)
    _C = None

# read once at import: a plain dict, which torch.compile reads as a constant when a layer asks
# `available` inside a traced forward
_CAPABILITIES: Dict[str, Any] = {} if _C is None else dict(_C.capabilities())


def capabilities() -> Dict[str, Any]:
    """The capability table of the built extension, read from the extension itself: per kernel
    (``"ball_attention"``, ``"edge_messages"``, ``"rms_norm"``, ``"swiglu"``, ``"tree"``,
    ``"neighbour_search"``) the widths and dtypes it is compiled for, and ``"openmp"``; an empty
    table when the extension is not built."""
    return copy.deepcopy(_CAPABILITIES)


def available(kernel: str, dtype: Optional[torch.dtype] = None) -> bool:
    """Whether the extension has ``kernel`` (a key of :func:`capabilities`), for ``dtype`` if given."""
    entry = _CAPABILITIES.get(kernel)
    if not isinstance(entry, dict):
        return False
    return dtype is None or str(dtype).removeprefix("torch.") in entry["dtypes"]


def table(kernel: str) -> Dict[str, Any]:
    """The capability table's entry for ``kernel`` (empty when the extension lacks it), for the
    layers, which read it in their forward passes; :func:`capabilities` gives users a copy."""
    return _CAPABILITIES.get(kernel, {})


def arrays(*tensors: Optional[Tensor]) -> List[Any]:
    """NumPy views of CPU tensors (None stays None), which the kernels read and write in place."""
    return [None if t is None else t.detach().numpy() for t in tensors]


def extension():
    """The loaded ``_C`` module, for the ops of this package (callers check :func:`available`)."""
    if _C is None:
        raise RuntimeError("the C++ extension torch_geometric_erwin._C is not built: reinstall the package "
                           "with a C++ compiler available, or use the PyTorch paths")
    return _C
