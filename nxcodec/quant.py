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
from typing import Callable

import numpy as np
import torch

from nxcodec.entropy import MAX_SYMBOL, fit_prior
from nxcodec.steps import (MAX_STEP_CODE, STEP_MANTISSAS, QuantizedTensor, code_for_step, dequantize,  # noqa: F401
                           step_from_code)



def quantize(w: np.ndarray | torch.Tensor, code: int) -> np.ndarray | None:
    """Integers ``round(w / step)``, or None where some would fall outside the coder's range."""
    w = w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
    q = np.rint(w.astype(np.float32) / step_from_code(code))
    if q.size and np.abs(q).max() > MAX_SYMBOL:
        return None
    return q.astype(np.int64)


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
    networks: "list[OrderedDict[str, torch.Tensor]]",
    distortion: Callable[[list[dict[str, torch.Tensor]]], list[float]],
    n_params: int | list[int],
    lam_db: float,
) -> list[dict[str, int]]:
    """Choose each tensor's step code by rate-distortion, one tensor at a time, for several networks at once.

    ``networks`` holds each network's tensors (same names); ``distortion`` maps
    one set of (dequantized) tensors per network to each network's MSE of its decoded
    signal, so all networks are measured in one evaluation. Rate is counted in bits per
    parameter (``n_params``, or one count per network). Tensors not yet chosen keep their float values (their
    rate is counted at a step of std/256), so each tensor's choice sees its own effect; a first sweep tries every other code from
    std to std/1024 (and finer while the finest keeps winning: a SIREN's first layer over
    a long time axis needs phase precision far below std/1024), a second refines by one.
    """
    names = list(networks[0])
    counts = n_params if isinstance(n_params, list) else [n_params] * len(networks)
    current: list[dict[str, QuantizedTensor]] = []
    for tensors in networks:
        chosen = {}
        for name, w in tensors.items():
            code = code_for_step(_spread(w) / 256)
            qt = quantize_tensor(w, code)
            while qt is None:
                code -= 1
                qt = quantize_tensor(w, code)
            chosen[name] = qt
        current.append(chosen)

    def as_tensor(i: int, name: str, qt: QuantizedTensor) -> torch.Tensor:
        w = networks[i][name]
        return torch.from_numpy(dequantize(qt.ints, qt.code)).reshape(w.shape).to(w.device)

    # Tensors not yet chosen keep their float values: a step of std/256 is far from lossless
    # for a first sine layer over a long axis (its phase error alone can cost 20 dB), and a
    # distortion floor set by the undecided tensors hides each choice's own effect.
    values = [{n: w.clone() for n, w in tensors.items()} for tensors in networks]
    bits = [{n: qt.bits() for n, qt in cur.items()} for cur in current]

    def best_of(name: str, candidates: list[list[int]]) -> None:
        best = [(math.inf, cur[name]) for cur in current]
        for j in range(max(len(c) for c in candidates)):
            trial: list[QuantizedTensor | None] = []
            for i, cands in enumerate(candidates):
                qt = quantize_tensor(networks[i][name], cands[j]) if j < len(cands) else None
                trial.append(qt)
                values[i][name] = as_tensor(i, name, qt) if qt is not None else as_tensor(i, name, best[i][1])
            mses = distortion(values)
            for i, qt in enumerate(trial):
                if qt is None:
                    continue
                rate = (sum(bits[i].values()) - bits[i][name] + qt.bits()) / counts[i]
                cost = 10 * math.log10(max(mses[i], 1e-20)) + lam_db * rate
                if cost < best[i][0]:
                    best[i] = (cost, qt)
        for i, (_, qt) in enumerate(best):
            current[i][name], bits[i][name] = qt, qt.bits()
            values[i][name] = as_tensor(i, name, qt)

    def go_finer(name: str) -> None:
        """For each network whose finest code tried so far wins, try two codes finer, and again."""
        fine = [code_for_step(_spread(t[name]) / 1024) for t in networks]
        active = [True] * len(networks)
        while True:
            before = [cur[name].code for cur in current]
            active = [a and b >= f and b + 2 <= MAX_STEP_CODE for a, b, f in zip(active, before, fine)]
            if not any(active):
                return
            best_of(name, [[b, b + 2] if a else [] for a, b in zip(active, before)])
            active = [a and cur[name].code != b for a, b, cur in zip(active, before, current)]

    for name in names:
        best_of(name, [list(range(max(code_for_step(_spread(t[name])), 0),
                                  min(code_for_step(_spread(t[name]) / 1024), MAX_STEP_CODE) + 1, 2))
                       for t in networks])
        go_finer(name)
    for name in names:
        best_of(name, [list(range(max(cur[name].code - 1, 0), min(cur[name].code + 1, MAX_STEP_CODE) + 1))
                       for cur in current])
    return [{n: qt.code for n, qt in cur.items()} for cur in current]


def _spread(w: torch.Tensor) -> float:
    """A tensor's scale for the step search: its std (its magnitude if it has one value)."""
    return max(float(w.detach().float().std()) if w.numel() > 1 else float(w.detach().abs().max()), 1e-6)
