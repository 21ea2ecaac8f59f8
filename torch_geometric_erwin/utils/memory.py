r"""How much memory an :class:`~torch_geometric_erwin.nn.Erwin` call will take, before it runs.

:func:`estimate_erwin_memory` predicts the peak memory that one forward pass (``training=False``:
eval mode, ``torch.no_grad``) or one training step (forward, loss, backward) of a model adds on
top of its parameters and inputs, end to end: the ball tree, the embedding's graph and the
transformer. It counts the tensors the implementation keeps alive at its peak, level by level,
from the model's configuration, and multiplies the count by :data:`SAFETY`, so that it is meant
as an upper bound: the peaks measured on ``md-small`` (``benchmarks/scale.py``, the docs' "Large
systems"; inference from 2^12 to 2^23 points, a training step to 2^18, a checkpointed one to 2^20)
lie between 0.48 and 0.79 of it.

With :math:`S_l` slots at level :math:`l` (the tree's padded leaves pooled by the strides before
it), widths :math:`C_l`, ball sizes :math:`m_l`, :math:`b_l` blocks (encoder and decoder),
:math:`R = 2` tree orders per level when the model attends in rotated balls (else 1),
:math:`E` edges, :math:`D` dimensions and element size :math:`e` (4 bytes in float32):

.. math::
    M_{graph} &= E\,(16 + e D) \cdot (2 \text{ in training, else } 1) \\
    G_l &= e\, S_l\, (\delta_l m_l + D) \qquad \text{(one order's relative positions, and ball distances)} \\
    M_{infer} &= \max_l \Big(\sum_{j<l} e S_j C_j + e\, a_{inf} S_l C_l + G_l\Big) \\
    M_{train} &= \sum_l \big(b_l\, e\, a_{train} S_l C_l + R\, G_l\big) + \max_l e\, a_{grad} S_l C_l
        + M_{pool} + \sum_{l<L-1} e S_l C_l \\
    M_{ckpt} &= \sum_l b_l\, e S_l C_l + \max_l \big(e\,(a_{train} + a_{grad}) S_l C_l + G_l\big)
        + M_{pool} + \sum_{l<L-1} e S_l C_l

plus the tree's orders and the embedding's activations, with :math:`\delta_l = 0` where the C++
ball-attention kernel takes the level (it forms each ball's distances in a thread buffer) and 1
where a PyTorch path writes the ``[balls, m, m]`` distances out, :math:`a_{inf}` =
:data:`INFERENCE_FLOATS`, :math:`a_{train}` = :data:`TRAINING_FLOATS`, :math:`a_{grad}` =
:data:`GRADIENT_FLOATS`; the total is multiplied by :data:`SAFETY`. It models the CPU float32
path with the C++ kernels; the PyTorch fallbacks keep more (the written-out training attention
keeps every block's attention probabilities, :math:`4 H_l m_l` bytes per slot and block), and
a CUDA caching allocator adds its own slack.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch

#: Floats per channel and slot a block keeps for its backward pass, fitted to the measured training
#: peaks of ``md-small`` (a constant 0.67 of the estimate from 2^12 to 2^18 points): fewer than the
#: 19 that a count of the tensors autograd could keep gives (input, the two RMSNorm outputs, the
#: attention input, ``qkv`` (3), the attention output and projection, the residual sum, SwiGLU's
#: ``[S, 2 * 4C]`` pre-activations (8) and output, the rotated blocks' permuted copies), because the
#: fused kernels save their inputs instead of some of these outputs.
TRAINING_FLOATS = 16
#: Floats per channel and slot of one level's working set without autograd: a block's tensors (the
#: norms' outputs, the attention input, ``qkv``, the attention output, its projection, the residual
#: sums and the rotated blocks' permuted copies).
INFERENCE_FLOATS = 12
#: Floats per channel and slot of one block's gradients in the backward pass (its input's, the
#: ``qkv`` gradient and SwiGLU's pre-activation gradient), alive while the block's backward runs.
GRADIENT_FLOATS = 14
#: Floats per channel kept per node and message-passing step of the embedding in training.
EMBEDDING_FLOATS = 6
#: Floats per output channel that a pooling or unpooling layer keeps per coarse (pooling) or
#: fine (unpooling) slot in training.
POOLING_FLOATS = 4
#: The count of live tensors is multiplied by this, for the allocator's slack, PyTorch's temporaries
#: and the small tensors the count leaves out: chosen so that the estimate stays above every peak
#: measured on ``md-small`` (see the docs' "Large systems").
SAFETY = 1.5


def _slots_per_graph(num_nodes: Sequence[int], padding: str, grain: int) -> int:
    from torch_geometric_erwin.tree import engine
    ptr = torch.tensor([0, *num_nodes], dtype=torch.int64).cumsum(0)
    return int(engine.slot_ptr(ptr, padding, grain)[-1])


def _kernel_attends(model, level: int) -> bool:
    """Whether the C++ ball-attention kernel takes the level (float32), which forms each ball's distances
    in a thread buffer instead of a ``[balls, m, m]`` tensor."""
    from torch_geometric_erwin.ops._extension import table
    kernel = table("ball_attention")
    head_width = model.hidden_channels[level] // model.enc_num_heads[level]
    return (bool(kernel) and model.embedding.lin.weight.dtype == torch.float32
            and model.ball_sizes[level] % kernel["ball_size_multiple"] == 0 and head_width in kernel["head_widths"])


def _edges_per_node(model) -> int:
    """The in-degree of the graph the model builds: ``k`` of a kNN transform, ``max_num_neighbors`` of a
    radius transform, and the model's ``knn`` for any other callable."""
    transform = model.graph_transform
    return getattr(transform, "k", None) or getattr(transform, "max_num_neighbors", None) or model.knn


def estimate_erwin_memory(model, num_nodes: Union[int, Sequence[int]], training: bool = False,
                          activation_checkpointing: Optional[bool] = None) -> int:
    r"""Predicted peak bytes of one call of ``model`` on graphs of ``num_nodes`` points, on top of
    its parameters, optimiser state and inputs (see the module's docstring for the count).

    Args:
        model (Erwin): the model (its configuration and parameter dtype are read).
        num_nodes (int or list of int): points of the one graph, or of every graph of a batch.
        training (bool): one training step (forward and backward) instead of inference
            (eval mode, ``torch.no_grad``). (default: :obj:`False`)
        activation_checkpointing (bool, optional): for ``training``; default: the model's own
            :attr:`~torch_geometric_erwin.nn.Erwin.activation_checkpointing`.

    Returns:
        int: bytes.
    """
    from torch_geometric_erwin.tree import granularity
    sizes = [num_nodes] if isinstance(num_nodes, int) and not isinstance(num_nodes, bool) else num_nodes
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"num_nodes must be a positive int or a list of them, got {num_nodes!r}")
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {training!r}")
    checkpointed = model.activation_checkpointing if activation_checkpointing is None else activation_checkpointing
    if not isinstance(checkpointed, bool):
        raise TypeError(f"activation_checkpointing must be a bool or None, got {activation_checkpointing!r}")
    checkpointed = checkpointed and training

    element = model.embedding.lin.weight.element_size()
    dim, levels = model.dimensionality, len(model.ball_sizes)
    nodes = sum(sizes)
    slots = [_slots_per_graph(sizes, model.padding, granularity(model.ball_sizes, model.strides))]
    for stride in model.strides:
        slots.append(slots[-1] // stride)
    orders = 2 if model.uses_rotation else 1
    widths = model.hidden_channels

    # the graph and the embedding's edge lists: edge_index (two int64), the offsets p_j - p_i, and
    # in training the edges grouped by source for the backward pass (a second copy of all three)
    edges = nodes * _edges_per_node(model) if model.mp_steps > 0 else 0
    edge_bytes = 16 + element * dim
    graph = edges * edge_bytes * (2 if training else 1)
    # the tree: leaf order and mask, one rotated order per level, the nodes' slots, positions in tree order
    tree = slots[0] * (8 + 1 + element * dim) + orders * sum(slots) * 8 + nodes * 8
    embedding = nodes * widths[0] * element * (EMBEDDING_FLOATS * model.mp_steps if training else 3)

    def geometry(level: int, copies: int) -> int:  # relative positions, and distances off the kernel's path
        distances = 0 if _kernel_attends(model, level) else model.ball_sizes[level]
        return copies * slots[level] * (distances + dim) * element

    def activations(level: int, floats: int) -> int:
        return slots[level] * widths[level] * floats * element

    skips = [activations(level, 1) for level in range(levels - 1)]
    if not training:
        # the decoder at level l holds the skips of the finer levels and its own working set
        transformer = max(sum(skips[:level]) + activations(level, INFERENCE_FLOATS) + geometry(level, 1)
                          for level in range(levels))
    else:
        blocks = [model.enc_depths[level] + (model.dec_depths[level] if model.decode and level < levels - 1 else 0)
                  for level in range(levels)]
        pooling = sum(POOLING_FLOATS * element * (slots[level + 1] * widths[level + 1] + slots[level] * widths[level])
                      for level in range(levels - 1))
        if checkpointed:
            kept = sum(blocks[level] * activations(level, 1) for level in range(levels))
            rerun = max((activations(level, TRAINING_FLOATS + GRADIENT_FLOATS) + geometry(level, 1)
                        for level in range(levels) if blocks[level]), default=0)
        else:
            kept = sum(blocks[level] * activations(level, TRAINING_FLOATS) + geometry(level, orders)
                       for level in range(levels))
            rerun = max(activations(level, GRADIENT_FLOATS) for level in range(levels))
        transformer = kept + rerun + pooling + sum(skips)
    return int(SAFETY * (graph + tree + embedding + transformer))


def available_memory() -> int:
    """Bytes of memory this process can still take: ``MemAvailable`` of ``/proc/meminfo`` (Linux),
    else ``psutil.virtual_memory().available``; raises :class:`RuntimeError` where neither exists."""
    available = _proc_bytes("/proc/meminfo", "MemAvailable")
    if available is not None:
        return available
    try:
        import psutil
    except ImportError:
        raise RuntimeError("cannot tell the available memory here (no /proc/meminfo, psutil not installed): "
                           "pip install psutil, or give the memory budget explicitly") from None
    return int(psutil.virtual_memory().available)


def format_bytes(num_bytes: float) -> str:
    """``num_bytes`` as ``"1.5 GB"`` (powers of 1024)."""
    if num_bytes < 1024:
        return f"{int(num_bytes)} B"
    for unit in ("KB", "MB", "GB"):
        num_bytes /= 1024
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.1f} {unit}"


def peak_rss() -> Optional[int]:
    """Peak resident set of this process in bytes (``VmHWM`` of ``/proc/self/status``), or
    ``None`` where there is no ``/proc``."""
    return _proc_bytes("/proc/self/status", "VmHWM")


def _proc_bytes(path: str, key: str) -> Optional[int]:
    """The ``key: <n> kB`` field of a ``/proc`` file in bytes, or ``None`` where it is missing."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset :func:`peak_rss` to the current resident set (Linux ``/proc/self/clear_refs``); whether it worked."""
    if not os.path.exists("/proc/self/clear_refs"):
        return False
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


__all__ = ["estimate_erwin_memory", "available_memory", "format_bytes", "peak_rss", "reset_peak_rss"]
