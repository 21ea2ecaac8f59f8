"""Loads the reference Erwin implementation from a local checkout, for parity tests and benchmarks.

Pass the path of a checkout of https://github.com/maxxxzdn/erwin, or set ``ERWIN_REFERENCE`` to it: its
``models/erwin.py`` is imported from there at run time (nothing of it is part of this repository). The
reference imports ``torch_cluster`` and ``balltree`` at module level but only uses them to build radius
graphs and ball trees when the caller gives none; these comparisons always give both. When either package
is not installed, a stand-in is registered for the duration of the import (the stand-in ``balltree``
raises if the reference ever asks it for a tree).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Optional


def _balltree_stand_in() -> types.ModuleType:
    module = types.ModuleType("balltree")

    def build_balltree_with_rotations(*args, **kwargs):
        raise RuntimeError("balltree-erwin is not installed: pass tree_idx, tree_mask and tree_idx_rot "
                           "to the reference model")

    module.build_balltree_with_rotations = build_balltree_with_rotations
    return module


def load_reference_erwin(path: Optional[str] = None) -> Optional[types.ModuleType]:
    """The reference ``models/erwin.py`` of the checkout at ``path`` (default: ``$ERWIN_REFERENCE``) as a
    module, or None when neither is set."""
    path = path or os.environ.get("ERWIN_REFERENCE")
    if not path:
        return None
    source = os.path.join(path, "models", "erwin.py")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"the reference checkout {path!r} has no models/erwin.py")
    stand_ins = {name: factory() for name, factory in (("torch_cluster", lambda: types.ModuleType("torch_cluster")),
                                                       ("balltree", _balltree_stand_in))
                 if name not in sys.modules and importlib.util.find_spec(name) is None}
    sys.modules.update(stand_ins)
    spec = importlib.util.spec_from_file_location("erwin_reference_model", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    try:
        spec.loader.exec_module(module)
    finally:
        for name in stand_ins:  # nothing else may mistake a stand-in for the real package
            del sys.modules[name]
    return module
