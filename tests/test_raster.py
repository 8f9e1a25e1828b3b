"""Version 12's raster context (SPEC.md 18): decode order, tables per scale and phase, the flag, and the fit's twin."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nxcodec.errors import StreamError
from nxcodec.fit import latent as fit_latent
from nxcodec.fit.latent import LatentModel
from nxcodec.fit.latent_code import quantize_networks
from nxcodec.latent import context, rans, stream, tables
from nxcodec.latent.stream import FLAG_RASTER_CONTEXT, LatentConfig
from nxcodec.signals.imagefile import ImageDescriptor

ROOT = Path(__file__).parents[1]


def raster_config(**kw) -> LatentConfig:
    base = dict(levels=3, arm_width=8, arm_layers=2, n_experts=2, mgr_width=5, syn_width=8, syn_layers=1,
                refine_width=2, lanes_log2=2, flags=FLAG_RASTER_CONTEXT)
    return LatentConfig(**{**base, **kw})


def random_raster_stream(seed: int, d: ImageDescriptor, cfg: LatentConfig, spread: float = 3.0,
                         spikes: dict | None = None):
    """Random networks (the context model's scale output mid-range) and random latents (``spikes`` sets some,
    {(level, row, column): value}), written as version 12."""
    rng = np.random.default_rng(seed)
    weights = {n: rng.normal(0, 0.3, s).astype(np.float32) for n, s in cfg.tensor_shapes(d.channels).items()}
    weights["upsample"] = np.array([-0.0234375, 0.2265625, 0.8671875, -0.0703125], dtype=np.float32)
    weights["arm.out.bias"] = np.array([0.3, 14.0], dtype=np.float32)
    latents = [rng.normal(0, spread, s) for s in context.level_sizes((d.height, d.width), cfg.levels)]
    for (level, *at), value in (spikes or {}).items():
        latents[level][tuple(at)] = value
    return stream.write(d, cfg, quantize_networks(weights, 7, 5), latents), latents


@pytest.mark.parametrize("size, levels, lanes", [((70, 131), 2, 3), ((23, 17), 3, 0), ((1, 9), 1, 1), ((65, 1), 2, 2)])
def test_a_raster_stream_decodes_to_what_the_encoder_recorded(size, levels, lanes):
    d = ImageDescriptor(size[1], size[0], 3, 8)
    cfg = raster_config(levels=levels, lanes_log2=lanes)
    (data, recorded), latents = random_raster_stream(levels, d, cfg)
    assert data[4] == 12 and stream.read_header(data).config.raster_context
    decoded = stream.decode_latents(data)
    assert decoded.digest() == recorded.digest()
    for grid, latent in zip(decoded.grids, latents):  # each latent rounded itself, whatever its mean
        assert np.array_equal(grid, np.round(latent).astype(np.int64) * context.ONE)
    image, experts = stream.reconstruct(decoded)
    assert image.shape == (d.height, d.width, 3) and experts.shape == (d.height, d.width)


def test_raster_residuals_beyond_their_tables_escape():
    d = ImageDescriptor(40, 30, 1, 8)
    far = {(0, 3, 4): 5000.0, (0, 29, 39): -300.0, (1, 2, 2): 20000.0, (2, 7, 9): -1.0e6}
    (data, recorded), _ = random_raster_stream(3, d, raster_config(n_experts=1, mgr_width=0), 0.3, far)
    decoded = stream.decode_latents(data)
    assert decoded.digest() == recorded.digest()
    for (level, *at), value in list(far.items())[:3]:  # within the escapes' reach: exactly
        assert decoded.grids[level][tuple(at)] == value * context.ONE
    assert -(1 << 24) < decoded.grids[2][7, 9] < -(tables.MAX_ESCAPE - 1024) * context.ONE  # beyond it: clamped


def test_every_step_reads_only_latents_of_earlier_steps_of_its_tile():
    h, w = 130, 70
    steps = [step.pos for step in context.RasterGrid((h, w), None).steps()]
    when = np.full((h, w), -1)
    for k, (r, c) in enumerate(steps):
        assert np.all(np.diff(r * w + c) > 0)  # raster order within a step
        when[r, c] = k
    assert (when >= 0).all() and sum(r.size for r, _ in steps) == h * w and len(steps) == 3 * context.TILE - 2
    for dr, dc in context.RASTER_OFFSETS:
        assert 2 * dr + dc <= -1
        r, c = np.indices((h, w))
        inside = (r % context.TILE + dr >= 0) & (c % context.TILE + dc >= 0) & (c % context.TILE + dc < context.TILE) \
            & (c + dc < w)
        assert np.all(when[r[inside] + dr, c[inside] + dc] < when[inside])


def _spec_reading(data: bytes) -> bytes:
    """The payload a writer following SPEC.md 18 to the letter would code for the decoded integers of ``data``: each
    latent's context read one neighbour at a time, its centre, phase and table by 18.3's integer formulas."""
    image = stream.decode_latents(data)
    cfg, grids = image.config, image.grids
    net = stream.fixed_layers(image.tensors, "arm")
    phased = tables.PHASED
    symbols, models = [], []
    shift = stream.weight_model(phased)
    for t, qt in enumerate(image.tensors.values()):
        symbols.append(qt.ints.ravel() - qt.lo)
        models.append(np.full(qt.ints.size, shift + t))
    first = [sum(tables.phases(s) for s in range(k)) for k in range(phased.phase_counts.size)]
    for level in range(cfg.levels - 1, -1, -1):
        grid, h, w = grids[level], *grids[level].shape
        coarser = grids[level + 1] if level + 1 < cfg.levels else None
        by_step: dict[int, list[tuple[int, int]]] = {}
        for i in range(h):
            for j in range(w):
                by_step.setdefault(2 * (i % 64) + j % 64, []).append((i, j))
        for t in sorted(by_step):
            ctx = []
            for i, j in by_step[t]:
                u, v = i % 64, j % 64
                row = [int(grid[i + dr, j + dc]) if u + dr >= 0 and 0 <= v + dc < 64 and j + dc < w else 0
                       for dr, dc in context.RASTER_OFFSETS]
                for a in (-1, 0, 1):
                    for b in (-1, 0, 1):
                        y, x = i // 2 + a, j // 2 + b
                        inside = coarser is not None and 0 <= y < coarser.shape[0] and 0 <= x < coarser.shape[1]
                        row.append(int(coarser[y, x]) if inside else 0)
                ctx.append(row)
            out = context.fixed_mlp(np.array(ctx), net)
            step_symbols, step_models, escapes = [], [], []
            for (i, j), (o0, o1) in zip(by_step[t], out.tolist()):
                mean = min(max(o0, -(1 << 18)), 1 << 18)
                scale = min(max((o1 + 128) // 256, 0), 57)
                c = (mean + 128) // 256
                phase = (mean + 128 - 256 * c) * tables.phases(scale) // 256
                a = tables.FINE.rows[scale][2]
                r = int(grid[i, j]) // 256 - c
                step_symbols.append(min(max(r, -a), a) + a)
                step_models.append(first[scale] + phase)
                if abs(r) >= a:
                    escapes.append(abs(r) - a)
            symbols.append(np.array(step_symbols))
            models.append(np.array(step_models))
            for sym, mod in stream.escape_symbols(np.array(escapes, dtype=np.int64), phased.n):
                symbols.append(sym)
                models.append(mod)
    coder = stream._coder_tables([qt.table() for qt in image.tensors.values()], phased)
    return rans.encode(np.concatenate(symbols).astype(np.int64), np.concatenate(models).astype(np.int64), coder,
                       1 << cfg.lanes_log2)


def test_a_letter_by_letter_reading_of_the_spec_codes_the_same_payload():
    d = ImageDescriptor(131, 70, 1, 8)  # the finest grid spans three tiles across and two down
    (data, _), _ = random_raster_stream(5, d, raster_config(levels=2, n_experts=1, mgr_width=0), spread=40.0)
    assert bytes(stream.read_header(data).body.payload) == _spec_reading(data)


def test_phased_tables_follow_the_rule_and_mirror_each_other():
    phased = tables.PHASED
    assert phased.n == sum(tables.phases(s) for s in range(58)) == 720
    for s in range(58):
        theta, _, a = tables.FINE.rows[s]
        p = tables.phases(s)
        b = 2.0 ** (tables.FINE.log2_bmin + s / tables.SCALES_PER_OCTAVE)
        for j in range(p):
            d = (j + 0.5) / p - 0.5
            p0 = 1 - 0.5 * math.exp(-(0.5 - d) / b) - 0.5 * math.exp(-(0.5 + d) / b)
            p1 = 0.5 * math.exp(-(0.5 - d) / b) * (1 - math.exp(-1 / b))
            assert tables.PHASE_RHO[s][j] == round(65536 * p1 / p0)
            f = phased.table(int(phased.first[s]) + j)
            assert f.size == 2 * a + 1 and f.sum() == 1 << 16 and f.min() >= 1 and f[a] == f.max()
            assert np.array_equal(f[::-1], phased.table(int(phased.first[s]) + p - 1 - j))
        if p == 1:
            assert np.array_equal(phased.table(int(phased.first[s])), tables.FINE.table(s))


def test_a_mean_picks_the_nearest_integer_and_the_phase_of_its_offset():
    mu = np.array([-128, -129, 127, 128, 0, 255, -1, 300])
    scale = np.array([0, 0, 0, 0, 20, 20, 57, 57])
    centre, table = context.centres_and_tables(mu, scale, tables.PHASED.first, tables.PHASED.phase_counts)
    assert centre.tolist() == [0, -256, 0, 256, 0, 256, 0, 256]
    first20 = int(tables.PHASED.first[20])
    assert table.tolist() == [0, 31, 31, 0, first20 + 8, first20 + 7, 719, 719]


def test_spec_lists_the_phase_tables_of_the_code():
    block = (ROOT / "bitstream" / "SPEC.md").read_text().split("<!-- phase-table -->")[1]
    rows = [line.strip("| ").split("|") for line in block.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [(int(s), int(p), tuple(int(v) for v in values.split())) for s, p, values in rows] == [
        (s, tables.phases(s), rho) for s, rho in enumerate(tables.PHASE_RHO)]


def test_the_raster_flag_is_refused_where_the_format_does_not_allow_it():
    d = ImageDescriptor(30, 20, 1, 8)
    (data, _), _ = random_raster_stream(1, d, raster_config(n_experts=1, mgr_width=0))
    as_eleven = bytearray(data[:-4])
    as_eleven[4] = 11
    with pytest.raises(StreamError, match="raster context before version 12"):
        stream.decode_latents(stream.with_crc(bytes(as_eleven)))
    config_at = stream.PREFIX.size + int.from_bytes(data[6:8], "little") + LatentConfig.SIZE - 1
    both = bytearray(data[:-4])
    both[config_at] = 3
    with pytest.raises(StreamError, match="limits"):
        stream.decode_latents(stream.with_crc(bytes(both)))
    with pytest.raises(StreamError, match="limits"):
        raster_config().check((8, 8, 8), 1)  # a volume has no raster context
    with pytest.raises(ValueError, match="read, not written"):
        stream.write_body(raster_config(), 1, quantize_networks({}, 7, 5), [np.zeros((4, 4))], 11)


def test_the_raster_context_counts_one_model_per_latent():
    cfg = raster_config(n_experts=1, mgr_width=0, refine_width=0)
    two = replace(cfg, flags=0)
    arm = 21 * 8 + 8 * 8 + 8 * 2
    assert [n for n in cfg.tensor_shapes(3) if n.startswith("arm")] == [
        "arm.0.weight", "arm.0.bias", "arm.1.weight", "arm.1.bias", "arm.out.weight", "arm.out.bias"]
    latents = 1 + 1 / 4 + 1 / 16
    assert cfg.mac_per_pixel(3) - two.mac_per_pixel(3) == pytest.approx((arm - (9 * 8 + 64 + 16 + arm) / 2) * latents)


@pytest.mark.parametrize("size", [(9, 70), (67, 5)])
def test_the_fits_raster_context_is_the_specs(size):
    h, w = size
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn(2, h, w, dtype=torch.float64, generator=gen)
    want = torch.zeros(2, h, w, len(context.RASTER_OFFSETS), dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for k, (dr, dc) in enumerate(context.RASTER_OFFSETS):
                if i % 64 + dr >= 0 and 0 <= j % 64 + dc < 64 and j + dc < w:
                    want[:, i, j, k] = grid[:, i + dr, j + dc]
    assert torch.equal(fit_latent._raster_context(grid), want)


@pytest.fixture(scope="module")
def raster_fit():
    """A 64x96 image fitted with the raster context for 150 iterations: descriptor, config, the fit's hard grids and
    bits, weights, float latents, the image."""
    from conftest import real_image
    from nxcodec.signals import for_name

    image = for_name("image")
    array = real_image((64, 96))
    d = image.from_array(array).descriptor
    cfg = raster_config(levels=4, n_experts=1, mgr_width=0, lanes_log2=0)
    model = LatentModel(cfg, 1, (d.height, d.width), 3, seed=0)
    target = image.targets(image.from_array(array))[None]
    fit_latent.fit(model, target, 0.01, fit_latent.LatentSchedule(iters=150, race=()))
    with torch.no_grad():
        grids, bits = model.quantized_latents("ste")
    weights = {n: t.detach().numpy() for n, t in model.coded_tensors(0).items()}
    latents = [lat[0].detach().numpy().astype(np.float64) for lat in model.latents]
    return d, cfg, grids, bits, weights, latents, array


def test_a_raster_fit_codes_the_grids_it_fitted_at_about_the_bits_it_counted(raster_fit):
    from nxcodec.fit.latent_code import code_image, image_source, walk

    d, cfg, grids, bits, weights, latents, array = raster_fit
    coded = code_image(d, cfg, weights, latents, array, 0.01, None)
    for mine, theirs in zip(grids, coded.image.grids):
        assert np.array_equal(mine[0].numpy().astype(np.int64) * context.ONE, theirs)
    # with a fine fixed point (the coding chooses a coarser one, trading latent bits for network bits) the decoder's
    # walk counts what the fit counted: its integer context model, centres, phases and tables are the fit's twins
    walked, _ = walk(image_source(d, cfg, latents, array, 0.01), quantize_networks(weights, 11, 5), 0.5)
    assert walked == pytest.approx(float(bits[0]), rel=0.03)


def test_the_precision_search_decodes_once_what_differs_only_in_the_context_model(raster_fit, monkeypatch):
    """A raster fit's grids do not depend on its context model (each latent is rounded by itself), so the trials of
    the context model's precisions decode the same grids through the same synthesis: the search decodes each
    once, and chooses what it chooses when it decodes every trial."""
    from dataclasses import replace

    from nxcodec.fit import latent_code

    d, cfg, _, _, weights, latents, array = raster_fit
    src = latent_code.image_source(d, cfg, latents, array, 0.01)
    decoded = []

    def counted(grids, coded):
        decoded.append(latent_code.synthesis_key(grids, coded))
        return src.measure(grids, coded)

    once = latent_code.code_plane(replace(src, measure=counted), weights, None)
    assert len(decoded) == len(set(decoded)) + 1  # each decoding once, then the written stream's
    trials = []
    real_trial = latent_code._trial

    def every_trial_decoded(*args, measured=None, **kw):
        trials.append(args[1])
        return real_trial(*args, **kw)

    monkeypatch.setattr(latent_code, "_trial", every_trial_decoded)
    again = latent_code.code_plane(src, weights, None)
    assert len(trials) >= len(decoded) + 4  # the five fixed-point precisions decoded once, and more
    assert again.data == once.data


def test_a_version_11_image_with_the_version_byte_12_decodes_the_same():
    from conftest import CONFORMANCE, conformance_cases

    for case in conformance_cases("v11/image"):
        data = bytearray((CONFORMANCE / case["stream"]).read_bytes()[:-4])
        data[4] = 12
        assert stream.decode_latents(stream.with_crc(bytes(data))).digest() == case["integers_sha256"]


def test_the_version_12_conformance_streams_use_the_raster_context_across_tiles_and_phases():
    from conftest import CONFORMANCE, conformance_cases

    tables_used = set()
    widest = 0
    for case in conformance_cases("v12/image"):
        image = stream.decode_latents((CONFORMANCE / case["stream"]).read_bytes())
        assert image.config.raster_context
        widest = max(widest, image.grids[0].shape[1])

        def charge(level, pos, centre, table):
            tables_used.update(table.tolist())
            return (image.grids[level][pos] - centre) // context.ONE

        grids = stream.walk_latents(image.config, image.grids[0].shape,
                                    stream.context_models(image.config, image.tensors), charge, tables.PHASED)
        assert all(np.array_equal(a, b) for a, b in zip(grids, image.grids))
    phases = {t - int(tables.PHASED.first[np.searchsorted(tables.PHASED.first, t, "right") - 1]) for t in tables_used}
    assert widest > 2 * context.TILE and len(phases) >= 16


def test_the_written_floor_case_needs_biases_shifted_down_by_floor(monkeypatch):
    """v12/image/gray_k1_floor_32x24 (make_conformance.floor_case): its context model's biases are finer than its
    weights, and a decoder that shifted the negative ones toward zero instead of by floor (SPEC.md 9.4) cannot decode
    it; rgb_k4_ties_23x17, which also takes the floor branch, decodes the same under that reading."""
    from conftest import CONFORMANCE, conformance_cases, shift_biases_toward_zero

    folder = CONFORMANCE / "v12" / "image"
    data = (folder / "gray_k1_floor_32x24.nxc").read_bytes()
    image = stream.decode_latents(data)
    net = stream.context_models(image.config, image.tensors)[0]
    assert all(context.FRAC_BITS + layer.w_shift < layer.b_shift and (layer.bias < 0).any() for layer in net)

    shift_biases_toward_zero(monkeypatch)
    with pytest.raises(StreamError, match="does not decode"):
        stream.decode_latents(data)
    ties = next(c for c in conformance_cases("v12/image") if c["stream"].endswith("rgb_k4_ties_23x17.nxc"))
    assert stream.decode_latents((CONFORMANCE / ties["stream"]).read_bytes()).digest() == ties["integers_sha256"]


@pytest.mark.parametrize("misreading", ["a U_0 symbol after every length", "a high part from 12 bits below"])
def test_the_escape_lengths_case_catches_misread_escapes(monkeypatch, misreading):
    """v12/image/gray_k1_escape_lengths_24x20 (make_conformance.escape_lengths_case) holds escapes of every bit
    length, 0 to 15 (SPEC.md 12). A decoder that read a U_0 symbol after a length of 0 or 1, or gave a length of 13
    (12 bits below its leading one) a high part under U_0, would take a lane's turn the writer never coded, and
    from there read other integers or none. Of the other version 12 streams, gray_k2_escapes_21x19 and
    rgb_k4_ties_23x17 catch the first reading and none the second (none has an escape of length 13)."""
    from conftest import CONFORMANCE, conformance_cases

    case = next(c for c in conformance_cases("v12/image") if c["stream"].endswith("gray_k1_escape_lengths_24x20.nxc"))
    data = (CONFORMANCE / case["stream"]).read_bytes()
    lengths = []
    read = stream.read_escapes
    monkeypatch.setattr(stream, "read_escapes", lambda *a: lengths.append(tables.bit_length(e := read(*a))) or e)
    assert stream.decode_latents(data).digest() == case["integers_sha256"]
    assert set(np.concatenate(lengths).tolist()) == set(range(16))

    right = stream._escape_parts

    def wrong(k: np.ndarray):
        below, high, low, has_low = right(k)
        if misreading.startswith("a U_0"):
            return below, high, low, np.ones_like(has_low)
        return below, below >= tables.ESCAPE_CHUNK, low, has_low

    monkeypatch.setattr(stream, "_escape_parts", wrong)
    try:
        assert stream.decode_latents(data).digest() != case["integers_sha256"]
    except StreamError:
        pass


def test_a_step_evaluated_in_blocks_decodes_the_same(monkeypatch):
    d = ImageDescriptor(140, 70, 1, 8)  # steps of up to 6 latents in the finest grid
    (data, recorded), _ = random_raster_stream(2, d, raster_config(levels=2, n_experts=1, mgr_width=0))
    monkeypatch.setattr(context, "BLOCK", 4)
    assert stream.decode_latents(data).digest() == recorded.digest()
