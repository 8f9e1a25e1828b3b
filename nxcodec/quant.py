"""Per-tensor uniform quantization of the network and the rate-distortion choice of steps.

A tensor ``w`` is stored as integers ``round(w / step)``. Steps come from a fixed table of
quarter-octaves, ``step(code) = 2**(-code / 4) = M[code % 4] * 2**-(code // 4)`` with the four float32
mantissas ``M`` below, so the decoder rebuilds every step exactly from one byte.
The encoder picks each tensor's step by minimising ``10 log10(MSE) + lambda * bits / P``
over the ``P`` parameters: ``lambda`` is how many dB one more bit per parameter must buy.
Measuring rate per parameter (not per pixel) keeps one ``lambda`` right for networks and
signals of any size, since the network is already sized to the rate.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from nxcodec.entropy import MAX_SYMBOL, LaplacePrior, fit_prior

STEP_MANTISSAS = np.array([1.0, 2**-0.25, 2**-0.5, 2**-0.75], dtype=np.float32)
MAX_STEP_CODE = 255


def step_from_code(code: int) -> np.float32:
    """The exact float32 step of a step code (bitstream/SPEC.md, "Steps")."""
    if not 0 <= code <= MAX_STEP_CODE:
        raise ValueError(f"step code {code} out of range")
    return np.float32(np.ldexp(STEP_MANTISSAS[code % 4], -(code // 4)))


def code_for_step(step: float) -> int:
    """The step code whose step is nearest to ``step`` in log scale."""
    code = round(-4 * math.log2(max(step, 1e-30)))
    return int(min(max(code, 0), MAX_STEP_CODE))


def quantize(w: np.ndarray | torch.Tensor, code: int) -> np.ndarray | None:
    """Integers ``round(w / step)``, or None where some would fall outside the coder's range."""
    w = w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
    q = np.rint(w.astype(np.float32) / step_from_code(code))
    if q.size and np.abs(q).max() > MAX_SYMBOL:
        return None
    return q.astype(np.int64)


def dequantize(q: np.ndarray, code: int) -> np.ndarray:
    """``q * step`` in float32: exact and the same on every machine."""
    return q.astype(np.float32) * step_from_code(code)


@dataclass
class QuantizedTensor:
    """One tensor as it is stored: step code, prior and integers."""

    code: int
    prior: LaplacePrior
    ints: np.ndarray

    def bits(self) -> float:
        return self.prior.code_length_bits(self.ints)


def quantize_tensor(w: np.ndarray | torch.Tensor, code: int) -> QuantizedTensor | None:
    """Quantize with ``code`` and fit the prior that codes the result in the fewest bits."""
    q = quantize(w, code)
    if q is None:
        return None
    return QuantizedTensor(code, fit_prior(q), q)


def quantize_model(tensors: "OrderedDict[str, torch.Tensor]", codes: dict[str, int]) -> "OrderedDict[str, QuantizedTensor]":
    """Quantize every tensor with its code (codes must be valid for the tensors)."""
    out: OrderedDict[str, QuantizedTensor] = OrderedDict()
    for name, w in tensors.items():
        qt = quantize_tensor(w, codes[name])
        if qt is None:
            raise ValueError(f"step of {name} too fine for the coder")
        out[name] = qt
    return out


def search_steps(
    tensors: "OrderedDict[str, torch.Tensor]",
    distortion: Callable[[dict[str, torch.Tensor]], float],
    n_params: int,
    lam_db: float,
) -> dict[str, int]:
    """Choose each tensor's step code by rate-distortion, one tensor at a time.

    ``distortion`` maps a full set of (dequantized) tensors to an MSE of the decoded
    signal; rate is counted in bits per parameter (``n_params``). All tensors start
    nearly lossless (a step of std/256), so each tensor's choice sees its own effect;
    a first sweep tries every other code from std to std/1024 (and finer while the finest
    keeps winning: a SIREN's first layer over a long time axis needs phase precision far
    below std/1024), a second refines by one.
    """
    std = {n: max(float(w.detach().float().std()) if w.numel() > 1 else float(w.detach().abs().max()), 1e-6)
           for n, w in tensors.items()}
    current: dict[str, QuantizedTensor] = {}
    for name, w in tensors.items():
        code = code_for_step(std[name] / 256)
        qt = quantize_tensor(w, code)
        while qt is None:
            code -= 1
            qt = quantize_tensor(w, code)
        current[name] = qt

    def as_tensors() -> dict[str, torch.Tensor]:
        return {
            n: torch.from_numpy(dequantize(qt.ints, qt.code)).reshape(tensors[n].shape).to(tensors[n].device)
            for n, qt in current.items()
        }

    bits = {n: qt.bits() for n, qt in current.items()}

    def best_of(name: str, candidates: range) -> None:
        best_cost, best_qt = math.inf, current[name]
        for code in candidates:
            qt = quantize_tensor(tensors[name], code)
            if qt is None:
                continue
            current[name] = qt
            mse = distortion(as_tensors())
            rate = (sum(bits.values()) - bits[name] + qt.bits()) / n_params
            cost = 10 * math.log10(max(mse, 1e-20)) + lam_db * rate
            if cost < best_cost:
                best_cost, best_qt = cost, qt
        current[name], bits[name] = best_qt, best_qt.bits()

    def go_finer(name: str) -> None:
        """While the finest code tried so far wins, try two codes finer."""
        fine = code_for_step(std[name] / 1024)
        while current[name].code >= fine and current[name].code + 2 <= MAX_STEP_CODE:
            prev = current[name].code
            best_of(name, range(prev, prev + 3, 2))
            if current[name].code == prev:
                break

    for name in tensors:
        coarse, fine = code_for_step(std[name]), code_for_step(std[name] / 1024)
        best_of(name, range(max(coarse, 0), min(fine, MAX_STEP_CODE) + 1, 2))
        go_finer(name)
    for name in tensors:
        c = current[name].code
        best_of(name, range(max(c - 1, 0), min(c + 1, MAX_STEP_CODE) + 1))
    return {n: qt.code for n, qt in current.items()}
