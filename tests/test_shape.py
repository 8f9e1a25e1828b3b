"""Shapes: a real mesh round-trips as a signed distance function, at its own position and scale."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

import nxcodec.signals.shape as shape_mod
from nxcodec.cli import main
from nxcodec.codec import EncodeOptions, decode_stream, encode_signal
from nxcodec.errors import InputError, StreamError
from nxcodec.fit import presets
from nxcodec.signals import for_name, meshfile
from nxcodec.signals.sdf import Mesh, MetricSettings, SurfaceIndex, WindingNumber, _solid_angles, shape_metrics

from conftest import ROOT

MESHES = ROOT.parent / "shared" / "data" / "meshes"
if __import__("os").environ.get("NXCODEC_TEST_WITHOUT_DATA"):
    MESHES = ROOT / "no-such-folder"
BUNNY = MESHES / "stanford_bunny.obj"
RESOLUTION = 64  # decode grid of the tests (the encoder's report uses it too, via the default)
ITERS = 300
TRAIN_POINTS = 32768  # 8192 samples were too few: the fit left sheets in the empty volume (IoU 0.43)
# Chamfer-L1 (fraction of the diagonal) that a 300-iteration fit of 3000 parameters to 32768 samples, decoded at
# 64^3, stays under: measured 0.0017 on the decimated bunny; a wrong position or scale gives > 0.1.
CHAMFER_BOUND = 0.01
FAST_METRICS = MetricSettings(surface_points=10_000, volume_points=10_000)
pytestmark = pytest.mark.timeout(900)  # the shared fixture's fit runs inside the first test's limit
SHIFT, SCALE = np.array([250.0, -40.0, 7.5]), 300.0


def small_mesh(tmp_path: Path) -> Path:
    """A small real mesh: the bunny decimated to ~2k faces (holes kept) when present, else a bumpy ball with a hole.

    (The bundled flat torus is too thin for a 300-iteration fit of the whole volume: it decodes with spurious
    sheets far from the surface; noted on the shapes issue.)
    """
    if not BUNNY.exists():
        ball = trimesh.creation.icosphere(subdivisions=3)
        v = ball.vertices * (1 + 0.15 * np.sin(3 * ball.vertices[:, :1]) * np.cos(2 * ball.vertices[:, 1:2]))
        faces = ball.faces[v[ball.faces].mean(axis=1)[:, 2] < 0.9]  # a hole at the top, like a scan's
        path = tmp_path / "ball.ply"
        trimesh.Trimesh(v * SCALE + SHIFT, faces, process=False).export(path)
        return path
    import fast_simplification

    m = trimesh.load(BUNNY, force="mesh", process=False)
    v, f = fast_simplification.simplify(np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32),
                                        target_reduction=0.97)
    path = tmp_path / "bunny_small.obj"
    trimesh.Trimesh(v * SCALE + SHIFT, f, process=False).export(path)
    return path


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """One short CPU encode of the small mesh (moved far from the origin and scaled up), shared by the tests."""
    shape = for_name("shape")
    path = small_mesh(tmp_path_factory.mktemp("mesh"))
    signal = shape.read(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shape_mod, "DEFAULT_RESOLUTION", RESOLUTION)
        mp.setattr(shape_mod, "TRAIN_POINTS", TRAIN_POINTS)  # smaller batches: a fit of seconds
        mp.setattr(shape_mod, "METRICS", FAST_METRICS)
        cfg = replace(presets.SHAPE_SHAPE, n_experts=1).fit_budget(1, 3000)  # one expert: no manager pretraining
        res = encode_signal(shape, signal, EncodeOptions(iters=ITERS, device="cpu", config=cfg))
    return path, signal, res


def test_round_trip_is_near_the_input_at_its_position_and_scale(encoded):
    _, signal, res = encoded
    _, mesh = decode_stream(res.data, resolution=RESOLUTION)
    original: Mesh = signal.data
    m = shape_metrics(original, mesh, FAST_METRICS)
    assert m["chamfer_l1"] < CHAMFER_BOUND
    assert m["iou"] > 0.9  # measured 0.97
    lo, hi = original.vertices.min(0), original.vertices.max(0)
    # bounding boxes agree to 6% of the diagonal (a lost transform is off by 100x): measured 0.5% on the bunny
    # and 3.8% on the ball, whose hole is capped where the winding number crosses 1/2, a little below the rim
    assert np.abs(mesh.vertices.min(0) - lo).max() < 0.06 * original.diagonal
    assert np.abs(mesh.vertices.max(0) - hi).max() < 0.06 * original.diagonal
    assert np.allclose((lo + hi) / 2, SHIFT, atol=0.2 * SCALE)  # really far from the origin


def test_decoded_mesh_is_clean_and_outward(encoded):
    _, _, res = encoded
    _, mesh = decode_stream(res.data, resolution=RESOLUTION)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_winding_consistent
    assert tm.volume > 0  # outward normals
    assert np.all(tm.area_faces > 0)
    assert len(np.unique(mesh.faces)) == len(mesh.vertices)  # no unused vertices


def test_higher_resolution_is_finer(encoded):
    _, _, res = encoded
    _, fine = decode_stream(res.data, resolution=96)
    _, coarse = decode_stream(res.data, resolution=48)
    assert len(fine.faces) > 2 * len(coarse.faces)


def test_a_noise_field_is_refused_before_its_surface_grows_huge(monkeypatch):
    """A hostile stream (or a failed fit) can put a surface in every cell: refused, not minutes of meshing."""
    def noise(c):
        return np.sign(np.prod(np.sin(40 * c), axis=1))

    d = meshfile.ShapeDescriptor((0.0, 0.0, 0.0), 1.0)
    monkeypatch.setattr(meshfile, "MIN_FACE_LIMIT", 0)  # the 64 r^2 rule alone, on a grid small enough for a test
    with pytest.raises(StreamError, match="not a shape's distance field"):
        meshfile.extract_surface(meshfile.inside_box(noise, d), d, 96)


def test_coarse_to_fine_evaluates_only_near_the_surface_and_loses_nothing():
    calls = []

    def ellipsoid(c):  # a truncated signed distance (in units of the truncation), like a fitted network's
        calls.append(len(c))
        return np.clip((np.linalg.norm(c * [1.3, 1, 1], axis=1) - 0.6) / 0.1, -1, 1)

    d = meshfile.ShapeDescriptor((0.0, 0.0, 0.0), 1.0)
    v, f = meshfile.extract_surface(ellipsoid, d, 256)
    mesh = meshfile.clean_mesh(v, f)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert sum(calls) < 0.05 * 256 ** 3
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume == pytest.approx(4 / 3 * math.pi * 0.6 ** 3 / 1.3, rel=2e-3)


def test_signs_are_right_for_a_mesh_with_holes():
    sphere = trimesh.creation.icosphere(subdivisions=4)
    centres = sphere.triangles_center
    keep = ~((centres[:, 2] > 0.9) | (centres[:, 0] > 0.95))  # two holes: the top cap and one side
    mesh = Mesh(np.asarray(sphere.vertices), np.asarray(sphere.faces[keep]))
    assert not trimesh.Trimesh(mesh.vertices, mesh.faces).is_watertight
    rng = np.random.default_rng(0)
    d = rng.normal(size=(4000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    radius = np.concatenate([rng.uniform(0.05, 0.85, 1500), rng.uniform(0.9, 0.99, 500), rng.uniform(1.01, 1.1, 500),
                             rng.uniform(1.15, 2.0, 1500)])
    pts = d * radius[:, None]
    sdf = SurfaceIndex(mesh).signed_distance(pts)
    away_from_holes = (pts[:, 2] < 0.7) & (pts[:, 0] < 0.7)
    assert np.all((sdf < 0)[away_from_holes] == (radius < 1)[away_from_holes])
    assert np.mean((sdf < 0) == (radius < 1)) > 0.97
    true = np.abs(radius - 1)
    assert np.abs(np.abs(sdf) - true)[away_from_holes & (true < 0.1)].max() < 0.01


def test_winding_numbers_decide_inside_where_a_vote_of_normals_fails():
    """A torus: the tree's winding numbers match the exact sum, and inside is right everywhere.

    Lucy's training samples had 0.4% of the volume labelled inside by the old vote of the
    nearest normals (in the concave gaps between wings and body); the exact sum is the truth.
    """
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3, major_sections=48, minor_sections=16)
    mesh = Mesh(np.asarray(torus.vertices), np.asarray(torus.faces))
    rng = np.random.default_rng(1)
    pts = rng.uniform([-1.5, -1.5, -0.5], [1.5, 1.5, 0.5], size=(3000, 3))
    tri = mesh.vertices[mesh.faces]
    exact = np.concatenate([_solid_angles(tri[None] - pts[i : i + 100, None, None]).sum(axis=1)
                            for i in range(0, len(pts), 100)]) / (4 * np.pi)
    w = WindingNumber(tri)(pts)
    assert np.abs(w - exact).max() < 0.15  # the dipoles' error bound at WINDING_FAR = 2 (measured 0.10 on Lucy)
    ring = np.hypot(np.hypot(pts[:, 0], pts[:, 1]) - 1.0, pts[:, 2])
    clear = np.abs(ring - 0.3) > 0.02  # off the faceted surface
    assert np.array_equal(SurfaceIndex(mesh).inside(pts)[clear], (ring < 0.3)[clear])


def test_a_non_watertight_scan_is_encoded_with_the_right_inside(encoded):
    path, signal, _ = encoded
    original: Mesh = signal.data
    samples = for_name("shape").targets(signal)
    assert float((samples < 0).float().mean()) > 0.02  # some training points are inside
    assert not trimesh.Trimesh(original.vertices, original.faces, process=False).is_watertight


def test_transform_survives_the_descriptor():
    shape = for_name("shape")
    d = meshfile.ShapeDescriptor((1e5, -3.25, 0.5), 0.001)
    assert shape.unpack_descriptor(shape.pack_descriptor(d)) == meshfile.ShapeDescriptor(
        tuple(float(np.float32(c)) for c in d.centre), float(np.float32(d.scale)), float(np.float32(d.trunc)))


@pytest.mark.parametrize("centre,scale,trunc", [
    ((math.nan, 0, 0), 1.0, 0.1), ((0, math.inf, 0), 1.0, 0.1), ((0, 0, 1e30), 1.0, 0.1),
    ((0, 0, 0), 0.0, 0.1), ((0, 0, 0), -2.0, 0.1), ((0, 0, 0), math.nan, 0.1), ((0, 0, 0), 1e30, 0.1),
    ((0, 0, 0), 1.0, 0.0), ((0, 0, 0), 1.0, math.nan),
])
def test_absurd_descriptors_are_refused(centre, scale, trunc):
    with pytest.raises(StreamError):
        for_name("shape").unpack_descriptor(struct.pack("<5f", *centre, scale, trunc))


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_corrupt_and_truncated_streams_are_clean_errors(encoded):
    _, _, res = encoded
    data = res.data
    for bad in (data[: len(data) // 2], data[:-1], data[:7]):
        with pytest.raises(StreamError):
            decode_stream(bad)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    with pytest.raises(StreamError):
        decode_stream(bytes(flipped))
    hostile = bytearray(data[:-4])  # a NaN scale with a valid CRC
    hostile[8 + 12 : 8 + 16] = struct.pack("<f", math.nan)
    with pytest.raises(StreamError, match="scale"):
        decode_stream(_with_crc(bytes(hostile)))


def test_resolution_is_bounded(encoded):
    _, _, res = encoded
    for bad in (0, 7, 1025, 100000):
        with pytest.raises(InputError, match="resolution"):
            decode_stream(res.data, resolution=bad)


def test_unreadable_meshes_are_input_errors(tmp_path):
    shape = for_name("shape")
    (tmp_path / "junk.obj").write_text("this is not a mesh\n")
    (tmp_path / "empty.ply").write_bytes(b"")
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\n")
    (tmp_path / "nan.obj").write_text("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    for name in ("junk.obj", "empty.ply", "points.obj", "nan.obj", "missing.stl"):
        with pytest.raises(InputError):
            shape.read(tmp_path / name)


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_cli_decodes_to_ply_obj_and_stl_and_refuses_bad_options(encoded, tmp_path):
    _, signal, res = encoded
    stream = tmp_path / "s.nxc"
    stream.write_bytes(res.data)
    for ext in ("ply", "obj", "stl"):
        out = tmp_path / f"s.{ext}"
        r = run_cli("decode", str(stream), "-o", str(out), "--resolution", "48")
        assert r.exit_code == 0, r.output
        back = trimesh.load(out, force="mesh")
        assert len(back.faces) > 100
        assert np.allclose(back.bounds.mean(0), signal.data.vertices.min(0) / 2 + signal.data.vertices.max(0) / 2,
                           atol=0.05 * signal.data.diagonal)
    for args, what in ((["-o", str(tmp_path / "r.ply"), "--resolution", "5000"], "resolution"),
                       (["-o", str(tmp_path / "x.png")], "written as")):
        r = run_cli("decode", str(stream), *args)
        assert r.exit_code == 2
        assert what in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "r.ply").exists()


def test_an_image_stream_refuses_a_resolution(rgb_stream):
    with pytest.raises(InputError, match="resolution"):
        decode_stream(rgb_stream, resolution=64)

