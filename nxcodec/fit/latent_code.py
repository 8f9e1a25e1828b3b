"""Coding fitted latent-grid signals (images as format version 12, audio planes as 11): quantize the networks, choose
their precisions, write.

Images are fitted by ``nxcodec.fit.latent_image`` (audio and shapes by their own modules),
and each fitted image's networks are then quantized here: the fixed-point networks
(context models, manager) with power-of-two steps, the float networks with a step per
tensor set relative to its spread; the precisions, first one of each kind for the whole
image and then each layer's own, are chosen by the rate-distortion cost of the coding, its
size counted from the coder's frequency tables (a walk of the decoder's context model,
without the range coder) and its distortion from the decoder's synthesis, on the whole
image (on a band of rows of a tall audio plane). Only the chosen coding is written, and
its exact size is what a rate target checks; a target then raises the dead zone of the
latent quantizer until the file fits. Audio planes (format 4) and shapes (format 8, scored by
their distance error) are coded the same way. Numpy only, so that a stack's signals can be
coded in worker processes without torch (:func:`code_in_parallel`).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from typing import Any, Callable, Iterator

import numpy as np

from nxcodec.errors import NxcError
from nxcodec.fit import presets, rounding
from nxcodec.latent import audio as audio_stream
from nxcodec.latent import context, stream, tables
from nxcodec.latent import shape as shape_stream
from nxcodec.latent.context import MAX_SHIFT, max_levels
from nxcodec.latent.occupancy import Occupancy
from nxcodec.latent.shape import ShapeLatentDescriptor
from nxcodec.latent.stream import FIXED_POINT, CodedTensor, LatentConfig
from nxcodec.latent.synthesis import synthesize
from nxcodec.signals import imagefile
from nxcodec.signals.imagefile import ImageDescriptor
from nxcodec.steps import MAX_STEP_CODE, code_for_step, step_from_code
from nxcodec.workers import compute_worker

FIXED_PRECISIONS = (5, 6, 7, 8, 9)  # fractional bits of the fixed-point weights
FLOAT_PRECISIONS = (3, 4, 5, 6, 7)  # float steps are spread / 2**p
UPSAMPLE_CODE = 40  # 2**-10: four taps, cheap to keep fine
SEARCH_ROWS = 128  # precisions are compared on a band of this many rows of a taller plane
DEAD_ZONES = tuple(0.5 + 0.05 * i for i in range(11))  # latent rounding offsets tried to meet a rate target
STACK_PIXELS_GPU = 1 << 25  # images fitted together on a GPU: about 80 Kodak images
STACK_PIXELS_CPU = 1 << 20
SMALL_FIT = 1 << 17  # pixels under which a CPU fit runs on one thread (its ops are too small to share: 2.5x faster)
PARALLEL_CODING_PIXELS = 1 << 16  # images from this size on are coded in worker processes when several wait (a
# 256x256 image takes about a second to code, a worker process a fraction of one to start)


def fit_weight_prior(q: np.ndarray) -> tuple[int, int, int, int] | None:
    """(lo, hi, mu, decay) of the 16-bit table that codes ``q`` in the fewest bits, or None if it cannot."""
    q = q.ravel()
    lo, hi = int(q.min()), int(q.max())
    if lo < -tables.MAX_WEIGHT or hi > tables.MAX_WEIGHT or hi - lo + 1 > tables.MAX_WEIGHT_ALPHABET:
        return None
    mu = int(np.clip(np.round(np.median(q)), lo, hi))
    scale = max(float(np.mean(np.abs(q - mu))), 1e-3)
    best, best_bits = None, math.inf
    for factor in (0.7, 0.85, 1.0, 1.2, 1.45):
        decay = int(np.clip(round(65536 * math.exp(-1.0 / (scale * factor))), 0, 65535))
        freq = tables.weight_table(lo, hi, mu, decay)
        bits = float(np.sum(tables.PREC - np.log2(freq[q - lo])))
        if bits < best_bits:
            best, best_bits = (lo, hi, mu, decay), bits
    return best


def quantize(w: np.ndarray, code: int, moment: np.ndarray | None = None, name: str = "") -> CodedTensor | None:
    """``w`` as integers of step ``code`` with its prior, or None where the coder's range is exceeded. With the
    second ``moment`` of its layer's inputs (:func:`nxcodec.fit.rounding.input_moments`; ``name`` says how the
    tensor is laid out) the integers are rounded with error feedback, else to the nearest step."""
    step = step_from_code(code)
    if moment is None:
        q = np.rint(w.astype(np.float32) / step).astype(np.int64)
    else:
        mats = rounding.as_matrix(name, w)
        q = rounding.from_matrix(name, np.stack([rounding.round_with_feedback(m, step, h)
                                                 for m, h in zip(mats, moment)]), w.shape)
    prior = fit_weight_prior(q)
    return None if prior is None else CodedTensor(code, *prior, q)


def quantize_networks(weights: dict[str, np.ndarray], fixed: int, precision: int,
                      finer: dict[str, int] | None = None, moments: dict[str, np.ndarray] | None = None
                      ) -> "OrderedDict[str, CodedTensor]":
    """Every tensor at its precision, made coarser where the coder's range would be exceeded.

    ``fixed`` is the fractional bits of the fixed-point tensors, ``precision`` sets the float tensors' steps
    (their spread / 2**precision); ``finer`` moves single tensors off these by that many bits (negative:
    coarser), as :func:`code_plane`'s per-layer search and :func:`finer_for` choose. The tensors that
    ``moments`` has (see :func:`quantize`) are rounded with error feedback.
    """
    moments = moments or {}
    out: OrderedDict[str, CodedTensor] = OrderedDict()
    for name, w in weights.items():
        extra = (finer or {}).get(name, 0)
        if name.startswith(FIXED_POINT):
            code, coarser = 4 * min(max(fixed + extra, 0), MAX_SHIFT), 4
        elif name == "upsample":
            code, coarser = UPSAMPLE_CODE, 1
        else:
            spread = float(w.std()) if w.size > 1 else float(np.abs(w).max())
            code, coarser = code_for_step(max(spread, 1e-6) / 2.0 ** (precision + extra)), 1
        code = min(code, MAX_STEP_CODE - MAX_STEP_CODE % coarser)
        qt = quantize(w, code, moments.get(name), name)
        while qt is None:
            code -= coarser
            if code < 0:
                raise NxcError(f"network tensor {name} cannot be coded (values too large)")
            qt = quantize(w, code, moments.get(name), name)
        out[name] = qt
    return out


def finer_for(gain: float) -> dict[str, int]:
    """Extra fractional bits for the fixed-point first layers of a signal fitted at ``input_gain`` ``gain``: its
    first layers' weights are ``gain`` times smaller for the same hidden values, while the latents they multiply
    are as large, so the same error in the hidden values needs ``log2(1 / gain)`` more bits."""
    bits = max(0, round(math.log2(1 / gain)))
    return {f"{prefix}0.weight": bits for prefix in FIXED_POINT} if bits else {}


def levels_for(height: int, width: int) -> int:
    """Grids down to about 1:64 of the shorter side for Kodak-sized images, fewer for small ones."""
    return max(1, min(max_levels((height, width)), min(height, width).bit_length() - 3, 7))


def lanes_for(height: int, width: int) -> int:
    """log2 of the coder's lanes: about one lane per 8192 latents, at most 64."""
    latents = height * width * 4 // 3
    return int(np.clip(math.floor(math.log2(max(latents / 8192, 1))), 0, 6))


def config_for(preset: presets.LatentPreset, d: ImageDescriptor) -> LatentConfig:
    """An image's networks and grids at ``preset``, with the context (and so the decode order) it names."""
    if preset.context not in ("raster", "two-pass"):
        raise ValueError(f"unknown context {preset.context!r}: raster or two-pass")
    k = preset.n_experts
    return LatentConfig(levels=levels_for(d.height, d.width), arm_width=preset.arm_width, arm_layers=2, n_experts=k,
                        mgr_width=preset.mgr_width if k > 1 else 0,
                        syn_width=preset.synthesis_width(d.height * d.width),
                        syn_layers=preset.syn_layers, refine_width=preset.refine_width,
                        lanes_log2=lanes_for(d.height, d.width),
                        flags=stream.FLAG_RASTER_CONTEXT if preset.context == "raster" else 0)


class OverTarget(NxcError):
    """The best coding is over the rate target and was not trimmed (the caller would rather fit again)."""

    def __init__(self, bits: int) -> None:
        super().__init__(f"over the rate target before trimming ({bits} bits)")
        self.bits = bits  # the size of that coding

    def __reduce__(self) -> tuple:  # so that a worker process can return it
        return OverTarget, (self.bits,)


class Candidate:
    """One written stream (or plane body), what a decoder rebuilds from it, and its cost."""

    def __init__(self, data: bytes, image: Any, samples: np.ndarray, mse: float, cost: float) -> None:
        self.data, self.image, self.samples, self.mse, self.cost = data, image, samples, mse, cost


Tensors = "OrderedDict[str, CodedTensor]"


@dataclass
class PlaneSource:
    """A fitted plane as :func:`code_plane` sees it: its latents, how to score a decoding, how to write it."""

    config: LatentConfig
    channels: int
    latents: list[np.ndarray]  # the encoder's float latents, in latent units, finest first
    lam: float
    samples: int  # what the rate is counted over: cost = mse + lam * 8 * bytes / samples
    measure: Callable[[list[np.ndarray], Any], tuple[np.ndarray, float]]  # (grids, tensors) -> (decoded values, mse)
    write: Callable[[Any, float], tuple[bytes, list[np.ndarray], Any]]  # (tensors, dead zone) -> (exact bytes,
    # the grids a decoder rebuilds, anything else the caller keeps)
    overhead: int = 0  # bytes that ``write`` puts around the plane's body (an image's prefix and CRC)
    crop: Callable[[int, int], "PlaneSource"] | None = None  # the same plane cut to rows [a, b)
    finer: dict[str, int] = field(default_factory=dict)  # more fractional bits for these fixed-point tensors
    moments: dict[str, np.ndarray] | None = None  # float tensors rounded with error feedback (rounding.input_moments)
    version: int = stream.VERSION  # the stream version ``write`` writes the body as

    @property
    def scales(self) -> tables.ScaleSet:
        """The latent tables its body is coded with."""
        return stream.latent_tables(self.version, self.config)


def search_band(src: PlaneSource) -> tuple[PlaneSource, float]:
    """Where precisions are compared: a band of ``SEARCH_ROWS`` rows in the middle of a tall plane (aligned to
    the coarsest grid, so every grid is cut at whole rows), and the plane's rows per band row; else the plane."""
    rows, step = src.latents[0].shape[0], 1 << (src.config.levels - 1)
    size = -(-SEARCH_ROWS // step) * step
    if src.crop is None or rows < 2 * size:
        return src, 1.0
    a = (rows - size) // 2 // step * step
    return src.crop(a, a + size), rows / size


def crop_latents(latents: list[np.ndarray], a: int, b: int) -> list[np.ndarray]:
    """Every grid cut to the rows that cover rows [a, b) of the finest (a, b multiples of the coarsest step)."""
    return [lat[a >> level : -(-b >> level)] for level, lat in enumerate(latents)]


def tensor_bits(coded: Tensors) -> float:
    """The bits the coder spends on the network integers, from their tables."""
    return float(sum(np.sum(tables.PREC - np.log2(t.table()[t.ints.ravel() - t.lo])) for t in coded.values()))


def walk(src: PlaneSource, coded: Tensors, dead_zone: float) -> tuple[float, list[np.ndarray]]:
    """The latent bits and the grids of a coding, without running the coder.

    The residuals are chosen as :func:`nxcodec.latent.stream.write_body` chooses them (the
    same walk, the same rounding), and counted as ``16 - log2`` of their frequencies.
    """
    scales = src.scales
    cost, base = scales.costs
    bits = 0.0

    def choose(level: int, pos: tuple[np.ndarray, ...], centre: np.ndarray, table: np.ndarray) -> np.ndarray:
        nonlocal bits
        v = (src.latents[level][pos] * context.ONE - centre) / context.ONE
        q, symbol, escapes = stream.split_residuals(np.sign(v) * np.floor(np.abs(v) + 1 - dead_zone),
                                                    scales.residual_limit(table))
        bits += float(np.sum(cost[base[table] + symbol]) + np.sum(tables.escape_bits(escapes)))
        return q

    grids = stream.walk_latents(src.config, src.latents[0].shape, stream.context_models(src.config, coded), choose,
                                scales)
    return bits, grids


def estimated_bytes(src: PlaneSource, coded: Tensors, bits: float) -> int:
    """The written size for ``bits`` of symbols: the body's fixed parts, then the rANS payload, about
    ``bits / 8`` plus 3 bytes per lane (each lane flushes a 4-byte state that holds one byte of data on average).

    On fitted planes the coder writes 0.1 to 0.7% more than this (its 32-bit states round
    each step); a choice that must fit is checked on the written bytes."""
    fixed = stream.LatentConfig.SIZE + stream.table_size(coded, src.version) + 4  # config, table, length
    return src.overhead + fixed + math.ceil(bits / 8) + 3 * (1 << src.config.lanes_log2)


@dataclass
class _Trial:
    """A coding scored from its estimated size: what :func:`code_plane` compares."""

    coded: Tensors
    dead_zone: float
    latent_bits: float  # of the source it was walked on
    grids: list[np.ndarray]
    n_bytes: int  # estimated, for the whole plane
    mse: float = math.inf
    cost: float = math.inf


def synthesis_key(grids: list[np.ndarray], coded: Tensors) -> bytes:
    """A digest of what a decoding depends on: the grids and every tensor but the context models' (which only code
    the latents). Trials that differ only in their context models' precisions share it."""
    h = hashlib.blake2b(digest_size=16)
    for g in grids:
        h.update(repr(g.shape).encode())
        h.update(np.ascontiguousarray(g, dtype=np.int64).tobytes())
    for name, t in coded.items():
        if not name.startswith(stream.CONTEXT_MODELS):
            h.update(f"{name} {t.code} {t.ints.shape}".encode())
            h.update(np.ascontiguousarray(t.ints, dtype=np.int64).tobytes())
    return h.digest()


def _trial(src: PlaneSource, coded: Tensors, dead_zone: float, walked: _Trial | None = None, measure: bool = True,
           on: PlaneSource | None = None, scale: float = 1.0, measured: dict[bytes, float] | None = None) -> _Trial:
    """Score a coding of ``src``, walked and measured ``on`` a band of it (``scale``: the plane's rows per band
    row); ``walked``, a trial of the same fixed-point networks and dead zone, spares the walk; ``measured``
    (distortions by :func:`synthesis_key`, of decodings ``on`` the same source) spares decoding again what was."""
    on = on or src
    latent_bits, grids = (walked.latent_bits, walked.grids) if walked is not None else walk(on, coded, dead_zone)
    t = _Trial(coded, dead_zone, latent_bits, grids,
               estimated_bytes(src, coded, latent_bits * scale + tensor_bits(coded)))
    if measure:
        measured = {} if measured is None else measured
        key = synthesis_key(grids, coded)
        if key not in measured:
            measured[key] = on.measure(grids, coded)[1]
        t.mse = measured[key]
        t.cost = t.mse + src.lam * 8 * t.n_bytes / src.samples
    return t


def _finish(src: PlaneSource, coded: Tensors, dead_zone: float) -> Candidate:
    """The exact coding: written by ``src.write``, measured on the grids it gives."""
    data, grids, image = src.write(coded, dead_zone)
    values, mse = src.measure(grids, coded)
    return Candidate(data, image, values, mse, mse + src.lam * 8 * len(data) / src.samples)


Writer = Callable[["OrderedDict[str, CodedTensor]", float], Candidate]  # (networks, dead zone) -> written candidate


def code_plane(src: PlaneSource | Writer, weights: dict[str, np.ndarray], bits_allowed: float | None,
               trim: bool = True) -> Candidate:
    """The best coding over the precision choices; under a rate target, the best one that fits.

    The fixed-point precision is chosen first (each one a walk of the context model), then
    the float precision (the same latents: only the synthesis is redone), then each layer's
    precision is moved off these a bit at a time while that lowers the cost (coarser first);
    the float tensors of ``src.moments`` are rounded with error feedback at every precision.
    They are compared on sizes counted from the frequency tables, on a band of a tall plane
    (:func:`search_band`); only the chosen coding is written, and its exact size decides.
    When it does not fit, wider dead zones and then coarser float networks are tried, in
    that order (with ``trim``; without, :class:`OverTarget` at once, for a caller that would
    rather fit again at a higher lambda); if still none fits, ``NxcError`` (the caller refits a
    smaller preset).

    ``src`` may instead be a writer of whole candidates (shapes, format 5): then every
    candidate is written and measured (:func:`code_written`).
    """
    if not isinstance(src, PlaneSource):
        return code_written(src, weights, bits_allowed, trim)

    def fits(n_bytes: int) -> bool:
        return bits_allowed is None or 8 * n_bytes <= bits_allowed

    def key(t: _Trial) -> tuple[bool, float]:
        return fits(t.n_bytes), -t.cost

    def networks(fixed: int, precision: int, finer: dict[str, int]) -> Tensors:
        return quantize_networks(weights, fixed, precision, finer, src.moments)

    band, scale = search_band(src)
    finer = dict(src.finer)
    measured: dict[bytes, float] = {}  # trials that change only the context models decode the same
    best, fixed = None, FIXED_PRECISIONS[len(FIXED_PRECISIONS) // 2]
    for f in FIXED_PRECISIONS:
        t = _trial(src, networks(f, 5, finer), 0.5, on=band, scale=scale, measured=measured)
        if best is None or key(t) > key(best):
            best, fixed = t, f
    walked, precision = best, 5
    for p in FLOAT_PRECISIONS:
        if p != 5:
            t = _trial(src, networks(fixed, p, finer), 0.5, walked, on=band, scale=scale, measured=measured)
            if key(t) > key(best):
                best, precision = t, p
    best, finer = _each_layer(weights, finer, best, lambda moved, layer, best: _trial(
        src, networks(fixed, precision, moved), 0.5,
        None if layer[0].startswith(FIXED_POINT) else best, on=band, scale=scale, measured=measured), key)
    c = _finish(src, best.coded, 0.5)
    if fits(len(c.data)):
        return c
    if not trim:
        raise OverTarget(8 * len(c.data))
    # Trimming: the first coding (in this order) whose estimate fits is written; its exact size decides.
    for dz in DEAD_ZONES[1:]:
        walked = _trial(src, best.coded, dz, measure=False)
        if fits(walked.n_bytes) and fits(len((c := _finish(src, best.coded, dz)).data)):
            return c
    for p in range(precision - 1, -1, -1):
        t = _trial(src, networks(fixed, p, finer), DEAD_ZONES[-1], walked, measure=False)
        if fits(t.n_bytes) and fits(len((c := _finish(src, t.coded, DEAD_ZONES[-1])).data)):
            return c
    raise NxcError("the rate target is too small for this signal; raise the target")


def _layers(weights: dict[str, np.ndarray]) -> list[list[str]]:
    """The coded tensors grouped by layer (a weight with its bias), in stream order; the upsampling taps, which
    keep one fixed step, are left out."""
    layers: dict[str, list[str]] = {}
    for name in weights:
        if name != "upsample":
            layers.setdefault(name.rsplit(".", 1)[0], []).append(name)
    return list(layers.values())


def _each_layer(weights: dict[str, np.ndarray], finer: dict[str, int], best: Any,
                attempt: Callable[[dict[str, int], list[str], Any], Any], key: Callable[[Any], Any]) -> tuple[Any, dict]:
    """Move each layer's precision (:func:`_layers`) off ``finer`` a bit at a time, coarser first, while the
    coding ``attempt(moved, layer, best)`` gives ranks higher by ``key`` than the best so far; returns the best
    coding and its moves. Measured on Kodak crops, the context models' hidden layers end 2 to 5 bits coarser than
    their output layers, which decide the precision they would otherwise all share."""
    start = dict(finer)
    for layer in _layers(weights):
        for move in (-1, 1):
            while True:
                moved = {**finer, **{n: finer.get(n, 0) + move for n in layer}}
                c = attempt(moved, layer, best)
                if key(c) <= key(best):
                    break
                best, finer = c, moved
            if finer.get(layer[0], 0) != start.get(layer[0], 0):
                break
    return best, finer


def code_written(write: Writer, weights: dict[str, np.ndarray], bits_allowed: float | None,
                 trim: bool = True) -> Candidate:
    """:func:`code_plane` for a writer: the same choices, each candidate written by ``write`` and measured."""
    fits = (lambda c: True) if bits_allowed is None else (lambda c: 8 * len(c.data) <= bits_allowed)
    best, fixed = None, FIXED_PRECISIONS[len(FIXED_PRECISIONS) // 2]
    for f in FIXED_PRECISIONS:
        c = write(quantize_networks(weights, f, 5), 0.5)
        if best is None or (fits(c), -c.cost) > (fits(best), -best.cost):
            best, fixed = c, f
    precision = 5
    for p in FLOAT_PRECISIONS:
        c = write(quantize_networks(weights, fixed, p), 0.5) if p != 5 else best
        if (fits(c), -c.cost) > (fits(best), -best.cost):
            best, precision = c, p
    best, finer = _each_layer(weights, {}, best, lambda moved, layer, best: write(
        quantize_networks(weights, fixed, precision, moved), 0.5), lambda c: (fits(c), -c.cost))
    if fits(best):
        return best
    if not trim:
        raise OverTarget(8 * len(best.data))
    coded = quantize_networks(weights, fixed, precision, finer)
    for dz in DEAD_ZONES[1:]:
        c = write(coded, dz)
        if fits(c):
            return c
    for p in range(precision - 1, -1, -1):
        c = write(quantize_networks(weights, fixed, p, finer), DEAD_ZONES[-1])
        if fits(c):
            return c
    raise NxcError("the rate target is too small for this signal; raise the target")


def image_source(d: ImageDescriptor, cfg: LatentConfig, latents: list[np.ndarray], original: np.ndarray,
                 lam: float) -> PlaneSource:
    """A fitted image as :func:`code_plane` codes it: whole version 12 streams, scored on their stored samples.

    Its precisions are compared on the whole image, not on a band of rows (``crop`` is left unset): on a band the
    differences between precisions are not the image's (bench/precision_search.py: kodim01's 256x256 crop fitted
    for 4000 iterations lost 0.74 dB to a float precision that a band of 128 rows had scored best), and the search
    costs a fraction of a second per image, against minutes of fitting."""
    def measure(grids: list[np.ndarray], coded: Tensors) -> tuple[np.ndarray, float]:
        samples = stream.image_samples(d, grids, stream.float_synthesis(coded))[0]
        mse = float(np.mean((samples.astype(np.float64) - original.astype(np.float64)) ** 2)) / d.peak**2
        return samples, mse

    def write(coded: Tensors, dead_zone: float) -> tuple[bytes, list[np.ndarray], stream.LatentImage]:
        data, image = stream.write(d, cfg, coded, latents, dead_zone)
        return data, image.grids, image

    overhead = stream.PREFIX.size + len(imagefile.pack(d)) + 4  # prefix, descriptor, CRC
    return PlaneSource(cfg, d.channels, latents, lam, d.width * d.height, measure, write, overhead)


def code_image(d: ImageDescriptor, cfg: LatentConfig, weights: dict[str, np.ndarray], latents: list[np.ndarray],
               original: np.ndarray, lam: float, bits_allowed: float | None, trim: bool = True) -> Candidate:
    """The best version 12 stream of one fitted image (see :func:`code_plane`), its synthesis weights rounded with
    error feedback (:mod:`nxcodec.fit.rounding`)."""
    src = replace(image_source(d, cfg, latents, original, lam), moments=rounding.input_moments(weights, latents,
                                                                                                d.channels))
    return code_plane(src, weights, bits_allowed, trim)


def audio_plane_source(target: np.ndarray, cfg: LatentConfig, latents: list[np.ndarray], lam: float,
                       gain: float = 1.0) -> PlaneSource:
    """A fitted audio plane (MDCT coefficients) as :func:`code_plane` codes it: bodies, scored on the binary64
    synthesis; ``gain`` is the plane's ``input_gain`` in the fit."""
    def measure(grids: list[np.ndarray], coded: Tensors) -> tuple[np.ndarray, float]:
        values = synthesize(grids, stream.float_synthesis(coded), 1, np.float64)[0].reshape(target.shape)
        return values, float(np.mean((values - target) ** 2)) / 4  # as the fit: the squared error of [0, 1] samples

    def write(coded: Tensors, dead_zone: float) -> tuple[bytes, list[np.ndarray], None]:
        return *stream.write_body(cfg, 1, coded, latents, audio_stream.VERSION, dead_zone), None

    def crop(a: int, b: int) -> PlaneSource:
        return audio_plane_source(target[a:b], cfg, crop_latents(latents, a, b), lam, gain)

    return PlaneSource(cfg, 1, latents, lam, target.size, measure, write, crop=crop, finer=finer_for(gain),
                       version=audio_stream.VERSION)


def code_audio_plane(target: np.ndarray, cfg: LatentConfig, weights: dict[str, np.ndarray],
                     latents: list[np.ndarray], lam: float, bits_allowed: float | None, trim: bool = True,
                     gain: float = 1.0) -> Candidate:
    """The best body of one fitted audio plane (see :func:`code_plane`)."""
    return code_plane(audio_plane_source(target, cfg, latents, lam, gain), weights, bits_allowed, trim)


def code_shape(d: ShapeLatentDescriptor, cfg: LatentConfig, weights: dict[str, np.ndarray],
               latents: list[np.ndarray], occupancy: Occupancy, points: np.ndarray, targets: np.ndarray, lam: float,
               bits_allowed: float | None, trim: bool = True) -> Candidate:
    """The best version 8 stream of one fitted shape (see :func:`code_plane`), scored by the mean absolute
    distance error at ``points`` against ``targets``."""
    def write(coded: Tensors, dead_zone: float) -> Candidate:
        data, volume = shape_stream.write(d, cfg, coded, latents, occupancy, dead_zone)
        values = shape_stream.Field(volume)(points)
        l1 = float(np.mean(np.abs(values - targets)))
        return Candidate(data, volume, values, l1, l1 + lam * len(data) / 1000)

    return code_plane(write, weights, bits_allowed, trim)


def coding_workers(n_images: int, pixels: int) -> int:
    """How many processes code ``n_images`` fitted images (or audio planes) of ``pixels`` samples each: one per
    image, at most one per core, and none beside this one for a single or a small image."""
    if n_images < 2 or pixels < PARALLEL_CODING_PIXELS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(n_images, cores))


def code_in_parallel(jobs: list[tuple], workers: int = 1, coder: Callable[..., Candidate] | None = None
                     ) -> list[Candidate | NxcError]:
    """For each job, ``coder`` (default :func:`code_image`; :func:`code_audio_plane`, :func:`code_shape`) of its
    arguments, or the ``NxcError`` (``OverTarget`` included) it raised.

    With ``workers`` > 1 the jobs run in that many spawned processes of one BLAS thread each: coding is numpy on one
    core for seconds per image, and a stack fitted on a GPU (24 Kodak images at once) would otherwise be coded one
    image after another while the host's other cores idle. The codings are the same either way (the fixed-point
    arithmetic does not depend on threads or processes). ``coder`` must be a module-level function of a module
    without torch, which each worker imports.
    """
    coder = coder or code_image
    if workers <= 1 or len(jobs) <= 1:
        return [_code_job(coder, job) for job in jobs]
    with _one_blas_thread():
        pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn"), initializer=compute_worker)
        try:
            return list(pool.map(_code_job, [coder] * len(jobs), jobs))
        finally:  # on an interruption, the codings not yet started are dropped, not waited for
            pool.shutdown(cancel_futures=True)


def _code_job(coder: Callable[..., Candidate], job: tuple) -> Candidate | NxcError:
    try:
        return coder(*job)
    except NxcError as exc:
        return exc


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Processes started meanwhile give numpy's BLAS one thread (it reads these when it loads): several workers with a
    thread per core each would fight over the cores."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v
