"""Pictures of ball trees: :func:`plot_ball_tree`."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from torch_geometric_erwin.datasets.io.atomic import atomic_write
from torch_geometric_erwin.tree import BallTree, build_ball_tree
from torch_geometric_erwin.tree.ball_tree import INDEX_KEY
from torch_geometric_erwin.checks import check_ball_config, check_pos

#: Qualitative colours, cycled over balls; neighbouring balls get distant entries.
_CMAP, _NUM_COLOURS, _COLOUR_STEP = "tab20", 20, 7


def _matplotlib():
    """Import matplotlib lazily, with an error that says how to get it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "plot_ball_tree needs matplotlib, which is not installed: "
            "pip install matplotlib (or pip install 'torch_geometric_erwin[examples]')") from error
    return matplotlib, Figure


def _levels(level, num_levels: int) -> list:
    single = not isinstance(level, (list, tuple))
    levels = [level] if single else list(level)
    if not levels:
        raise ValueError("level must be an int or a non-empty list of ints")
    for value in levels:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"level must be an int or a list of ints, got {value!r}")
        if not 0 <= value < num_levels:
            raise ValueError(f"level must lie in [0, {num_levels - 1}] for a tree with {num_levels} "
                             f"level(s), got {value}")
    return levels


def ball_assignment(tree: BallTree, level: int = 0, rotated: bool = False) -> Tensor:
    r"""``[N]`` the ball of every node at ``level`` (global ball ids, graph by graph).

    A node sits in the slot its ``mask`` marks; at level :math:`l` that slot
    belongs to the coarse slot ``slot // prod(strides[:l])``, and balls are runs
    of ``ball_sizes[l]`` coarse slots, in tree order or, with ``rotated``, in
    the order of the rotated partition ``tree.rotated[l]``.

    Args:
        tree: a :class:`~torch_geometric_erwin.tree.BallTree` built with ``ball_sizes``.
        level: the U-Net level :math:`l`.
        rotated: use the rotated partition (the tree must carry ``rotated``).
    """
    if not isinstance(tree, BallTree):
        raise TypeError(f"tree must be a BallTree, got {type(tree).__name__}")
    if tree.ball_sizes is None:
        raise ValueError("tree has no ball_sizes: build it with build_ball_tree(..., ball_sizes=...)")
    (level,) = _levels(level, len(tree.ball_sizes))
    if rotated and len(tree.rotated) <= level:
        raise ValueError("rotated=True needs a tree with rotated partitions: build it with rotate=<angle> "
                         "or attach them with RotatedTreeTransform")
    factor = tree.pooling_factor(level)
    slots = torch.nonzero(tree.mask, as_tuple=True)[0]
    nodes = tree.index[slots]
    coarse_slot = torch.empty_like(slots)
    coarse_slot[nodes] = slots // factor
    if rotated:
        permutation = tree.rotated[level]
        position = torch.empty_like(permutation)
        position[permutation] = torch.arange(permutation.numel(), device=permutation.device)
        coarse_slot = position[coarse_slot]
    return coarse_slot // tree.ball_sizes[level]


def _coarse_positions(pos: Tensor, tree: BallTree, level: int, graph: int) -> Tensor:
    """Positions of ``graph``'s slots at ``level``: leaf positions mean-pooled stride by stride."""
    start, end = (int(p) for p in tree.ptr[graph:graph + 2])
    leaves = pos[tree.index[start:end]]
    return leaves.reshape(-1, tree.pooling_factor(level), pos.shape[1]).mean(1)


def _resolve(source, tree, batch, ball_sizes, strides, rotate, padding):
    """(pos, tree, node_ptr) from a tensor or a ``Data``/``Batch`` and the optional tree."""
    if isinstance(source, Tensor):
        pos = source
    elif hasattr(source, "pos") and hasattr(source, "keys"):
        pos = source.pos
        if pos is None:
            raise ValueError("pos_or_data is a Data object without pos")
        if batch is None:
            batch = getattr(source, "batch", None)
        if tree is None and getattr(source, INDEX_KEY, None) is not None and ball_sizes is not None:
            tree = BallTree.from_data(source, ball_sizes, strides, padding)
    else:
        raise TypeError(f"pos_or_data must be a [N, 2] or [N, 3] tensor or a Data object, "
                        f"got {type(source).__name__}")
    check_pos(pos)
    if pos.shape[1] not in (2, 3):
        raise ValueError(f"plot_ball_tree draws 2-D or 3-D clouds, got pos of shape {tuple(pos.shape)}")
    pos = pos.detach().cpu()
    if tree is None:
        if ball_sizes is None:
            raise ValueError("give a tree or the ball_sizes (and strides) to build one")
        tree = build_ball_tree(pos, None if batch is None else batch.cpu(), ball_sizes=ball_sizes,
                               strides=strides, rotate=rotate, padding=padding)
    elif not isinstance(tree, BallTree):
        raise TypeError(f"tree must be a BallTree or None, got {type(tree).__name__}")
    tree = tree.to("cpu")
    if tree.num_nodes != pos.shape[0]:
        raise ValueError(f"tree covers {tree.num_nodes} nodes but pos has {pos.shape[0]}")
    return pos, tree


def plot_ball_tree(pos_or_data, tree: Optional[BallTree] = None, *, batch: Optional[Tensor] = None,
                   level: Union[int, Sequence[int]] = 0, rotated: bool = False, graph: int = 0,
                   ball_sizes: Optional[Sequence[int]] = None, strides: Optional[Sequence[int]] = None,
                   rotate: float = 45.0, padding: str = "pow2", show_coarse: bool = True,
                   show_padding: bool = False, point_size: float = 12.0, panel_size: float = 3.5,
                   path: Optional[Union[str, os.PathLike]] = None):
    r"""Draw a 2-D or 3-D point cloud coloured by ball at one or more tree levels.

    Each panel shows the nodes of one graph coloured by the ball they belong to
    at a level :math:`l` (balls are runs of ``ball_sizes[l]`` slots of that
    level, see :func:`ball_assignment`). With ``rotated=True`` a second row
    shows the rotated partition of the same level (paper, eq. 11) on the same,
    unrotated points, so the cross-ball connections are visible. At levels
    :math:`l > 0` the coarse nodes (leaf positions mean-pooled by the strides,
    as the model pools them) are drawn as black crosses when
    ``show_coarse`` is set.

    Example:
        >>> import torch
        >>> from torch_geometric_erwin.utils import plot_ball_tree
        >>> pos = torch.rand(200, 2, generator=torch.Generator().manual_seed(0))
        >>> fig = plot_ball_tree(pos, level=[0, 1], rotated=True,
        ...                      ball_sizes=[16, 16], strides=[2])
        >>> len(fig.axes)
        4

    Args:
        pos_or_data: ``[N, 2]`` or ``[N, 3]`` positions, or a ``Data``/``Batch``
            with ``pos`` (and the transforms' tree attributes, used when
            ``ball_sizes`` is given and ``tree`` is not).
        tree: the :class:`~torch_geometric_erwin.tree.BallTree` to draw;
            built from ``ball_sizes``, ``strides``, ``rotate``, ``padding`` if None.
        batch: ``[N]`` graph id of every node, when ``pos`` holds several graphs.
        level: a level or a list of levels, one column each.
        rotated: add a row with the rotated partitions (the tree needs them).
        graph: which graph of the batch to draw.
        ball_sizes, strides, padding: tree configuration when ``tree`` is None.
        rotate: rotation angle in degrees for a tree built here.
        show_coarse: draw the pooled node positions at levels above 0.
        show_padding: ring the nodes that occupy more than one slot (the
            duplicates that pad a graph's tree, marked False in ``mask``).
        point_size: marker area of the nodes.
        panel_size: width and height of one panel in inches.
        path: if given, the figure is written there (PNG unless the suffix names
            another matplotlib format), atomically: a temporary file in the same
            folder is renamed onto ``path``.

    Returns:
        The :class:`matplotlib.figure.Figure` (not attached to ``pyplot``).
    """
    _, Figure = _matplotlib()
    if strides is not None or ball_sizes is not None:
        ball_sizes, strides = check_ball_config(ball_sizes, strides)
    for name, flag in (("rotated", rotated), ("show_coarse", show_coarse), ("show_padding", show_padding)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    for name, value in (("point_size", point_size), ("panel_size", panel_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if tree is not None and ball_sizes is not None:
        raise ValueError("give either tree or ball_sizes (to build one), not both")
    fmt = None if path is None else _check_path(path)
    pos, tree = _resolve(pos_or_data, tree, batch, ball_sizes, strides, rotate if rotated else 0.0, padding)
    levels = _levels(level, len(tree.ball_sizes or ()) or 1)
    if isinstance(graph, bool) or not isinstance(graph, int) or not 0 <= graph < tree.num_graphs:
        raise ValueError(f"graph must be an int in [0, {tree.num_graphs - 1}], got {graph!r}")

    node_start, node_end = (int(p) for p in tree.node_ptr[graph:graph + 2])
    points = pos[node_start:node_end]
    dim = pos.shape[1]
    rows = [False, True] if rotated else [False]
    figure = Figure(figsize=(panel_size * len(levels), panel_size * len(rows)), layout="constrained")
    projection = {"projection": "3d"} if dim == 3 else {}
    if dim == 3:
        import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3-D projection)

    duplicated = None
    if show_padding:
        copies = torch.bincount(tree.index, minlength=tree.num_nodes)
        duplicated = (copies[node_start:node_end] > 1)

    for row, use_rotation in enumerate(rows):
        for column, lvl in enumerate(levels):
            axes = figure.add_subplot(len(rows), len(levels), row * len(levels) + column + 1, **projection)
            balls = ball_assignment(tree, lvl, use_rotation)[node_start:node_end]
            balls = balls - balls.min()
            colour = (balls * _COLOUR_STEP) % _NUM_COLOURS
            axes.scatter(*points.T.numpy(), c=colour.numpy(), cmap=_CMAP, vmin=0, vmax=_NUM_COLOURS - 1,
                         s=point_size, linewidths=0)
            if duplicated is not None and bool(duplicated.any()):
                axes.scatter(*points[duplicated].T.numpy(), s=point_size * 4, facecolors="none",
                             edgecolors="black", linewidths=0.6)
            if show_coarse and lvl > 0:
                axes.scatter(*_coarse_positions(pos, tree, lvl, graph).T.numpy(), c="black",
                             s=point_size, marker="x", linewidths=0.8)
            size = tree.ball_sizes[lvl]
            kind = "rotated balls" if use_rotation else "balls"
            axes.set_title(f"level {lvl}: {int(balls.max()) + 1} {kind} of {size}", fontsize=9)
            axes.set_xticks([])
            axes.set_yticks([])
            if dim == 3:
                axes.set_zticks([])
            else:
                axes.set_aspect("equal")
    if path is not None:
        with atomic_write(os.fspath(path), "wb") as handle:
            figure.savefig(handle, format=fmt, dpi=110)
    return figure


def _check_path(path) -> str:
    """The file format of ``path`` (its suffix, PNG without one); raises before any drawing."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    from matplotlib.backend_bases import FigureCanvasBase

    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    if fmt not in FigureCanvasBase.get_supported_filetypes():
        raise ValueError(f"path must end in a matplotlib image format such as .png, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path's folder does not exist: {folder}")
    return fmt
