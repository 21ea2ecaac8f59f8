r"""What the layers' written-out CPU paths share: when they apply, and how work is cut into blocks.

Ball attention, SwiGLU and the embedding's messages run on CPU in blocks of a few MB, so that each
block's intermediates stay in the caches and no temporary is a fresh, page-faulted tensor of the
whole input's size; in float32, ball attention and the embedding's messages run C++ kernels
(``csrc/``) instead, which store no per-ball or per-edge intermediate at all.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

try:
    from torch_geometric_erwin import _C
except ImportError:  # built without a C++ compiler: the layers' PyTorch paths serve
    _C = None


def takes_cpu_path(x: Tensor, parameter: Tensor) -> bool:
    """Whether a layer with input ``x`` and a ``parameter`` runs its written-out CPU path: float32
    or float64 on CPU, parameters of the same dtype, outside autocast and ``torch.compile`` (which
    trace the composite form)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and parameter.dtype == x.dtype
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


def takes_kernel_path(x: Tensor, parameter: Tensor) -> bool:
    """Whether a layer with input ``x`` and a ``parameter`` runs C++ kernels: the extension is built
    and the layer takes its CPU path (:func:`takes_cpu_path`) in float32, the dtype they are written for."""
    return _C is not None and x.dtype == torch.float32 and takes_cpu_path(x, parameter)


def blocks(total: int, size: int) -> List[slice]:
    """``range(total)`` cut into slices of ``size`` (the last one shorter)."""
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def arrays(*tensors: Optional[Tensor]) -> list:
    """NumPy views of CPU tensors (None stays None), which the C++ kernels read and write in place."""
    return [None if t is None else t.detach().numpy() for t in tensors]
