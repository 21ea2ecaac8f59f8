"""What every task wrapper shares: input encoding, the backbone call and the output head."""
from __future__ import annotations

import copy
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.data import Data


class OneHot(nn.Module):
    """One-hot encoding of an integer field with ``num_classes`` classes (``[N]`` or ``[N, 1]`` -> ``[N, K]``)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def reset_parameters(self) -> None:
        """No trainable parameters."""

    def forward(self, value: Tensor) -> Tensor:
        return nn.functional.one_hot(value.reshape(-1).long(), self.num_classes).float()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.num_classes})"


class InputEncoder(nn.Module):
    r"""Node input features from named fields of a batch.

    Each field in ``fields`` is read from the batch (``[N]`` becomes ``[N, 1]``), passed
    through its entry of ``encodings`` if it has one, and the results are concatenated;
    then an optional linear projection to ``out_channels`` and an optional LayerNorm:

    .. math:: \mathbf{x}_i = \operatorname{LN}\big(W [\gamma_1(f_1)_i, \dots, \gamma_k(f_k)_i] + b\big)

    Args:
        fields: batch attributes to read, in order.
        in_channels: width of the concatenation.
        out_channels: width after the projection; ``None`` for no projection.
        encodings: per-field modules (e.g. :class:`~torch_geometric_erwin.training.encodings.SinusoidalEncoding`).
        norm: apply LayerNorm at the end.

    Shapes: output :math:`[N, \text{out\_channels}]` (or :math:`[N, \text{in\_channels}]`).
    """

    def __init__(self, fields: Sequence[str], in_channels: int, out_channels: Optional[int] = None,
                 encodings: Optional[Mapping[str, nn.Module]] = None, norm: bool = False):
        super().__init__()
        if not fields:
            raise ValueError("fields must name at least one batch attribute")
        encodings = dict(encodings or {})
        unknown = set(encodings) - set(fields)
        if unknown:
            raise ValueError(f"encodings name fields that are not in fields: {sorted(unknown)}")
        self.fields, self.in_channels = list(fields), in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.encodings = nn.ModuleDict(encodings)
        self.lin = None if out_channels is None else nn.Linear(in_channels, out_channels)
        self.norm = nn.LayerNorm(self.out_channels) if norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (*self.encodings.values(), self.lin, self.norm):
            if module is not None:
                module.reset_parameters()

    def forward(self, batch: Data) -> Tensor:
        parts = []
        for field in self.fields:
            value = batch[field]
            if field in self.encodings:
                value = self.encodings[field](value)
            parts.append(value.reshape(value.size(0), -1).to(torch.get_default_dtype()))
        x = torch.cat(parts, dim=-1)
        if x.size(-1) != self.in_channels:
            raise ValueError(f"the fields {self.fields} give {x.size(-1)} features, "
                             f"expected in_channels={self.in_channels}")
        if self.lin is not None:
            x = self.lin(x)
        return x if self.norm is None else self.norm(x)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.fields}, {self.in_channels}, {self.out_channels})"


def mlp_head(in_channels: int, out_channels: int) -> nn.Sequential:
    """The reference output head: ``Linear(C, C)``, GELU, ``Linear(C, out)``."""
    return nn.Sequential(nn.Linear(in_channels, in_channels), nn.GELU(),
                         nn.Linear(in_channels, out_channels))


def with_features(batch: Data, x: Tensor) -> Data:
    """A shallow copy of ``batch`` whose ``x`` is ``x`` (the batch itself is left unchanged)."""
    data = copy.copy(batch)
    data.x = x
    return data


class Task(nn.Module):
    r"""A backbone between an input encoder and an output head, with the task's loss and metrics.

    The backbone is any module called as ``backbone(data)`` on a ``Data``/``Batch`` whose
    ``x`` holds the encoded features, returning :math:`[N, C]` with
    :math:`C` = ``backbone.out_channels`` (:class:`~torch_geometric_erwin.nn.Erwin`,
    :class:`~torch_geometric_erwin.nn.MPNN`, or any PyG model wrapped that way). The head is
    the reference's ``Linear, GELU, Linear`` (``head="mlp"``) or one ``Linear``.

    Subclasses define :meth:`forward`, :meth:`loss` (a mean and the number of terms it
    averages, so that data-parallel training can weight processes exactly) and
    :meth:`metrics` (one value per graph, ``[B]`` or ``[B, H]``, including ``"loss"``).
    ``show_progress`` (set by the trainer while it evaluates) lets a long forward pass, such as a
    rollout, show a progress bar of its own.
    """

    show_progress: bool = False

    def __init__(self, backbone: nn.Module, encoder: nn.Module, out_channels: int, head: str = "mlp"):
        super().__init__()
        hidden = getattr(backbone, "out_channels", None)
        if not isinstance(hidden, int):
            raise TypeError(f"backbone must expose an int out_channels, got {type(backbone).__name__}")
        if head not in ("mlp", "linear"):
            raise ValueError(f"head must be 'mlp' or 'linear', got {head!r}")
        self.backbone, self.encoder = backbone, encoder
        self.head = mlp_head(hidden, out_channels) if head == "mlp" else nn.Linear(hidden, out_channels)

    def reset_parameters(self) -> None:
        for module in (self.backbone, self.encoder, *self.head.modules()):
            if module is not self.head and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def features(self, batch: Data, x: Optional[Tensor] = None) -> Tensor:
        """``[N, C]`` backbone features of ``batch`` (input features ``x`` or the encoder's)."""
        return self.backbone(with_features(batch, self.encoder(batch) if x is None else x))

    def loss(self, batch: Data, out) -> Tuple[Tensor, int]:
        raise NotImplementedError

    def metrics(self, batch: Data, out) -> Dict[str, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batch: Data) -> Dict[str, Tensor]:
        """Per-graph metrics of one evaluation batch."""
        return self.metrics(batch, self(batch))
