"""Every command under bench/ still imports: a script whose imports rotted (a moved function) fails here, not on
the device machine."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("*.py"))


def test_every_bench_script_imports_without_running():
    code = ("import importlib, sys\n"
            f"sys.path[:0] = [{str(ROOT / 'bench')!r}, {str(ROOT)!r}]\n"
            f"for name in {SCRIPTS!r}:\n"
            "    module = importlib.import_module(name)\n"
            "    assert callable(getattr(module, 'main', None)), name\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(SCRIPTS) > 20


def test_variants_are_typed_as_the_preset_or_schedule_and_unknown_fields_refused():
    code = ("import sys\n"
            f"sys.path[:0] = [{str(ROOT / 'bench')!r}, {str(ROOT)!r}]\n"
            "from preset_ablation import parse_variant\n"
            "assert parse_variant('base') == ('base', {}, {})\n"
            "assert parse_variant('r:refine_width=6+lam=0.01+optimizer=adam+latent_lr=0.5'"
            "                     '+ste_frac=0.05+lr_floor=0.01') == "
            "('r', {'refine_width': 6, 'lam': 0.01, 'optimizer': 'adam', 'latent_lr': 0.5}, "
            "{'ste_frac': 0.05, 'lr_floor': 0.01})\n"
            "assert parse_variant('c:context_lr=0.002') == ('c', {}, {'context_lr': 0.002})\n"
            "assert parse_variant('w:race=3x0.025/2x0.04') == ('w', {}, {'race': ((3, 0.025), (2, 0.04))})\n"
            "assert parse_variant('w:race=none') == ('w', {}, {'race': ()})\n"
            "for bad, says in (('x:widht=3', 'neither a preset field'), ('x:quality=2', 'neither a preset field'),\n"
            "                  ('x:syn_width=2.5', 'not a value of syn_width'), ('x:race=3', 'not a value of race')):\n"
            "    try:\n"
            "        parse_variant(bad)\n"
            "    except SystemExit as e:\n"
            "        assert says in str(e), (bad, str(e))\n"
            "    else:\n"
            "        raise AssertionError(bad)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def test_quadtree_decode_order_reads_only_latents_decoded_before(monkeypatch):
    """bench/decode_order.py's quadtree: a finest-grid latent of the last pass changes no other latent, and one of
    the first pass changes the means of later passes around it (so the measured order is causal and used)."""
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from decode_order import QuadtreeModel
    from nxcodec.latent.stream import LatentConfig

    cfg = LatentConfig(levels=3, arm_width=4, arm_layers=2, n_experts=1, mgr_width=0, syn_width=4, syn_layers=1,
                       refine_width=0, lanes_log2=0)
    model = QuadtreeModel(cfg, 1, (8, 8), 3, seed=1)
    with torch.no_grad():
        for level in model.latents:
            level.copy_(torch.randn(level.shape, generator=torch.Generator().manual_seed(2)) * 3)
        for layer in model.nets["arm_b"]:
            layer[0].copy_(torch.randn(layer[0].shape, generator=torch.Generator().manual_seed(3)))

    def finest_after(row: int, col: int) -> torch.Tensor:
        with torch.no_grad():
            model.latents[0][0, row, col] += 5.0
            grids, _ = model.quantized_latents("ste")
            model.latents[0][0, row, col] -= 5.0
        return grids[0][0]

    with torch.no_grad():
        before = model.quantized_latents("ste")[0][0][0]
    changed = (finest_after(3, 4) != before).nonzero().tolist()  # (odd, even): the last pass
    assert changed == [[3, 4]]
    changed = (finest_after(4, 4) != before).nonzero().tolist()  # (even, even): the first pass
    assert [4, 4] in changed and len(changed) > 1
    assert not [(r, c) for r, c in changed if r % 2 == 0 and c % 2 == 0 and (r, c) != (4, 4)]  # pass 0 reads none


def test_window_synthesis_starts_as_the_per_pixel_one_and_reads_neighbours_of_its_grids(monkeypatch):
    """bench/synthesis_window.py: the window model's first output equals the per-pixel model's from the same seed,
    and once its off-centre weights move, a change to one latent of the windowed finest grid reaches exactly the
    3x3 pixels around it."""
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from synthesis_window import window_model
    from nxcodec.fit.latent import LatentModel
    from nxcodec.latent.stream import LatentConfig

    cfg = LatentConfig(levels=3, arm_width=4, arm_layers=2, n_experts=1, mgr_width=0, syn_width=4, syn_layers=1,
                       refine_width=0, lanes_log2=0)
    base = LatentModel(cfg, 1, (8, 8), 3, seed=1)
    model = window_model(1)(cfg, 1, (8, 8), 3, seed=1)
    assert model.extra_weights() == 8 * 1 * 4
    grids = [torch.randn(1, 8 >> l, 8 >> l, generator=torch.Generator().manual_seed(l)) for l in range(3)]
    with torch.no_grad():
        assert torch.equal(base.synthesize(grids)[2], model.synthesize(grids)[2])
        model.nets["experts"][0][0].normal_(generator=torch.Generator().manual_seed(4))
        before = model.synthesize(grids)[2][0].reshape(8, 8, 3)
        grids[0][0, 4, 4] += 1.0  # the windowed finest grid: its 3x3 neighbourhood changes
        after = model.synthesize(grids)[2][0].reshape(8, 8, 3)
    changed = sorted({(r, c) for r, c, _ in (after != before).nonzero().tolist()})
    assert changed == [(r, c) for r in (3, 4, 5) for c in (3, 4, 5)]


def test_latent_polish_puts_the_coded_networks_back_where_they_were_fitted(monkeypatch):
    """bench/latent_polish.py's load_coded is the inverse of LatentModel.coded_tensors: with the coded networks put
    back (experts, manager, refinement, filter taps), the model synthesizes the decoded image to within a fraction of
    a level on average (the samples' 8-bit rounding, the fixed-point context model and routing); without them the
    float networks are levels away."""
    import numpy as np
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from latent_polish import load_coded
    from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
    from nxcodec.fit.latent_code import code_image
    from nxcodec.latent.stream import LatentConfig
    from nxcodec.signals import for_name

    image = for_name("image")
    rng = np.random.default_rng(3)
    arrays = [(rng.random((1, 1, 3)) * 255 * np.linspace(0, 1, 32)[:, None, None]).astype(np.uint8).repeat(24, 1)
              for _ in range(2)]
    signals = [image.from_array(a) for a in arrays]
    d = signals[0].descriptor
    cfg = LatentConfig(levels=3, arm_width=4, arm_layers=2, n_experts=2, mgr_width=4, syn_width=8, syn_layers=2,
                       refine_width=2, lanes_log2=0)
    model = LatentModel(cfg, 2, (d.height, d.width), d.channels, seed=0)
    target = torch.stack([image.targets(s) for s in signals])
    with torch.random.fork_rng():
        fit(model, target, 1e-3, LatentSchedule(iters=40, race=()), seed=0)

    def gap(j: int, samples: np.ndarray) -> float:
        with torch.no_grad():
            out = model.synthesize(model.quantized_latents("ste")[0])[2][j].clamp(-1, 1)
        return float(np.abs(out.numpy() * 127.5 + 127.5 - samples.reshape(-1, 3)).mean())

    for j, sig in enumerate(signals):
        weights = {n: t.detach().numpy() for n, t in model.coded_tensors(j).items()}
        latents = [lat[j].detach().numpy().astype(np.float64) for lat in model.latents]
        best = code_image(d, cfg, weights, latents, sig.data, 1e-3, None)
        before = gap(j, best.samples)
        load_coded(model, j, best.image.tensors)
        after = gap(j, best.samples)
        assert after < 1.0 < before, (before, after)


def test_compare_runs_gives_each_point_and_the_bd_rate_per_item(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import json

    from compare_runs import compare, nxcodec_points

    for name, scale in (("before", 1.0), ("after", 0.9)):
        (tmp_path / name).mkdir()
        rows = [{"image": "a", "codec": "nxcodec", "quality": q, "bytes": round(1000 * 2**q * scale),
                 "psnr": 25 + 2 * q} for q in (1, 3, 5, 7)]
        rows += [{"image": "a", "codec": "webp", "quality": 50, "bytes": 5, "psnr": 30.0}]
        (tmp_path / name / "points.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before, after = nxcodec_points(tmp_path / "before"), nxcodec_points(tmp_path / "after")
    assert sorted(before) == [("a", 1), ("a", 3), ("a", 5), ("a", 7)]  # nxcodec's points only
    lines = compare(before, after)
    assert "| a | 1 | 2000 | 1800 | -10.0% | 27.00 | 27.00 | +0.000 dB |" in lines
    assert lines[-1] == "a: BD-rate -10.00%"
    three = {k: v for k, v in after.items() if k[1] != 7}
    assert compare(before, three)[-1] == "a: 3 common levels, too few for a BD-rate"

    import sys

    from compare_runs import main

    (tmp_path / "after" / "meta.json").write_text(json.dumps({"commit": "abc1234"}))  # points without a commit
    monkeypatch.setattr(sys, "argv", ["compare_runs.py", str(tmp_path / "before"), str(tmp_path / "after")])
    main()
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("(commits unknown)") and out[1].endswith("(commits abc1234)")


def test_raster_orders_read_only_latents_before_them_in_their_tile(monkeypatch):
    """bench/decode_order.py's causal orders: a latent is read only by latents after it in raster order, within a
    few rows and columns (and, with tiles, its own tile); the slope-2 neighbourhood by none a wavefront 2 row + col
    decodes with it."""
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from decode_order import CausalModel, CausalSlope2Model, CausalTilesModel
    from nxcodec.latent.stream import LatentConfig

    cfg = LatentConfig(levels=2, arm_width=4, arm_layers=2, n_experts=1, mgr_width=0, syn_width=4, syn_layers=1,
                       refine_width=0, lanes_log2=0)
    for kind, size in ((CausalModel, 16), (CausalTilesModel, 64), (CausalSlope2Model, 16)):
        model = kind(cfg, 1, (size, size), 3, seed=1)
        for r, c in ((5, 6), (31, 33), (32, 31)):
            if r >= size or c >= size:
                continue
            grid = torch.zeros(1, size, size)
            grid[0, r, c] = 1.0
            readers = model._same(grid)[0].sum(-1).nonzero().tolist()
            assert readers and all((i, j) > (r, c) and i - r <= 3 and abs(j - c) <= 3 for i, j in readers)
            if kind.tile:
                assert all(i // 32 == r // 32 and j // 32 == c // 32 for i, j in readers)
            if kind is CausalSlope2Model:
                assert all(2 * i + j > 2 * r + c for i, j in readers)
    assert len(CausalModel.offsets) == len(CausalSlope2Model.offsets) == 12


def test_ablation_table_compares_each_variant_with_the_base_per_crop(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import json

    from ablation_table import load, table

    rows = [{"image": im, "size": 256, "iters": 2000, "quality": 5, "order": order, "seed": 0, "cost": cost}
            for im, order, cost in (("a", "base", 1.0), ("b", "base", 2.0), ("a", "x", 0.9), ("b", "x", 2.2),
                                    ("a", "y", 5.0), ("a", "y", 1.05))]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = table(load(path, "order"), "base").splitlines()
    assert "| x | -10.0 | +10.0 | +0.0 |" in out
    assert "| y | +5.0 | - | +5.0 |" in out  # the last of a repeated row; a crop it lacks is left out of the mean
    assert table(load(path, "order"), "z") == ""


def test_raster_wavefronts_cover_every_latent_once_after_its_neighbours(monkeypatch):
    """bench/raster_decode_time.py: each step's latents read only latents of earlier steps in their tile."""
    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from raster_decode_time import NEIGHBOURS, wavefront_steps

    h, w = 11, 13
    for slope, tile in ((3, 0), (2, 0), (3, 4), (2, 5)):
        step_of = np.full((h, w), -1)
        tile_of = np.full((h, w), -1)
        for t, (tile_index, _, _, r, c) in enumerate(wavefront_steps(h, w, tile, slope)):
            assert (step_of[r, c] == -1).all()
            step_of[r, c], tile_of[r, c] = t, tile_index
        assert (step_of >= 0).all()
        for r in range(h):
            for c in range(w):
                for a, b in NEIGHBOURS[slope]:
                    i, j = r + a, c + b
                    if 0 <= i < h and 0 <= j < w and tile_of[i, j] == tile_of[r, c]:
                        assert step_of[i, j] < step_of[r, c]
        assert len(np.unique(tile_of)) == (1 if not tile else -(-h // tile) * -(-w // tile))


def test_raster_coding_tables_sum_to_the_coder_total_and_mirror_their_phase(monkeypatch):
    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from raster_coding import phase_tables
    from nxcodec.latent import tables

    phases = 4
    t = phase_tables(tables.FINE, phases)
    assert len(t) == tables.FINE.n * phases
    assert all(int(x.sum()) == tables.TOTAL and x.min() >= 1 for x in t)
    s = 20  # scale 2**0.5: a mean a quarter above an integer makes +1 likelier than -1
    low, high = t[s * phases], t[s * phases + phases - 1]
    a = tables.FINE.limits[s]
    assert np.array_equal(low[::-1], high) and high[a + 1] > high[a - 1]
