"""The reference initialisation, shared by every layer of the package."""
from torch import nn


def reset_linear(lin: nn.Linear) -> None:
    """Erwin's initialisation of a linear layer: truncated normal weights (std 0.02, cut at +-2), zero bias."""
    nn.init.trunc_normal_(lin.weight, mean=0.0, std=0.02, a=-2.0, b=2.0)
    if lin.bias is not None:
        nn.init.zeros_(lin.bias)
