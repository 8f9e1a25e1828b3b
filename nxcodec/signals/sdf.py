"""Geometry for the shape modality: signed distances to a triangle soup, surface sampling, metrics.

Real scans are rarely watertight (the Stanford bunny has holes in its base), so inside and
outside are not decided by ray parity. Instead a :class:`SurfaceIndex` keeps dense,
area-uniform surface samples (with every face's centroid, so no face is missed) in a
KD-tree; the distance of a query is the exact point-to-triangle distance to the nearest
few candidate faces, and its sign a distance-weighted vote of ``dot(q - p, n)`` over the
nearest samples' face normals. Away from a hole this is the true sign; across a hole it
follows the surrounding surface. Everything is vectorised: seconds for 100k faces.

A KD-tree over a surface is very slow for queries far from it (near a sphere's centre
every sample is almost equally near), so queries go first to a coarse tree of a few
thousand samples; only those within ``NEAR_FRACTION`` of the diagonal go on to the dense
tree, with a bounded search. Far points keep the coarse distance (off by at most the
coarse spacing), which the shape codec's truncated targets never see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

SIGN_NEIGHBOURS = 8
DISTANCE_CANDIDATES = 4
CHUNK = 1 << 17
COARSE_SAMPLES = 8192
NEAR_FRACTION = 0.05  # of the diagonal: within it distances are exact, beyond it approximate


@dataclass
class Mesh:
    """A triangle mesh: ``vertices`` ``(n, 3)`` float64 and ``faces`` ``(m, 3)`` int64."""

    vertices: np.ndarray
    faces: np.ndarray

    @property
    def diagonal(self) -> float:
        """Length of the bounding-box diagonal: the unit of every distance metric."""
        return float(np.linalg.norm(self.vertices.max(0) - self.vertices.min(0)))


def face_geometry(mesh: Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles ``(m, 3, 3)``, unit normals (zero for degenerate faces) and areas."""
    tri = mesh.vertices[mesh.faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    normals = np.divide(cross, norm[:, None], out=np.zeros_like(cross), where=norm[:, None] > 0)
    return tri, normals, 0.5 * norm


def sample_surface(mesh: Mesh, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform over the surface's area, and the face each lies on."""
    tri, _, area = face_geometry(mesh)
    total = area.sum()
    if not total > 0:
        raise ValueError("the mesh has no area")
    face = np.minimum(np.searchsorted(np.cumsum(area) / total, rng.random(n)), len(area) - 1)
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[face]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0]), face


def closest_on_triangles(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The closest point to each ``p[i]`` on triangle ``t[i]`` (Ericson, Real-Time Collision Detection 5.1.5)."""
    a, b, c = t[:, 0], t[:, 1], t[:, 2]
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = np.einsum("ij,ij->i", ab, ap), np.einsum("ij,ij->i", ac, ap)
    bp = p - b
    d3, d4 = np.einsum("ij,ij->i", ab, bp), np.einsum("ij,ij->i", ac, bp)
    cp = p - c
    d5, d6 = np.einsum("ij,ij->i", ab, cp), np.einsum("ij,ij->i", ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v = np.where(denom != 0, vb / denom, 0.0)
        w = np.where(denom != 0, vc / denom, 0.0)
        out = a + v[:, None] * ab + w[:, None] * ac  # inside the face
        # edges, then vertices; later assignments take precedence, as in Ericson's early returns
        e_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
        s = np.clip((d4 - d3) / ((d4 - d3) + (d5 - d6)), 0, 1)
        out[e_bc] = (b + s[:, None] * (c - b))[e_bc]
        e_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        s = np.clip(d2 / (d2 - d6), 0, 1)
        out[e_ac] = (a + s[:, None] * ac)[e_ac]
        e_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        s = np.clip(d1 / (d1 - d3), 0, 1)
        out[e_ab] = (a + s[:, None] * ab)[e_ab]
    out[(d6 >= 0) & (d5 <= d6)] = c[(d6 >= 0) & (d5 <= d6)]
    out[(d3 >= 0) & (d4 <= d3)] = b[(d3 >= 0) & (d4 <= d3)]
    out[(d1 <= 0) & (d2 <= 0)] = a[(d1 <= 0) & (d2 <= 0)]
    bad = ~np.isfinite(out).all(axis=1)
    out[bad] = a[bad]
    return out


class SurfaceIndex:
    """Nearest-surface queries on a mesh: unsigned distance, sign and the normal there."""

    def __init__(self, mesh: Mesh, samples_per_face: float = 3.0, min_samples: int = 200_000, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.tri, self.normals, _ = face_geometry(mesh)
        n = max(min_samples, int(samples_per_face * len(mesh.faces)))
        pts, face = sample_surface(mesh, n, rng)
        self.points = np.concatenate([self.tri.mean(axis=1), pts])
        self.face = np.concatenate([np.arange(len(self.tri)), face])
        self.tree = cKDTree(self.points)
        pick = rng.choice(len(pts), min(COARSE_SAMPLES, len(pts)), replace=False)
        self.coarse_points, self.coarse_face = pts[pick], face[pick]
        self.coarse = cKDTree(self.coarse_points)
        self.near = NEAR_FRACTION * mesh.diagonal
        self.flip = 1.0
        corners = np.array(np.meshgrid(*[[lo, hi] for lo, hi in zip(mesh.vertices.min(0), mesh.vertices.max(0))]))
        corners = corners.reshape(3, -1).T
        centre = mesh.vertices.mean(0)
        far = centre + 2.0 * (corners - centre)
        if np.mean(self.signed_distance(far) < 0) > 0.5:  # faces wound inwards: the whole mesh is inside out
            self.flip = -1.0

    def _vote(self, q: np.ndarray, points: np.ndarray, dist: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Sign by a distance-weighted vote of the neighbours' normals."""
        vote = np.einsum("ijk,ijk->ij", q[:, None, :] - points, self.normals[faces])
        return np.where((vote / (dist + 1e-12)).sum(axis=1) * self.flip >= 0, 1.0, -1.0)

    def _query(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dist, idx = self.coarse.query(q, k=SIGN_NEIGHBOURS)
        sign = self._vote(q, self.coarse_points[idx], dist, self.coarse_face[idx])
        best, best_face = dist[:, 0].copy(), self.coarse_face[idx[:, 0]]
        near = np.flatnonzero(dist[:, 0] < self.near)
        if len(near) == 0:
            return best, sign, best_face
        qn = q[near]
        dist, idx = self.tree.query(qn, k=SIGN_NEIGHBOURS, distance_upper_bound=2 * self.near)
        found = np.isfinite(dist)
        idx = np.where(found, idx, 0)
        dist = np.where(found, dist, np.inf)
        faces = self.face[idx]
        b, bf = np.full(len(qn), np.inf), faces[:, 0].copy()
        for j in range(DISTANCE_CANDIDATES):
            d = np.linalg.norm(qn - closest_on_triangles(qn, self.tri[faces[:, j]]), axis=1)
            better = found[:, j] & (d < b)
            b[better], bf[better] = d[better], faces[better, j]
        ok = found[:, 0]
        best[near[ok]], best_face[near[ok]] = b[ok], bf[ok]
        vote = np.einsum("ijk,ijk->ij", qn[:, None, :] - self.points[idx], self.normals[faces])
        vote = np.where(found, vote / np.where(found, dist + 1e-12, 1.0), 0.0).sum(axis=1)
        sign[near[ok]] = np.where(vote[ok] * self.flip >= 0, 1.0, -1.0)
        return best, sign, best_face

    def signed_distance(self, q: np.ndarray) -> np.ndarray:
        """Signed distance of each query point (negative inside)."""
        q = np.asarray(q, dtype=np.float64)
        return np.concatenate([np.prod(self._query(c)[:2], axis=0) for c in _chunks(q)]) if len(q) else np.zeros(0)

    def distance(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unsigned distance of each point to the surface, and the unit normal of its nearest face."""
        parts = [self._query(c) for c in _chunks(np.asarray(q, dtype=np.float64))]
        return np.concatenate([p[0] for p in parts]), self.normals[np.concatenate([p[2] for p in parts])]


def _chunks(q: np.ndarray) -> list[np.ndarray]:
    return [q[i : i + CHUNK] for i in range(0, len(q), CHUNK)] or [q]


@dataclass(frozen=True)
class MetricSettings:
    """How metrics are sampled (stated with every reported number)."""

    surface_points: int = 50_000  # per side, for Chamfer, normal consistency and F-score
    volume_points: int = 50_000  # for IoU, uniform in the original's bounding box
    fscore_fraction: float = 0.01  # F-score threshold, as a fraction of the diagonal
    seed: int = 0


def shape_metrics(original: Mesh, decoded: Mesh, settings: MetricSettings = MetricSettings(),
                  original_index: SurfaceIndex | None = None) -> dict[str, float]:
    """Chamfer-L1, IoU, normal consistency and F-score of ``decoded`` against ``original``.

    Chamfer is point-to-surface: the mean distance from points sampled on one mesh to the
    other mesh's surface (not to the other's samples), averaged over both directions and
    divided by the original's bounding-box diagonal. Its sampling noise is the standard
    error of a mean, far below the ~0.002 floor of point-to-point Chamfer at 50k points.
    """
    diag = original.diagonal
    if len(decoded.faces) == 0:
        return {"chamfer_l1": float("inf"), "iou": 0.0, "normal_consistency": 0.0, "fscore": 0.0,
                "chamfer_l1_stderr": 0.0}
    rng = np.random.default_rng(settings.seed)
    oi = original_index or SurfaceIndex(original)
    di = SurfaceIndex(decoded, samples_per_face=1.0, min_samples=50_000)
    p_dec, f_dec = sample_surface(decoded, settings.surface_points, rng)
    p_org, f_org = sample_surface(original, settings.surface_points, rng)
    d_do, n_do = oi.distance(p_dec)
    d_od, n_od = di.distance(p_org)
    _, n_dec, _ = face_geometry(decoded)
    _, n_org, _ = face_geometry(original)
    nc = 0.5 * (np.abs(np.einsum("ij,ij->i", n_dec[f_dec], n_do)).mean()
                + np.abs(np.einsum("ij,ij->i", n_org[f_org], n_od)).mean())
    tau = settings.fscore_fraction * diag
    precision, recall = float(np.mean(d_do < tau)), float(np.mean(d_od < tau))
    lo, hi = original.vertices.min(0), original.vertices.max(0)
    vol = lo + rng.random((settings.volume_points, 3)) * (hi - lo)
    in_o, in_d = oi.signed_distance(vol) < 0, di.signed_distance(vol) < 0
    union = np.sum(in_o | in_d)
    stderr = 0.5 * np.hypot(d_do.std() / np.sqrt(len(d_do)), d_od.std() / np.sqrt(len(d_od))) / diag
    return {
        "chamfer_l1": float(0.5 * (d_do.mean() + d_od.mean()) / diag),
        "chamfer_l1_stderr": float(stderr),
        "iou": float(np.sum(in_o & in_d) / union) if union else 1.0,
        "normal_consistency": float(nc),
        "fscore": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
    }
