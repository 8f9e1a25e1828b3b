"""The shared plane coder (images and audio): sizes counted from the tables, precisions compared on a band of an
audio plane and on the whole of an image."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from nxcodec.fit import latent_audio, latent_code, presets
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.latent import audio, stream
from nxcodec.signals import for_name

AUDIO = for_name("audio")


@pytest.fixture(scope="module")
def fitted():
    """A plane of 2 s of 8 kHz tones (65 frames of 256 coefficients), fitted briefly (30 iterations): target, config, weights,
    latents."""
    t = np.arange(16000) / 8000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t) + 0.01 * np.random.default_rng(0).standard_normal(t.size))
    signal = AUDIO.from_array(x[:, None].astype(np.float32), 8000)
    d = latent_audio.descriptor_for(signal.descriptor, signal.data)
    plane = latent_audio.planes_of(0, d)[0]
    target = latent_audio.coefficients(plane, d, signal.data)
    cfg = latent_audio.config_for(presets.AUDIO_LATENT_PRESETS[5], *plane.size)
    model = LatentModel(cfg, 1, plane.size, 1, seed=0)
    with torch.random.fork_rng():
        fit(model, torch.from_numpy(target.reshape(1, -1, 1)).float(), 1e-4, LatentSchedule(iters=30), seed=0)
    weights = {n: w.detach().numpy() for n, w in model.coded_tensors(0).items()}
    latents = [lat[0].detach().numpy().astype(np.float64) for lat in model.latents]
    return target, cfg, weights, latents


@pytest.mark.parametrize("fixed, dead_zone", [(5, 0.5), (7, 0.5), (9, 0.8)])
def test_table_bit_count_matches_the_coder(fitted, fixed, dead_zone):
    target, cfg, weights, latents = fitted
    src = latent_code.audio_plane_source(target, cfg, latents, 1e-4)
    coded = latent_code.quantize_networks(weights, fixed, 5)
    bits, grids = latent_code.walk(src, coded, dead_zone)
    body, want = stream.write_body(cfg, 1, coded, latents, stream.VERSION, dead_zone)
    assert all(np.array_equal(a, b) for a, b in zip(grids, want))  # the walk chooses what the writer chooses
    estimate = latent_code.estimated_bytes(src, coded, bits + latent_code.tensor_bits(coded))
    # rANS with 16-bit tables spends a few tenths of a percent over -log2 of the frequencies
    assert len(body) * 0.99 - 2 <= estimate <= len(body) + 2


def test_a_band_is_the_plane_cut_at_whole_rows_of_every_grid():
    rows, cols, levels = 300, 64, 3
    latents = [np.arange(-(-rows >> l) * (cols >> l), dtype=float).reshape(-(-rows >> l), cols >> l)
               for l in range(levels)]
    cfg = latent_audio.config_for(presets.AUDIO_LATENT_PRESETS[5], rows, cols)
    cfg = stream.LatentConfig(**{**cfg.__dict__, "levels": levels})
    src = latent_code.audio_plane_source(np.zeros((rows, cols)), cfg, latents, 1e-4)
    band, scale = latent_code.search_band(src)
    a = (rows - latent_code.SEARCH_ROWS) // 2 // 4 * 4
    assert scale == rows / latent_code.SEARCH_ROWS
    for level, (lat, cut) in enumerate(zip(latents, band.latents)):
        assert np.array_equal(cut, lat[a >> level : (a + latent_code.SEARCH_ROWS) >> level])
    small = latent_code.audio_plane_source(np.zeros((200, cols)), cfg, [lat[: -(-200 >> l)] for l, lat in
                                                                     enumerate(latents)], 1e-4)
    assert latent_code.search_band(small) == (small, 1.0)  # under two bands: the whole plane


def test_code_plane_writes_what_it_measured_and_meets_a_target(fitted, monkeypatch):
    target, cfg, weights, latents = fitted
    monkeypatch.setattr(latent_code, "SEARCH_ROWS", 16)  # a band of 16 of the 65 rows
    src = latent_code.audio_plane_source(target, cfg, latents, 1e-4)
    assert latent_code.search_band(src)[1] > 1
    free = latent_code.code_plane(src, weights, None)
    body, _ = stream.read_body(free.data, 0, len(free.data), target.shape, 1, stream.VERSION)
    assert np.array_equal(audio.plane_values(body, *target.shape), free.samples)
    assert free.cost == pytest.approx(free.mse + 1e-4 * 8 * len(free.data) / target.size)
    allowed = 8 * len(free.data) * 0.97
    with pytest.raises(latent_code.NxcError):
        latent_code.code_plane(src, weights, allowed, trim=False)
    trimmed = latent_code.code_plane(src, weights, allowed)
    assert 8 * len(trimmed.data) <= allowed  # (its mse need not be above the free coding's: both are greedy)
    body, _ = stream.read_body(trimmed.data, 0, len(trimmed.data), target.shape, 1, stream.VERSION)
    assert np.array_equal(audio.plane_values(body, *target.shape), trimmed.samples)


def test_each_layer_may_take_its_own_precision_when_that_lowers_the_cost(fitted, monkeypatch):
    """The per-layer search starts from the best coding with one precision per kind and only ever lowers its cost, and
    the stream decodes to what was measured."""
    target, cfg, weights, latents = fitted
    src = latent_code.audio_plane_source(target, cfg, latents, 3e-3)
    layered = latent_code.code_plane(src, weights, None)
    layers = latent_code._layers(weights)
    assert "upsample" not in sum(layers, []) and ["arm_a.0.weight", "arm_a.0.bias"] in layers
    monkeypatch.setattr(latent_code, "_layers", lambda w: [])
    uniform = latent_code.code_plane(src, weights, None)
    assert layered.cost < uniform.cost
    body, _ = stream.read_body(layered.data, 0, len(layered.data), target.shape, 1, stream.VERSION)
    codes = {n: entry[1] for n, entry in body.table.items()}
    fixed = {codes[n] for n in codes if n.startswith(stream.FIXED_POINT) and n.endswith("weight")}
    assert len(fixed) > 1  # the context models' layers no longer share one step
    assert np.array_equal(audio.plane_values(body, *target.shape), layered.samples)


def test_a_decoding_is_keyed_by_its_grids_and_every_tensor_but_the_context_models(fitted):
    target, cfg, weights, latents = fitted
    src = latent_code.audio_plane_source(target, cfg, latents, 1e-4)
    coded = latent_code.quantize_networks(weights, 7, 5)
    grids = latent_code.walk(src, coded, 0.5)[1]
    other = latent_code.quantize_networks(weights, 7, 5, {"arm_a.0.weight": -2})
    assert not np.array_equal(other["arm_a.0.weight"].ints, coded["arm_a.0.weight"].ints)
    assert latent_code.synthesis_key(grids, other) == latent_code.synthesis_key(grids, coded)
    coarser = latent_code.quantize_networks(weights, 7, 4)
    assert latent_code.synthesis_key(grids, coarser) != latent_code.synthesis_key(grids, coded)
    moved = [g.copy() for g in grids]
    moved[0][0, 0] += 1
    assert latent_code.synthesis_key(moved, coded) != latent_code.synthesis_key(grids, coded)


def test_an_image_is_compared_on_all_its_rows_and_decodes_to_what_the_encoder_reported(monkeypatch):
    from conftest import real_image
    from nxcodec.codec import EncodeOptions, encode_signal

    image = for_name("image")
    monkeypatch.setattr(latent_code, "SEARCH_ROWS", 16)  # a taller audio plane than this image would use a band
    searched = []
    real_trial = latent_code._trial

    def spy_trial(src, coded, dead_zone, walked=None, measure=True, on=None, scale=1.0, **kw):
        searched.append(((on or src).latents[0].shape, scale))
        return real_trial(src, coded, dead_zone, walked, measure, on, scale, **kw)

    monkeypatch.setattr(latent_code, "_trial", spy_trial)
    array = real_image((80, 64))
    res = encode_signal(image, image.from_array(array), EncodeOptions(quality=5, iters=20, device="cpu"))
    assert res.data[4] == 12
    assert searched and set(searched) == {(array.shape[:2], 1.0)}  # every precision scored on the whole image
    assert res.metrics["psnr"] == pytest.approx(image.metrics(array, stream.decode(res.data)[1])["psnr"])


def test_what_misses_a_rate_target_is_refitted_one_quality_lower_until_quality_1():
    from nxcodec.errors import NxcError
    from nxcodec.fit import presets

    tried = []

    def attempt(todo, preset):
        tried.append((preset.quality, list(todo)))
        return [(i, None) for i in todo if i == 2 or (i == 1 and preset.quality > 3)]  # overshoot unknown

    table = presets.SHAPE_LATENT_PRESETS
    with pytest.raises(NxcError, match="too small for this shape"):
        presets.step_down(table, table[5], 3.0, [0, 1, 2], attempt, "shape")
    assert tried == [(5, [0, 1, 2]), (4, [1, 2]), (3, [1, 2]), (2, [2]), (1, [2])]
    tried.clear()
    presets.step_down(table, table[5], None, [0], attempt, "shape")  # nothing missed: one attempt
    assert tried == [(5, [0])]
    with pytest.raises(NxcError):  # without a rate target nothing is refitted
        presets.step_down(table, table[5], None, [2], attempt, "shape")


def test_a_miss_steps_down_as_far_as_its_overshoot_calls_for():
    from nxcodec.fit import presets

    rates = (0.043, 0.13, 0.31, 0.47, 0.70, 1.01, 1.41, 1.88, 2.25)  # a ladder of typical rates, as the presets'
    table = {q: replace(presets.LATENT_PRESETS[q], rate=r) for q, r in zip(range(1, 10), rates)}
    assert presets.quality_after_miss(table, 7, 4.03) == 3  # 1.41 / 4.03 = 0.35 bpp: quality 3 (0.31)
    assert presets.quality_after_miss(table, 5, 1.1) == 4  # a near miss: one lower
    assert presets.quality_after_miss(table, 5, 1.0001) == 4  # never the same quality again
    assert presets.quality_after_miss(table, 5, 50.0) == 1
    assert presets.quality_after_miss(table, 5, None) == 4
    tried = []

    def attempt(todo, preset):  # item 0 misses 4x at quality 7, item 1 by 10%; both fit wherever they land
        tried.append((preset.quality, list(todo)))
        return [(i, 4.03 if i == 0 else 1.1) for i in todo if preset.quality == 7]

    presets.step_down(table, table[7], 1.0, [0, 1], attempt, "image")
    assert tried == [(7, [0, 1]), (6, [1]), (3, [0])]  # the higher quality first


def test_images_coded_in_worker_processes_code_as_in_this_one():
    """A fitted stack's images are coded in parallel processes (large images, several at once): the same streams as
    one after another, and a coding over its target comes back as the OverTarget the encoder steps down on."""
    from conftest import real_image

    image = for_name("image")
    arrays = [real_image((48, 40)), real_image((48, 40))[::-1].copy()]
    d = image.from_array(arrays[0]).descriptor
    cfg = latent_code.config_for(presets.latent_preset(5), d)
    model = LatentModel(cfg, 2, (d.height, d.width), d.channels, seed=0)
    target = torch.stack([image.targets(image.from_array(a)) for a in arrays])
    with torch.random.fork_rng():
        fit(model, target, 1e-3, LatentSchedule(iters=20, race=()), seed=0)
    jobs = [(d, cfg, {n: t.detach().numpy() for n, t in model.coded_tensors(j).items()},
             [lat[j].detach().numpy().astype(np.float64) for lat in model.latents], arrays[j], 1e-3, bits, False)
            for j, bits in ((0, None), (1, None), (1, 800.0))]

    alone = latent_code.code_in_parallel(jobs, workers=1)
    parallel = latent_code.code_in_parallel(jobs, workers=2)
    for a, b in zip(alone[:2], parallel[:2]):
        assert a.data == b.data and np.array_equal(a.samples, b.samples)
        assert np.array_equal(stream.decode(b.data)[1], b.samples)
    assert isinstance(parallel[2], latent_code.OverTarget) and parallel[2].bits == alone[2].bits > 800


def test_audio_planes_coded_in_worker_processes_code_as_in_this_one(fitted):
    target, cfg, weights, latents = fitted
    jobs = [(target, cfg, weights, latents, 1e-4, None, False, 1.0),
            (target[::-1].copy(), cfg, weights, latents, 3e-3, None, True, 1.0),
            (target, cfg, weights, latents, 1e-4, 400.0, False, 1.0)]  # far under what it needs: over its target
    alone = latent_code.code_in_parallel(jobs, 1, latent_code.code_audio_plane)
    parallel = latent_code.code_in_parallel(jobs, 2, latent_code.code_audio_plane)
    for a, b in zip(alone[:2], parallel[:2]):
        assert a.data == b.data and np.array_equal(a.samples, b.samples)
    assert isinstance(parallel[2], latent_code.OverTarget) and parallel[2].bits == alone[2].bits > 400


@pytest.mark.parametrize("asked, used", [(1, 1), (2, 2)])
def test_the_audio_encoder_codes_a_stack_of_planes_in_as_many_processes_as_asked(monkeypatch, asked, used):
    from nxcodec.codec import EncodeOptions, encode_signals

    seen = []
    real = latent_code.code_in_parallel
    monkeypatch.setattr(latent_audio, "code_in_parallel",
                        lambda jobs, workers, coder: seen.append((len(jobs), workers)) or real(jobs, 1, coder))
    t = np.arange(24000) / 8000
    x = 0.3 * np.sin(2 * np.pi * 330 * t)[:, None] * np.array([[1.0, 0.5]])  # stereo: two planes in one stack
    results = encode_signals(AUDIO, [AUDIO.from_array(x.astype(np.float32), 8000)],
                             EncodeOptions(quality=5, iters=5, device="cpu", format=11, coding_workers=asked))
    assert seen and seen[0][0] == 2 and all(w == used for _, w in seen) and len(results) == 1


def test_only_several_large_images_are_coded_in_parallel():
    assert latent_code.coding_workers(1, 768 * 512) == 1
    assert latent_code.coding_workers(24, 64 * 64) == 1
    assert 1 <= latent_code.coding_workers(24, 768 * 512) <= 24
    assert latent_code.coding_workers(2, 768 * 512) <= 2


@pytest.mark.parametrize("asked, used", [(1, 1), (2, 2), (None, 1)])  # None: one per core, but not for small images
def test_the_encoder_codes_a_stack_in_as_many_processes_as_asked(monkeypatch, asked, used):
    from conftest import real_image
    from nxcodec.codec import EncodeOptions, encode_signals
    from nxcodec.fit import latent_image

    seen = []
    real = latent_image.code_in_parallel
    monkeypatch.setattr(latent_image, "code_in_parallel", lambda jobs, workers: seen.append(workers) or real(jobs, 1))
    image = for_name("image")
    arrays = [real_image((40, 32)), real_image((40, 32))[::-1].copy()]
    results = encode_signals(image, [image.from_array(a) for a in arrays],
                             EncodeOptions(quality=5, iters=5, device="cpu", format=12, coding_workers=asked))
    assert seen == [used] and len(results) == 2


def test_coding_workers_out_of_range_are_refused_before_any_work():
    from nxcodec.codec import EncodeOptions, check_options
    from nxcodec.errors import UsageError

    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(UsageError, match="coding workers"):
            check_options(EncodeOptions(coding_workers=bad))
