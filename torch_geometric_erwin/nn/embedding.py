r"""Erwin's input embedding: a linear projection followed by a small MPNN (eq. 14)."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from torch_geometric_erwin import ops
from torch_geometric_erwin.ops._extension import table as capability_table
from torch_geometric_erwin.nn.cpu_path import blocks, takes_kernel_path
from torch_geometric_erwin.nn.init import reset_linear
from torch_geometric_erwin.checks import check_edge_index, check_int, check_tensor


#: Edges per block of the embedding's message computation in PyTorch.
EDGE_BLOCK = 32768


def _edge_messages(per_source: Tensor, per_target: Tensor, offset_weight: Tensor, act: nn.Module, norm: nn.Module,
                   source: Tensor, target: Tensor, offset: Tensor) -> Tensor:
    r"""The messages :math:`\mathrm{LN}(\mathrm{GELU}((W_s h)_j + (W_t h + b)_i + W_p (p_j - p_i)))`
    of the edges ``source -> target`` with position offsets ``offset``."""
    # index_select, whose backward (index_add) is much faster on CPU than that of indexing
    node_terms = per_source.index_select(0, source) + per_target.index_select(0, target)
    return norm(act(torch.addmm(node_terms, offset, offset_weight.t())))


def _summed_messages(messages: nn.Sequential, per_source: Tensor, per_target: Tensor, source: Tensor,
                     target: Tensor, offset: Tensor) -> Tensor:
    """The messages of ``messages`` (linear map, GELU, LayerNorm) summed per target, in PyTorch."""
    lin, act, norm = messages
    # Per edge block, the messages are summed into their targets at once and, with autograd,
    # recomputed in the backward pass: [E, C] tensors for all edges at once (67 MB each for a
    # batch of 16 x 2048 points and 16 neighbours, several per step) would be fresh memory,
    # page-faulted in on every call, where a block's stay in the caches.
    edge_blocks = [slice(None)] if torch.compiler.is_compiling() else blocks(source.numel(), EDGE_BLOCK)
    recompute = torch.is_grad_enabled() and len(edge_blocks) > 1
    summed = torch.zeros_like(per_target)
    for block in edge_blocks:
        args = (per_source, per_target, lin.weight[:, 2 * per_source.shape[1]:], act, norm, source[block],
                target[block], offset[block])
        block_messages = (activation_checkpoint(_edge_messages, *args, use_reentrant=False) if recompute
                          else _edge_messages(*args))
        summed.index_add_(0, target[block], block_messages)
    return summed


class _EdgeList(NamedTuple):
    """The edges grouped by one end: ``source``, ``target`` ``[E]`` and ``offset`` ``[E, D]`` in
    that order, and ``ptr`` ``[N + 1]``, the first edge of every node."""
    source: Tensor
    target: Tensor
    offset: Tensor
    ptr: Tensor

    @classmethod
    @torch.no_grad()
    def grouped(cls, by: int, source: Tensor, target: Tensor, offset: Tensor, num_nodes: int) -> "_EdgeList":
        """The edges grouped by their source (``by=0``) or target (``by=1``), in their given order within
        a group; graphs from the kNN and radius builders come grouped by target already."""
        key = (source, target)[by]
        # a traced graph sorts always: the check reads a value on the host
        if torch.compiler.is_compiling() or not bool((key[1:] >= key[:-1]).all()):
            order = torch.argsort(key, stable=True)
            source, target, offset, key = source[order], target[order], offset[order], key[order]
        ptr = torch.searchsorted(key, torch.arange(num_nodes + 1, device=key.device))
        return cls(source.contiguous(), target.contiguous(), offset.contiguous(), ptr)


class ErwinEmbedding(nn.Module):
    r"""Linear projection and ``mp_steps`` residual message-passing steps (Erwin eq. 14):

    .. math::
        h_i &\leftarrow W_{in} x_i \\
        m_{ij} &= \mathrm{LN}\big(\mathrm{GELU}(W_m [h_j, h_i, p_j - p_i])\big) \\
        h_i &\leftarrow h_i + \mathrm{LN}\Big(W_u \big[h_i, \tfrac{1}{|\mathcal{N}(i)|}
            \textstyle\sum_{j \in \mathcal{N}(i)} m_{ij}\big]\Big)

    for every edge :math:`j \to i` of ``edge_index`` (row 0 the source :math:`j`,
    row 1 the target :math:`i`); nodes without incoming edges get
    :math:`m_i = 0`. It runs on the graph's nodes before any tree padding.

    Args:
        in_channels (int): input features :math:`F`.
        channels (int): width :math:`C`.
        mp_steps (int): message-passing steps (``0``: the projection only).
        dimensionality (int): :math:`D` of the positions. (default: ``3``)

    Shapes: ``forward(x [N, F], pos [N, D], edge_index [2, E]?, check_edges=True) -> [N, C]``
    (``edge_index`` is required when ``mp_steps > 0``). ``check_edges=False`` skips the pass over
    ``edge_index``'s indices, for a caller that has checked them (the models do, once per forward).

    Kernels: on CPU in float32 (outside autocast) with a :math:`C` and :math:`D` the kernels are
    compiled for (``ops.capabilities()["edge_messages"]``), the messages run the op
    :func:`torch_geometric_erwin.ops.edge_messages`: each target sums its messages in the caches
    and the backward pass forms them again, so no ``[E, C]`` tensor exists. Elsewhere they run in
    PyTorch, on CPU in blocks of :data:`EDGE_BLOCK` edges recomputed in the backward pass.
    """

    def __init__(self, in_channels: int, channels: int, mp_steps: int = 3, dimensionality: int = 3):
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("channels", channels, 1),
                                 ("mp_steps", mp_steps, 0), ("dimensionality", dimensionality, 1)):
            check_int(name, value, low)
        self.in_channels, self.channels = in_channels, channels
        self.mp_steps, self.dimensionality = mp_steps, dimensionality
        self.lin = nn.Linear(in_channels, channels)
        self.messages = nn.ModuleList([
            nn.Sequential(nn.Linear(2 * channels + dimensionality, channels), nn.GELU(), nn.LayerNorm(channels))
            for _ in range(mp_steps)])
        self.updates = nn.ModuleList([
            nn.Sequential(nn.Linear(2 * channels, channels), nn.LayerNorm(channels)) for _ in range(mp_steps)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                reset_linear(module)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()

    def forward(self, x: Tensor, pos: Tensor, edge_index: Optional[Tensor] = None,
                check_edges: bool = True, checkpoint: bool = False) -> Tensor:
        """With ``checkpoint`` (and autograd), every message-passing step runs under
        :func:`torch.utils.checkpoint.checkpoint`: the backward pass keeps each step's input
        ``[N, C]`` only (not its per-node terms, update input and norms, about seven ``[N, C]``
        tensors per step) and runs the step again."""
        check_tensor("x", x, ("num_nodes", self.in_channels), floating=True)
        if self.mp_steps > 0:  # the projection alone reads neither the positions nor the graph
            check_tensor("pos", pos, (x.shape[0], self.dimensionality), floating=True)
            if edge_index is None:
                raise ValueError("edge_index is required when mp_steps > 0")
            if check_edges:
                check_edge_index(edge_index, x.shape[0])
            else:
                check_tensor("edge_index", edge_index, (2, "num_edges"), dtype=torch.long)
        h = self.lin(x)
        if self.mp_steps == 0:
            return h
        source, target = edge_index
        with torch.no_grad():
            offset = (pos[source] - pos[target]).to(h.dtype)
            # a scatter into N rows rather than bincount, whose output size depends on the data
            in_degree = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device).index_add_(
                0, target, torch.ones_like(target, dtype=h.dtype)).clamp_(min=1).unsqueeze(1)
        if self._takes_kernel_path(h):
            by_target = _EdgeList.grouped(1, source, target, offset, h.shape[0])
            by_source = (_EdgeList.grouped(0, *by_target[:3], h.shape[0]) if torch.is_grad_enabled()
                         else _EdgeList(None, None, None, None))
            edges = (*by_target, *by_source)
        else:
            edges = None
        checkpoint = checkpoint and torch.is_grad_enabled()
        for messages, update in zip(self.messages, self.updates):
            if checkpoint:
                h = activation_checkpoint(self._step, messages, update, h, in_degree, edges, source, target, offset,
                                          use_reentrant=False)
            else:
                h = self._step(messages, update, h, in_degree, edges, source, target, offset)
        return h

    def _step(self, messages: nn.Sequential, update: nn.Sequential, h: Tensor, in_degree: Tensor,
              edges: Optional[tuple], source: Tensor, target: Tensor, offset: Tensor) -> Tensor:
        """One residual message-passing step; ``edges``: the kernel's grouped edge lists, or None
        off its path."""
        # W_m [h_j, h_i, p_j - p_i] = (W_s h)_j + (W_t h + b)_i + W_p (p_j - p_i): the two node
        # terms are computed per node and gathered, not multiplied per edge
        c = self.channels
        lin, _, norm = messages
        per_source = h @ lin.weight[:, :c].t()
        per_target = torch.addmm(lin.bias, h, lin.weight[:, c:2 * c].t())
        if edges is not None:
            summed = ops.edge_messages(per_source, per_target, lin.weight[:, 2 * c:].t(), norm.weight, norm.bias,
                                       norm.eps, *edges)
        else:
            summed = _summed_messages(messages, per_source, per_target, source, target, offset)
        return h + update(torch.cat([h, summed / in_degree], dim=-1))

    def _takes_kernel_path(self, h: Tensor) -> bool:
        table = capability_table("edge_messages")
        return (takes_kernel_path(h, self.lin.weight, "edge_messages") and self.channels in table["channels"]
                and self.dimensionality <= table["max_dimensions"])

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.channels}, mp_steps={self.mp_steps}, "
                f"dimensionality={self.dimensionality})")
