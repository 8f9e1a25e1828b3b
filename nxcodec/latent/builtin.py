"""The built-in context models of version 8 shape streams (SPEC.md section 14).

A shape stream's two context models cost about a third of its bytes at the low qualities
(740 of 981 parameters), yet another mesh's models, frozen, code a mesh's latents about
as well as its own. So version 8 lets a stream leave them out and use these: a pair of
3-D context models, 8 wide with 2 hidden layers, fitted once on synthetic shapes
(``bench/train_context_3d.py``) and stored as fixed-point integers in
``context_3d.json``. The file is normative: its SHA-256 is pinned here and in the spec.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from nxcodec.latent.context import FixedLayer

PATH = Path(__file__).with_name("context_3d.json")
SHA256 = "1a61a087b758e9ea537be8f9cb5f17ebb96de547937029577864f0a944fe2e63"  # of context_3d.json (SPEC.md 14.2)
WIDTH, LAYERS = 8, 2  # the configs whose context models may be the built-in ones
SHIFT = 10  # every tensor's step is 2**-SHIFT
NETWORKS = ("arm_a", "arm_b")


@lru_cache(maxsize=1)
def integers() -> dict[str, np.ndarray]:
    """The built-in tensors' integers by stream name (``arm_a.0.weight`` ...), checked against the pinned hash."""
    data = PATH.read_bytes()
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise RuntimeError(f"{PATH} does not match the SHA-256 the format pins: the installation is damaged")
    return {name: np.asarray(v, dtype=np.int64) for name, v in json.loads(data)["tensors"].items()}


def layers(network: str) -> list[FixedLayer]:
    """The fixed-point layers of built-in ``arm_a`` or ``arm_b``, as :func:`nxcodec.latent.stream.fixed_layers`."""
    ints = integers()
    names = [n[: -len(".weight")] for n in ints if n.startswith(network + ".") and n.endswith(".weight")]
    return [FixedLayer(ints[f"{n}.weight"], ints[f"{n}.bias"], SHIFT, SHIFT) for n in names]


def values() -> dict[str, np.ndarray]:
    """The built-in tensors as the real numbers they stand for (exact in binary32): what an encoder fits with."""
    return {name: q.astype(np.float32) * np.float32(2.0**-SHIFT) for name, q in integers().items()}
