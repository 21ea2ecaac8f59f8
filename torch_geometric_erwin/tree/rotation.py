"""Rotation matrices for the rotated ball trees (cross-ball connections, eq. 11)."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def rotation_matrix(angle: float, dim: int, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""The ``[dim, dim]`` matrix ``R`` that rotates row vectors as ``p' = p R``.

    * ``dim = 2``: :math:`R = [[c, -s], [s, c]]`.
    * ``dim = 3``: :math:`R = R_z(a) R_y(a) R_x(a)`, the three Euler angles equal,
      exactly the matrix of the reference implementation.
    * ``dim > 3``: the product of the plane rotations by ``angle`` in the
      coordinate planes ``(0, 1), (1, 2), ..., (dim-2, dim-1)``, applied in that
      order. Every coordinate is mixed with its neighbours, so the dimension of
      largest spread changes as it does in 2-D and 3-D.
    * ``dim = 1``: the identity (a line has no rotation); the rotated tree then
      equals the original one.

    Args:
        angle: rotation angle in degrees.
        dim: spatial dimension ``D``.
        dtype: floating dtype of the result.
    """
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    if dim == 3:
        matrix = [[c * c, s * c * (s - 1), s * (s + c * c)],
                  [s * c, s * s * s + c * c, s * c * (s - 1)],
                  [-s, s * c, c * c]]
        return torch.tensor(matrix, dtype=torch.float64).to(dtype)
    rotation = torch.eye(dim, dtype=torch.float64)
    for axis in range(dim - 1):
        plane = torch.eye(dim, dtype=torch.float64)
        plane[axis, axis], plane[axis, axis + 1] = c, -s
        plane[axis + 1, axis], plane[axis + 1, axis + 1] = s, c
        rotation = rotation @ plane
    return rotation.to(dtype)


def rotate(points: Tensor, matrix: Tensor) -> Tensor:
    """``points @ matrix`` as a fixed-order sum of column products.

    Unlike a BLAS matmul, whose blocking (and rounding) can depend on the number
    of rows, each output row depends only on its input row, so a graph's rotated
    tree is the same whether it is built alone or inside a batch.
    """
    rotated = points[:, :1] * matrix[0]
    for axis in range(1, points.shape[1]):
        rotated = rotated + points[:, axis:axis + 1] * matrix[axis]
    return rotated
