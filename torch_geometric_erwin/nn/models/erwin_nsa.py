r"""Erwin NSA: Erwin's ball tree with native sparse attention instead of the U-Net (Lapautre et al. 2025)."""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint
from torch_geometric.data import Data

from torch_geometric_erwin.checks import check_angle, check_int
from torch_geometric_erwin.nn.ball_attention import BallAttention
from torch_geometric_erwin.nn.embedding import ErwinEmbedding
from torch_geometric_erwin.nn.init import reset_linear
from torch_geometric_erwin.nn.nsa_conv import QUERY_CHUNK_SIZE, ErwinNSAConv, NSAGeometry
from torch_geometric_erwin.nn.rms_norm import RMSNorm
from torch_geometric_erwin.nn.swiglu import SwiGLU
from torch_geometric_erwin.nn.models.base import BallTreeModel, resolve_graph_transform
from torch_geometric_erwin.nn.models.serialization import Configurable
from torch_geometric_erwin.tree import BallTree
from torch_geometric_erwin.tree.ball_tree import PADDINGS

#: Table 3 of the NSA paper; omitted values follow the reference code's effective settings
#: (head width 16, one key/value head) and Erwin's defaults (rotation 45, 3 MPNN steps, MLP ratio 4).
PRESETS = {
    "cosmology-base": dict(channels=64, depth=4, local_ball_size=128, compress_ball_size=32, num_selected=16,
                      num_heads=4, num_kv_heads=1, rotate=45.0, mp_steps=3, mlp_ratio=4),
    "md-base": dict(channels=128, depth=2, local_ball_size=32, compress_ball_size=32, num_selected=16,
               num_heads=8, num_kv_heads=1, rotate=45.0, mp_steps=3, mlp_ratio=4),
    "shapenet-base": dict(channels=64, depth=6, local_ball_size=128, compress_ball_size=32, num_selected=16,
                     num_heads=4, num_kv_heads=1, rotate=45.0, mp_steps=3, mlp_ratio=4),
}

#: earlier names of the presets, still accepted
_RENAMED = {"cosmology": "cosmology-base", "md": "md-base", "shapenet": "shapenet-base"}

class ErwinNSABlock(nn.Module):
    r"""Pre-norm residual block: :math:`x \leftarrow x + \mathrm{NSA}(\mathrm{RMSNorm}(x))`,
    :math:`x \leftarrow x + \mathrm{SwiGLU}(\mathrm{RMSNorm}(x))`.

    Shapes: ``forward(x [S, C], pos [S, D], ptr [B+1], mask [S], geometry?) -> [S, C]`` in tree
    order, ``geometry`` the convolution's :class:`~torch_geometric_erwin.nn.nsa_conv.NSAGeometry`
    of ``pos`` and ``mask`` (formed by the convolution if not given).
    """

    def __init__(self, conv: ErwinNSAConv, mlp_ratio: int = 4):
        super().__init__()
        channels = conv.channels
        self.norm1 = RMSNorm(channels)
        self.conv = conv
        self.norm2 = RMSNorm(channels)
        self.mlp = SwiGLU(channels, mlp_ratio * channels)

    def reset_parameters(self) -> None:
        for module in (self.norm1, self.conv, self.norm2, self.mlp):
            module.reset_parameters()

    def forward(self, x: Tensor, pos: Tensor, ptr: Tensor, mask: Tensor,
                geometry: Optional[NSAGeometry] = None) -> Tensor:
        x = x + self.conv(self.norm1(x), pos, ptr=ptr, mask=mask, geometry=geometry)
        return x + self.mlp(self.norm2(x))


class ErwinNSA(Configurable, BallTreeModel):
    r"""Erwin NSA (Lapautre et al. 2025, Sec. 4.1, Fig. 1).

    .. math::
        h^{(0)} = \mathrm{MPNN}(W_{\mathrm{in}} x), \qquad
        h^{(i+1)} = \mathrm{Block}_i\big(h^{(i)}\big) \text{ on the leaves of the ball tree,}

    with :class:`ErwinNSABlock` blocks built on :class:`ErwinNSAConv`; block
    ``i`` works on the rotated tree's leaf order when ``i`` is odd (Erwin's
    cross-ball alternation, ``rotate != 0``). There is no pooling: every block
    sees all leaves. Rows come back in the input node order (padding dropped).

    Args:
        in_channels: input features per node.
        channels: :math:`C`.
        depth: number of blocks.
        num_heads, num_kv_heads, head_dim: heads of the NSA branches
            (:class:`ErwinNSAConv`); the local ball attention uses ``num_heads``.
        compress_ball_size, local_ball_size, num_selected: :math:`l, m, k`.
        rotate: rotation angle (degrees) of the alternate tree; ``0`` for none.
        mp_steps: message-passing steps of the embedding.
        mlp_ratio: SwiGLU hidden width / :math:`C`.
        out_channels: if given, a final ``Linear(C, out_channels)``.
        dimensionality: :math:`D` of the positions.
        padding: tree padding (``"pow2"``, the reference's, or ``"compact"``).
        query_chunk_size, checkpoint, mask_padding: see :class:`ErwinNSAConv`.
        knn: neighbours of the kNN graph (self-loops included) built for the
            embedding when no ``edge_index`` is given.
        graph_transform: the transform that builds the embedding's graph in place
            of the kNN graph (as :class:`~torch_geometric_erwin.nn.Erwin`'s).
        activation_checkpointing: in training with autograd, run every block
            under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant): the
            forward pass keeps each block's input only and the backward pass runs
            the block again (as :class:`~torch_geometric_erwin.nn.Erwin`'s; the
            ``checkpoint`` of the convolution, inside a block, recomputes its
            query chunks on top), and every message-passing step of the embedding. An attribute
            that may be switched at any time; eval mode and ``torch.no_grad``
            are unaffected.

    Shapes: ``forward(x [N, F], pos [N, D], batch [N]?, edge_index [2, E]?, tree?) -> [N, out]``
    or ``forward(data)``.
    """

    def __init__(self, in_channels: int, channels: int = 64, depth: int = 4, num_heads: int = 4,
                 num_kv_heads: int = 1, head_dim: Optional[int] = None, compress_ball_size: int = 32,
                 local_ball_size: int = 128, num_selected: int = 16, rotate: float = 45.0, mp_steps: int = 3,
                 mlp_ratio: int = 4, out_channels: Optional[int] = None, dimensionality: int = 3,
                 padding: str = "pow2", query_chunk_size: int = QUERY_CHUNK_SIZE, checkpoint: bool = True,
                 mask_padding: bool = True, knn: int = 16, activation_checkpointing: bool = False,
                 graph_transform: Optional[Callable[[Data], Data]] = None):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("depth", depth), ("mlp_ratio", mlp_ratio)):
            check_int(name, value)
        check_angle("rotate", rotate)
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if not isinstance(activation_checkpointing, bool):
            raise TypeError(f"activation_checkpointing must be a bool, got {activation_checkpointing!r}")
        self.in_channels, self.channels, self.depth = in_channels, channels, depth
        self.out_channels = channels if out_channels is None else out_channels
        self.rotate, self.padding, self.dimensionality = float(rotate), padding, dimensionality
        self.knn = check_int("knn", knn)
        self.graph_transform = resolve_graph_transform(graph_transform, self.knn)
        self.activation_checkpointing = activation_checkpointing
        self.embedding = ErwinEmbedding(in_channels, channels, mp_steps, dimensionality)
        self.blocks = nn.ModuleList([
            ErwinNSABlock(ErwinNSAConv(
                channels, num_heads, BallAttention(channels, num_heads, local_ball_size, dimensionality),
                compress_ball_size=compress_ball_size, local_ball_size=local_ball_size,
                num_selected=num_selected, head_dim=head_dim, num_kv_heads=num_kv_heads,
                dimensionality=dimensionality, query_chunk_size=query_chunk_size, checkpoint=checkpoint,
                mask_padding=mask_padding), mlp_ratio)
            for _ in range(depth)])
        self.head = None if out_channels is None else nn.Linear(channels, out_channels)
        self.region_size = self.blocks[0].conv.region_size
        self.reset_parameters()

    @classmethod
    def from_preset(cls, name: str, in_channels: int, **overrides) -> "ErwinNSA":
        """Build the model with a preset of :data:`PRESETS` (keyword overrides win). Presets are
        named ``<task>-<size>`` like Erwin's; the NSA paper has one size per task, ``base``."""
        if name in _RENAMED:
            warnings.warn(f"the ErwinNSA preset {name!r} is now {_RENAMED[name]!r}", DeprecationWarning,
                          stacklevel=2)
            name = _RENAMED[name]
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(in_channels, **{**PRESETS[name], **overrides})

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()
        for block in self.blocks:
            block.reset_parameters()
        if self.head is not None:
            reset_linear(self.head)

    @property
    def tree_config(self) -> dict:
        """Arguments of the ball tree this model needs (for :class:`BallTreeTransform`)."""
        return dict(ball_sizes=[self.region_size], strides=[], padding=self.padding)

    @property
    def tree_rotation(self) -> Optional[float]:
        """The angle of the rotated tree (``rotate``) that every second block attends in, or None
        (``rotate=0`` or a single block)."""
        return self.rotate if self.rotate and self.depth > 1 else None

    def _check_tree(self, tree: BallTree) -> None:
        if bool((tree.ptr % self.region_size).any()):
            raise ValueError(f"tree slot counts must be multiples of {self.region_size}: build it with "
                             f"ball_sizes=[{self.region_size}] (model.tree_config)")
        if self.tree_rotation is not None and not tree.rotated:
            raise ValueError("the model alternates with a rotated tree (rotate != 0) but tree has no rotated "
                             "order: build it with rotate=model.rotate (RotatedTreeTransform)")

    def network(self, x: Tensor, pos: Tensor, edge_index: Optional[Tensor], tree: BallTree) -> Tensor:
        """The network of :meth:`forward` on inputs it has checked and the tree it has built (or was
        given), ``pos`` in float32 at least (see :class:`BallTreeModel`)."""
        checkpointed = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        h = self.embedding(x, pos, edge_index, check_edges=False, checkpoint=checkpointed)[tree.index]
        slot_pos, mask = pos[tree.index], tree.mask
        rotated = tree.rotated[0] if self.tree_rotation is not None else None
        # every block has the same ball sizes, so the balls' geometry of each tree order is formed once
        conv = self.blocks[0].conv
        geometry = [conv.geometry(slot_pos, mask)]
        if rotated is not None and len(self.blocks) > 1:
            geometry.append(conv.geometry(slot_pos[rotated], mask[rotated]))
        for i, block in enumerate(self.blocks):
            args = (block, h, slot_pos, tree.ptr, mask, rotated if i % 2 else None, geometry[i % len(geometry)])
            h = (activation_checkpoint(self._block, *args, use_reentrant=False) if checkpointed
                 else self._block(*args))
        out = h[tree.node_slots(x.shape[0])]
        return out if self.head is None else self.head(out)

    @staticmethod
    def _block(block: ErwinNSABlock, h: Tensor, slot_pos: Tensor, ptr: Tensor, mask: Tensor,
               permutation: Optional[Tensor], geometry: NSAGeometry) -> Tensor:
        """``block`` on the slots in tree order, or in the order of ``permutation`` (rows returned in
        tree order), ``geometry`` that of the same order."""
        if permutation is None:
            return block(h, slot_pos, ptr, mask, geometry)
        out = block(h[permutation], slot_pos[permutation], ptr, mask[permutation], geometry)
        return torch.empty_like(out).index_copy_(0, permutation, out)

    def __repr__(self) -> str:
        conv = self.blocks[0].conv
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, channels={self.channels}, "
                f"depth={self.depth}, local_ball_size={conv.local_ball_size}, "
                f"compress_ball_size={conv.compress_ball_size}, num_selected={conv.num_selected}, "
                f"num_heads={conv.num_heads}, rotate={self.rotate}"
                f"{', activation_checkpointing=True' if self.activation_checkpointing else ''})")
