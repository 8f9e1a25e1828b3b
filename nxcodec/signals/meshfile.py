"""Shape descriptors and meshing, without torch: shared by every shape format version.

A shape stream describes where the unit cube goes (:class:`ShapeDescriptor`) and a
truncated signed distance field in network coordinates; the decoder extracts the field's
zero level with marching cubes at a resolution chosen at decode time, evaluating the field
only in blocks near the surface (:func:`extract_surface`). The field is any function
from points ``(n, 3)`` to values ``(n,)``: a coordinate network (formats 1-2, through
torch) or latent grids (format 5, numpy).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from nxcodec.errors import InputError, StreamError
from nxcodec.signals.sdf import Mesh

EXTENT = 0.9  # the mesh's largest half-extent in network coordinates; the rest is margin
TRUNC = 0.1  # truncation of the signed distance, network coordinates (format 2; format 8 presets set their own)
BOX = EXTENT + TRUNC / 2  # nothing is decoded beyond this half-extent: every surface closes inside the grid
DEFAULT_RESOLUTION = 256
MAX_RESOLUTION = 1024
MIN_RESOLUTION = 8
MAX_FACES = 1 << 24
FACES_PER_CELL2 = 64  # a decoded surface may have at most this x resolution^2 faces (a sphere has 5) ...
MIN_FACE_LIMIT = 1 << 20  # ... or this many, whichever is more (small grids cannot grow huge)
MAX_COORD = 1e12  # largest |centre| and scale a descriptor may declare
BLOCK_SLACK = 1.5  # a block is refined when |f| < slack x its half-diagonal (f is about 1-Lipschitz)
MIN_COMPONENT = 0.005  # decoded components with less of the total area are floaters and dropped

_DESC = struct.Struct("<5f")  # centre x, y, z, scale, truncation


@dataclass(frozen=True)
class ShapeDescriptor:
    """Where the unit cube goes (``original = network coordinates * scale + centre``) and the truncation."""

    centre: tuple[float, float, float]
    scale: float
    trunc: float = TRUNC


def to_network(d: ShapeDescriptor, v: np.ndarray) -> np.ndarray:
    return (v - np.asarray(d.centre)) / d.scale


def from_network(d: ShapeDescriptor, v: np.ndarray) -> np.ndarray:
    return v * d.scale + np.asarray(d.centre)


def pack(d: ShapeDescriptor) -> bytes:
    return _DESC.pack(*d.centre, d.scale, d.trunc)


def unpack(data: bytes) -> ShapeDescriptor:
    """A descriptor from its 20 bytes, refusing values no encoder writes."""
    if len(data) != _DESC.size:
        raise StreamError("shape descriptor has the wrong size")
    cx, cy, cz, scale, trunc = _DESC.unpack(data)
    if not all(math.isfinite(x) and abs(x) <= MAX_COORD for x in (cx, cy, cz)):
        raise StreamError("shape descriptor declares a non-finite or absurd centre")
    if not (math.isfinite(scale) and 1e-12 <= scale <= MAX_COORD):
        raise StreamError("shape descriptor declares a non-finite, non-positive or absurd scale")
    if not (math.isfinite(trunc) and 1e-4 <= trunc <= 2.0):
        raise StreamError("shape descriptor declares an invalid truncation")
    return ShapeDescriptor((cx, cy, cz), scale, trunc)


def describe(d: ShapeDescriptor) -> str:
    c = ", ".join(f"{x:.6g}" for x in d.centre)
    return f"shape (signed distance), centre ({c}), half-size {d.scale * EXTENT:.6g}"


Field = Callable[[np.ndarray], np.ndarray]  # points (n, 3) float32, network coordinates -> values (n,)


def inside_box(field: Field, d: ShapeDescriptor) -> Field:
    """The field intersected with the cube of half-extent ``BOX``: ``max(f, (|x|_inf - BOX) / trunc)``.

    The input mesh lies within ``EXTENT``, so anything a decoded field puts beyond it is an
    artefact of the fit (a short fit can dip below zero in the sparsely sampled margin).
    Cutting it there keeps every decoded surface closed and inside the grid.
    """

    def bounded(points: np.ndarray) -> np.ndarray:
        box = (np.abs(points).max(axis=-1) - np.float32(BOX)) / np.float32(d.trunc)
        return np.maximum(field(points), box)

    return bounded


def _block_size(resolution: int, trunc: float) -> int:
    """Largest power-of-two block (in cells) whose slack-scaled half-diagonal stays under the truncation.

    Only then does a centre value of +-1 (truncated) prove that the block holds no surface.
    """
    cell = 2.0 / (resolution - 1)
    b = 1
    while BLOCK_SLACK * (2 * b) * cell * math.sqrt(3) / 2 <= 0.9 * trunc and 2 * b < resolution:
        b *= 2
    return b


def _active_blocks(field: Field, d: ShapeDescriptor, r: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Coarse-to-fine search for the blocks that may hold the surface.

    Blocks start as large as the truncation allows; a block's centre value bounds the
    distance to the surface (the field is about 1-Lipschitz), so a block whose centre is
    farther than its reach is settled with that sign, and the others split into 8 until
    the finest size. Returns the finest block size, its active mask and its signs.
    """
    cell = 2.0 / (r - 1)
    finest = max(2, 1 << max(0, int(math.log2(r / 128))))
    b = _block_size(r, d.trunc)
    if b < finest:  # too coarse a grid for blocks to prune anything: evaluate it all
        return r - 1, np.ones((1, 1, 1), dtype=bool), np.ones((1, 1, 1), dtype=np.int8)
    nb = math.ceil((r - 1) / b)
    idx = np.stack(np.meshgrid(*[np.arange(nb)] * 3, indexing="ij"), -1).reshape(-1, 3)
    signs = np.ones((nb,) * 3, dtype=np.int8)
    while True:
        centres = (np.minimum((idx + 0.5) * b, r - 1) * cell - 1.0).astype(np.float32)
        values = field(centres)
        signs[tuple(idx.T)] = np.where(values < 0, -1, 1)
        near = np.abs(values) * d.trunc < BLOCK_SLACK * b * cell * math.sqrt(3) / 2
        if b == finest:
            active = np.zeros((nb,) * 3, dtype=bool)
            active[tuple(idx[near].T)] = True
            return b, active, signs
        b //= 2
        nb2 = math.ceil((r - 1) / b)
        signs = np.repeat(np.repeat(np.repeat(signs, 2, 0), 2, 1), 2, 2)[:nb2, :nb2, :nb2]
        nb = nb2
        kids = (idx[near][:, None, :] * 2 + np.stack(np.meshgrid(*[[0, 1]] * 3, indexing="ij"), -1).reshape(1, 8, 3))
        kids = kids.reshape(-1, 3)
        idx = kids[(kids < nb).all(axis=1)]
        if len(idx) == 0:
            return b, np.zeros((nb,) * 3, dtype=bool), signs


def face_limit(resolution: int, max_faces: int | None = None) -> int:
    """The most faces a surface decoded at ``resolution`` may have: ``max(64 R^2, 2^20)``, or ``max_faces`` if lower."""
    limit = max(FACES_PER_CELL2 * resolution * resolution, MIN_FACE_LIMIT)
    return limit if max_faces is None else min(limit, max_faces)


def extract_surface(field: Field, d: ShapeDescriptor, resolution: int,
                    max_faces: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of the field's zero level on a ``resolution``^3 grid over [-1, 1]^3 (network coordinates).

    Only the grid points of blocks near the surface are evaluated (:func:`_active_blocks`);
    the others take their block's sign. The grid is processed in slabs of blocks along z,
    so memory stays at two slabs for any resolution; a slab's triangles are made once the
    plane it shares with the next slab is final, so the slabs join without cracks.
    """
    from skimage.measure import marching_cubes

    r = resolution
    axis = np.linspace(-1.0, 1.0, r, dtype=np.float32)
    b, active, signs = _active_blocks(field, d, r)
    nb = active.shape[0]
    # the blocks each grid point along an axis belongs to: its own, and the previous one on a block border
    p = np.arange(r)
    own = np.minimum(p // b, nb - 1)
    prev_block = np.where((p % b == 0) & (p > 0), p // b - 1, own)
    verts, faces, count = [], [], 0
    limit = face_limit(r, max_faces)
    prev = None  # (values, evaluated) of the previous slab, whose triangles wait for this slab's first plane

    def flush(values: np.ndarray, z0: int) -> None:
        nonlocal count
        if values.min() >= 0 or values.max() <= 0:
            return
        if not np.isfinite(values).all():
            raise StreamError("the network's distance field is not finite: the stream is not a shape")
        try:
            v, f, _, _ = marching_cubes(values, level=0.0, gradient_direction="descent", allow_degenerate=False)
        except (ValueError, RuntimeError) as exc:
            raise StreamError(f"the decoded distance field cannot be meshed ({type(exc).__name__}: {exc})") from None
        v[:, 2] += z0
        verts.append(v)
        faces.append(f + count)
        count += len(v)
        if sum(len(x) for x in faces) > limit:  # a noise-like field (a hostile stream or a failed fit)
            raise StreamError(f"the decoded surface exceeds {limit} faces at resolution {r}: "
                              "the network is not a shape's distance field")

    for zc in range(nb):
        z0, z1 = zc * b, min(zc * b + b, r - 1)
        nz = z1 - z0 + 1
        a = active[:, :, zc]
        need2d = a[own][:, own] | a[own][:, prev_block] | a[prev_block][:, own] | a[prev_block][:, prev_block]
        need = np.repeat(need2d[:, :, None], nz, axis=2)
        values = np.repeat(signs[:, :, zc][own][:, own].astype(np.float32)[:, :, None], nz, axis=2)
        done = np.zeros_like(need)
        if prev is not None:  # the first plane is the previous slab's last: reuse what it evaluated
            done[:, :, 0] = prev[1][:, :, -1]
            values[:, :, 0] = np.where(done[:, :, 0], prev[0][:, :, -1], values[:, :, 0])
        todo = need & ~done
        if todo.any():
            ix, iy, iz = np.nonzero(todo)
            pts = np.stack([axis[ix], axis[iy], axis[iz + z0]], -1)
            values[ix, iy, iz] = field(pts)
        if prev is not None:
            prev[0][:, :, -1] = values[:, :, 0]  # the shared plane, now final for both slabs
            flush(prev[0], z0 - (prev[0].shape[2] - 1))
        prev = (values, need | done)
    flush(prev[0], (nb - 1) * b)
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    v = np.concatenate(verts) * (2.0 / (r - 1)) - 1.0
    return v, np.concatenate(faces).astype(np.int64)


def clean_mesh(vertices: np.ndarray, faces: np.ndarray) -> Mesh:
    """Merge slab seams, drop degenerate faces, unused vertices and floating specks; outward normals."""
    import trimesh

    if len(faces) == 0:
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
    m = trimesh.Trimesh(vertices, faces, process=True, validate=True)
    labels = trimesh.graph.connected_component_labels(m.face_adjacency, node_count=len(m.faces))
    area = np.bincount(labels, weights=m.area_faces)
    keep = area[labels] >= MIN_COMPONENT * area.sum()
    if not keep.all():
        m.update_faces(keep)
        m.remove_unreferenced_vertices()
    return Mesh(np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64))


def check_resolution(resolution: int) -> None:
    """Refuse a marching-cubes resolution outside [MIN_RESOLUTION, MAX_RESOLUTION]."""
    if not isinstance(resolution, int) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise InputError(f"--resolution must be an integer from {MIN_RESOLUTION} to {MAX_RESOLUTION}, not {resolution}")


def decode_mesh(field: Field, d: ShapeDescriptor, resolution: int, max_faces: int | None = None) -> Mesh:
    """The zero level of ``field`` (inside the box, :func:`inside_box`) as a clean mesh in the original frame."""
    check_resolution(resolution)
    v, f = extract_surface(inside_box(field, d), d, resolution, max_faces)
    try:
        mesh = clean_mesh(v, f)
    except StreamError:
        raise
    except Exception as exc:  # trimesh's graph and cleaning code raise many kinds on degenerate input
        raise StreamError(f"the decoded surface cannot be cleaned ({type(exc).__name__}: {exc})") from None
    return Mesh(from_network(d, mesh.vertices), mesh.faces)


def write_mesh(mesh: Mesh, path: Path, kind: str) -> None:
    """Write ``mesh`` as ``kind`` (ply, obj or stl)."""
    import trimesh

    data = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(file_type=kind)
    Path(path).write_bytes(data.encode() if isinstance(data, str) else data)


def rate(d: object, n_bytes: int) -> float:
    """Kilobytes (1000 bytes) of a shape stream of ``n_bytes``."""
    return n_bytes / 1000.0


class MeshFiles:
    """What a decoder needs of the shape modality: its name, output types, rate and writer."""

    name = "shape"
    rate_unit = "KB"
    rate = staticmethod(rate)
    extensions = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
    default_extension = ".ply"
    output_extensions: tuple[str, ...] = (".ply", ".obj", ".stl")

    def write(self, d: object, mesh: Mesh, path: Path) -> None:
        """Write by ``path``'s extension, PLY for any other name (a temporary one)."""
        suffix = Path(path).suffix.lower()
        self.write_as(d, mesh, path, suffix if suffix in self.output_extensions else self.default_extension)

    def write_as(self, d: object, mesh: Mesh, path: Path, suffix: str) -> None:
        kind = suffix.lower().lstrip(".")
        if f".{kind}" not in self.output_extensions:
            raise InputError(f"shapes are written as {', '.join(self.output_extensions)}, not '{suffix}'")
        write_mesh(mesh, path, kind)

    def describe(self, d: object) -> str:
        return d.describe() if hasattr(d, "describe") else describe(d)
