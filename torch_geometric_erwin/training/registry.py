"""The backbones the examples train: one factory per ``--model`` name.

A factory is called as ``factory(in_channels, size, experiment)`` and returns a module with an
``out_channels`` attribute; it reads the experiment's ``preset``, ``nsa_preset`` and ``dim``.
:data:`DEFAULT_BACKBONES` is what an :class:`~torch_geometric_erwin.training.experiment.Experiment`
offers unless it lists its own.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, Dict

from torch import nn

from torch_geometric_erwin.training.errors import UsageError

if TYPE_CHECKING:
    from torch_geometric_erwin.training.experiment import Experiment

#: Signature of a backbone factory: ``(in_channels, size, experiment) -> module`` with ``out_channels``.
BackboneFactory = Callable[[int, str, "Experiment"], nn.Module]

#: MPNN baseline widths per size: (hidden channels, message-passing steps).
MPNN_SIZES = {"small": (64, 4), "medium": (128, 6), "large": (256, 8)}


def erwin_backbone(in_channels: int, size: str, experiment: "Experiment") -> nn.Module:
    """The paper's Erwin preset ``<experiment.preset>-<size>``."""
    from torch_geometric_erwin.nn import Erwin
    return Erwin.from_preset(f"{experiment.preset}-{size}", in_channels=in_channels)


def erwin_nsa_backbone(in_channels: int, size: str, experiment: "Experiment") -> nn.Module:
    """The NSA paper's preset for the experiment (one size)."""
    from torch_geometric_erwin.nn.models.erwin_nsa import PRESETS, ErwinNSA
    if experiment.nsa_preset not in PRESETS:
        raise UsageError(f"erwin-nsa has no preset for {experiment.name} (the NSA paper has "
                         f"{', '.join(sorted(PRESETS))}); choose another --model")
    return ErwinNSA.from_preset(experiment.nsa_preset, in_channels=in_channels,
                                dimensionality=experiment.dimensionality)


def mpnn_backbone(in_channels: int, size: str, experiment: "Experiment") -> nn.Module:
    """The MPNN baseline at the width and depth of :data:`MPNN_SIZES`."""
    from torch_geometric_erwin.nn.models.mpnn import MPNN
    hidden, layers = MPNN_SIZES[size]
    return MPNN(in_channels, hidden, layers, dimensionality=experiment.dimensionality)


def baseline_backbone(module: str, name: str) -> BackboneFactory:
    """The baseline ``name`` of :mod:`torch_geometric_erwin.nn.models.<module>`: its preset
    ``<experiment.preset>-<size>`` where it has one, else its generic ``size_config(size)``; in the
    experiment's dimension."""
    def factory(in_channels: int, size: str, experiment: "Experiment") -> nn.Module:
        models = importlib.import_module(f"torch_geometric_erwin.nn.models.{module}")
        preset = f"{experiment.preset}-{size}"
        config = dict(models.PRESETS[preset]) if preset in models.PRESETS else models.size_config(size)
        return getattr(models, name)(in_channels, **{**config, "dimensionality": experiment.dimensionality})
    factory.__doc__ = f"The {name} baseline: its preset for the experiment and size, or its generic size."
    return factory


#: The ``--model`` choices of an experiment that lists no backbones of its own: model name -> factory.
DEFAULT_BACKBONES: Dict[str, BackboneFactory] = {
    "erwin": erwin_backbone, "erwin-nsa": erwin_nsa_backbone, "mpnn": mpnn_backbone,
    "transolver": baseline_backbone("transolver", "Transolver"),
    "pointnet2": baseline_backbone("pointnet2", "PointNet2"),
    "ptv3": baseline_backbone("serialized_transformer", "SerializedTransformer")}
