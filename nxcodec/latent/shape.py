"""Latent shape streams (versions 5 to 8): a signed distance field on 3-D latent grids (SPEC.md sections 11 to 14).

The shape's cube [-1, 1]^3 (network coordinates, placed by the shape descriptor) carries
a pyramid of 3-D latent grids: the finest has ``2**g + 1`` vertices per axis, each
coarser one half as many intervals, so every vertex of a coarser grid sits on a vertex of
the finer one. The grids are coded as one body, exactly as an image's planes are, with
the 3-D contexts of ``nxcodec.latent.context``. At a point, each grid is interpolated
trilinearly; the manager routes the point by the integer latents of the cells holding it,
and the chosen expert maps the interpolated values to the truncated signed distance.
Version 7 adds an occupancy map (``nxcodec.latent.occupancy``): only the latents around
occupied cells are coded, and the field in a free cell is a constant inside or outside.
Version 8 lets the config name the built-in context models (``nxcodec.latent.builtin``)
instead of coding its own. Marching cubes (``nxcodec.signals.meshfile``) then extracts
the surface at a resolution chosen at decode time. Everything here is numpy: no torch.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from nxcodec.errors import StreamError
from nxcodec.latent import occupancy as occupancy_map
from nxcodec.latent.context import ONE, FixedLayer, fixed_mlp, level_sizes, route
from nxcodec.latent.occupancy import Occupancy
from nxcodec.latent.stream import (MAGIC, PREFIX, CodedTensor, Header, LatentConfig, decode_body, describe_config,
                                   digest, fixed_layers, read_body, read_prefix, with_crc, write_body)
from nxcodec.latent.synthesis import mlp
from nxcodec.signals import meshfile
from nxcodec.signals.meshfile import DEFAULT_RESOLUTION, ShapeDescriptor
from nxcodec.signals.sdf import Mesh

VERSION = 8  # written; versions 5 (no escapes), 6 (no occupancy map) and 7 (no built-in models) are still read
VERSIONS = (5, 6, 7, 8)
BUILTIN_VERSION = 8  # the first version whose config may name the built-in context models
MODALITY_SHAPE = 3
MIN_GRID_LOG2, MAX_GRID_LOG2 = 2, 7  # finest grid from 5^3 to 129^3 vertices
BLOCK = 1 << 15  # points per block of the per-point networks (bounds memory)
_GRID = struct.Struct("<B")
DECODE_OPTIONS = ("resolution", "max_faces")  # what ``decode`` and ``work`` take


@dataclass(frozen=True)
class ShapeLatentDescriptor:
    """Where the cube goes and how fine its finest latent grid is."""

    shape: ShapeDescriptor
    grid_log2: int  # the finest grid has 2**grid_log2 + 1 vertices per axis

    @property
    def side(self) -> int:
        return (1 << self.grid_log2) + 1

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.side,) * 3

    def describe(self) -> str:
        return f"{meshfile.describe(self.shape)}, finest latent grid {self.side}^3"


def pack(d: ShapeLatentDescriptor) -> bytes:
    return meshfile.pack(d.shape) + _GRID.pack(d.grid_log2)


def unpack(data: bytes) -> ShapeLatentDescriptor:
    """Parse and bound-check a shape descriptor (versions 5 to 8) (``StreamError`` if invalid)."""
    n = len(data) - _GRID.size
    if n < 0:
        raise StreamError("shape descriptor has the wrong size")
    (g,) = _GRID.unpack(data[n:])
    if not MIN_GRID_LOG2 <= g <= MAX_GRID_LOG2:
        raise StreamError(f"shape descriptor declares a latent grid of 2^{g} + 1 vertices, outside "
                          f"2^{MIN_GRID_LOG2} .. 2^{MAX_GRID_LOG2}")
    return ShapeLatentDescriptor(meshfile.unpack(data[:n]), g)


@dataclass
class ShapeHeader(Header):
    """A shape stream's header, with its occupancy map (versions 7 and 8; None before)."""

    occupancy: Occupancy | None = None


def read_header(data: bytes) -> ShapeHeader:
    """Parse and check everything but the payload (the occupancy map, small, is decoded): the limits hold
    before anything is decoded."""
    desc, pos = read_prefix(data, VERSIONS, MODALITY_SHAPE, "latent shape")
    d = unpack(desc)
    occupancy, occ_start = None, pos
    if data[4] >= 7:
        occupancy, pos = occupancy_map.read(data, pos, len(data) - 4, d.grid_log2)
    body, end = read_body(data, pos, len(data) - 4, d.grid, 1, data[4])
    if body.config.flags and data[4] < BUILTIN_VERSION:
        raise StreamError("latent config has flags, which this stream's version does not define")
    if body.config.levels > d.grid_log2 + 1:
        raise StreamError("latent config declares a grid with fewer than two vertices per axis")
    if end != len(data) - 4:
        raise StreamError("payload length does not match the stream size")
    sizes = {"header": PREFIX.size, "descriptor": len(desc), "occupancy": pos - occ_start, "config": LatentConfig.SIZE,
             "tensor_table": body.table_size, "payload": 4 + len(body.payload),
             "crc": 4}
    if occupancy is None:
        del sizes["occupancy"]
    return ShapeHeader(d, body, sizes, occupancy)


def _macs(config: LatentConfig) -> tuple[float, float]:
    """Multiply-adds per latent (context model) and per evaluated point (interpolation, manager, one expert)."""
    shapes = replace(config, flags=0).tensor_shapes(1, 3)  # built-in context models cost the same work

    def macs(prefix: str) -> int:
        return sum(math.prod(s[-2:]) for n, s in shapes.items() if n.startswith(prefix) and n.endswith("weight"))

    per_latent = (macs("arm_a.") + macs("arm_b.")) / 2
    per_point = 8 * config.levels + macs("manager.") + macs("experts.")
    return per_latent, per_point


def decode_points(resolution: int) -> int:
    """Field evaluations of a decode at ``resolution``: the grid, plus at most a seventh for block centres."""
    return resolution**3 + -(-(resolution**3) // 7)


def work(data: bytes, resolution: int | None = None, max_faces: int | None = None) -> tuple[int, float, float]:
    """Samples held (none: a mesh is bounded by its faces), multiply-adds per point, and in all that decoding at
    ``resolution`` would take at most (SPEC.md 11.3)."""
    h = read_header(data)
    r = DEFAULT_RESOLUTION if resolution is None else resolution
    meshfile.check_resolution(r)
    per_latent, per_point = _macs(h.config)
    latents = sum(math.prod(s) for s in level_sizes(h.descriptor.grid, h.config.levels))
    points = decode_points(r)
    return 0, per_point, per_point * points + per_latent * latents


def info(data: bytes) -> list[tuple[str, str]]:
    """What ``nxcodec info`` shows of a shape stream, from its header."""
    h = read_header(data)
    per_latent, per_point = _macs(h.config)
    return [("signal", h.descriptor.describe()),
            ("rate", f"{meshfile.rate(h.descriptor, len(data)):.3f} KB (whole file)"),
            ("bytes", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in h.sizes.items())),
            ("parameters", str(sum(math.prod(shape) for shape, *_ in h.body.table.values()))),
            ("model", describe_config(h.config)),
            ("decoder", f"{per_latent:.0f} multiply-adds per latent, {per_point:.0f} per evaluated point")]


@dataclass
class LatentShape:
    """Everything a latent shape stream decodes to before the field is evaluated."""

    descriptor: ShapeLatentDescriptor
    config: LatentConfig
    tensors: "OrderedDict[str, CodedTensor]"
    grids: list[np.ndarray]  # int64 latents with context.FRAC_BITS fractional bits, finest first
    occupancy: Occupancy | None = None  # versions 7 and 8

    def digest(self) -> str:
        """SHA-256 of the integers: tensors, grids, then (versions 7 and 8) the occupied cells and the inside bits."""
        occ = self.occupancy
        extra = [] if occ is None else [occ.cells.astype(np.int64), occ.inside.astype(np.int64)]
        return digest(self.tensors, self.grids + extra)


def decode_latents(data: bytes) -> LatentShape:
    """Entropy-decode a latent shape stream into its integer tensors and latent grids."""
    h = read_header(data)
    masks = None if h.occupancy is None else h.occupancy.latent_masks(h.descriptor.grid_log2, h.config.levels)
    tensors, grids = decode_body(h.body, h.descriptor.grid, masks)
    return LatentShape(h.descriptor, h.config, tensors, grids, h.occupancy)


class Field:
    """The decoded signed distance (in units of the truncation) at any points of the cube (SPEC.md 11.5).

    Interpolation and the experts run in binary64; the routing is integer arithmetic on
    the latents, from cell indices that binary32 points give exactly.
    """

    def __init__(self, image: LatentShape) -> None:
        self.occupancy = image.occupancy
        self.grids = image.grids
        self.values = [g.astype(np.float64) / ONE for g in image.grids]
        names = [n[: -len(".weight")] for n in image.tensors if n.startswith("experts.") and n.endswith(".weight")]
        self.experts = [(image.tensors[f"{n}.weight"].values().astype(np.float64),
                         image.tensors[f"{n}.bias"].values().astype(np.float64)) for n in names]
        self.manager: list[FixedLayer] = fixed_layers(image.tensors, "manager")

    def cells(self, points: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Each point's cell in grid ``level`` (the index of its lowest corner) and its offsets in it.

        ``u = (p + 1) / 2 * (n - 1)`` is exact in binary64 for binary32 points (an add of 1
        and a power-of-two scale), so the cell ``clamp(floor(u), 0, n - 2)`` is the same on
        every machine.
        """
        n = self.grids[level].shape[0]
        u = (points.astype(np.float64) + 1.0) * ((n - 1) / 2.0)
        cell = np.clip(np.floor(u), 0, n - 2).astype(np.int64)
        return cell, u - cell

    def __call__(self, points: np.ndarray) -> np.ndarray:
        if self.occupancy is not None:  # versions 7 and 8: the networks only in occupied cells
            occupied, out = self.occupancy.lookup(points)
            inside = np.flatnonzero(occupied)
            out[inside] = self._blocks(points[inside])
            return out
        return self._blocks(points)

    def _blocks(self, points: np.ndarray) -> np.ndarray:
        out = np.empty(len(points), dtype=np.float64)
        for a in range(0, len(points), BLOCK):
            out[a : a + BLOCK] = self._block(points[a : a + BLOCK])
        return out

    def _block(self, points: np.ndarray) -> np.ndarray:
        feats = []
        for level, values in enumerate(self.values):
            cell, t = self.cells(points, level)
            n = values.shape[0]
            corner = (cell[:, 0] * n + cell[:, 1]) * n + cell[:, 2]  # flat index of the lowest corner
            flat = values.reshape(-1)
            f = np.zeros(len(points))
            for dx in (0, 1):
                wx = t[:, 0] if dx else 1 - t[:, 0]
                for dy in (0, 1):
                    wxy = wx * (t[:, 1] if dy else 1 - t[:, 1])
                    for dz in (0, 1):
                        wz = t[:, 2] if dz else 1 - t[:, 2]
                        f += wxy * wz * flat[corner + ((dx * n + dy) * n + dz)]
            feats.append(f)
        x = np.stack(feats, axis=1)
        choice = self.experts_of(points)
        out = np.empty(len(x))
        for e in range(len(self.experts[0][1])):
            sel = np.flatnonzero(choice == e)
            out[sel] = mlp(x[sel], [(w[e], b[e]) for w, b in self.experts])[:, 0]
        return out

    def experts_of(self, points: np.ndarray) -> np.ndarray:
        """The expert each point is routed to (0 with one expert)."""
        if len(self.experts[0][1]) == 1:
            return np.zeros(len(points), dtype=np.int64)
        routing = np.stack([g[tuple(self.cells(points, l)[0].T)] for l, g in enumerate(self.grids)], axis=1)
        return route(fixed_mlp(routing, self.manager))


def reconstruct(image: LatentShape, resolution: int | None = None, max_faces: int | None = None) -> Mesh:
    """The decoded surface, in the original frame."""
    r = DEFAULT_RESOLUTION if resolution is None else resolution
    return meshfile.decode_mesh(Field(image), image.descriptor.shape, r, max_faces)


def decode(data: bytes, resolution: int | None = None, max_faces: int | None = None
           ) -> tuple[ShapeLatentDescriptor, Mesh]:
    """A latent shape stream (version 5, 6 or 7) to its descriptor and mesh."""
    image = decode_latents(data)
    return image.descriptor, reconstruct(image, resolution, max_faces)


def write(d: ShapeLatentDescriptor, config: LatentConfig, tensors: "OrderedDict[str, CodedTensor]",
          latents: list[np.ndarray], occupancy: Occupancy, dead_zone: float = 0.5) -> tuple[bytes, LatentShape]:
    """Code a shape as a version 8 stream (see :func:`nxcodec.latent.stream.write_body`; only the latents around
    ``occupancy``'s occupied cells are coded); returns it and what a decoder rebuilds."""
    if tuple(latents[0].shape) != d.grid or config.levels > d.grid_log2 + 1:
        raise ValueError("latents do not match the descriptor's grid")
    if not 1 <= occupancy.log2 <= d.grid_log2:
        raise ValueError("the occupancy map is finer than the latent grid")
    masks = occupancy.latent_masks(d.grid_log2, config.levels)
    body, grids = write_body(config, 1, tensors, latents, VERSION, dead_zone, masks)
    desc = pack(d)
    return with_crc(PREFIX.pack(MAGIC, VERSION, MODALITY_SHAPE, len(desc)) + desc + occupancy_map.write(occupancy)
                    + body), LatentShape(d, config, tensors, grids, occupancy)
