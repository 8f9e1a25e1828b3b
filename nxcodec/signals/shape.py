"""3-D shapes: meshes in (OBJ, PLY, STL, OFF, GLB), a signed distance function coded, meshes out.

The mesh is moved into the cube [-0.9, 0.9]^3 (centre and scale are in the descriptor, so
the decoded mesh lands where the input was). The network learns the truncated signed
distance ``clamp(sdf / trunc, -1, 1)`` from random samples on the surface, near it and in
the volume; the decoder extracts its zero level with marching cubes at a resolution
chosen at decode time, evaluating the network only in blocks near the surface.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nxcodec.errors import InputError, StreamError
from nxcodec.fit.losses import gated_l1
from nxcodec.fit.presets import Shape
from nxcodec.signals.base import Field, Modality, Signal, evaluate
from nxcodec.signals.sdf import Mesh, MetricSettings, SurfaceIndex, face_geometry, sample_surface, shape_metrics

EXTENT = 0.9  # the mesh's largest half-extent in network coordinates; the rest is margin
TRUNC = 0.1  # truncation of the signed distance, in network coordinates
BOX = EXTENT + TRUNC / 2  # nothing is decoded beyond this half-extent: every surface closes inside the grid
TRAIN_POINTS = 200_000  # the training set (and the "samples" the presets' budgets scale with)
SURFACE_FRAC, NEAR_FRAC = 0.4, 0.4  # the rest is uniform in the cube
NEAR_SIGMAS = (0.01, 0.04)  # Gaussian offsets of the near-surface samples, network coordinates
DEFAULT_RESOLUTION = 256
MAX_RESOLUTION = 1024
MIN_RESOLUTION = 8
MAX_FACES = 1 << 24
FACES_PER_CELL2 = 64  # a decoded surface may have at most this x resolution^2 faces (a sphere has 5) ...
MIN_FACE_LIMIT = 1 << 20  # ... or this many, whichever is more (small grids cannot grow huge)
MAX_COORD = 1e12  # largest |centre| and scale a descriptor may declare
BLOCK_SLACK = 1.5  # a block is refined when |f| < slack x its half-diagonal (f is about 1-Lipschitz)
MIN_COMPONENT = 0.005  # decoded components with less of the total area are floaters and dropped
SAMPLE_SEED = 0
METRICS = MetricSettings()  # how the encoder's report samples its metrics
SHAPE_SHAPE = Shape(in_dim=3, n_freq=4, w0=30, n_experts=2)

_DESC = struct.Struct("<5f")  # centre x, y, z, scale, truncation


@dataclass(frozen=True)
class ShapeDescriptor:
    """Where the unit cube goes (``original = network coordinates * scale + centre``) and the truncation."""

    centre: tuple[float, float, float]
    scale: float
    trunc: float = TRUNC


@dataclass
class _Samples:
    points: torch.Tensor  # (n, 3) network coordinates
    targets: torch.Tensor  # (n, 1) truncated signed distance in [-1, 1]


class ShapeData(Mesh):
    """The input mesh (original frame) with the training samples and surface index, made once."""

    samples: _Samples | None = None
    index: SurfaceIndex | None = None


def _to_mesh(vertices: Any, faces: Any, what: str) -> ShapeData:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise InputError(f"{what}: not a triangle mesh (no faces)")
    if len(f) > MAX_FACES:
        raise InputError(f"{what}: {len(f)} faces exceed the limit of {MAX_FACES}")
    if not np.isfinite(v).all() or np.abs(v).max() > MAX_COORD:
        raise InputError(f"{what}: vertex coordinates are not finite or absurdly large")
    if f.min() < 0 or f.max() >= len(v):
        raise InputError(f"{what}: faces refer to missing vertices")
    used = v[np.unique(f)]
    if not np.ptp(used, axis=0).max() > 0:
        raise InputError(f"{what}: the mesh is a single point")
    if not face_geometry(Mesh(v, f))[2].sum() > 0:
        raise InputError(f"{what}: the mesh has no area (every face is degenerate)")
    return ShapeData(v, f)


def normalisation(mesh: Mesh) -> ShapeDescriptor:
    """Centre and scale that put the mesh's bounding box in [-EXTENT, EXTENT]^3."""
    used = mesh.vertices[np.unique(mesh.faces)]
    lo, hi = used.min(0), used.max(0)
    centre = (lo + hi) / 2
    scale = float(np.float32((hi - lo).max() / 2 / EXTENT))
    return ShapeDescriptor(tuple(float(c) for c in centre.astype(np.float32)), scale)


def to_network(d: ShapeDescriptor, v: np.ndarray) -> np.ndarray:
    return (v - np.asarray(d.centre)) / d.scale


def from_network(d: ShapeDescriptor, v: np.ndarray) -> np.ndarray:
    return v * d.scale + np.asarray(d.centre)


def training_samples(mesh: ShapeData, d: ShapeDescriptor, n: int | None = None, seed: int = SAMPLE_SEED) -> _Samples:
    """Surface points (target 0), points near the surface and uniform points, with truncated SDF targets."""
    n = n or TRAIN_POINTS
    rng = np.random.default_rng(seed)
    index = mesh.index or SurfaceIndex(mesh)
    mesh.index = index
    n_surf, n_near = int(n * SURFACE_FRAC), int(n * NEAR_FRAC)
    surf, _ = sample_surface(mesh, n_surf + n_near, rng)
    surf = to_network(d, surf)
    sigma = np.repeat(np.asarray(NEAR_SIGMAS), [n_near // 2, n_near - n_near // 2])[:, None]
    near = surf[n_surf:] + rng.normal(size=(n_near, 3)) * sigma
    far = rng.uniform(-1, 1, size=(n - n_surf - n_near, 3))
    query = np.concatenate([near, far])
    sdf = index.signed_distance(from_network(d, query)) / d.scale
    points = np.concatenate([surf[:n_surf], query])
    targets = np.concatenate([np.zeros(n_surf), np.clip(sdf / d.trunc, -1, 1)])
    return _Samples(torch.from_numpy(points.astype(np.float32)), torch.from_numpy(targets.astype(np.float32))[:, None])


def inside_box(field: Field, d: ShapeDescriptor) -> Field:
    """The field intersected with the cube of half-extent ``BOX``: ``max(f, (|x|_inf - BOX) / trunc)``.

    The input mesh lies within ``EXTENT``, so anything the network puts beyond it is an
    artefact of the fit (a short fit can dip below zero in the sparsely sampled margin).
    Cutting it there keeps every decoded surface closed and inside the grid.
    """

    def bounded(coords: torch.Tensor) -> torch.Tensor:
        box = (coords.abs().amax(dim=-1, keepdim=True) - BOX) / d.trunc
        return torch.maximum(field(coords), box)

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


def _active_blocks(field: Field, d: ShapeDescriptor, r: int, device: torch.device) -> tuple[int, np.ndarray, np.ndarray]:
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
        values = evaluate(field, torch.from_numpy(centres), device)[:, 0]
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


def extract_surface(field: Field, d: ShapeDescriptor, resolution: int, device: torch.device,
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
    b, active, signs = _active_blocks(field, d, r, device)
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
            values[ix, iy, iz] = evaluate(field, torch.from_numpy(pts), device)[:, 0]
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


class ShapeModality(Modality):
    id = 3
    name = "shape"
    extensions = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
    output_extensions = (".ply", ".obj", ".stl")
    rate_unit = "KB"
    coord_dim = 3
    default_extension = ".ply"
    decode_options = ("resolution", "max_faces")
    loss = staticmethod(gated_l1)  # the reference's: see gated_l1 for the measurement

    def read(self, path: Path) -> Signal:
        import trimesh

        path = Path(path)
        if path.is_dir():
            raise InputError(f"{path}: is a directory")
        if not path.exists():
            raise InputError(f"{path}: no such file")
        try:
            m = trimesh.load(path, force="mesh", process=False)
        except Exception as exc:  # trimesh raises many kinds on malformed files
            raise InputError(f"{path}: cannot read mesh ({type(exc).__name__}: {exc})") from None
        if not isinstance(m, trimesh.Trimesh):
            raise InputError(f"{path}: holds no triangle mesh")
        return self._signal(_to_mesh(m.vertices, m.faces, str(path)))

    def from_array(self, array: Any) -> Signal:
        """A :class:`Mesh`, a ``trimesh.Trimesh`` or a ``(vertices, faces)`` pair."""
        if isinstance(array, tuple) and len(array) == 2:
            return self._signal(_to_mesh(array[0], array[1], "mesh"))
        if hasattr(array, "vertices") and hasattr(array, "faces"):
            return self._signal(_to_mesh(array.vertices, array.faces, "mesh"))
        raise InputError("a shape must be a mesh: (vertices, faces), a Mesh or a trimesh.Trimesh")

    def _signal(self, mesh: ShapeData) -> Signal:
        return Signal(normalisation(mesh), mesh)

    def pack_descriptor(self, d: ShapeDescriptor) -> bytes:
        return _DESC.pack(*d.centre, d.scale, d.trunc)

    def unpack_descriptor(self, data: bytes) -> ShapeDescriptor:
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

    def channels(self, d: ShapeDescriptor) -> int:
        return 1

    def num_samples(self, d: ShapeDescriptor) -> int:
        return TRAIN_POINTS

    def decode_points(self, d: ShapeDescriptor, **options: Any) -> list[int]:
        """Grid points at the decode resolution, plus at most a seventh more for the coarse-to-fine block centres."""
        r = options.get("resolution")
        r = DEFAULT_RESOLUTION if r is None else r
        check_resolution(r)
        return [r**3 + -(-(r**3) // 7)]

    def decoded_samples(self, d: ShapeDescriptor) -> int:
        return 0  # a mesh, bounded by its faces (face_limit)

    def coords(self, d: ShapeDescriptor, start: int, stop: int) -> torch.Tensor:
        raise NotImplementedError("a shape has no fixed grid: see training_set and reconstruct")

    def _samples(self, signal: Signal) -> _Samples:
        data: ShapeData = signal.data
        if data.samples is None:
            data.samples = training_samples(data, signal.descriptor)
        return data.samples

    def targets(self, signal: Signal) -> torch.Tensor:
        return self._samples(signal).targets

    def training_set(self, signal: Signal, targets: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._samples(signal).points[start:stop], targets[start:stop]

    def to_samples(self, d: ShapeDescriptor, values: np.ndarray) -> np.ndarray:
        return values

    def assemble(self, d: ShapeDescriptor, samples: np.ndarray) -> np.ndarray:
        raise NotImplementedError("a shape is reconstructed by marching cubes, not assembled from a grid")

    def reconstruct(self, d: ShapeDescriptor, fields: list[Field], device: torch.device, **options: Any) -> Mesh:
        """The zero level of the network as a clean mesh in the original frame."""
        unknown = set(options) - set(self.decode_options)
        if unknown:
            raise InputError(f"shape streams take no decode option {', '.join(sorted(unknown))}")
        r = options.get("resolution")
        r = DEFAULT_RESOLUTION if r is None else r
        check_resolution(r)
        v, f = extract_surface(inside_box(fields[0], d), d, r, device, options.get("max_faces"))
        try:
            mesh = clean_mesh(v, f)
        except StreamError:
            raise
        except Exception as exc:  # trimesh's graph and cleaning code raise many kinds on degenerate input
            raise StreamError(f"the decoded surface cannot be cleaned ({type(exc).__name__}: {exc})") from None
        return Mesh(from_network(d, mesh.vertices), mesh.faces)

    def write(self, d: ShapeDescriptor, array: Mesh, path: Path) -> None:
        """Write by ``path``'s extension, PLY for any other name (a temporary one)."""
        suffix = Path(path).suffix.lower()
        self.write_as(d, array, path, suffix if suffix in self.output_extensions else self.default_extension)

    def write_as(self, d: ShapeDescriptor, array: Mesh, path: Path, suffix: str) -> None:
        import trimesh

        kind = suffix.lower().lstrip(".")
        if f".{kind}" not in self.output_extensions:
            raise InputError(f"shapes are written as {', '.join(self.output_extensions)}, not '{suffix}'")
        data = trimesh.Trimesh(array.vertices, array.faces, process=False).export(file_type=kind)
        Path(path).write_bytes(data.encode() if isinstance(data, str) else data)

    def metrics(self, original: Mesh, decoded: Mesh) -> dict[str, float]:
        index = getattr(original, "index", None)
        return shape_metrics(original, decoded, METRICS, index)

    def summary(self, metrics: dict[str, float]) -> str:
        return f"Chamfer-L1 {metrics['chamfer_l1']:.5f} of the diagonal, IoU {metrics['iou']:.3f}"

    def rate(self, d: ShapeDescriptor, n_bytes: int) -> float:
        return n_bytes / 1000.0

    def bits_allowed(self, d: ShapeDescriptor, rate: float) -> float:
        return rate * 8000.0

    def network_shape(self, d: ShapeDescriptor) -> Shape:
        return SHAPE_SHAPE

    def describe(self, d: ShapeDescriptor) -> str:
        c = ", ".join(f"{x:.6g}" for x in d.centre)
        return f"shape (signed distance), centre ({c}), half-size {d.scale * EXTENT:.6g}"


def check_resolution(resolution: int) -> None:
    """Refuse a marching-cubes resolution outside [MIN_RESOLUTION, MAX_RESOLUTION]."""
    if not isinstance(resolution, int) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise InputError(f"--resolution must be an integer from {MIN_RESOLUTION} to {MAX_RESOLUTION}, not {resolution}")
