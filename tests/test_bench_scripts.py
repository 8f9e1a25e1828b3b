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
