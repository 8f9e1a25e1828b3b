"""Sine layers (SIREN) and the Fourier encoding of coordinates."""

from __future__ import annotations

import math

import torch
from torch import nn


def fourier_encode(x: torch.Tensor, n_freq: int) -> torch.Tensor:
    """``[x, sin(2^i pi x), cos(2^i pi x)]`` for ``i < n_freq``; ``x`` alone if ``n_freq`` is 0."""
    if n_freq == 0:
        return x
    freqs = (2.0 ** torch.arange(n_freq, dtype=x.dtype, device=x.device)) * math.pi
    angles = (x[..., None] * freqs).flatten(-2)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


def siren_init_(weight: torch.Tensor, bias: torch.Tensor, fan_in: int, w0: float, first: bool) -> None:
    """SIREN initialisation: U(-1/fan_in, 1/fan_in) for a first layer, U(+-sqrt(6/fan_in)/w0) after.

    Biases take PyTorch's linear default, U(+-1/sqrt(fan_in)), which spreads the phases.
    """
    bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / w0
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        bias.uniform_(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))


class SineLayer(nn.Module):
    """``sin(w0 * (x W + b))``, or the plain affine map when ``w0`` is 0 (an output layer)."""

    def __init__(self, fan_in: int, fan_out: int, w0: float, first: bool = False) -> None:
        super().__init__()
        self.w0 = w0
        self.weight = nn.Parameter(torch.empty(fan_in, fan_out))
        self.bias = nn.Parameter(torch.empty(fan_out))
        siren_init_(self.weight, self.bias, fan_in, w0 or 1.0, first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.addmm(self.bias, x, self.weight)
        return torch.sin(self.w0 * y) if self.w0 else y


class StackedSineLayer(nn.Module):
    """K sine layers side by side, weights ``(K, in, out)``: one per expert.

    ``forward`` applies expert k to slice k of a ``(K, N, in)`` batch (training, every
    expert on every point); ``forward_one`` applies a single expert (routed decoding).
    """

    def __init__(self, k: int, fan_in: int, fan_out: int, w0: float) -> None:
        super().__init__()
        self.w0 = w0
        self.weight = nn.Parameter(torch.empty(k, fan_in, fan_out))
        self.bias = nn.Parameter(torch.empty(k, 1, fan_out))
        for i in range(k):
            siren_init_(self.weight[i], self.bias[i, 0], fan_in, w0 or 1.0, first=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.baddbmm(self.bias, x, self.weight)
        return torch.sin(self.w0 * y) if self.w0 else y

    def forward_one(self, x: torch.Tensor, k: int) -> torch.Tensor:
        y = torch.addmm(self.bias[k, 0], x, self.weight[k])
        return torch.sin(self.w0 * y) if self.w0 else y
