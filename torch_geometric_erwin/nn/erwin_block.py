r"""The Erwin transformer block: pre-norm ball attention and SwiGLU, each with a residual."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from torch_geometric_erwin.nn.ball_attention import BallAttention, BallGeometry
from torch_geometric_erwin.nn.rms_norm import RMSNorm
from torch_geometric_erwin.nn.swiglu import SwiGLU
from torch_geometric_erwin.checks import check_int, check_permutation, check_tensor


class ErwinBlock(nn.Module):
    r"""One Erwin transformer block (paper Sec. 4):

    .. math::
        X &\leftarrow X + \mathrm{BMSA}(\mathrm{RMSNorm}(X), P) \\
        X &\leftarrow X + \mathrm{SwiGLU}(\mathrm{RMSNorm}(X))

    Given a ``permutation`` of the slots (a rotated tree's order, eq. 11), the
    block runs on ``x[permutation]`` so that its balls are the rotated tree's
    balls, and returns the rows in the original slot order.

    Args:
        channels (int): width :math:`C`.
        num_heads (int): attention heads.
        ball_size (int): slots per ball.
        mlp_ratio (int): SwiGLU hidden width / :math:`C`. (default: ``4``)
        dimensionality (int): :math:`D` of the positions. (default: ``3``)
        backend (str): the ball attention's backend (see
            :class:`~torch_geometric_erwin.nn.BallAttention`). (default: ``"auto"``)

    Shapes:
        ``forward(x [S, C], pos [S, D]?, permutation [S]?, key_mask [S]?, geometry?) -> [S, C]``.
        ``geometry`` (a :class:`BallGeometry`) describes the order the balls are
        taken in (the permuted one when ``permutation`` is given) and replaces
        ``pos``.
    """

    def __init__(self, channels: int, num_heads: int, ball_size: int, mlp_ratio: int = 4,
                 dimensionality: int = 3, backend: str = "auto"):
        super().__init__()
        check_int("mlp_ratio", mlp_ratio)
        self.norm1 = RMSNorm(channels)
        self.attention = BallAttention(channels, num_heads, ball_size, dimensionality, backend)
        self.norm2 = RMSNorm(channels)
        self.mlp = SwiGLU(channels, mlp_ratio * channels)

    def reset_parameters(self) -> None:
        for module in (self.norm1, self.attention, self.norm2, self.mlp):
            module.reset_parameters()

    def forward(self, x: Tensor, pos: Optional[Tensor] = None, permutation: Optional[Tensor] = None,
                key_mask: Optional[Tensor] = None, geometry: Optional[BallGeometry] = None) -> Tensor:
        # before the norms, which would fail on a wrong width with torch's own message
        check_tensor("x", x, ("num_slots", self.attention.channels))
        if permutation is None:
            return self._forward(x, pos, key_mask, geometry)
        check_permutation("permutation", permutation, x.shape[0])
        return self.permuted(x, permutation, pos, key_mask, geometry)

    def permuted(self, x: Tensor, permutation: Tensor, pos: Optional[Tensor] = None,
                 key_mask: Optional[Tensor] = None, geometry: Optional[BallGeometry] = None) -> Tensor:
        """:meth:`forward` with a ``permutation`` the caller has checked already (a model's tree,
        checked once for all of its blocks): nothing is validated here."""
        out = self._forward(x[permutation], None if pos is None else pos[permutation],
                            None if key_mask is None else key_mask[permutation], geometry)
        return out.new_empty(out.shape).index_copy(0, permutation, out)

    def _forward(self, x: Tensor, pos: Optional[Tensor], key_mask: Optional[Tensor],
                 geometry: Optional[BallGeometry]) -> Tensor:
        x = x + self.attention(self.norm1(x), pos, key_mask, geometry)
        return x + self.mlp(self.norm2(x))

    def __repr__(self) -> str:
        attention = self.attention
        return (f"{self.__class__.__name__}({attention.channels}, num_heads={attention.num_heads}, "
                f"ball_size={attention.ball_size}, mlp_ratio={self.mlp.hidden_channels // attention.channels})")
