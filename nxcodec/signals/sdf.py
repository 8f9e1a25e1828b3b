"""Geometry for the shape modality: signed distances to a triangle soup, surface sampling, metrics.

Real scans are rarely watertight (the Stanford bunny has holes in its base), so inside and
outside are not decided by ray parity but by the generalised winding number
(:class:`WindingNumber`): about 1 inside, 0 outside, and a smooth value across holes, read
as inside above 1/2. Distances come from a :class:`SurfaceIndex`, which keeps dense,
area-uniform surface samples (with every face's centroid, so no face is missed) in a
KD-tree; the distance of a query is the exact point-to-triangle distance to the nearest few
candidate faces. Everything is vectorised: seconds for 100k faces.

(A vote of the nearest samples' normals, used before, is wrong in wide concave regions: on
Lucy it put 0.4% of the volume samples inside, in sheets between the wings and the body,
which the network then learned as surfaces.)

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

DISTANCE_NEIGHBOURS = 8  # dense samples looked up per near query
DISTANCE_CANDIDATES = 4  # of their faces, measured exactly
CHUNK = 1 << 17
COARSE_SAMPLES = 8192
NEAR_FRACTION = 0.05  # of the diagonal: within it distances are exact, beyond it approximate
LEAF_FACES = 16  # faces per leaf of the winding-number tree
WINDING_FAR = 2.0  # a node counts as a dipole beyond this many radii (Barill et al.'s beta)
WINDING_BLOCK = 1 << 14  # queries per pass of the tree walk
WINDING_PAIRS = 1 << 13  # (query, leaf) pairs summed exactly at once
VOLUME_PROBES = 1024  # surface points probed on both sides for an inside
VOLUME_PROBE_OFFSET = 1e-3  # of the diagonal: how far off the surface each probe sits


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
    """Nearest-surface queries on a mesh: distance, inside or outside, and the normal there."""

    def __init__(self, mesh: Mesh, samples_per_face: float = 3.0, min_samples: int = 200_000, seed: int = 0,
                 winding: WindingNumber | None = None) -> None:
        rng = np.random.default_rng(seed)
        self.tri, self.normals, _ = face_geometry(mesh)
        n = max(min_samples, int(samples_per_face * len(mesh.faces)))
        pts, face = sample_surface(mesh, n, rng)
        self.points = np.concatenate([self.tri.mean(axis=1), pts])
        self.face = np.concatenate([np.arange(len(self.tri)), face])
        self.tree = cKDTree(self.points)
        pick = rng.choice(len(pts), min(COARSE_SAMPLES, len(pts)), replace=False)
        self.coarse, self.coarse_face = cKDTree(pts[pick]), face[pick]
        self.near = NEAR_FRACTION * mesh.diagonal
        self.winding = winding or WindingNumber(self.tri)

    def _query(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist, idx = self.coarse.query(q)
        best, best_face = dist.copy(), self.coarse_face[idx]
        near = np.flatnonzero(dist < self.near)
        if len(near) == 0:
            return best, best_face
        qn = q[near]
        dist, idx = self.tree.query(qn, k=DISTANCE_NEIGHBOURS, distance_upper_bound=2 * self.near)
        found = np.isfinite(dist)
        faces = self.face[np.where(found, idx, 0)]
        b, bf = np.full(len(qn), np.inf), faces[:, 0].copy()
        for j in range(DISTANCE_CANDIDATES):
            d = np.linalg.norm(qn - closest_on_triangles(qn, self.tri[faces[:, j]]), axis=1)
            better = found[:, j] & (d < b)
            b[better], bf[better] = d[better], faces[better, j]
        ok = found[:, 0]
        best[near[ok]], best_face[near[ok]] = b[ok], bf[ok]
        return best, best_face

    def inside(self, q: np.ndarray) -> np.ndarray:
        """Whether each query point is inside (|winding number| over 1/2, so either orientation works)."""
        return np.abs(self.winding(np.asarray(q, dtype=np.float64))) > 0.5

    def signed_distance(self, q: np.ndarray) -> np.ndarray:
        """Signed distance of each query point (negative inside)."""
        q = np.asarray(q, dtype=np.float64)
        if not len(q):
            return np.zeros(0)
        dist = np.concatenate([self._query(c)[0] for c in _chunks(q)])
        return np.where(self.inside(q), -dist, dist)

    def distance(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unsigned distance of each point to the surface, and the unit normal of its nearest face."""
        parts = [self._query(c) for c in _chunks(np.asarray(q, dtype=np.float64))]
        return np.concatenate([p[0] for p in parts]), self.normals[np.concatenate([p[1] for p in parts])]


def _chunks(q: np.ndarray) -> list[np.ndarray]:
    return [q[i : i + CHUNK] for i in range(0, len(q), CHUNK)] or [q]


class WindingNumber:
    """Generalised winding number of a triangle soup (Jacobson et al. 2013), fast.

    The winding number is the signed solid angle the surface subtends at a point, over
    4 pi: 1 inside a closed, outward-wound mesh, 0 outside, and a smooth value in between
    across holes, so thresholding it at 1/2 decides inside and outside of real scans.
    Faces are split into a binary tree of boxes; a node whose bounding sphere is far from
    the query (distance over ``WINDING_FAR`` radii) counts as a dipole, its summed vector
    area at its centre (Barill et al. 2018, first order); the leaves near the query are
    summed face by face with the exact solid angle (Van Oosterom and Strackee).
    """

    def __init__(self, tri: np.ndarray) -> None:
        vector_area = 0.5 * np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        weight, centroids = np.linalg.norm(vector_area, axis=1), tri.mean(axis=1)
        nodes, children, leaves = [np.arange(len(tri))], [], []
        for idx in nodes:  # grows while splitting: breadth-first
            if len(idx) <= LEAF_FACES:
                children.append((-1, len(leaves)))
                leaves.append(idx)
                continue
            c = centroids[idx]
            order = idx[np.argsort(c[:, np.ptp(c, axis=0).argmax()], kind="stable")]
            children.append((len(nodes), -1))
            nodes += [order[: len(order) // 2], order[len(order) // 2 :]]
        self.first_child = np.array([c for c, _ in children])
        self.leaf = np.array([leaf for _, leaf in children])
        self.area = np.stack([vector_area[idx].sum(axis=0) for idx in nodes])
        total = np.array([weight[idx].sum() for idx in nodes])
        mean = np.stack([centroids[idx].mean(axis=0) for idx in nodes])
        self.centre = np.where(total[:, None] > 0, np.stack([weight[idx] @ centroids[idx] for idx in nodes])
                               / np.maximum(total, 1e-300)[:, None], mean)
        self.radius = np.array([np.linalg.norm(tri[idx] - self.centre[i], axis=2).max() for i, idx in enumerate(nodes)])
        self.tri = np.repeat(tri[:1, :1], len(leaves) * LEAF_FACES * 3, axis=0).reshape(len(leaves), LEAF_FACES, 3, 3)
        for i, idx in enumerate(leaves):  # padding: faces of zero size, whose solid angle is zero
            self.tri[i, : len(idx)] = tri[idx]
            self.tri[i, len(idx) :] = tri[idx[0], 0]

    def __call__(self, q: np.ndarray) -> np.ndarray:
        """Winding number at each query point ``(n, 3)``."""
        q = np.asarray(q, dtype=np.float64)
        return np.concatenate([self._block(q[i : i + WINDING_BLOCK]) for i in range(0, len(q), WINDING_BLOCK)] or [np.zeros(0)])

    def _block(self, q: np.ndarray) -> np.ndarray:
        w = np.zeros(len(q))
        qi, node = np.arange(len(q)), np.zeros(len(q), dtype=np.int64)
        while len(qi):
            d = self.centre[node] - q[qi]
            dist = np.linalg.norm(d, axis=1)
            far = dist > WINDING_FAR * self.radius[node]
            dipole = np.einsum("ij,ij->i", d[far], self.area[node[far]]) / dist[far] ** 3
            w += np.bincount(qi[far], weights=dipole, minlength=len(q))
            leaf = ~far & (self.leaf[node] >= 0)
            lq, ll = qi[leaf], self.leaf[node[leaf]]
            for s in range(0, len(lq), WINDING_PAIRS):
                a = self.tri[ll[s : s + WINDING_PAIRS]] - q[lq[s : s + WINDING_PAIRS], None, None]
                w += np.bincount(lq[s : s + WINDING_PAIRS], weights=_solid_angles(a).sum(axis=1), minlength=len(q))
            inner = ~far & ~leaf
            qi = np.repeat(qi[inner], 2)
            node = (self.first_child[node[inner], None] + np.arange(2)).ravel()
        return w / (4 * np.pi)


def encloses_volume(mesh: Mesh, winding: WindingNumber, seed: int = 0) -> bool:
    """Whether the surface has an inside: some point just off it, on one side or the other, has a winding number
    over 1/2. A flat open sheet (one face, a square) stays under 1/2 on both sides, so it encloses nothing and has
    no signed distance field; a scan with holes, or a sheet folded or curved enough, still encloses a volume."""
    _, normals, _ = face_geometry(mesh)
    points, face = sample_surface(mesh, VOLUME_PROBES, np.random.default_rng(seed))
    offset = VOLUME_PROBE_OFFSET * mesh.diagonal * normals[face]
    return bool((np.abs(winding(np.concatenate([points + offset, points - offset]))) > 0.5).any())


def _solid_angles(a: np.ndarray) -> np.ndarray:
    """Signed solid angle of each triangle ``(..., 3, 3)`` (vertices relative to the query)."""
    x, y, z = a[..., 0, :], a[..., 1, :], a[..., 2, :]
    lx, ly, lz = (np.linalg.norm(v, axis=-1) for v in (x, y, z))
    det = np.einsum("...k,...k->...", x, np.cross(y, z))
    dots = (np.einsum("...k,...k->...", x, y) * lz + np.einsum("...k,...k->...", y, z) * lx
            + np.einsum("...k,...k->...", z, x) * ly)
    return 2 * np.arctan2(det, lx * ly * lz + dots)


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
    in_o, in_d = oi.inside(vol), di.inside(vol)
    union = np.sum(in_o | in_d)
    stderr = 0.5 * np.hypot(d_do.std() / np.sqrt(len(d_do)), d_od.std() / np.sqrt(len(d_od))) / diag
    return {
        "chamfer_l1": float(0.5 * (d_do.mean() + d_od.mean()) / diag),
        "chamfer_l1_stderr": float(stderr),
        "iou": float(np.sum(in_o & in_d) / union) if union else 1.0,
        "normal_consistency": float(nc),
        "fscore": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
    }
