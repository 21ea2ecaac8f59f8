"""What more than one test module uses: graphs, checks and runners that are not tests themselves.

``test/`` is on ``sys.path`` (pytest puts the folder of the root ``conftest.py`` there), so test modules
import these as ``from support.<module> import ...``; no test module imports another.
"""
import os

#: The ``test/`` folder: a subprocess that imports ``support`` puts it on its path.
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The checkout's root, whose ``examples/``, ``benchmarks/`` and ``docs/`` the tests read.
ROOT = os.path.dirname(TESTS)
