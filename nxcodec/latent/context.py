"""The fixed-point context models and expert manager of format versions 3 and 12 (SPEC.md 9.4, 9.7, 18).

Shared by the encoder and the decoder, so their arithmetic cannot drift apart. Latent
values are integers with ``FRAC_BITS`` fractional bits. A fixed-point MLP has integer
weights with power-of-two steps; every product and sum is an integer below 2**53, so
computing it as a float64 matrix product (BLAS, any thread count, any CPU) is exact, and
rescaling is a floor division by a power of two.

Decode order: grids from the coarsest to the finest; within a grid, pass A (the
positions whose coordinates sum to an even number, in raster order) and then pass B (the
others). A pass A latent reads the next coarser grid around its parent (9 values in 2-D,
27 in 3-D); a pass B latent reads in addition the nearest pass A latents of its own grid
(12 in 2-D, 14 in 3-D). Every latent of a pass is independent of the others of that
pass, so a pass is evaluated in vectorised blocks.

Version 12's raster context (images) has one context model instead: a latent reads the 12
latents before it in its own tile of ``TILE`` x ``TILE`` latents (``RASTER_OFFSETS``), then
the same 9 coarser values. Tiles decode side by side, in steps ``t = 2 (row mod TILE) +
(col mod TILE)``: every neighbour is of an earlier step, so a step is evaluated at once and
a grid takes at most ``3 TILE - 2`` steps, whatever the image's size.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

FRAC_BITS = 8
ONE = 1 << FRAC_BITS
MU_MAX = 1 << (FRAC_BITS + 10)  # |mean| <= 1024
HIDDEN_MAX = 1 << (FRAC_BITS + 12)  # hidden activations are clamped to [0, 4096]
MAX_FAN_IN = 64
MAX_SHIFT = 15  # weight and bias steps are 2**-s, 0 <= s <= 15

# Context offsets, in the order the context model reads them. Images and audio planes use
# two-dimensional grids, shapes three-dimensional ones (SPEC.md 11.4).
COARSE_OFFSETS = tuple((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1))  # around (row // 2, col // 2)
SAME_OFFSETS = ((0, -1), (-1, 0), (0, 1), (1, 0), (-1, -2), (-2, -1), (-2, 1), (-1, 2), (1, 2), (2, 1), (2, -1),
                (1, -2))  # pass A latents around a pass B latent
COARSE_OFFSETS_3D = tuple((a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1))
SAME_OFFSETS_3D = ((-1, 0, 0), (0, -1, 0), (0, 0, -1), (1, 0, 0), (0, 1, 0), (0, 0, 1),
                   *((a, b, c) for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)))  # the 6 faces, then 8 corners
OFFSETS = {2: (COARSE_OFFSETS, SAME_OFFSETS), 3: (COARSE_OFFSETS_3D, SAME_OFFSETS_3D)}
N_CONTEXT_A = len(COARSE_OFFSETS)
N_CONTEXT_B = len(SAME_OFFSETS) + len(COARSE_OFFSETS)


def context_sizes(dims: int) -> tuple[int, int]:
    """Inputs of the pass A and pass B context models of ``dims``-dimensional grids."""
    coarse, same = OFFSETS[dims]
    return len(coarse), len(same) + len(coarse)


@dataclass(frozen=True)
class FixedLayer:
    """One affine layer: ``x W + b`` with ``W = weight * 2**-w_shift`` and ``b = bias * 2**-b_shift``."""

    weight: np.ndarray  # int64 (fan_in, fan_out)
    bias: np.ndarray  # int64 (fan_out,)
    w_shift: int
    b_shift: int

    # A decoder evaluates a layer once per step of every grid: its binary64 forms are made once.
    @functools.cached_property
    def matrix(self) -> np.ndarray:
        """The weights as binary64 (exact: below 2**53)."""
        return self.weight.astype(np.float64)

    @functools.cached_property
    def aligned_bias(self) -> np.ndarray:
        """The bias at the accumulator's ``FRAC_BITS + w_shift`` fractional bits (floor when shifted down), binary64."""
        shift = FRAC_BITS + self.w_shift - self.b_shift
        return (self.bias << shift if shift >= 0 else self.bias >> -shift).astype(np.float64)


def fixed_mlp(x: np.ndarray, layers: list[FixedLayer]) -> np.ndarray:
    """Evaluate a fixed-point ReLU MLP on integer inputs with ``FRAC_BITS`` fractional bits.

    Each layer computes ``acc = x W + align(b)`` exactly (``FRAC_BITS + w_shift`` fractional
    bits), then ``floor(acc / 2**w_shift)``; hidden layers clamp to ``[0, HIDDEN_MAX]``.
    Scaling by ``2**-w_shift`` is exact in binary64, so it is done as a multiplication, in place.
    Returns int64 outputs with ``FRAC_BITS`` fractional bits.
    """
    h = np.asarray(x, dtype=np.float64)
    for i, layer in enumerate(layers):
        acc = h @ layer.matrix
        acc += layer.aligned_bias
        acc *= 1.0 / (1 << layer.w_shift)
        h = np.floor(acc, out=acc)
        if i < len(layers) - 1:  # clamp to [0, HIDDEN_MAX] (two ufuncs: np.clip's wrapper costs more per call)
            np.minimum(np.maximum(h, 0, out=h), HIDDEN_MAX, out=h)
    return h.astype(np.int64)


def means_and_scales(out: np.ndarray, n_scales: int) -> tuple[np.ndarray, np.ndarray]:
    """The context model's two outputs as a clamped mean (fixed point) and a scale index below ``n_scales``."""
    mu = np.clip(out[:, 0], -MU_MAX, MU_MAX)
    scale = np.clip((out[:, 1] + (ONE >> 1)) >> FRAC_BITS, 0, n_scales - 1)
    return mu, scale


def route(logits: np.ndarray) -> np.ndarray:
    """The expert of each pixel: the index of its largest logit, the lowest index on ties."""
    return np.argmax(logits, axis=1)


def level_sizes(shape: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """The size of grid l = 0 .. levels-1: ``ceil(n / 2**l)`` along every axis of ``shape``."""
    return [tuple(-(-n // (1 << l)) for n in shape) for l in range(levels)]


def max_levels(shape: tuple[int, ...]) -> int:
    """The most grids a signal may have: until the coarsest is one sample, and at most 12."""
    return min(12, (max(shape) - 1).bit_length() + 1)


Positions = tuple[np.ndarray, ...]  # one index array per axis


def pass_positions(shape: tuple[int, ...], parity: int) -> Positions:
    """Indices of the positions whose coordinates sum to ``parity`` modulo 2, in raster (C) order."""
    return np.nonzero((sum(np.indices(shape, sparse=True)) & 1) == parity)


BLOCK = 4096  # latents per step of the context model: bounds the decoder's working memory and keeps it in cache


def _source(grid: np.ndarray, pos: Positions, offsets, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What gathering ``grid[pos + offset]`` needs: the zero-padded grid flattened (binary64, whose integers
    below 2**53 are exact), each position's flat index in it and each offset's flat step."""
    padded = np.pad(grid.astype(np.float64), pad)
    strides = [math.prod(padded.shape[a + 1 :]) for a in range(padded.ndim)]
    index = sum((p + pad) * s for p, s in zip(pos, strides))
    steps = np.array([sum(o * s for o, s in zip(off, strides)) for off in offsets], dtype=np.int64)
    return padded.reshape(-1), index, steps


def predict(net: list[FixedLayer], grid: np.ndarray, coarser: np.ndarray | None, pos: Positions,
            parity: int, n_scales: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean and scale index (below ``n_scales``, the version's tables) of every latent at ``pos`` of pass
    ``parity`` (0: A, 1: B) of ``grid``.

    Pass A reads the coarser grid's values around each parent ``pos // 2``; pass B reads the
    pass A neighbours of its own grid, then the same coarser values. Values outside a grid,
    and every coarser value of the coarsest grid, are zero. Evaluated in blocks of ``BLOCK``
    latents, which changes nothing in the result: every latent of a pass is independent.
    """
    coarse, same = OFFSETS[len(pos)]
    n = pos[0].size
    columns = [(len(same), _source(grid, pos, same, 2))] if parity else []
    columns.append((len(coarse), None if coarser is None else _source(coarser, tuple(p // 2 for p in pos), coarse, 1)))
    width = sum(k for k, _ in columns)
    mu, scale = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        ctx = np.zeros((b - a, width), dtype=np.float64)
        col = 0
        for k, source in columns:
            if source is not None:
                flat, index, steps = source
                ctx[:, col : col + k] = flat[index[a:b, None] + steps]
            col += k
        mu[a:b], scale[a:b] = means_and_scales(fixed_mlp(ctx, net), n_scales)
    return mu, scale


# --- version 12: the raster context (SPEC.md 18) ----------------------------------------------------------------
RASTER_OFFSETS = ((0, -1), (0, -2), (0, -3), (-1, -2), (-1, -1), (-1, 0), (-1, 1), (-2, -2), (-2, -1), (-2, 0),
                  (-2, 1), (-2, 2))  # decoded before (row, col): each is 1 to 6 steps earlier
TILE = 64
N_CONTEXT_RASTER = len(RASTER_OFFSETS) + len(COARSE_OFFSETS)


@dataclass(frozen=True)
class RasterStep:
    """One step of a :class:`RasterGrid`: its positions (rows, columns), their places in the grid's padded tiles and
    their parents' places in the zero-padded coarser grid (int32: a grid within the limits has under 2**31 places)."""

    pos: Positions
    place: np.ndarray
    parent_place: np.ndarray


class RasterGrid:
    """One grid of version 12 as it is decoded, step by step (:meth:`steps`).

    The latents so far are held tile by tile, each tile with two rows of zeros above, three columns left and two
    right, so every neighbour a latent reads is a fixed offset from it: one outside its tile, or past the grid's
    last column, reads a zero that is never written. The coarser grid is held zero-padded, as :func:`predict`
    reads it.
    """

    def __init__(self, shape: tuple[int, int], coarser: np.ndarray | None) -> None:
        h, w = shape
        self.shape = shape
        self.tile = (min(TILE, h), min(TILE, w))  # a grid smaller than a tile is one tile of its own size
        self.across = -(-w // self.tile[1])
        self.pitch = self.tile[1] + 5
        self.tile_size = (self.tile[0] + 2) * self.pitch
        self.flat = np.zeros(-(-h // self.tile[0]) * self.across * self.tile_size)  # binary64: integers are exact
        self.offsets = np.array([a * self.pitch + b for a, b in RASTER_OFFSETS])  # in places, as RASTER_OFFSETS
        self.coarse = None if coarser is None else np.pad(coarser.astype(np.float64), 1).reshape(-1)
        self.coarse_pitch = 0 if coarser is None else coarser.shape[1] + 2
        self.coarse_offsets = np.array([a * self.coarse_pitch + b for a, b in COARSE_OFFSETS])

    def steps(self) -> list[RasterStep]:
        """The grid's steps ``t = 2 (row mod TILE) + (col mod TILE)`` in decode order, each in raster order; steps that
        hold no position (a grid one column wide has no odd step) are left out. Every place is computed here at once,
        so a step only gathers."""
        r, c = (a.reshape(-1) for a in np.indices(self.shape, dtype=np.int32))
        t = 2 * (r % TILE) + c % TILE
        order = np.argsort(t, kind="stable")  # stable: raster order within a step
        r, c, bounds = r[order], c[order], np.searchsorted(t[order], np.arange(int(t.max()) + 2))
        del t, order  # freed before the places are computed, for a large grid's peak memory
        th, tw = self.tile
        place = ((r // th) * self.across + c // tw) * self.tile_size + (r % th + 2) * self.pitch + c % tw + 3
        parent = (r // 2 + 1) * self.coarse_pitch + c // 2 + 1  # unread for the coarsest grid (no coarser one)
        return [RasterStep((r[a:b], c[a:b]), place[a:b], parent[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]

    def contexts(self, place: np.ndarray, parent_place: np.ndarray) -> np.ndarray:
        """(n, N_CONTEXT_RASTER) for the latents at ``place`` (:meth:`steps`): the latents at ``RASTER_OFFSETS`` (zero
        outside the grid or the tile), then the 9 coarser values around each ``parent_place`` (zero outside; all zero
        for the coarsest grid)."""
        ctx = np.zeros((place.size, N_CONTEXT_RASTER))
        ctx[:, : len(RASTER_OFFSETS)] = self.flat[place[:, None] + self.offsets]
        if self.coarse is not None:
            ctx[:, len(RASTER_OFFSETS) :] = self.coarse[parent_place[:, None] + self.coarse_offsets]
        return ctx

    def put(self, place: np.ndarray, values: np.ndarray) -> None:
        self.flat[place] = values

    def grid(self) -> np.ndarray:
        """The decoded grid as int64."""
        (h, w), (th, tw) = self.shape, self.tile
        tiles = self.flat.reshape(-1, self.across, th + 2, self.pitch)[:, :, 2:, 3 : 3 + tw]
        return tiles.transpose(0, 2, 1, 3).reshape(-1, self.across * tw)[:h, :w].astype(np.int64)


def predict_raster(net: list[FixedLayer], grid: RasterGrid, step: RasterStep, n_scales: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The mean and scale index (below ``n_scales``) of every latent of ``step`` of ``grid``: evaluated in blocks of
    ``BLOCK`` latents, which bounds the working memory of a step of a large image and changes nothing in the result
    (the latents of a step are independent)."""
    n = step.place.size
    mu, scale = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        ctx = grid.contexts(step.place[a:b], step.parent_place[a:b])
        mu[a:b], scale[a:b] = means_and_scales(fixed_mlp(ctx, net), n_scales)
    return mu, scale


def centres_and_tables(mu: np.ndarray, scale: np.ndarray, first: np.ndarray, phase_counts: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Version 12: the integer nearest to each mean (ties up), in fixed point, and the table of its scale and of the
    phase of the mean above it (``first[s] + j``, j below P(s) = ``phase_counts[s]``)."""
    centre = (mu + (ONE >> 1)) >> FRAC_BITS
    frac = mu + (ONE >> 1) - (centre << FRAC_BITS)  # 0 .. ONE - 1
    return centre << FRAC_BITS, first[scale] + ((frac * phase_counts[scale]) >> FRAC_BITS)


def manager_inputs(grids: list[np.ndarray], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Per pixel, the value of each grid at ``(row >> l, col >> l)``: integer inputs for routing."""
    return np.stack([g[rows >> l, cols >> l] for l, g in enumerate(grids)], axis=1)
