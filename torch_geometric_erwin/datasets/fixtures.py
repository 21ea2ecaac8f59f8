"""Writers of tiny raw files in each benchmark's exact real format and layout, with known values.

One import point for the per-benchmark writers: each takes a raw directory (any fsspec URL) and returns
what it wrote, so tests and documentation can check processing against it.
"""

from torch_geometric_erwin.datasets.fixtures_cosmology_shapenet import write_cosmology, write_shapenet_car
from torch_geometric_erwin.datasets.fixtures_geo_fno import (write_airfoil, write_elasticity, write_pipe,
                                                             write_plasticity)
from torch_geometric_erwin.datasets.fixtures_md_eagle import write_eagle, write_polymer_md

__all__ = ["write_airfoil", "write_cosmology", "write_eagle", "write_elasticity", "write_pipe",
           "write_plasticity", "write_polymer_md", "write_shapenet_car"]
