r"""Ball pooling and unpooling: coarsening and refining the ball tree (Erwin, eqs. 12-13)."""
from __future__ import annotations

from typing import Tuple

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from torch_geometric_erwin.nn.init import reset_linear
from torch_geometric_erwin.checks import check_int, check_tensor, is_power_of_two


def _check(stride: int, dimensionality: int) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or not is_power_of_two(stride):
        raise ValueError(f"stride must be a power of two, got {stride!r}")
    check_int("dimensionality", dimensionality)


@torch.no_grad()
def pool_positions(pos: Tensor, stride: int) -> Tuple[Tensor, Tensor]:
    """Centres ``[S / s, D]`` of groups of ``stride`` consecutive slots and the flattened offsets of the
    slots from their centre, ``[S / s, s * D]``."""
    groups = rearrange(pos.detach(), "(n s) d -> n s d", s=stride)
    centres = reduce(groups, "n s d -> n d", "mean")
    return centres, rearrange(groups - centres[:, None], "n s d -> n (s d)")


class BallPooling(nn.Module):
    r"""Ball pooling (eq. 12): every group of ``stride`` consecutive slots (the
    leaves of a ball of size ``stride``) becomes one slot at the ball's centre
    :math:`c`, with features

    .. math::
        x' = \mathrm{BatchNorm}\big(W [x_1, \dots, x_s,\; p_1 - c, \dots, p_s - c]\big).

    With ``stride = 1`` and equal widths the layer is the identity and has no
    parameters (the reference builds unused ones); with ``stride = 1`` and
    different widths it still projects.

    Args:
        in_channels (int): :math:`C_{in}`.
        out_channels (int): :math:`C_{out}`.
        stride (int): :math:`s`, a power of two.
        dimensionality (int): :math:`D`. (default: ``3``)

    Shapes: ``forward(x [S, C_in], pos [S, D]) -> (x' [S/s, C_out], pos' [S/s, D])``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dimensionality: int = 3):
        super().__init__()
        _check(stride, dimensionality)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.dimensionality = stride, dimensionality
        self.identity = stride == 1 and in_channels == out_channels
        if not self.identity:
            self.proj = nn.Linear(stride * (in_channels + dimensionality), out_channels)
            self.norm = nn.BatchNorm1d(out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.identity:
            reset_linear(self.proj)
            self.norm.reset_parameters()

    def forward(self, x: Tensor, pos: Tensor) -> Tuple[Tensor, Tensor]:
        check_tensor("x", x, ("num_slots", self.in_channels))
        check_tensor("pos", pos, (x.shape[0], self.dimensionality), floating=True)
        if x.shape[0] % self.stride:
            raise ValueError(f"x must have a multiple of stride={self.stride} rows (groups of stride slots are "
                             f"pooled into one), got {x.shape[0]}")
        if self.identity:
            return x, pos
        centres, rel_pos = pool_positions(pos, self.stride)
        x = torch.cat([rearrange(x, "(n s) c -> n (s c)", s=self.stride), rel_pos.to(x.dtype)], dim=1)
        return self.norm(self.proj(x)), centres

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, stride={self.stride})"


class BallUnpooling(nn.Module):
    r"""Ball unpooling (eq. 13): every coarse slot is refined into the ``stride``
    slots it was pooled from, combined with their features before pooling (the
    U-Net skip connection :math:`x^{skip}`):

    .. math::
        x_i = \mathrm{BatchNorm}\big(x^{skip}_i + [W (x', p_1 - c, \dots, p_s - c)]_i\big),
        \quad i = 1..s.

    Args:
        in_channels (int): coarse width :math:`C_{in}`.
        out_channels (int): fine width :math:`C_{out}` (that of the skip).
        stride (int): :math:`s`, a power of two (``1`` still merges the skip).
        dimensionality (int): :math:`D`. (default: ``3``)

    Shapes: ``forward(x [S/s, C_in], pos [S/s, D], skip [S, C_out], skip_pos [S, D]) -> [S, C_out]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dimensionality: int = 3):
        super().__init__()
        _check(stride, dimensionality)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.dimensionality = stride, dimensionality
        self.proj = nn.Linear(in_channels + stride * dimensionality, stride * out_channels)
        self.norm = nn.BatchNorm1d(out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_linear(self.proj)
        self.norm.reset_parameters()

    def forward(self, x: Tensor, pos: Tensor, skip: Tensor, skip_pos: Tensor) -> Tensor:
        check_tensor("x", x, ("num_coarse_slots", self.in_channels))
        check_tensor("pos", pos, (x.shape[0], self.dimensionality), floating=True)
        check_tensor("skip", skip, (self.stride * x.shape[0], self.out_channels))
        check_tensor("skip_pos", skip_pos, (skip.shape[0], self.dimensionality), floating=True)
        with torch.no_grad():
            groups = rearrange(skip_pos.detach(), "(n s) d -> n s d", s=self.stride)
            rel_pos = rearrange(groups - pos.detach()[:, None], "n s d -> n (s d)")
        refined = self.proj(torch.cat([x, rel_pos.to(x.dtype)], dim=1))
        return self.norm(skip + rearrange(refined, "n (s c) -> (n s) c", s=self.stride))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, stride={self.stride})"
