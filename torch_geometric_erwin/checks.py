"""Every argument and tensor check of the package, in one vocabulary.

Each check raises before any work is done, names the offending argument and says what it must
be: ``ValueError`` for a value out of range, ``TypeError`` for a value of the wrong kind, in the
form ``"<name> must be <what>, got <value>"``. The checks of a model's inputs run once per
forward (:func:`check_model_inputs`); the layers' own checks read shapes and dtypes only.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import os
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from torch_geometric_erwin.tree import engine


def as_int(value) -> Optional[int]:
    """``value`` as an ``int`` if it is an integer (NumPy's included) other than a bool, else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` must be an int (NumPy's included, a bool not) of at least ``minimum``; returns it as an int."""
    number = as_int(value)
    if number is None or number < minimum:
        what = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return number


def check_real(name: str, value, positive: bool = False) -> float:
    """``value`` must be a finite real number (a bool not), greater than 0 if ``positive``; returns it as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or (positive and not value > 0):
        raise ValueError(f"{name} must be a {'positive ' if positive else ''}finite number, got {value!r}")
    return float(value)


def check_angle(name: str, value) -> float:
    """``value`` must be a finite angle in degrees; returns it as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite angle in degrees, got {value!r}")
    return float(value)


def is_power_of_two(value: int) -> bool:
    return isinstance(value, int) and value >= 1 and value & (value - 1) == 0


def check_tensor(name: str, value, shape: Sequence[Union[int, str]], dtype: Optional[torch.dtype] = None,
                 floating: bool = False) -> None:
    """``value`` must be a tensor of ``shape``, whose str entries are sizes left free and named in the
    message (``("num_nodes", 3)``: any number of rows of 3 entries); of ``dtype`` if given, and of a
    floating-point dtype if ``floating``. Reads shapes and dtypes only, so it is cheap enough for
    every layer call and traces under ``torch.compile``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != len(shape) or any(isinstance(size, int) and value.shape[dim] != size
                                        for dim, size in enumerate(shape)):
        raise ValueError(f"{name} must have shape [{', '.join(map(str, shape))}], got {list(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {value.dtype}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {value.dtype}")


@torch.compiler.disable  # reads the indices: data-dependent, so kept out of compiled graphs
def check_edge_index(edge_index, num_nodes: int, batch: Optional[Tensor] = None) -> None:
    """``edge_index`` must be an int64 ``[2, E]`` tensor of node indices in ``[0, num_nodes)``. Given
    a (checked) ``batch``, every edge must join two nodes of one graph: the models treat the graphs
    of a batch apart, as if each came alone, and an edge between two would break that. O(E)."""
    check_tensor("edge_index", edge_index, (2, "num_edges"), dtype=torch.long)
    if not edge_index.numel():
        return
    low, high = (int(bound) for bound in torch.aminmax(edge_index))
    if low < 0 or high >= num_nodes:
        raise ValueError(f"edge_index must hold node indices in [0, {num_nodes}), got indices from {low} to {high}")
    if batch is not None:
        graph = batch.to(edge_index.device)[edge_index]
        if bool((graph[0] != graph[1]).any()):
            raise ValueError("edge_index joins nodes of different graphs of the batch: the graphs of a batch "
                             "are processed apart, so build each graph's edges alone (e.g. with a PyG "
                             "transform per graph, or knn_graph/radius_graph given the batch)")


_CHECKED: contextvars.ContextVar[Tuple[Tensor, ...]] = contextvars.ContextVar("checked_positions", default=())


@contextlib.contextmanager
def checked_positions(*positions: Tensor) -> Iterator[None]:
    """Inside the block, :func:`check_pos` does not read ``positions`` again (the very tensors, by
    identity): a model checks its input once and builds its tree and graph from it."""
    token = _CHECKED.set(_CHECKED.get() + positions)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def check_pos(pos) -> None:
    """``pos`` must be a finite, floating ``[N, D]`` tensor with ``N, D >= 1`` (the pass over its
    values is skipped inside :func:`checked_positions` of it)."""
    # dtype and shape are read once: on the tree-build path every call into torch's Python
    # bindings costs tens of microseconds when their code is out of the caches
    if not isinstance(pos, Tensor):
        raise TypeError(f"pos must be a torch.Tensor, got {type(pos).__name__}")
    dtype, shape = pos.dtype, pos.shape
    if not dtype.is_floating_point:
        raise TypeError(f"pos must be a floating-point tensor, got dtype {dtype}")
    if len(shape) != 2:
        raise ValueError(f"pos must have shape [num_nodes, dim], got shape {tuple(shape)}")
    if shape[0] == 0:
        raise ValueError("pos is empty: a ball tree needs at least one node")
    if shape[1] == 0:
        raise ValueError("pos has zero spatial dimensions: expected shape [num_nodes, dim >= 1]")
    if not any(pos is checked for checked in _CHECKED.get()) and not engine.all_finite(pos):
        raise ValueError("pos contains NaN or Inf values")


def check_pos_magnitude(pos: Tensor, dtype: torch.dtype) -> None:
    """A model computing in ``dtype`` squares coordinate differences (graph distances, norms of
    features that grow with the positions): coordinates beyond a thousandth of the square root of
    ``dtype``'s largest value (about 2e16 in float32) would overflow them to inf and NaN."""
    limit = torch.finfo(dtype).max ** 0.5 / 1e3
    largest = float(pos.detach().abs().max())
    if largest > limit:
        raise ValueError(f"pos has coordinates up to {largest:.3g}, beyond what a {dtype} model can square "
                         f"({limit:.3g}): rescale the positions (e.g. to units of the box or of a typical "
                         "neighbour distance)")


#: Environment variable: ``0`` skips the models' pass over ``x`` for NaN and Inf (positions are
#: always checked: the tree build needs them finite).
CHECK_FINITE_VAR = "TORCH_GEOMETRIC_ERWIN_CHECK_FINITE"


def check_finite_x() -> bool:
    """Whether the models check ``x`` for NaN and Inf (unless ``TORCH_GEOMETRIC_ERWIN_CHECK_FINITE=0``)."""
    value = os.environ.get(CHECK_FINITE_VAR, "1").strip().lower()
    if value not in ("0", "1", "false", "true", "no", "yes", ""):
        raise ValueError(f"{CHECK_FINITE_VAR} must be 0 or 1, got {value!r}")
    return value not in ("0", "false", "no")


def check_model_inputs(x, pos, batch: Optional[Tensor], edge_index: Optional[Tensor], in_channels: int,
                       dimensionality: int, dtype: torch.dtype) -> Tensor:
    """The checks of a model's ``forward(x, pos, batch, edge_index)`` whose parameters are of ``dtype``:
    ``x [N, in_channels]`` of that dtype (any floating dtype under autocast) and finite (one pass,
    skipped with ``TORCH_GEOMETRIC_ERWIN_CHECK_FINITE=0``), ``pos [N, dimensionality]``
    finite and squarable in it (:func:`check_pos_magnitude`), ``batch`` sorted and ``edge_index``
    within the nodes and graphs. Returns the graphs' node offsets (:func:`node_ptr_from`). Reads the
    data: callers keep it out of compiled graphs (``torch.compiler.disable``)."""
    check_tensor("x", x, ("num_nodes", in_channels), floating=True)
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"x is {x.dtype} but the model's parameters are {dtype}: cast x (x.to({dtype})) or "
                        f"the model (model.to({x.dtype}))")
    if check_finite_x() and not engine.all_finite(x.detach()):
        raise ValueError(f"x contains NaN or Inf values: clean the node features (or set {CHECK_FINITE_VAR}=0 "
                         "to skip this check)")
    check_tensor("pos", pos, (x.shape[0], dimensionality))
    check_pos(pos)
    check_pos_magnitude(pos, dtype)
    node_ptr = node_ptr_from(x.shape[0], batch, None)
    if edge_index is not None:
        check_edge_index(edge_index, x.shape[0], batch)
    return node_ptr


def check_int_sizes(name: str, values: Optional[Sequence[int]], allow_empty: bool = False):
    """A list of powers of two (ball sizes or strides); returns it as a tuple."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of ints, got {type(values).__name__}")
    if not values and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    for value in values:
        if as_int(value) is None:
            raise TypeError(f"{name} must contain ints, got {value!r}")
        if not is_power_of_two(int(value)):
            raise ValueError(f"{name} must contain powers of two, got {value}")
    return tuple(int(value) for value in values)


#: Largest granularity a ball configuration may have. Every graph's tree has at least that many
#: slots (8 GiB of int64 tree index at 2**30) and a ball of ``b`` slots computes ``b**2`` attention
#: scores, so nothing beyond it can run; rejecting it when the model or transform is built turns a
#: typo such as ``2**40`` into a clear error instead of a MemoryError on the first graph.
MAX_GRANULARITY = 2**30


def _granularity(ball_sizes: Tuple[int, ...], strides: Tuple[int, ...]) -> int:
    return max(size * math.prod(strides[:level]) for level, size in enumerate(ball_sizes))


def check_ball_config(ball_sizes, strides):
    """Validate ``ball_sizes`` (one per level) and ``strides`` (one fewer)."""
    ball_sizes = check_int_sizes("ball_sizes", ball_sizes)
    strides = check_int_sizes("strides", strides, allow_empty=True)
    if ball_sizes is None:
        if strides:
            raise ValueError("strides were given without ball_sizes")
        return None, None
    if strides is None:
        strides = ()
    if len(strides) != len(ball_sizes) - 1:
        raise ValueError(
            f"strides must have len(ball_sizes) - 1 = {len(ball_sizes) - 1} entries, got {len(strides)}")
    grain = _granularity(ball_sizes, strides)
    if grain > MAX_GRANULARITY:
        raise ValueError(f"ball_sizes={list(ball_sizes)} with strides={list(strides)} need at least {grain} "
                         f"(2**{grain.bit_length() - 1}) tree slots per graph, the largest "
                         f"ball_sizes[l] * prod(strides[:l]); at most {MAX_GRANULARITY} (2**30) are supported")
    return ball_sizes, strides


def granularity(ball_sizes: Optional[Sequence[int]] = None, strides: Optional[Sequence[int]] = None) -> int:
    r"""The slot count every graph's tree must be a multiple of.

    :math:`\max_l \; \text{ball\_size}_l \cdot \prod_{j<l} \text{stride}_j`, so that
    no ball and no pooling group at any level spans two graphs (1 without balls).
    """
    ball_sizes, strides = check_ball_config(ball_sizes, strides)
    return 1 if ball_sizes is None else _granularity(ball_sizes, strides)


def check_permutation(name: str, permutation, size: int) -> None:
    """``permutation`` must be an int64 ``[size]`` tensor holding each of ``0 .. size - 1`` once: rows
    gathered or scattered through anything else would be lost, repeated or left uninitialised."""
    if not isinstance(permutation, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(permutation).__name__}")
    if permutation.dtype != torch.long or permutation.shape != (size,):
        raise ValueError(f"{name} must be an int64 tensor of shape [{size}], got {permutation.dtype} "
                         f"{tuple(permutation.shape)}")
    if size and (int(permutation.min()) < 0 or int(permutation.max()) >= size
                 or not bool((torch.bincount(permutation, minlength=size) == 1).all())):
        raise ValueError(f"{name} must be a permutation of 0..{size - 1}")


def node_ptr_from(num_nodes: int, batch: Optional[Tensor], ptr: Optional[Tensor]) -> Tensor:
    """Per-graph node offsets ``[B + 1]`` (CPU int64) from a sorted ``batch`` or a ``ptr``."""
    if batch is not None and ptr is not None:
        raise ValueError("give either batch or ptr, not both")
    if batch is None and ptr is None:
        return torch.tensor([0, num_nodes])
    name, vector = ("batch", batch) if batch is not None else ("ptr", ptr)
    if not isinstance(vector, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(vector).__name__}")
    dtype, shape = vector.dtype, vector.shape
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {dtype}")
    if len(shape) != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(shape)}")
    # integer tensors carry no gradient; passes over [N] in numpy or C++ cost less than torch calls
    values = vector.numpy(force=True).astype(np.int64, copy=False)
    if name == "batch":
        if values.size != num_nodes:
            raise ValueError(f"batch has {values.size} entries but pos has {num_nodes} nodes")
        status, node_ptr = engine.batch_ptr(values)
        if status == engine.BATCH_NEGATIVE:
            raise ValueError("batch must not contain negative graph ids")
        if status == engine.BATCH_UNSORTED:
            raise ValueError("batch must be sorted (nodes of each graph contiguous, graph ids ascending)")
        return node_ptr
    if values.size < 2 or values[0] != 0 or values[-1] != num_nodes:
        raise ValueError(f"ptr must start at 0 and end at num_nodes = {num_nodes}, got {values.tolist()[:8]}")
    if bool((values[1:] < values[:-1]).any()):
        raise ValueError("ptr must be non-decreasing")
    return torch.from_numpy(values)
