"""Input encodings of the experiment wrappers: sinusoidal, random Fourier and timestep features."""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn


class SinusoidalEncoding(nn.Module):
    r"""Sinusoidal features of **every** coordinate (airfoil, pipe, EAGLE with PE).

    .. math::
        \gamma(\mathbf{p}) = \big[\cos(2^k \pi p_d),\ \sin(2^k \pi p_d)\big]_{d < D,\ k < L}

    with :math:`L = \text{out\_channels} / (2D)` frequencies per coordinate. (The reference
    truncates a longer encoding to the feature width and so keeps only the first coordinate.)

    Shapes: input :math:`[N, D]`, output :math:`[N, \text{out\_channels}]`.
    """

    def __init__(self, dimensionality: int, out_channels: int):
        super().__init__()
        if dimensionality < 1 or out_channels < 2 * dimensionality or out_channels % (2 * dimensionality):
            raise ValueError(f"out_channels must be a positive multiple of 2 * dimensionality = "
                             f"{2 * dimensionality}, got {out_channels}")
        self.dimensionality, self.out_channels = dimensionality, out_channels
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(out_channels // (2 * dimensionality)),
                             persistent=False)

    def reset_parameters(self) -> None:
        """No trainable parameters."""

    def forward(self, pos: Tensor) -> Tensor:
        if pos.dim() != 2 or pos.size(-1) != self.dimensionality:
            raise ValueError(f"pos must have shape [N, {self.dimensionality}], got {tuple(pos.shape)}")
        angles = rearrange(pos, "n d -> n d 1") * self.freqs
        return rearrange(torch.stack([angles.cos(), angles.sin()], dim=-1), "n d k two -> n (d k two)")

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dimensionality}, {self.out_channels})"


class RandomFourierFeatures(nn.Module):
    r"""Random Fourier features :math:`[\cos(W\mathbf{p}), \sin(W\mathbf{p})]` with
    :math:`W \sim \mathcal{N}(0, \sigma^2)` of shape ``[out_channels / 2, dimensionality]`` (ShapeNet-Car).

    Shapes: input :math:`[N, D]`, output :math:`[N, \text{out\_channels}]`.
    """

    def __init__(self, dimensionality: int, out_channels: int, sigma: float = 1.0):
        super().__init__()
        if out_channels < 2 or out_channels % 2:
            raise ValueError(f"out_channels must be a positive even int, got {out_channels}")
        self.dimensionality, self.out_channels, self.sigma = dimensionality, out_channels, sigma
        self.proj = nn.Linear(dimensionality, out_channels // 2, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.proj.weight, 0.0, self.sigma)

    def forward(self, pos: Tensor) -> Tensor:
        angles = self.proj(pos)
        return torch.cat([angles.cos(), angles.sin()], dim=-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dimensionality}, {self.out_channels}, sigma={self.sigma})"


class TimestepEmbedding(nn.Module):
    r"""Transformer-style embedding of an integer time index (plasticity).

    .. math::
        \tau(t) = [\cos(t f_k), \sin(t f_k)]_{k < C/2}, \qquad f_k = \exp(-\ln(1000)\, k / (C/2))

    Shapes: input :math:`[N]` or :math:`[N, 1]`, output :math:`[N, C]`.
    """

    def __init__(self, out_channels: int = 64, max_period: float = 1000.0):
        super().__init__()
        if out_channels < 2 or out_channels % 2:
            raise ValueError(f"out_channels must be a positive even int, got {out_channels}")
        self.out_channels, self.max_period = out_channels, max_period
        half = out_channels // 2
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half),
                             persistent=False)

    def reset_parameters(self) -> None:
        """No trainable parameters."""

    def forward(self, t: Tensor) -> Tensor:
        angles = t.reshape(-1, 1).to(self.freqs.dtype) * self.freqs
        return torch.cat([angles.cos(), angles.sin()], dim=-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.out_channels})"
