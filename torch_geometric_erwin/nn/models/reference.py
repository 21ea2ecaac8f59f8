"""Reading the reference code's checkpoints: its ``ErwinTransformer`` arguments and state dict."""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Union

from torch import Tensor

if TYPE_CHECKING:
    from torch_geometric_erwin.nn.models.erwin import Erwin


def from_reference(state_dict: Mapping[str, Tensor], c_in: int, c_hidden: Union[int, Sequence[int]],
                   ball_sizes: Sequence[int], enc_num_heads: Sequence[int], enc_depths: Sequence[int],
                   dec_num_heads: Sequence[int], dec_depths: Sequence[int], strides: Sequence[int],
                   rotate: float, decode: bool = True, mlp_ratio: int = 4, dimensionality: int = 3,
                   mp_steps: int = 3, model_class: Optional[type] = None, **kwargs) -> "Erwin":
    """An :class:`~torch_geometric_erwin.nn.Erwin` with the weights of a reference
    ``ErwinTransformer`` (also ``Erwin.from_reference``).

    Takes the reference constructor's arguments (an integer ``c_hidden`` is the old API's
    :math:`c \\cdot \\prod_{j<l} s_j`; ``rotate <= 0`` means no rotation, as in the reference) and
    its ``state_dict`` (keys may carry torch.compile's ``_orig_mod.`` prefix). Further keyword
    arguments (``out_channels``, ``padding``, ``knn``, ``radius``, ``activation_checkpointing``)
    go to :class:`~torch_geometric_erwin.nn.Erwin` (or ``model_class``, a subclass). Given the
    same inputs, ``edge_index`` and tree, the result equals the reference model's in eval mode
    (see the docs' "coming from the reference code"). The reference's fused projections (``qkv``
    with rows ``(heads channels three)``, SwiGLU's ``w1`` and ``w2``) are converted by the layers'
    state-dict hooks.
    """
    if model_class is None:
        from torch_geometric_erwin.nn.models.erwin import Erwin as model_class
    if isinstance(c_hidden, int):
        c_hidden = [c_hidden * math.prod(strides[:level]) for level in range(len(ball_sizes))]
    model = model_class(c_in, list(c_hidden), ball_sizes, enc_num_heads, enc_depths, dec_num_heads, dec_depths,
                        strides, rotate=float(rotate) if rotate > 0 else 0.0, decode=decode, mlp_ratio=mlp_ratio,
                        dimensionality=dimensionality, mp_steps=mp_steps, **kwargs)
    mapped = reference_keys(model, state_dict)
    if model.head is not None:
        mapped.update({f"head.{key}": value for key, value in model.head.state_dict().items()})
    model.load_state_dict(mapped, strict=True)
    return model


#: the reference's names inside a transformer block, and ours
BLOCK_PARTS = {"BMSA.pe_proj": "attention.pos_proj", "BMSA.qkv": "attention.qkv", "BMSA.proj": "attention.proj",
               "BMSA.sigma_att": "attention.sigma", "swiglu": "mlp"}


def reference_keys(model: "Erwin", state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The reference's ``state_dict`` under ``model``'s names (the decoder's levels counted from
    the finest, the bottleneck as the encoder's last level)."""
    last = len(model.ball_sizes) - 1
    rules = [
        (r"embed\.embed_fn\.", lambda m: "embedding.lin."),
        (r"embed\.mpnn\.message_fns\.", lambda m: "embedding.messages."),
        (r"embed\.mpnn\.update_fns\.", lambda m: "embedding.updates."),
        (r"encoder\.(\d+)\.pool\.", lambda m: f"pool.{m[1]}."),
        (r"bottleneck\.blocks\.", lambda m: f"encoder.{last}.blocks."),
        (r"decoder\.(\d+)\.unpool\.", lambda m: f"unpool.{last - 1 - int(m[1])}."),
        (r"decoder\.(\d+)\.blocks\.", lambda m: f"decoder.{last - 1 - int(m[1])}.blocks."),
    ]
    mapped = {}
    for key, value in state_dict.items():
        key = key.removeprefix("_orig_mod.")
        for pattern, target in rules:
            match = re.match(pattern, key)
            if match:
                key = target(match) + key[match.end():]
                break
        for old, new in BLOCK_PARTS.items():
            key = key.replace(f".{old}", f".{new}")
        if key.endswith("attention.sigma"):
            value = value.reshape(-1)
        if key.startswith("pool.") and model.pool[int(key.split(".")[1])].identity:
            continue  # the reference builds parameters for stride-1 pooling that it never uses
        mapped[key] = value
    return mapped
