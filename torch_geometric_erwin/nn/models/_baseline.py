"""What the baselines of the paper's comparisons (Transolver, PointNet++, the serialized transformer)
share: argument checks, the ``forward(data)`` unpacking, the input checks and small MLPs."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.data.data import BaseData

from torch_geometric_erwin.nn.init import reset_linear
from torch_geometric_erwin.checks import as_int, check_model_inputs


def positive_int(name: str, value) -> int:
    if as_int(value) is None or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def positive_ints(name: str, values, length: Optional[int] = None) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of ints, got {values!r}")
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(values)}")
    return [positive_int(f"{name}[{i}]", value) for i, value in enumerate(values)]


def optional_out_channels(value) -> Optional[int]:
    if value is not None and (as_int(value) is None or value < 1):
        raise ValueError(f"out_channels must be a positive int or None, got {value!r}")
    return None if value is None else int(value)


def unpack(x, pos, batch, edge_index) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """``(x, pos, batch, edge_index)`` of a ``Data``/``Batch`` given as ``x``, else the arguments."""
    if isinstance(x, BaseData):
        return x.x, x.pos, getattr(x, "batch", None), getattr(x, "edge_index", None)
    return x, pos, batch, edge_index


@torch.compiler.disable
def check_inputs(x, pos, batch: Optional[Tensor], edge_index: Optional[Tensor], in_channels: int,
                 dimensionality: int, dtype: torch.dtype) -> Tuple[Tensor, int]:
    """:func:`~torch_geometric_erwin.checks.check_model_inputs` (the checks of Erwin's
    forward); returns the ``[N]`` graph id of every node on ``x``'s device and the number of graphs.
    The baselines build their own neighbourhoods: an ``edge_index`` is accepted (so that they run
    wherever Erwin and the MPNN are given a graph) and checked, but not used."""
    if pos is None:
        raise ValueError("pos is required: give forward(x, pos, batch) or a Data with pos")
    node_ptr = check_model_inputs(x, pos, batch, edge_index, in_channels, dimensionality, dtype)
    num_graphs = node_ptr.numel() - 1
    if batch is None:
        batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    return batch.to(device=x.device, dtype=torch.long), num_graphs


def mlp(widths: Sequence[int], activation: Callable[[], nn.Module] = nn.GELU,
        final_norm: bool = False) -> nn.Sequential:
    """Linear layers of ``widths`` with ``activation`` between them (and a final LayerNorm if asked)."""
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(widths) - 2:
            layers.append(activation())
    if final_norm:
        layers.append(nn.LayerNorm(widths[-1]))
    return nn.Sequential(*layers)


def reset_module(module: nn.Module) -> None:
    """The package's initialisation of every linear layer and the default one of every LayerNorm in
    ``module``."""
    for child in module.modules():
        if isinstance(child, nn.Linear):
            reset_linear(child)
        elif isinstance(child, nn.LayerNorm):
            child.reset_parameters()


def preset(presets: Dict[str, dict], name: str, **overrides) -> dict:
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(presets))}")
    return {**presets[name], **overrides}
