"""Builds the C++ ball-tree engine and ball-attention kernels (csrc/) into torch_geometric_erwin._C.

The extension is optional: without a working C++ compiler the package installs
anyway and uses its pure-PyTorch paths (same trees and outputs, slower), saying so once.
"""
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

openmp = [] if sys.platform == "darwin" else ["-fopenmp"]

extension = Pybind11Extension(
    "torch_geometric_erwin._C",
    sources=["csrc/bindings.cpp"],
    include_dirs=["csrc"],
    depends=["csrc/ball_attention.h", "csrc/ball_tree.h", "csrc/edge_messages.h", "csrc/neighbour_search.h",
             "csrc/parallel.h", "csrc/rms_norm.h", "csrc/swiglu.h",
             "csrc/vector_math.h"],
    cxx_std=17,
    extra_compile_args=["-O3"] + openmp,
    extra_link_args=openmp,
)
extension.optional = True  # a failed build leaves the pure-PyTorch engine in charge

setup(ext_modules=[extension], cmdclass={"build_ext": build_ext})
