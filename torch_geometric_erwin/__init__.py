"""torch_geometric_erwin: Erwin and Erwin NSA as PyTorch Geometric building blocks."""

from torch_geometric_erwin import tree, transforms

__version__ = "0.1.0"

__all__ = ["tree", "transforms", "__version__"]
