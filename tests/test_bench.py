"""The benchmark harness: BD-rates, the results format, resuming, plots."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import real_image
import trimesh
from PIL import Image

import nxcodec.signals.shape as shape_mod

from nxcodec.bench import image as bench_image
from nxcodec.bench.bdrate import bd_psnr, bd_rate, psnr_at_rate
from nxcodec.bench import shape as bench_shape
from nxcodec.fit import presets
from nxcodec.latent import shape as latent_shape
from nxcodec.bench.plot import PUBLISHED, plot_rd
from nxcodec.bench.runner import PointStore, grouped_rounds, run_points
from nxcodec.errors import NxcError
from nxcodec.signals.sdf import MetricSettings

FAST_SHAPE_METRICS = MetricSettings(surface_points=10_000, volume_points=10_000)
REF = ([0.25, 0.5, 0.75, 1.0], [26.0, 29.0, 31.0, 32.5])


def test_bd_rate_matches_the_bjontegaard_package():
    bjontegaard = pytest.importorskip("bjontegaard")
    test = ([0.22, 0.41, 0.66, 0.93], [26.4, 29.6, 31.5, 33.1])
    ours = bd_rate(REF[0], REF[1], *test)
    theirs = bjontegaard.bd_rate(REF[0], REF[1], test[0], test[1], method="cubic")
    assert ours == pytest.approx(theirs, abs=0.5)
    assert bd_psnr(REF[0], REF[1], *test) == pytest.approx(
        bjontegaard.bd_psnr(REF[0], REF[1], test[0], test[1], method="cubic"), abs=0.05)


def test_bd_rate_of_a_scaled_curve_is_the_scale():
    rate = [r * 0.8 for r in REF[0]]
    assert bd_rate(REF[0], REF[1], rate, REF[1]) == pytest.approx(-20.0, abs=1e-6)
    assert bd_psnr(REF[0], REF[1], REF[0], [d + 1 for d in REF[1]]) == pytest.approx(1.0, abs=1e-6)
    assert np.isnan(bd_rate(REF[0], REF[1], REF[0], [d + 50 for d in REF[1]]))
    with pytest.raises(ValueError):
        bd_rate(REF[0][:3], REF[1][:3], REF[0][:3], REF[1][:3])


def test_psnr_at_a_rate_is_interpolated_in_log_rate_between_the_nearest_points_and_never_extrapolated():
    rate, psnr = [0.4, 0.1, 0.2, 0.8], [33.0, 28.0, 30.0, 34.0]  # in no order
    assert psnr_at_rate(rate, psnr, 0.2) == 30.0
    assert psnr_at_rate(rate, psnr, (0.1 * 0.2) ** 0.5) == pytest.approx(29.0)
    assert psnr_at_rate(rate, psnr, 0.4 * 2 ** 0.25) == pytest.approx(33.25)
    assert psnr_at_rate(rate, psnr, 0.09) is None and psnr_at_rate(rate, psnr, 0.81) is None
    assert psnr_at_rate([0.2, 0.2, 0.4], [30.0, 31.0, 33.0], 0.2) == 31.0  # the best of a rate, in any order
    assert psnr_at_rate([0.2, 0.4, 0.2], [31.0, 33.0, 30.0], 0.2 * 2 ** 0.5) == pytest.approx(32.0)
    with pytest.raises(ValueError, match="2 rates but 1 PSNRs"):
        psnr_at_rate([0.1, 0.2], [28.0], 0.15)


def test_the_equal_size_table_gives_each_images_distance_to_each_baseline():
    points = [{"image": "a", "codec": "nxcodec", "quality": 5, "bpp": 0.2, "psnr": 30.5},
              {"image": "b", "codec": "nxcodec", "quality": 5, "bpp": 0.3, "psnr": 29.0},
              {"image": "b", "codec": "nxcodec", "quality": 1, "bpp": 0.05, "psnr": 25.0}]
    points += [{"image": i, "codec": "webp", "quality": q, "bpp": r, "psnr": d}
               for i in "ab" for q, r, d in ((10, 0.1, 28.0), (50, 0.4, 32.0))]
    lines = bench_image.equal_size_lines(points, ["webp"])
    assert "| a | 0.200 | 30.50 | +0.50 |" in lines  # webp at 0.2: halfway in log rate, 30.0
    assert f"| b | 0.300 | 29.00 | {29.0 - (28.0 + 4.0 * np.log(3.0) / np.log(4.0)):+.2f} |" in lines
    assert "| b | 0.050 | 25.00 | - |" in lines  # below webp's lowest rate: not extrapolated
    assert "Ahead on 1 of 2 images against webp (the images within its range)." in lines
    assert "Ahead on 0 of 0 images against webp (the images within its range)." in lines
    assert bench_image.equal_size_lines(points, []) == ["No baseline was measured: nothing to compare at equal size.",
                                                        ""]


def test_harness_on_two_tiny_images(tmp_path, monkeypatch):
    src = tmp_path / "images"
    src.mkdir()
    for i, size in enumerate([(40, 32), (32, 40)]):
        Image.fromarray(real_image(size)).save(src / f"tiny{i}.png")
    cfg = bench_image.BenchConfig(src, tmp_path / "out", qualities=(1, 3, 5, 7), iters=30, device="cpu",
                                  baselines=("jpeg", "webp"), group=2, workers=2)
    bench_image.run(cfg, log=lambda line: None)
    for codec in ("nxcodec", "jpeg", "webp"):
        data = json.loads((cfg.out / f"{codec}.json").read_text())
        res = data["results"]
        assert data["name"] == codec
        for key in ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"):
            assert len(res[key]) == len(res["quality"])
        assert res["bpp"] == sorted(res["bpp"])
        assert all(n == 2 for n in res["images"])
    rows = list(csv.DictReader((cfg.out / "per_image.csv").open()))
    assert len(rows) == 2 * (4 + 10 + 8)
    assert {r["image"] for r in rows} == {"tiny0", "tiny1"}
    table = json.loads((cfg.out / "bdrate.json").read_text())
    assert set(table) == {"jpeg", "webp"}
    assert "BD-rate" in (cfg.out / "bdrate.md").read_text()
    assert f"commit {bench_image.git_commit()}, 2 images." in (cfg.out / "bdrate.md").read_text()
    equal = (cfg.out / "equal_size.md").read_text()
    assert all(f"nxcodec quality {q}:" in equal for q in (1, 3, 5, 7)) and equal.count("| tiny1 |") == 4
    meta = json.loads((cfg.out / "meta.json").read_text())
    assert meta["machine"] and meta["nxcodec_devices"] == ["cpu"]
    ours = [json.loads(line) for line in (cfg.out / "points.jsonl").read_text().splitlines()]
    assert {p["fitted_together"] for p in ours if p["codec"] == "nxcodec"} == {2}
    sheets = sorted(p.name for p in cfg.out.glob("sheet_*.png"))
    assert sheets == sorted(f"sheet_tiny{i}_q{q}.png" for i in (0, 1) for q in (1, 3, 5, 7))
    for p in (p for p in ours if p["codec"] == "nxcodec"):
        with Image.open(cfg.out / f"sheet_{p['image']}_q{p['quality']}.png") as sheet:
            labels = sheet.text["Description"].splitlines()
        assert [label.split()[0].rstrip(":") for label in labels] == ["original", "nxcodec", "JPEG", "WebP"]
        assert labels[1].startswith(f"nxcodec: {p['bytes']} bytes")

    def fail(*args, **kwargs):
        raise AssertionError("a finished point was measured again")

    monkeypatch.setattr(bench_image, "_nxcodec_points", fail)
    monkeypatch.setattr(bench_image, "_baseline_point", fail)
    assert json.dumps(bench_image.run(cfg, log=lambda line: None)) == json.dumps(table)


def test_a_signal_nxcodec_cannot_code_is_recorded_as_failed_and_the_run_goes_on(tmp_path, capsys):
    fitted = []

    def fit(chunk, level):
        fitted.append([p.stem for p in chunk])
        if any(p.stem == "bad" for p in chunk) and level == 8:
            raise NxcError("target too small")
        return [{"clip": p.stem, "codec": "nxcodec", "level": level, "kbps": level / 2} for p in chunk]

    store = PointStore(tmp_path / "points.jsonl", ("clip", "codec", "level"))
    items = [tmp_path / f"{n}.wav" for n in ("a", "bad", "c")]
    rounds = grouped_rounds([8, 16], items, 2, lambda p, lv: (p.stem, "nxcodec", lv) in store, fit,
                            lambda p, lv: {"clip": p.stem, "codec": "nxcodec", "level": lv})
    run_points(store, lambda: {}, [], rounds, 1)
    assert fitted == [["a", "bad"], ["a"], ["bad"], ["c"], ["a", "bad"], ["c"]]  # the failed pair again, alone
    assert sorted((p["clip"], p["level"]) for p in store.values()) == [("a", 8), ("a", 16), ("bad", 16), ("c", 8),
                                                                      ("c", 16)]
    assert store.failures() == [{"clip": "bad", "codec": "nxcodec", "level": 8, "error": "target too small"}]
    assert "bad nxcodec 8: failed (target too small)" in capsys.readouterr().out
    resumed = PointStore(tmp_path / "points.jsonl", ("clip", "codec", "level"))
    assert ("bad", "nxcodec", 8) in resumed and len(resumed.failures()) == 1  # not tried again on a rerun



def test_image_and_shape_summaries_list_the_points_nxcodec_could_not_code(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (8, 8)).save(images / f"{name}.png")
    cfg = bench_image.BenchConfig(images, tmp_path / "image_out", baselines=("jpeg",))
    cfg.out.mkdir()
    points = [{"image": n, "codec": c, "quality": q, "bytes": 100 * q, "bpp": q / 4, "psnr": 30.0 + q,
               "ms_ssim": 0.9, "encode_seconds": 1.0, "decode_seconds": 0.1, "device": "cpu"}
              for n in ("a", "b") for c in ("nxcodec", "jpeg") for q in (1, 2) if (n, c, q) != ("b", "nxcodec", 2)]
    failed = {"image": "b", "codec": "nxcodec", "quality": 2, "error": "target too small"}
    bench_image.summarise(cfg, points, ["jpeg"], [failed])
    assert "nxcodec fitted at commit not recorded, summarised at" in (cfg.out / "bdrate.md").read_text()
    text = (cfg.out / "bdrate.md").read_text()
    assert "nxcodec could not code b at quality 2 (target too small); the means at that quality are over" in text
    assert json.loads((cfg.out / "nxcodec.json").read_text())["results"]["images"] == [2, 1]

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.icosphere(subdivisions=1).export(meshes / "ball.ply")
    cfg = bench_shape.ShapeBenchConfig(meshes, tmp_path / "shape_out")
    cfg.out.mkdir()
    point = {**dict.fromkeys(bench_shape.FIELDS, 0.5), "mesh": "ball", "codec": "nxcodec", "quality": 1, "bytes": 900,
             "chamfer_l1": 0.002, "chamfer_l1_stderr": 1e-5, "device": "cpu"}
    bench_shape.summarise(cfg, [point], [{"mesh": "ball", "codec": "nxcodec", "quality": 9, "error": "too large"}])
    text = (cfg.out / "table.md").read_text()
    assert "nxcodec could not code ball at quality 9 (too large)." in text
    assert "| ball | 1 | 900 |" in text and "| ball | 9 |" not in text


def test_shape_plot_of_a_run_in_progress_draws_every_mesh_without_warnings(tmp_path):
    """Points come in a mesh at a time: a mesh with none yet gets an empty row, not a legend warning."""
    import warnings

    point = {"mesh": "ball", "codec": "nxcodec", "quality": 1, "bytes": 900, "chamfer_l1": 0.002, "iou": 0.9}
    out = tmp_path / "shape_rd.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bench_shape.plot_shapes([point], ["ball", "cube"], out)
    assert Image.open(out).size[1] > Image.open(out).size[0] / 2  # two rows of plots


def test_plot_draws_measured_and_published_curves(tmp_path):
    result = tmp_path / "nxcodec.json"
    result.write_text(json.dumps({"name": "nxcodec", "description": "", "results": {"bpp": REF[0], "psnr-rgb": REF[1]}}))
    out = tmp_path / "rd.png"
    plot_rd([result], out, PUBLISHED)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert len(list(PUBLISHED.glob("*.json"))) >= 4
    for path in PUBLISHED.glob("*.json"):
        data = json.loads(path.read_text())
        assert data["source"] and len(data["results"]["bpp"]) == len(data["results"]["psnr-rgb"])


def test_bench_fits_the_meshes_of_a_quality_together_and_resumes(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a finished point was measured again")

    src = tmp_path / "meshes"
    src.mkdir()
    for i, subdivisions in enumerate((2, 3)):
        ball = trimesh.creation.icosphere(subdivisions=subdivisions)
        trimesh.Trimesh(ball.vertices * (1 + i), ball.faces).export(src / f"ball{i}.ply")
    monkeypatch.setattr(shape_mod, "TRAIN_POINTS", 4096)
    monkeypatch.setattr(shape_mod, "DEFAULT_RESOLUTION", 32)
    monkeypatch.setattr(latent_shape, "DEFAULT_RESOLUTION", 32)
    monkeypatch.setattr(shape_mod, "METRICS", FAST_SHAPE_METRICS)
    monkeypatch.setattr(bench_shape, "DRACO_BITS", (8,))
    monkeypatch.setattr(bench_shape, "METRICS", FAST_SHAPE_METRICS)
    monkeypatch.setattr(presets, "SHAPE_SHAPE", replace(presets.SHAPE_SHAPE, n_experts=1))  # no pretraining
    tables = presets.SHAPE_LATENT_PRESETS  # grids of 9^3: the harness is under test, not the codec
    monkeypatch.setitem(tables, 1, replace(tables[1], grid_log2=3, levels=3))
    cfg = bench_shape.ShapeBenchConfig(src, tmp_path / "out", qualities=(1,), iters=20, device="cpu",
                                       decimate_keep=(0.3,), decimate_bits=(8,), group=2, workers=1)
    real = bench_shape._baseline_point

    def stop_at_draco(path, bits, keep):
        if bits:
            raise KeyboardInterrupt
        return real(path, bits, keep)

    monkeypatch.setattr(bench_shape, "_baseline_point", stop_at_draco)
    with pytest.raises(KeyboardInterrupt):  # one worker: the baselines come after the fits
        bench_shape.run(cfg, log=lambda line: None)
    assert "no Draco points yet" in (cfg.out / "table.md").read_text()  # summarised after the fits
    monkeypatch.setattr(bench_shape, "_baseline_point", real)
    monkeypatch.setattr(bench_shape, "_nxcodec_points", fail)
    bench_shape.run(cfg, log=lambda line: None)
    points = [json.loads(line) for line in (cfg.out / "points.jsonl").read_text().splitlines()]
    kinds = sorted((p["mesh"], p["codec"], str(p["quality"])) for p in points)
    assert kinds == sorted((m, c, q) for m in ("ball0", "ball1") for c, q in
                           [("floor", "0"), ("draco", "q8_keep1"), ("draco_decimated", "q8_keep0.3"),
                            ("nxcodec", "1")])
    nxc = [p for p in points if p["codec"] == "nxcodec"]
    assert all(p["fitted_together"] == 2 and p["bytes"] > 0 and p["chamfer_l1"] < 0.1 for p in nxc)
    table = json.loads((cfg.out / "table.json").read_text())
    assert sorted(table) == ["ball0", "ball1"] and all(len(rows) == 1 for rows in table.values())
    monkeypatch.setattr(bench_shape, "_baseline_point", fail)
    bench_shape.run(cfg, log=lambda line: None)


def test_git_commit_names_the_tree_or_the_commit_a_device_caller_gives(monkeypatch):
    from nxcodec.bench.results import git_commit

    monkeypatch.delenv("NXCODEC_COMMIT", raising=False)
    git_commit.cache_clear()
    own = git_commit()
    assert own == "unknown" or own.split("+")[0].isalnum()
    monkeypatch.setenv("NXCODEC_COMMIT", "652b565")
    git_commit.cache_clear()
    assert git_commit() == "652b565"
    git_commit.cache_clear()
