"""The occupancy map of version 7 and 8 shape streams (SPEC.md section 13): which cells of the cube may hold the surface.

The cube is cut into ``2**log2`` cells per axis. An *occupied* cell may hold the surface;
a *free* one lies at least the truncation away from it, so the field there is a constant
+1 (outside) or -1 (inside). Only the latents at corners of occupied cells are coded (the
others are 0), and the decoder evaluates the networks only in occupied cells. The free
cells fall into face-connected components, and each component carries one bit: inside
or outside.

The map is coded as an octree: level ``k`` has ``2**k`` cells per axis, a cell is occupied
when any of its eight children is, and a level's cells are coded only where their parent
is occupied, in two passes like the latents (coordinate sum even, then odd). Each bit is
coded under a binary table chosen by how many of its face neighbours are occupied: the
parent's neighbours in pass A, its own (pass A) neighbours in pass B. Shared by the
encoder and the decoder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage

from nxcodec.errors import StreamError
from nxcodec.latent import rans
from nxcodec.latent.context import pass_positions

FACES = ((-1, 0, 0), (0, -1, 0), (0, 0, -1), (1, 0, 0), (0, 1, 0), (0, 0, 1))
CONTEXTS = len(FACES) + 1  # 0 .. 6 occupied face neighbours
SIGN_MODEL = 2 * CONTEXTS  # the components' inside bits, under a uniform binary table
HEAD = struct.Struct(f"<B{2 * CONTEXTS}BI")  # log2, the tables' probabilities, payload length


@dataclass(frozen=True)
class Occupancy:
    """The occupied cells (bool, ``2**log2`` per axis) and, per free component in order, whether it is inside."""

    cells: np.ndarray
    inside: np.ndarray  # bool, one per free component (see :func:`components`)

    @property
    def log2(self) -> int:
        return self.cells.shape[0].bit_length() - 1

    def pyramid(self) -> list[np.ndarray]:
        """The occupancy of every level, from one cell (level 0) to the map itself."""
        levels = [self.cells]
        while levels[0].shape[0] > 1:
            c = levels[0].shape[0] // 2
            levels.insert(0, levels[0].reshape(c, 2, c, 2, c, 2).any(axis=(1, 3, 5)))
        return levels

    def latent_masks(self, grid_log2: int, levels: int) -> list[np.ndarray]:
        """For grid ``l`` (``2**(grid_log2 - l)`` cells per axis), the vertices at a corner of an occupied cell."""
        pyramid = self.pyramid()
        masks = []
        for level in range(levels):
            e = grid_log2 - level
            cells = pyramid[e] if e <= self.log2 else _repeat(self.cells, 1 << (e - self.log2))
            padded, c = np.pad(cells, 1), cells.shape[0]
            mask = np.zeros((c + 1,) * 3, dtype=bool)
            for a in (0, 1):
                for b in (0, 1):
                    for d in (0, 1):
                        mask |= padded[a : a + c + 1, b : b + c + 1, d : d + c + 1]
            masks.append(mask)
        return masks

    def lookup(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per point (binary32 coordinates in the cube): whether its cell is occupied, and the free field value
        there (+1 outside, -1 inside; 0 in occupied cells). ``(p + 1) * C / 2`` is exact in binary64."""
        n = self.cells.shape[0]
        cell = np.clip(np.floor((points.astype(np.float64) + 1.0) * (n / 2.0)), 0, n - 1).astype(np.int64)
        index = tuple(cell.T)
        return self.cells[index], self.free_values[index]

    @cached_property
    def free_values(self) -> np.ndarray:
        """The field in every cell: 0 where occupied, -1 in inside components, +1 in outside ones."""
        labels, n = components(self.cells)
        return np.concatenate([[0.0], np.where(self.inside[:n], -1.0, 1.0)])[labels]


def _sign_flips(free: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The free cells with a free face neighbour of the other sign."""
    flips = np.zeros_like(free)
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        pair = free[a] & free[b] & (inside[a] != inside[b])
        flips[a] |= pair
        flips[b] |= pair
    return flips


def _repeat(cells: np.ndarray, r: int) -> np.ndarray:
    return cells.repeat(r, 0).repeat(r, 1).repeat(r, 2)


def components(cells: np.ndarray) -> tuple[np.ndarray, int]:
    """Face-connected components of the free cells: a label per cell (0 for occupied ones, else 1 .. n), numbered
    in the raster order of each component's first cell, and n."""
    labels, n = ndimage.label(~cells)  # the default structure of 3-D arrays is face connectivity
    if n == 0:
        return labels, 0
    ids, first = np.unique(labels.ravel(), return_index=True)
    order = ids[ids > 0][np.argsort(first[ids > 0], kind="stable")]
    renumber = np.zeros(n + 1, dtype=np.int64)
    renumber[order] = np.arange(1, n + 1)
    return renumber[labels], n


def _neighbours(grid: np.ndarray, pos: tuple[np.ndarray, ...]) -> np.ndarray:
    """How many of the six face neighbours of each position are occupied (outside the grid: free)."""
    padded = np.pad(grid, 1)
    return sum(padded[tuple(p + 1 + d for p, d in zip(pos, off))].astype(np.int64) for off in FACES)


def _walk(log2: int, bits) -> np.ndarray:
    """Build the pyramid level by level and return its finest level; ``bits(k, positions, models)`` gives the
    occupancy of those positions of level ``k`` (the encoder looks it up, the decoder reads it)."""
    parent = None
    for k in range(log2 + 1):
        size = 1 << k
        grid = np.zeros((size,) * 3, dtype=bool)
        for parity in (0, 1):
            pos = pass_positions((size,) * 3, parity)
            if parent is not None:
                keep = parent[tuple(p // 2 for p in pos)]
                pos = tuple(p[keep] for p in pos)
            if pos[0].size == 0:
                continue
            if parity == 0:
                ctx = np.zeros(pos[0].size, np.int64) if parent is None else _neighbours(
                    parent, tuple(p // 2 for p in pos))
            else:
                ctx = CONTEXTS + _neighbours(grid, pos)
            grid[pos] = bits(k, pos, ctx)
        parent = grid
    return parent


def _tables(probs: np.ndarray) -> rans.Tables:
    ones = np.asarray(probs, dtype=np.int64) << 8
    return rans.Tables([np.array([rans.TOTAL - f, f]) for f in ones] + [np.array([rans.TOTAL // 2] * 2)])


def level_bits(levels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The bits an octree over ``levels`` (level 0 to the map, :meth:`Occupancy.pyramid`) codes, in coding order, and
    the table of each."""
    symbols, models = [], []

    def take(k: int, pos, ctx: np.ndarray) -> np.ndarray:
        values = levels[k][pos]
        symbols.append(values.astype(np.int64))
        models.append(ctx)
        return values

    _walk(len(levels) - 1, take)
    return np.concatenate(symbols), np.concatenate(models)


def code_section(log2: int, probs: np.ndarray, bits: np.ndarray, models: np.ndarray, inside: np.ndarray) -> bytes:
    """The occupancy section: ``log2``, the 14 tables' probabilities of an occupied cell (in 256ths), the payload's
    length, and its one-lane rANS payload (``bits`` under ``models``, then the components' inside bits)."""
    n = len(inside)
    payload = rans.encode(np.concatenate([bits, inside.astype(np.int64)]),
                          np.concatenate([models, np.full(n, SIGN_MODEL)]), _tables(probs), 1)
    return HEAD.pack(log2, *np.asarray(probs).tolist(), len(payload)) + payload


def write(occ: Occupancy) -> bytes:
    """The occupancy section of ``occ``, its tables' probabilities those of its own bits."""
    bit, ctx = level_bits(occ.pyramid())
    ones = np.bincount(ctx, weights=bit, minlength=2 * CONTEXTS)
    seen = np.bincount(ctx, minlength=2 * CONTEXTS)
    probs = np.clip(np.round(256 * ones / np.maximum(seen, 1)), 1, 255).astype(np.int64)
    probs[seen == 0] = 128
    _, n = components(occ.cells)
    if len(occ.inside) != n:
        raise ValueError(f"the map has {n} free components but {len(occ.inside)} inside bits")
    return code_section(occ.log2, probs, bit, ctx, occ.inside)


def read(data: bytes, pos: int, end: int, max_log2: int) -> tuple[Occupancy, int]:
    """Parse and decode the occupancy section at ``data[pos:]`` (``StreamError`` if it is invalid); returns the
    map and the position after it."""
    if end - pos < HEAD.size:
        raise StreamError("stream ends inside the occupancy section")
    log2, *probs, length = HEAD.unpack_from(data, pos)
    if not 1 <= log2 <= max_log2:
        raise StreamError(f"occupancy map of 2^{log2} cells per axis, outside 2^1 .. 2^{max_log2}")
    if min(probs) < 1 or max(probs) > 255:
        raise StreamError("occupancy table with a probability of 0 or 1")
    start = pos + HEAD.size
    if length > end - start:
        raise StreamError("occupancy payload runs past the end of the stream")
    try:
        decoder = rans.Decoder(data[start : start + length], _tables(np.array(probs)), 1)
        cells = _walk(log2, lambda k, p, ctx: decoder.decode(ctx).astype(bool))
        _, n = components(cells)
        inside = decoder.decode(np.full(n, SIGN_MODEL, dtype=np.int64)).astype(bool)
        decoder.finish()
    except rans.CorruptStream as exc:
        raise StreamError(f"occupancy map does not decode: {exc}") from None
    return Occupancy(cells, inside), start + length


def from_distance(distance, log2: int, trunc: float) -> Occupancy:
    """The map an encoder codes: a cell is occupied when ``distance`` (signed, network units, of points (n, 3))
    at its centre is within the truncation plus the half diagonal (so a free cell is at least the truncation
    from the surface everywhere), or when it is free and a face neighbour of the other sign is too.

    The second rule is for open meshes: through a hole, the inside reaches the outside without crossing the
    surface, and the sign (from the winding number) flips away from it. Occupying the free cells on both sides
    of each flip leaves every free component of one sign, which its inside bit then holds exactly, and the
    networks close the hole as they do where the map is occupied anyway."""
    c = 1 << log2
    axis = -1 + (2.0 / c) * (np.arange(c) + 0.5)
    centres = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    d = np.asarray(distance(centres), dtype=np.float64).reshape(c, c, c)
    cells = np.abs(d) < trunc + np.sqrt(3) / c
    cells |= _sign_flips(~cells, d < 0)
    labels, n = components(cells)
    inside_votes = np.bincount(labels.ravel(), weights=(d < 0).ravel(), minlength=n + 1)[1:]
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return Occupancy(cells, inside_votes * 2 > sizes)
