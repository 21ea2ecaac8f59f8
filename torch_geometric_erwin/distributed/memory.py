r"""The memory a forward pass keeps for the backward pass: the part of a training step's memory that
grows with the cloud, and the part that sharding a cloud over ranks divides."""
from __future__ import annotations

from typing import Dict, Iterable

import torch
from torch import Tensor


class ActivationMemory:
    r"""Counts the bytes autograd saves for the backward pass while the context is active.

    Every tensor an operation saves for its backward pass goes through the pack hook of
    :func:`torch.autograd.graph.saved_tensors_hooks`; the counter records the storage behind it,
    once per storage (views and tensors saved by several operations count once), so that

    .. math::
        \text{bytes} = \sum_{s \,\in\, \text{saved storages} \,\setminus\, \text{excluded}} \text{nbytes}(s)

    is the memory the autograd graph holds when the forward pass ends. The storages of ``exclude``
    (the parameters, which a step holds whatever the cloud) do not count. Blocks under
    non-reentrant activation checkpointing save through their own hooks, so only their inputs
    count, as only those are kept. Temporaries that die within the forward pass, and the gradients
    of the backward pass, are not counted: the peak of a step lies above this by about one layer's
    temporaries.

    Args:
        exclude (iterable of Tensor): tensors whose storages are not counted (e.g. ``model.parameters()``).

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(8, 8)
        >>> with ActivationMemory(exclude=layer.parameters()) as memory:
        ...     y = layer(torch.randn(4, 8, requires_grad=True)).relu()
        >>> memory.bytes  # the input [4, 8] and the ReLU's output [4, 8] in float32
        256
    """

    def __init__(self, exclude: Iterable[Tensor] = ()):
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._storages: Dict[int, int] = {}
        self._hooks = None

    def _pack(self, tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self._excluded:
            # a saved storage stays alive until the backward pass, so its address names it
            self._storages[pointer] = storage.nbytes()
        return tensor

    def __enter__(self) -> "ActivationMemory":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None

    @property
    def bytes(self) -> int:
        """Bytes of the distinct storages saved so far."""
        return sum(self._storages.values())

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(bytes={self.bytes}, storages={len(self._storages)})"
