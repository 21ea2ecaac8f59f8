r"""An :class:`~torch_geometric_erwin.nn.Erwin`'s weights under the reference ``ErwinTransformer``'s names:
what a checkpoint of the reference code holds, to test loading one without it."""
from __future__ import annotations

from typing import Dict

from einops import rearrange
from torch import Tensor

from torch_geometric_erwin.nn.models.reference import BLOCK_PARTS

_EMBEDDING = {"lin": "embed.embed_fn", "messages": "embed.mpnn.message_fns", "updates": "embed.mpnn.update_fns"}


def reference_state_dict(model) -> Dict[str, Tensor]:
    r"""The backbone weights of ``model`` (an :class:`~torch_geometric_erwin.nn.Erwin` without ``head``)
    under the reference's names: ``embed.*``, ``encoder.<l>.blocks/pool``, ``bottleneck.blocks``,
    ``decoder.<i>.unpool/blocks`` with the decoder levels in the reference's coarsest-first order, and
    ``BMSA.*`` / ``swiglu`` inside the blocks. :meth:`Erwin.from_reference` inverts it:

    .. code-block:: python

        Erwin.from_reference(reference_state_dict(model), **reference_config)  # the same weights

    The parameters the reference builds for stride-1 pooling and never uses are absent (``from_reference``
    skips them), and each attention's ``sigma_att`` is one value per head, flat (``from_reference``
    takes it in any shape)."""
    if getattr(model, "head", None) is not None:
        raise ValueError("reference_state_dict takes a backbone without a head (out_channels=None): the "
                         "reference ErwinTransformer has none")
    last = len(model.ball_sizes) - 1
    out = {}
    for key, value in model.state_dict().items():
        if ".attention.in_proj." in key:
            # the reference's projection interleaves its rows as (heads channels three)
            heads = model.get_submodule(key.rpartition(".in_proj.")[0]).num_heads
            out[_reference_key(key.replace(".in_proj.", ".qkv."), last)] = rearrange(
                value, "(three h e) ... -> (h e three) ...", three=3, h=heads)
        elif ".mlp.w12." in key:  # the reference's SwiGLU has W_1 (the gate) and W_2 apart
            for name, part in zip(("w1", "w2"), value.chunk(2)):
                out[_reference_key(key.replace(".w12.", f".{name}."), last)] = part
        else:
            out[_reference_key(key, last)] = value
    return out


def _reference_key(key: str, last: int) -> str:
    """Our ``key`` (with the attention's projection named ``qkv``) under the reference's name."""
    head, _, rest = key.partition(".")
    level, _, tail = rest.partition(".")
    if head == "embedding":
        key = f"{_EMBEDDING[level]}.{tail}"
    elif head == "pool":
        key = f"encoder.{level}.pool.{tail}"
    elif head == "unpool":
        key = f"decoder.{last - 1 - int(level)}.unpool.{tail}"
    elif head == "decoder":
        key = f"decoder.{last - 1 - int(level)}.{tail}"
    elif head == "encoder" and int(level) == last:
        key = f"bottleneck.{tail}"
    for theirs, ours in BLOCK_PARTS.items():
        key = key.replace(f".{ours}", f".{theirs}")
    return key
