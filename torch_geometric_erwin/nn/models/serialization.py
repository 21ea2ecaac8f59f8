r"""Model files that rebuild their model: :class:`Configurable` (``config``, ``save``, ``from_checkpoint``).

A model file is a ``torch.save``\ d dict of tensors and plain values only, so it loads with
``torch.load(weights_only=True)``::

    {"format": "torch_geometric_erwin", "format_version": 1, "package_version": "0.1.0",
     "kind": "model", "class": "Erwin", "config": {...constructor arguments...}, "state_dict": {...}}

Training checkpoints (:class:`~torch_geometric_erwin.training.Trainer`'s ``best.pt`` and ``last.pt``)
share the header with ``"kind": "training"``; they hold the whole task's ``model`` state and, under
``"backbone"``, the class, configuration and state-dict prefix of its backbone.
"""
from __future__ import annotations

import functools
import inspect
import numbers
import os
import pickle
from typing import Any, Dict, Mapping, Optional

import torch

from torch_geometric_erwin.datasets.io.atomic import atomic_torch_save

#: The ``format`` entry of every file this package writes, and the version of their layout.
FILE_FORMAT, FORMAT_VERSION = "torch_geometric_erwin", 1


def package_version() -> str:
    from torch_geometric_erwin import __version__
    return __version__


def file_header(kind: str) -> Dict[str, Any]:
    return {"format": FILE_FORMAT, "format_version": FORMAT_VERSION, "package_version": package_version(),
            "kind": kind}


def plain(name: str, value: Any) -> Any:
    """``value`` as plain Python values (lists for tuples, ``int``/``float`` for NumPy scalars), or a
    :class:`TypeError` naming ``name``: a model file holds nothing that needs pickled classes."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [plain(name, item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): plain(name, item) for key, item in value.items()}
    if callable(getattr(value, "to_config", None)):  # the package's graph transforms
        return plain(name, value.to_config())
    raise TypeError(f"the constructor argument {name}={value!r} is not a plain value (int, float, str, bool, "
                    "None, list, dict): such a model cannot be saved with its configuration")


def load_file(path: str, map_location: Optional[str] = "cpu") -> Dict[str, Any]:
    """A file this package wrote, checked: exists, loads with ``weights_only=True``, has the header and a
    format version this code reads. Raises :class:`FileNotFoundError` or :class:`ValueError`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError):
        raise ValueError(f"{path} is not a torch_geometric_erwin model or training checkpoint: it does not "
                         "load with torch.load(weights_only=True) (it is damaged, or holds Python objects "
                         "beyond tensors and plain values)") from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a torch_geometric_erwin model or training checkpoint (no "
                         f"'format': '{FILE_FORMAT}' entry); a checkpoint of version 0.1 holds weights only: "
                         "build the model with its constructor and load_state_dict(checkpoint['model'])")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format version {version!r}, written by torch_geometric_erwin "
                         f"{payload.get('package_version')}; this version ({package_version()}) reads up to "
                         f"{FORMAT_VERSION}: upgrade torch_geometric_erwin")
    return payload


def model_record(model: Any) -> Optional[Dict[str, Any]]:
    """``{"class", "config"}`` of a :class:`Configurable` model, None for any other module."""
    if not isinstance(model, Configurable):
        return None
    return {"class": type(model).__name__,
            "config": {name: plain(name, value) for name, value in model.config.items()}}


class Configurable:
    """Mixin of the models: records the constructor's arguments as :attr:`config`, writes model files
    (:meth:`save`) and rebuilds models from them or from training checkpoints (:meth:`from_checkpoint`).

    The arguments are recorded by a wrapper around each subclass's ``__init__`` (the outermost one,
    so a subclass records its own), after defaults are applied: every argument the constructor
    takes, now or after it gains new ones, is part of the configuration.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kwargs):
            if "_config" not in self.__dict__:
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                arguments = dict(list(bound.arguments.items())[1:])
                for name, parameter in signature.parameters.items():
                    if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(arguments.pop(name, {}))
                    elif parameter.kind is inspect.Parameter.VAR_POSITIONAL and arguments.get(name):
                        raise TypeError(f"{cls.__name__} takes *{name}, which a configuration cannot record")
                # before nn.Module.__init__, which would otherwise route the attribute through its hooks
                object.__setattr__(self, "_config", arguments)
            init(self, *args, **kwargs)

        cls.__init__ = recording_init

    @property
    def config(self) -> Dict[str, Any]:
        """The constructor arguments of this model (defaults included): ``type(model)(**model.config)``
        builds the same architecture."""
        return dict(self._config)

    def save(self, path: str) -> None:
        """Write a model file (see the module's docstring) atomically: the configuration, the weights
        (``state_dict``, on the CPU), the format version and the package version.
        :meth:`from_checkpoint` rebuilds the model from it."""
        config = {name: plain(name, value) for name, value in self.config.items()}
        state = {key: value.detach().cpu() for key, value in self.state_dict().items()}
        atomic_torch_save({**file_header("model"), "class": type(self).__name__, "config": config,
                           "state_dict": state}, path)

    @classmethod
    def upgrade_config(cls, config: Dict[str, Any]) -> Dict[str, Any]:
        """A configuration recorded by an earlier version, with the constructor's current argument names."""
        return config

    @classmethod
    def from_checkpoint(cls, path: str, map_location: Optional[str] = "cpu", strict: bool = True):
        """The model saved in ``path``: a model file (:meth:`save`) or a training checkpoint of the
        :class:`~torch_geometric_erwin.training.Trainer` (``best.pt``, ``last.pt``), whose backbone is
        rebuilt from its recorded configuration and given its trained weights. Returned in eval mode.

        Raises :class:`ValueError` for a file this package did not write (or wrote before checkpoint
        format 1, which held weights only), of a newer format, or holding another class.
        """
        payload = load_file(path, map_location)
        if payload.get("kind") == "model":
            record, state = payload, payload["state_dict"]
        elif payload.get("kind") == "training":
            record = payload.get("backbone")
            if record is None:
                raise ValueError(f"{path} is a training checkpoint whose backbone records no configuration "
                                 "(not a model of this package): rebuild the task yourself and load "
                                 "checkpoint['model']")
            prefix = record["prefix"]
            state = {key[len(prefix):]: value for key, value in payload["model"].items() if key.startswith(prefix)}
        else:
            raise ValueError(f"{path} holds a {payload.get('kind')!r} file, not a model or training checkpoint")
        if record["class"] != cls.__name__:
            raise ValueError(f"{path} holds a model of class {record['class']}, not {cls.__name__}: use "
                             f"{record['class']}.from_checkpoint")
        model = cls(**cls.upgrade_config(dict(record["config"])))
        model.load_state_dict(state, strict=strict)
        return model.eval()
