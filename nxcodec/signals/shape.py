"""3-D shapes: meshes in (OBJ, PLY, STL, OFF, GLB), a signed distance function coded, meshes out.

The mesh is moved into the cube [-0.9, 0.9]^3 (centre and scale are in the descriptor, so
the decoded mesh lands where the input was). The network learns the truncated signed
distance ``clamp(sdf / trunc, -1, 1)`` from random samples on the surface, near it and in
the volume; the decoder extracts its zero level with marching cubes at a resolution
chosen at decode time, evaluating the network only in blocks near the surface.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nxcodec.errors import InputError
from nxcodec.signals import meshfile
from nxcodec.signals.base import Field, Modality, Signal, evaluate
from nxcodec.signals.meshfile import (DEFAULT_RESOLUTION, EXTENT, MAX_COORD, MAX_FACES, ShapeDescriptor,
                                      check_resolution, from_network, to_network)
from nxcodec.signals.sdf import (Mesh, MetricSettings, SurfaceIndex, WindingNumber, encloses_volume, face_geometry,
                                 sample_surface, shape_metrics)

if TYPE_CHECKING:
    from nxcodec.codec import EncodeOptions, EncodeResult
    from nxcodec.fit.losses import LossFn

TRAIN_POINTS = 200_000  # the training set (and the "samples" the presets' budgets scale with)
SURFACE_FRAC, NEAR_FRAC = 0.4, 0.4  # the rest is uniform in the cube
NEAR_SIGMAS = (0.01, 0.04)  # Gaussian offsets of the near-surface samples, network coordinates
SAMPLE_SEED = 0
METRICS = MetricSettings()  # how the encoder's report samples its metrics


@dataclass
class _Samples:
    points: torch.Tensor  # (n, 3) network coordinates
    distance: np.ndarray  # (n,) signed distance in network coordinates (0 on the surface samples)

    def targets(self, trunc: float) -> torch.Tensor:
        """(n, 1) truncated signed distance ``clamp(distance / trunc, -1, 1)``: one sampling serves every truncation."""
        return torch.from_numpy(np.clip(self.distance / trunc, -1, 1).astype(np.float32))[:, None]


class ShapeData(Mesh):
    """The input mesh (original frame) with its winding numbers, and the training samples and surface index, made
    once."""

    winding: WindingNumber | None = None
    samples: _Samples | None = None
    index: SurfaceIndex | None = None

    def surface_index(self) -> SurfaceIndex:
        """The mesh's distance and inside queries, made on first use."""
        if self.index is None:
            self.index = SurfaceIndex(self, winding=self.winding)
        return self.index


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
    mesh = ShapeData(v, f)
    mesh.winding = WindingNumber(v[f])
    if not encloses_volume(mesh, mesh.winding):
        raise InputError(f"{what}: the surface encloses no volume (an open sheet has no inside, so no signed "
                         "distance to code)")
    return mesh


def normalisation(mesh: Mesh) -> ShapeDescriptor:
    """Centre and scale that put the mesh's bounding box in [-EXTENT, EXTENT]^3."""
    used = mesh.vertices[np.unique(mesh.faces)]
    lo, hi = used.min(0), used.max(0)
    centre = (lo + hi) / 2
    scale = float(np.float32((hi - lo).max() / 2 / EXTENT))
    return ShapeDescriptor(tuple(float(c) for c in centre.astype(np.float32)), scale)


def training_samples(mesh: ShapeData, d: ShapeDescriptor, n: int | None = None, seed: int = SAMPLE_SEED) -> _Samples:
    """Surface points (distance 0), points near the surface and uniform points, with their signed distances."""
    n = n or TRAIN_POINTS
    rng = np.random.default_rng(seed)
    index = mesh.surface_index()
    n_surf, n_near = int(n * SURFACE_FRAC), int(n * NEAR_FRAC)
    surf, _ = sample_surface(mesh, n_surf + n_near, rng)
    surf = to_network(d, surf)
    sigma = np.repeat(np.asarray(NEAR_SIGMAS), [n_near // 2, n_near - n_near // 2])[:, None]
    near = surf[n_surf:] + rng.normal(size=(n_near, 3)) * sigma
    far = rng.uniform(-1, 1, size=(n - n_surf - n_near, 3))
    query = np.concatenate([near, far])
    sdf = index.signed_distance(from_network(d, query)) / d.scale
    points = np.concatenate([surf[:n_surf], query])
    return _Samples(torch.from_numpy(points.astype(np.float32)), np.concatenate([np.zeros(n_surf), sdf]))


# What an OBJ file's first statement may be (comments aside), and how far into a file to look for it
OBJ_KEYWORDS = (b"v", b"vn", b"vt", b"f", b"o", b"g", b"s", b"l", b"p", b"mtllib", b"usemtl")
OBJ_SNIFF_BYTES = 1 << 16


class ShapeModality(Modality):
    id = 3
    name = "shape"
    extensions = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
    output_extensions = (".ply", ".obj", ".stl")
    rate_unit = meshfile.MeshFiles.rate_unit
    formats = (2, 8)  # 2: a coordinate network; 8: 3-D latent grids, an occupancy map and built-in context models
    latent_format = 8  # (SPEC.md sections 11 to 14)
    coord_dim = 3
    default_extension = ".ply"
    decode_options = ("resolution", "max_faces")

    @property
    def loss(self) -> "LossFn":
        """The reference's gate-weighted L1 (see gated_l1 for the measurement)."""
        from nxcodec.fit.losses import gated_l1

        return gated_l1

    def sniff(self, data: bytes) -> str | None:
        if data.startswith(b"ply") and data[3:4] in (b"\n", b"\r"):
            return ".ply"
        if data.startswith(b"glTF"):  # binary glTF (a .gltf's buffers are other files)
            return ".glb"
        if len(data) >= 84 and len(data) == 84 + 50 * int.from_bytes(data[80:84], "little"):  # binary STL
            return ".stl"
        lines = (line.split() for line in data[:OBJ_SNIFF_BYTES].splitlines())
        first = next((words[0] for words in lines if words and not words[0].startswith(b"#")), b"")
        if first == b"solid":
            return ".stl"
        if first.endswith(b"OFF"):  # OFF, COFF, NOFF, STOFF ...
            return ".off"
        return ".obj" if first in OBJ_KEYWORDS else None

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
        return meshfile.pack(d)

    def unpack_descriptor(self, data: bytes) -> ShapeDescriptor:
        return meshfile.unpack(data)

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

    def default_format(self, d: ShapeDescriptor) -> int:
        return self.latent_format

    def encode_latent(self, signals_: list[Signal], opts: EncodeOptions) -> list[EncodeResult]:
        from nxcodec.fit.latent_shape import encode_shapes

        return encode_shapes(self, signals_, opts)

    def signed_distance(self, signal: Signal, points: np.ndarray) -> np.ndarray:
        """The input mesh's signed distance at ``points``, both in network coordinates."""
        d: ShapeDescriptor = signal.descriptor
        return signal.data.surface_index().signed_distance(from_network(d, points)) / d.scale

    def truncated_distance(self, signal: Signal, points: np.ndarray) -> np.ndarray:
        """``clamp(sdf / trunc, -1, 1)`` of the input mesh at ``points`` (network coordinates)."""
        return np.clip(self.signed_distance(signal, points) / signal.descriptor.trunc, -1, 1)

    def training_points(self, signal: Signal) -> tuple[torch.Tensor, torch.Tensor]:
        """The training samples: points (n, 3) in network coordinates and truncated distances (n, 1)."""
        samples = self._samples(signal)
        return samples.points, samples.targets(signal.descriptor.trunc)

    def _samples(self, signal: Signal) -> _Samples:
        data: ShapeData = signal.data
        if data.samples is None:
            data.samples = training_samples(data, signal.descriptor)
        return data.samples

    def targets(self, signal: Signal) -> torch.Tensor:
        return self._samples(signal).targets(signal.descriptor.trunc)

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
        field = fields[0]

        def values(points: np.ndarray) -> np.ndarray:
            return evaluate(field, torch.from_numpy(points), device)[:, 0]

        return meshfile.decode_mesh(values, d, r, options.get("max_faces"))

    def write(self, d: ShapeDescriptor, array: Mesh, path: Path) -> None:
        """Write by ``path``'s extension, PLY for any other name (a temporary one)."""
        meshfile.MeshFiles().write(d, array, path)

    def write_as(self, d: ShapeDescriptor, array: Mesh, path: Path, suffix: str) -> None:
        meshfile.MeshFiles().write_as(d, array, path, suffix)

    def metrics(self, original: Mesh, decoded: Mesh) -> dict[str, float]:
        index = getattr(original, "index", None)
        return shape_metrics(original, decoded, METRICS, index)

    def summary(self, metrics: dict[str, float]) -> str:
        """Chamfer and IoU of a mesh; for a field alone (a latent-grid fit), its error on the training samples."""
        parts = []
        if "chamfer_l1" in metrics:
            parts.append(f"Chamfer-L1 {metrics['chamfer_l1']:.5f} of the diagonal, IoU {metrics['iou']:.3f}")
        if "sdf_l1" in metrics:
            parts.append(f"distance error {metrics['sdf_l1']:.4f} of the truncation")
        return ", ".join(parts)

    def rate(self, d: ShapeDescriptor, n_bytes: int) -> float:
        return meshfile.rate(d, n_bytes)

    def bits_allowed(self, d: ShapeDescriptor, rate: float) -> float:
        return rate * 8000.0

    def describe(self, d: ShapeDescriptor) -> str:
        return meshfile.describe(d)

