"""Shared fixtures: small real images and one encoded stream reused across tests."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

# One thread per test process, set before torch loads and inherited by the CLI subprocesses: pytest-xdist runs
# one process per core, and small torch ops ran several times slower with threads contending for the cores
# (a 17^3 shape fit: 57 s with two threads beside another job, 16 s with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from nxcodec.codec import EncodeOptions, encode_signal  # noqa: E402
from nxcodec.errors import NxcError  # noqa: E402
from nxcodec.signals import for_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
if os.environ.get("NXCODEC_TEST_WITHOUT_DATA"):  # run the suite as on a fresh clone without ../shared
    KODAK = ROOT / "no-such-folder"
SAMPLE = ROOT / "nxcodec" / "samples" / "hopper.png"
FAST_ITERS = 800
# PSNR that a FAST_ITERS fit of the 48x40 crop must reach: measured per source image
PSNR_FLOOR = 24.0 if (KODAK / "kodim23.png").exists() else 21.0


CONFORMANCE = ROOT / "bitstream" / "conformance"


@pytest.fixture
def escapes_read(monkeypatch) -> list[int]:
    """Every escape value (SPEC.md 12) the latent decoder reads while the test runs, in order."""
    from nxcodec.latent import stream

    seen: list[int] = []
    real = stream.read_escapes

    def spy(decoder, n, first):
        e = real(decoder, n, first)
        seen.extend(e.tolist())
        return e

    monkeypatch.setattr(stream, "read_escapes", spy)
    return seen


def conformance_cases(*folders: str) -> list[dict]:
    """The manifest entries of conformance folders (relative to bitstream/conformance), every file named by its
    path from there, and ``folder`` added."""
    import json

    out = []
    for folder in folders:
        for case in json.loads((CONFORMANCE / folder / "manifest.json").read_text()):
            out.append({**case, "folder": folder, **{k: f"{folder}/{case[k]}" for k in ("stream", "expected", "field")
                                                     if k in case}})
    return out


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing torch fails (what a torch-free decoder must survive)."""
    guard = ("import builtins\n"
             "real = builtins.__import__\n"
             "def guard(name, *a, **k):\n"
             "    if name == 'torch' or name.startswith('torch.'):\n"
             "        raise ImportError('torch is not allowed here')\n"
             "    return real(name, *a, **k)\n"
             "builtins.__import__ = guard\n")
    return subprocess.run([sys.executable, "-c", guard + code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def shift_biases_toward_zero(monkeypatch) -> None:
    """Make every fixed-point layer align a bias finer than its accumulator by shifting toward zero instead of by
    floor (SPEC.md 9.4): the misreading the written floor conformance cases exist to catch."""
    from nxcodec.latent import context

    def toward_zero(layer: context.FixedLayer) -> np.ndarray:
        shift = context.FRAC_BITS + layer.w_shift - layer.b_shift
        b = layer.bias
        return (b << shift if shift >= 0 else np.sign(b) * (np.abs(b) >> -shift)).astype(np.float64)

    monkeypatch.setattr(context.FixedLayer, "aligned_bias", property(toward_zero))


def spy_codings(monkeypatch, module, name: str) -> list[tuple[float, bool, int | None, float | None]]:
    """Replace the coder ``module.name`` by a spy that records every call as (lambda, trim, coded bits, bits
    allowed); the coded bits are None where it raised (over its target)."""
    real = getattr(module, name)
    signature = inspect.signature(real)
    calls: list[tuple[float, bool, int | None, float | None]] = []

    def spy(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        lam, trim, allowed = (bound.arguments[k] for k in ("lam", "trim", "bits_allowed"))
        try:
            best = real(*args, **kwargs)
        except NxcError:
            calls.append((lam, trim, None, allowed))
            raise
        calls.append((lam, trim, 8 * len(best.data), allowed))
        return best

    monkeypatch.setattr(module, name, spy)
    return calls


def real_image(size: tuple[int, int] = (48, 40)) -> np.ndarray:
    """A crop of a real photo: Kodak when ../shared/data is present, else the bundled sample."""
    w, h = size
    if (KODAK / "kodim23.png").exists():
        im = Image.open(KODAK / "kodim23.png").convert("RGB")
        return np.asarray(im)[180 : 180 + h, 300 : 300 + w].copy()
    im = Image.open(SAMPLE).convert("RGB")
    return np.asarray(im)[150 : 150 + h, 100 : 100 + w].copy()


def fast_encode(array: np.ndarray, **kwargs):
    """Encode an image array on the CPU with a short fit (format 2, coordinate networks, unless ``format`` says)."""
    kwargs.setdefault("format", 2)
    opts = EncodeOptions(iters=kwargs.pop("iters", FAST_ITERS), device="cpu", **kwargs)
    image = for_name("image")
    return encode_signal(image, image.from_array(array), opts)


@pytest.fixture(scope="session")
def rgb_image() -> np.ndarray:
    return real_image()


@pytest.fixture(scope="session")
def rgb_result(rgb_image):
    return fast_encode(rgb_image)


@pytest.fixture(scope="session")
def rgb_stream(rgb_result) -> bytes:
    return rgb_result.data
