"""Quantization steps of network weights (bitstream/SPEC.md section 5), without torch.

``step(code) = M[code % 4] * 2**-(code // 4)`` with four float32 mantissas, so a decoder
rebuilds every step exactly from one byte; a weight is ``float32(q) * step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nxcodec.entropy import LaplacePrior

STEP_MANTISSAS = np.array([1.0, 2**-0.25, 2**-0.5, 2**-0.75], dtype=np.float32)
MAX_STEP_CODE = 255


def step_from_code(code: int) -> np.float32:
    """The exact float32 step of a step code."""
    if not 0 <= code <= MAX_STEP_CODE:
        raise ValueError(f"step code {code} out of range")
    return np.float32(np.ldexp(STEP_MANTISSAS[code % 4], -(code // 4)))


def code_for_step(step: float) -> int:
    """The step code whose step is nearest to ``step`` in log scale."""
    code = round(-4 * math.log2(max(step, 1e-30)))
    return int(min(max(code, 0), MAX_STEP_CODE))


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
