r"""What the datasets read and write with: atomic files on any fsspec file system
(:mod:`~torch_geometric_erwin.datasets.io.atomic`) and MATLAB level-5 files read one slab at a time
(:mod:`~torch_geometric_erwin.datasets.io.matlab`)."""

from torch_geometric_erwin.datasets.io.atomic import TMP_MARK, atomic_json, atomic_torch_save, atomic_write
from torch_geometric_erwin.datasets.io.matlab import Mat5Variable, MatFormatError, mat5_variables, read_mat5

__all__ = ["TMP_MARK", "Mat5Variable", "MatFormatError", "atomic_json", "atomic_torch_save", "atomic_write",
           "mat5_variables", "read_mat5"]
