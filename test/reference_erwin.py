"""Loads the reference Erwin implementation from a local checkout, for parity tests and benchmarks.

Set ``ERWIN_REFERENCE`` to a checkout of https://github.com/maxxxzdn/erwin (its ``models/erwin.py`` is
imported from there; nothing of it is part of this repository). The reference imports ``torch_cluster`` at
module level but only uses it to build radius graphs, which these comparisons never ask for: when it is not
installed, an empty stand-in module is registered so the import succeeds.
"""
import importlib.util
import os
import sys
import types


def load_reference_erwin(path=None):
    """The reference ``models/erwin.py`` as a module, or None when no checkout is configured."""
    path = path or os.environ.get("ERWIN_REFERENCE")
    if not path:
        return None
    source = os.path.join(path, "models", "erwin.py")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"ERWIN_REFERENCE={path} has no models/erwin.py")
    stand_in = importlib.util.find_spec("torch_cluster") is None
    if stand_in:
        sys.modules["torch_cluster"] = types.ModuleType("torch_cluster")
    spec = importlib.util.spec_from_file_location("erwin_reference_model", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    try:
        spec.loader.exec_module(module)
    finally:
        if stand_in:  # nothing else may mistake the stand-in for the real package
            del sys.modules["torch_cluster"]
    return module
