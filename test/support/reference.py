"""The reference Erwin loader for parity tests: see ``benchmarks/_reference.py`` (shared with the benchmarks).

Set ``ERWIN_REFERENCE`` to a checkout of https://github.com/maxxxzdn/erwin to run the tests that need it.
"""
import importlib.util
import os

from support import ROOT

_SOURCE = os.path.join(ROOT, "benchmarks", "_reference.py")
_spec = importlib.util.spec_from_file_location("torch_geometric_erwin_benchmarks_reference", _SOURCE)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

load_reference_erwin = _module.load_reference_erwin

__all__ = ["load_reference_erwin"]
