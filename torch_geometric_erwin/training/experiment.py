"""One benchmark as the examples run it: :class:`Experiment`, and the helpers that declare one.

An example script describes its benchmark (datasets, task wrapper, reference training settings,
model sizes) as an :class:`Experiment` and hands it to
:func:`~torch_geometric_erwin.training.runner.run`.

Where the clouds do not move between steps (``static=True``), the runner gives every model a
dataset ``pre_transform`` (:meth:`Experiment.pre_transform`): the experiment's ``graph`` followed by
the backbone's ``tree_transform()`` where it has one (Erwin, Erwin NSA), so the ball trees and the
graph are computed once, when the dataset is processed, and read from every batch rather than built
in every step. The processed folders are keyed by the pre-processing
(:func:`~torch_geometric_erwin.datasets.base.preprocessing_key`), so each model configuration
processes its own copy once and later runs reuse it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch_geometric.transforms as T
from torch import nn
from torch_geometric.io import fs

from torch_geometric_erwin.training.errors import UsageError
from torch_geometric_erwin.training.registry import DEFAULT_BACKBONES, BackboneFactory
from torch_geometric_erwin.training.tasks import NodeRegression
from torch_geometric_erwin.training.tasks.base import Task
from torch_geometric_erwin.transforms import KNNGraphTransform


@dataclass
class Experiment:
    """One benchmark as the examples run it.

    Args:
        name: command name (``"cosmology"``).
        description: first line of ``--help``.
        dimensionality: spatial dimension.
        preset: prefix of the Erwin presets (``"<preset>-<size>"``).
        train: reference :class:`~torch_geometric_erwin.training.TrainConfig` values (``steps``,
            ``batch_size``, ``lr``, ...).
        load: ``(args, pre_transform) -> (train, val, test)`` datasets read from ``args.data``, each
            built with ``pre_transform`` (the model's :meth:`pre_transform`; ``None`` unless ``static``).
        build_task: ``(backbone_factory, args) -> Task``; calls the factory with the encoder width.
        layout: the expected layout under ``--data``, for error messages.
        static: the positions of a sample do not change between steps (no per-access transform moves
            them): every model's tree and the ``graph`` are computed once, as the datasets'
            ``pre_transform``. ``False``: the model builds its tree in every forward pass.
        graph: the graph every model gets (a transform such as ``KNNGraphTransform(8, loop=True)``),
            the first part of the ``pre_transform``; only with ``static``.
        store_graph: keep the ``graph`` in the processed data (computed once); ``False`` builds it on
            every access instead (:meth:`load_splits`), for datasets whose graphs would take many
            times the memory of the data they hold (cosmology: 0.8 MB of 10-neighbour graph per
            cloud of 120 KB). The trees are stored either way.
        nsa_preset: name of the Erwin NSA preset, if the NSA paper has one.
        sizes: the sizes ``--size`` accepts.
        backbones: model name -> factory (defaults: erwin, erwin-nsa, mpnn, transolver, pointnet2, ptv3).
        default_models: what ``--model`` trains when not given.
        default_data: ``--data`` default (``None``: required).
        add_arguments: adds experiment-specific options to the parser.
        report: ``(task, trainer, summary, args, out_dir) -> dict``: extra results and plots
            after testing (rank 0).
        time_budget: ``--time-budget`` default: seconds of training per model, or a dict
            model name -> seconds (``None``: use ``--steps``).
        synthetic_data: ``(raw_dir) -> Any``: writes tiny raw files in the benchmark's real format and
            layout under ``raw_dir`` (a writer of :mod:`torch_geometric_erwin.testing`), for
            ``--synthetic``; ``None`` where the data are generated anyway.
        synthetic_options: the experiment's options that ``--synthetic`` sets where they are not given
            (``dict(seq_len=4)``: what the tiny files need), on top of
            :data:`~torch_geometric_erwin.training.parser.SYNTHETIC_TRAINING`.
    """

    name: str
    description: str
    dimensionality: int
    preset: str
    train: Dict[str, Any]
    load: Callable[[argparse.Namespace, Optional[Callable]], Tuple[Any, Any, Any]]
    build_task: Callable[[Callable[[int], nn.Module], argparse.Namespace], Task]
    layout: str
    static: bool = False
    graph: Optional[Callable] = None
    store_graph: bool = True
    nsa_preset: Optional[str] = None
    sizes: Sequence[str] = ("small", "medium", "large")
    backbones: Dict[str, BackboneFactory] = field(default_factory=lambda: dict(DEFAULT_BACKBONES))
    default_models: Sequence[str] = ("erwin",)
    default_data: Optional[str] = None
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None
    report: Optional[Callable[..., Dict[str, Any]]] = None
    time_budget: Optional[Union[float, Dict[str, float]]] = None
    synthetic_data: Optional[Callable[[str], Any]] = None
    synthetic_options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.graph is not None and not self.static:
            raise ValueError(f"Experiment {self.name!r}: graph is the static graph of the pre_transform; pass "
                             "static=True (the positions do not move), or build the graph in the datasets' "
                             "transform in load")

    def pre_transform(self, backbone: nn.Module) -> Optional[T.Compose]:
        """The datasets' ``pre_transform`` for ``backbone``: ``None`` unless :attr:`static`, else the
        :attr:`graph` followed by ``backbone.tree_transform()`` where the backbone has one (the
        baselines have none: their pre-processing is the graph alone)."""
        if not self.static:
            return None
        transforms = [] if self.graph is None or not self.store_graph else [self.graph]
        tree_transform = getattr(backbone, "tree_transform", None)
        if tree_transform is not None:
            transforms += tree_transform().transforms
        return T.Compose(transforms) if transforms else None

    def load_splits(self, args: argparse.Namespace, pre_transform: Optional[Callable]) -> Tuple[Any, Any, Any]:
        """:attr:`load` with ``pre_transform``, the ``graph`` added to every split's per-access
        ``transform`` where it is not stored (``store_graph=False``)."""
        splits = self.load(args, pre_transform)
        if self.static and self.graph is not None and not self.store_graph:
            for split in splits:
                split.transform = self.graph if split.transform is None else T.Compose([split.transform, self.graph])
        return splits

    def check_root(self, root: str) -> None:
        """Raise :class:`UsageError` if the data root ``root`` does not exist."""
        if not fs.exists(root):
            raise UsageError(f"data root '{root}' does not exist; download the {self.name} data "
                             f"there (layout: {self.layout}) or pass --data")


def pde_training(epochs: int, train_size: int, batch_size: int, lr: float) -> Dict[str, Any]:
    """The reference settings of the four PDE benchmarks: ``epochs * train_size // batch_size`` steps,
    5 % linear warm-up then cosine to 1e-7, weight decay 1e-5, clipping at 1.0, validation every 1000."""
    return dict(steps=epochs * train_size // batch_size, batch_size=batch_size, lr=lr, weight_decay=1e-5,
                schedule="warmup-cosine", warmup_ratio=0.05, eta_min=1e-7, max_grad_norm=1.0,
                val_every=1000)


def split_views(dataset) -> Tuple[Any, Any, Any]:
    """Train, validation and test views of a dataset loaded with ``split=None``, from its
    ``get_idx_split()`` (the processed file is read once, not once per split)."""
    split = dataset.get_idx_split()
    return tuple(dataset[split[key]] for key in ("train", "valid", "test"))


def geo_fno_experiment(name: str, dataset: str, description: str, encoder: Callable[[int], nn.Module],
                       out_channels: int, train: Dict[str, Any], layout: str) -> Experiment:
    """One of the four Geo-FNO PDE benchmarks (airfoil, pipe, elasticity, plasticity) as the reference
    runs them: 2-D, the ``<name>-small`` preset, the reference's graph (8 nearest neighbours, the node
    itself included), a node-wise regression head trained by relative L2 and reported on the
    denormalised fields. The meshes do not move (plasticity's positions are the reference grid at
    every time step): trees and the graph are computed once, when the dataset is processed.

    Args:
        dataset: the class name in :mod:`torch_geometric_erwin.datasets` (``"Airfoil"``).
        encoder: ``(width) -> module`` embedding the raw node fields into ``width`` channels.
        train: :func:`pde_training` of the benchmark.
    """
    width = 64

    def dataset_class():
        import torch_geometric_erwin.datasets as datasets
        return getattr(datasets, dataset)

    def load(args, pre_transform):
        return split_views(dataset_class()(args.data, split=None, pre_transform=pre_transform))

    def build_task(backbone, args):
        return NodeRegression(backbone(width), encoder(width), out_channels=out_channels, loss="rel_l2",
                              denormalize=lambda v: dataset_class().denormalize(v))

    def synthetic_data(raw_dir):
        import torch_geometric_erwin.testing as testing
        getattr(testing, f"write_{name}")(raw_dir)

    return Experiment(name=name, description=description, dimensionality=2, preset=name, sizes=("small",), train=train,
                      load=load, build_task=build_task, static=True, graph=KNNGraphTransform(8, loop=True),
                      layout=f"raw/{layout} (Geo-FNO 'PDE Benchmarks' folder)", synthetic_data=synthetic_data)
