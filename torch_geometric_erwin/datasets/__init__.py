"""The papers' benchmarks as PyG datasets (any fsspec root), plus a built-in synthetic N-body set."""

from torch_geometric_erwin.datasets.base import ProcessedFileError
from torch_geometric_erwin.datasets.cosmology import Cosmology
from torch_geometric_erwin.datasets.eagle import EAGLE
from torch_geometric_erwin.datasets.geo_fno import Airfoil, Elasticity, Pipe, Plasticity
from torch_geometric_erwin.datasets.nbody import SyntheticNBody
from torch_geometric_erwin.datasets.polymer_md import PolymerMD
from torch_geometric_erwin.datasets.shapenet_car import ShapeNetCar

__all__ = [
    "Airfoil",
    "Cosmology",
    "EAGLE",
    "Elasticity",
    "Pipe",
    "Plasticity",
    "ProcessedFileError",
    "PolymerMD",
    "ShapeNetCar",
    "SyntheticNBody",
]
