r"""The kernel layer: every compiled or fused operation of the package, behind one dispatch.

Each op is a :mod:`torch.library` custom op in the ``erwin`` namespace (``torch.ops.erwin.*``)
with a fake implementation, so that ``torch.compile`` traces through it (``fullgraph=True``
compiles a model with the kernels in its graph), and, where it is differentiable, an autograd
formula. The ops run the C++ kernels of ``csrc/`` on CPU tensors; a CUDA or Triton kernel is one
more registration of the same op. :func:`capabilities` is read from the built extension and
:func:`available` says whether a kernel exists for a dtype; layers take their PyTorch paths
where it does not.

============================  ==========================================================
op                            kernel
============================  ==========================================================
``ball_attention``            ball attention with the distance bias, eqs. 8-10
``edge_messages``             the embedding's messages summed per target, eq. 14
``rms_norm``                  RMSNorm of rows
``swiglu``, ``swiglu_train``  SwiGLU with one GEMM for both input projections
``partition``                 the ball tree's slot assignment
``neighbour_search``          exact kNN / radius neighbours per graph
============================  ==========================================================

The tree engine's host-side helpers (:func:`all_finite`, :func:`batch_ptr`, :func:`slot_ptr`) are
plain functions on CPU tensors: they run before any graph is traced.
"""
from torch_geometric_erwin.ops._extension import available, capabilities
from torch_geometric_erwin.ops.attention import ball_attention
from torch_geometric_erwin.ops.messages import edge_messages
from torch_geometric_erwin.ops.normalization import rms_norm
from torch_geometric_erwin.ops.feed_forward import swiglu, swiglu_train
from torch_geometric_erwin.ops.tree import all_finite, batch_ptr, neighbour_search, partition, slot_ptr

__all__ = ["available", "capabilities", "ball_attention", "edge_messages", "rms_norm", "swiglu", "swiglu_train",
           "partition", "neighbour_search", "all_finite", "batch_ptr", "slot_ptr"]
