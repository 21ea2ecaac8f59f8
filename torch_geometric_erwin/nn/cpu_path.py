r"""What the layers' written-out CPU paths share: when they apply, and how work is cut into blocks.

Ball attention, SwiGLU and the embedding's messages run on CPU in blocks of a few MB, so that each
block's intermediates stay in the caches and no temporary is a fresh, page-faulted tensor of the
whole input's size; in float32, ball attention, RMSNorm and the embedding's messages run the C++
kernels of :mod:`torch_geometric_erwin.ops` instead, which store no per-ball or per-edge
intermediate at all.
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor

from torch_geometric_erwin import ops


def takes_cpu_path(x: Tensor, parameter: Tensor) -> bool:
    """Whether a layer with input ``x`` and a ``parameter`` runs its written-out CPU path: float32
    or float64 on CPU, parameters of the same dtype, outside autocast (which wants the composite
    form, to cast each of its operations)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and parameter.dtype == x.dtype
            and not torch.is_autocast_enabled("cpu"))


def takes_kernel_path(x: Tensor, parameter: Tensor, kernel: str) -> bool:
    """Whether a layer with input ``x`` and a ``parameter`` runs the op ``kernel`` of
    :mod:`torch_geometric_erwin.ops`: the extension has it for ``x``'s dtype and the layer takes
    its CPU path (:func:`takes_cpu_path`). The ops are custom ops, which ``torch.compile`` keeps
    in its graph."""
    return ops.available(kernel, x.dtype) and takes_cpu_path(x, parameter)


def blocks(total: int, size: int) -> List[slice]:
    """``range(total)`` cut into slices of ``size`` (the last one shorter)."""
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]
