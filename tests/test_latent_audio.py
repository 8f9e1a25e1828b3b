"""Format version 4 audio: the MDCT, planes on latent grids, segments, rate targets and hostile streams."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import nxcodec
from nxcodec.cli import main
from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.decoder import decode_stream
from nxcodec.errors import InputError, StreamError
from nxcodec.limits import Limits
from nxcodec.fit import latent_audio, presets
from nxcodec.fit.latent import LatentModel
from nxcodec.fit.latent_code import quantize_networks
from nxcodec.latent import audio, context, mdct, stream
from nxcodec.latent.stream import LatentConfig
from nxcodec.latent.synthesis import synthesize
from nxcodec.signals import audio as audio_signals
from nxcodec.signals import for_name
from nxcodec.signals.audio import MetricSums, audio_metrics
from nxcodec.signals.audiofile import FORMATS

from conftest import CONFORMANCE, conformance_cases, run_without_torch, shift_biases_toward_zero, spy_codings

ROOT = Path(__file__).resolve().parents[1]
CASES = conformance_cases("v4", "v6/audio", "v9/audio", "v10/audio", "v11/audio")
AUDIO = for_name("audio")


def tones(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A few decaying partials and a little noise: music-like, deterministic."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for c in range(channels):
        x = sum(0.2 / k * np.sin(2 * np.pi * 220 * k * (1 + 0.01 * c) * t) * np.exp(-t / (0.5 + k)) for k in (1, 2, 3))
        out.append(x + 0.01 * rng.standard_normal(t.size))
    return np.stack(out, axis=1).astype(np.float32)


def test_mdct_is_the_spec_formula_orthonormal_and_inverts_block_by_block():
    hop, n = 16, 100
    x = np.random.default_rng(1).standard_normal(n)
    k, m = np.arange(hop)[None, :], np.arange(2 * hop)[:, None]
    basis = np.sin(np.pi * (m + 0.5) / (2 * hop)) * np.sqrt(2 / hop) * np.cos(np.pi / hop * (m + 0.5 + hop / 2) * (k + 0.5))
    frames = mdct.frame_count(n, hop)
    padded = np.zeros((frames + 1) * hop)
    padded[hop : hop + n] = x
    want = np.stack([padded[f * hop : f * hop + 2 * hop] for f in range(frames)]) @ basis
    got = mdct.forward(x, hop)
    assert np.allclose(got, want, atol=1e-12)
    assert np.allclose(mdct.forward(x, hop, 2, 5), want[2:5], atol=1e-12)
    assert np.isclose(np.sum(got**2), np.sum(x**2))  # orthonormal: errors carry over unchanged
    inverse = mdct.Inverse(hop)
    y = np.concatenate([inverse.push(got[a:b]) for a, b in ((0, 1), (1, 4), (4, frames))])
    assert np.allclose(y[:n], x, atol=1e-12)


def random_planes(seed: int, d: audio.AudioLatentDescriptor, cfg: LatentConfig) -> tuple[bytes, list[np.ndarray]]:
    """A stream of random networks and latents for every plane, and the coefficients the encoder expects."""
    rng = np.random.default_rng(seed)
    bodies, values = [], []
    for a, b in d.segments():
        for _ in range(d.channels):
            weights = {n: rng.normal(0, 0.5, s).astype(np.float32) for n, s in cfg.tensor_shapes(1).items()}
            weights["arm_a.out.bias"] = weights["arm_b.out.bias"] = np.array([0.0, 10.0], dtype=np.float32)
            coded = quantize_networks(weights, 7, 5)
            latents = [rng.normal(0, 3, s) for s in context.level_sizes((b - a, d.hop), cfg.levels)]
            body, grids = stream.write_body(cfg, 1, coded, latents, audio.VERSION)
            bodies.append(body)
            values.append(synthesize(grids, stream.float_synthesis(coded), 1, np.float64)[0].reshape(b - a, d.hop))
    return audio.write(d, bodies), values


@pytest.mark.parametrize("stereo", [audio.STEREO_NONE, audio.STEREO_MID_SIDE])
def test_the_decoder_rebuilds_every_plane_and_joins_segments_like_the_encoder(stereo):
    d = audio.AudioLatentDescriptor(frames=1500, sample_rate=8000, channels=2, sample_format=4, hop_log2=6,
                                    stereo=stereo, segment=9)
    cfg = LatentConfig(levels=3, arm_width=8, arm_layers=1, n_experts=1, mgr_width=0, syn_width=4, syn_layers=1,
                       refine_width=0, lanes_log2=1)
    data, values = random_planes(3, d, cfg)
    header = audio.read_header(data)
    assert len(header.bodies) == d.segment_count * 2 == 6
    for (rows, cols, body), want in zip(header.planes(), values):
        assert np.allclose(audio.plane_values(body, rows, cols), want, rtol=0, atol=1e-12)
    decoded = decode_stream(data)[1]
    joiner = audio.Joiner(d)  # what the encoder joins its fitted planes with
    expected = np.clip(np.concatenate([joiner.push(values[k : k + 2]) for k in range(0, len(values), 2)]), -1, 1)
    assert decoded.shape == (1500, 2)
    assert np.allclose(decoded, expected, rtol=0, atol=1e-6)


def random_stream(sample_format: int = 0) -> tuple[audio.AudioLatentDescriptor, bytes, list[np.ndarray]]:
    d = audio.AudioLatentDescriptor(frames=1500, sample_rate=8000, channels=2, sample_format=sample_format,
                                    hop_log2=6, stereo=audio.STEREO_MID_SIDE, segment=9)
    cfg = LatentConfig(levels=3, arm_width=8, arm_layers=1, n_experts=1, mgr_width=0, syn_width=4, syn_layers=1,
                       refine_width=0, lanes_log2=1)
    return d, *random_planes(5, d, cfg)


def test_the_cli_decoder_writes_audio_segment_by_segment_never_holding_the_clip(tmp_path, monkeypatch):
    d, data, _ = random_stream()
    (tmp_path / "a.nxc").write_bytes(data)
    whole = audio.decode(data)[1]
    monkeypatch.setattr(audio.DecodedClip, "array", lambda self: pytest.fail("the whole clip was assembled"))
    run = CliRunner().invoke(main, ["decode", str(tmp_path / "a.nxc"), "-o", str(tmp_path / "a.wav")])
    assert run.exit_code == 0, run.output
    got, rate = sf.read(tmp_path / "a.wav", dtype="float32")
    assert rate == 8000 and got.shape == (1500, 2) and d.segment_count == 3
    assert np.array_equal(got, whole)


def test_the_planes_of_a_decoded_stream_hold_views_of_it_not_copies():
    _, data, _ = random_stream()
    bodies = audio.read_header(data).bodies
    assert len(bodies) == 6
    for body in bodies:  # a long clip's decode holds the stream once, not once more in its planes
        assert isinstance(body.payload, memoryview) and body.payload.obj is data
    assert sum(len(b.payload) for b in bodies) < len(data)


def test_an_error_in_a_later_segment_leaves_no_output(tmp_path, monkeypatch):
    _, data, _ = random_stream()
    (tmp_path / "a.nxc").write_bytes(data)
    calls = []
    real = audio.plane_values

    def failing(body, rows, cols):
        calls.append(1)
        if len(calls) > 2:  # the first segment is written, the second fails
            raise StreamError("latent payload is corrupt")
        return real(body, rows, cols)

    monkeypatch.setattr(audio, "plane_values", failing)
    run = CliRunner().invoke(main, ["decode", str(tmp_path / "a.nxc"), "-o", str(tmp_path / "a.wav")])
    assert run.exit_code != 0 and "corrupt" in run.output and "Traceback" not in run.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nxc"]  # no partial or temporary file


def test_metrics_fed_block_by_block_equal_the_whole_clips():
    rng = np.random.default_rng(0)
    for frames in (700, 5000):  # under one segmental-SNR segment (silent: NaN), and several with a partial last one
        x = rng.normal(0, 0.1, (frames, 2))
        x[:1500] *= 1e-6  # a silent start: segments skipped
        y = x + rng.normal(0, 0.01, x.shape)
        sums = MetricSums()
        for a in range(0, frames, 333):
            sums.add(x[a : a + 333], y[a : a + 333])
        got, want = sums.result(), audio_metrics(x, y)
        assert got.keys() == want.keys()
        assert got == pytest.approx(want, rel=1e-12, nan_ok=True)
        assert sums.result() == pytest.approx(got, rel=0, nan_ok=True)  # asking twice changes nothing


def test_fitted_planes_are_measured_in_stream_order_whatever_order_they_come_in():
    d, _, values = random_stream(sample_format=4)
    joiner = audio.Joiner(d)
    joined = np.concatenate([joiner.push(values[k : k + 2]) for k in range(0, len(values), 2)])
    original = np.clip(joined + np.random.default_rng(1).normal(0, 0.01, joined.shape), -1, 1).astype(np.float32)
    join = latent_audio.FloatJoin(d, original)
    for k in (4, 1, 0, 5, 3, 2):  # a clip's last segment can be fitted in an earlier group than the rest
        join.put(k, values[k])
    assert join.next == 6 and not join.waiting
    want = audio_metrics(original, np.clip(joined, -1, 1).astype(np.float32))
    assert join.sums.result() == pytest.approx(want, rel=1e-9)


def test_only_versions_10_and_11_declare_clips_beyond_version_9s_limits():
    hours = audio.AudioLatentDescriptor(frames=3 * 3600 * 44100, sample_rate=44100, channels=2, sample_format=0,
                                        hop_log2=10, stereo=0, segment=512)
    assert audio.unpack(audio.pack(hours), 10) == hours == audio.unpack(audio.pack(hours), 11)
    for version in (4, 6, 9):
        with pytest.raises(StreamError, match="beyond the decoder's limits"):
            audio.unpack(audio.pack(hours), version)
    too_long = replace(hours, frames=(1 << 32) - 1, channels=4)  # over 2^33 samples
    for version in (10, 11):
        with pytest.raises(StreamError, match="beyond the decoder's limits"):
            audio.unpack(audio.pack(too_long), version)


def test_a_clip_beyond_version_9s_limits_is_encoded_as_version_11_and_decodes(tmp_path, monkeypatch):
    from nxcodec.signals import audiofile

    monkeypatch.setattr(audiofile, "MAX_SAMPLES", 10_000)  # version 9's cap, scaled down to a 1.5 s clip
    src = tmp_path / "clip.wav"
    sf.write(src, tones(1.5, 8000), 8000, subtype="PCM_16")
    run = CliRunner().invoke(main, ["encode", str(src), "--iters", "20", "--device", "cpu"])
    assert run.exit_code == 0, run.output
    data = (tmp_path / "clip.wav.nxc").read_bytes()
    assert data[4] == 11
    dec = CliRunner().invoke(main, ["decode", str(tmp_path / "clip.wav.nxc")])
    assert dec.exit_code == 0, dec.output
    out, rate = sf.read(tmp_path / "clip.decoded.wav", dtype="float32")
    assert rate == 8000 and np.array_equal(out[:, None] if out.ndim == 1 else out, audio.decode(data)[1])


def test_samples_held_in_memory_do_not_limit_a_decode_written_as_it_goes(tmp_path):
    data = (CONFORMANCE / "v10" / "audio" / "stereo_ms_3segments_8khz.nxc").read_bytes()
    small = Limits(max_samples=1000)
    with pytest.raises(StreamError, match="over this decoder's limit"):
        decode_stream(data, limits=small)
    decoded, clip = decode_stream(data, limits=small, streamed=True)
    assert np.array_equal(clip.array(), decode_stream(data)[1])
    with pytest.raises(StreamError, match="multiply-adds"):
        decode_stream(data, limits=Limits(max_work=1000), streamed=True)


def test_decode_file_writes_a_clip_beyond_what_decode_may_hold_and_loses_nothing(tmp_path):
    src = CONFORMANCE / "v10" / "audio" / "stereo_ms_3segments_8khz.nxc"
    small = nxcodec.Limits(max_samples=1000)
    with pytest.raises(StreamError, match="over this decoder's limit"):
        nxcodec.decode(src.read_bytes(), limits=small)
    out = tmp_path / "clip.wav"
    assert nxcodec.decode_file(src, out, limits=small) == out
    samples, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 8000 and np.array_equal(samples, nxcodec.decode(src.read_bytes()))
    with pytest.raises(nxcodec.OutputError, match="already exists"):
        nxcodec.decode_file(src, out)
    with pytest.raises(nxcodec.OutputError, match="written as .wav"):
        nxcodec.decode_file(src, tmp_path / "clip.png")
    with pytest.raises(nxcodec.InputError, match="no such file"):
        nxcodec.decode_file(tmp_path / "missing.nxc", tmp_path / "other.wav")
    with pytest.raises(StreamError, match="multiply-adds"):
        nxcodec.decode_file(src, tmp_path / "other.wav", limits=nxcodec.Limits(max_work=1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav"]


def test_a_long_file_is_encoded_from_slices_no_longer_than_a_segment(tmp_path, monkeypatch):
    monkeypatch.setattr(latent_audio, "SEGMENT_COEFFICIENTS", 1 << 12)  # 16 frames of 256: 0.5 s segments
    path = tmp_path / "long.wav"
    sf.write(path, tones(3.0, 8000, seed=4), 8000, subtype="PCM_16")
    eager = encode_signal(AUDIO, AUDIO.read(path), EncodeOptions(iters=20, device="cpu", seed=0))
    monkeypatch.setattr(audio_signals, "LAZY_SAMPLES", 1000)
    lazy = AUDIO.read(path)
    assert isinstance(lazy.data, audio_signals.ClipFile)
    reads = []
    real = audio_signals.ClipFile.__getitem__

    def spy(self, key):
        out = real(self, key)
        reads.append(len(out))
        return out

    monkeypatch.setattr(audio_signals.ClipFile, "__getitem__", spy)
    monkeypatch.setattr(audio_signals.ClipFile, "__array__", lambda *a, **k: pytest.fail("the whole clip was read"))
    got = encode_signal(AUDIO, lazy, EncodeOptions(iters=20, device="cpu", seed=0))
    assert got.data == eager.data and got.metrics == eager.metrics and got.float_metrics == eager.float_metrics
    assert reads and max(reads) <= 17 * 256 < 24000  # a segment's frames and the half frame before them


def test_a_clip_file_checks_what_it_reads(tmp_path):
    path = tmp_path / "a.wav"
    x = np.random.default_rng(0).normal(0, 0.3, (5000, 2))
    sf.write(path, x, 8000, subtype="FLOAT")
    clip = audio_signals.ClipFile(path, 5000, 2)
    whole = sf.read(path, dtype="float32", always_2d=True)[0]
    assert np.array_equal(clip[100:300], np.clip(whole[100:300], -1, 1)) and clip[4990:6000].shape == (10, 2)
    assert np.array_equal(np.asarray(clip), np.clip(whole, -1, 1)) and np.array_equal(clip[:, 1], np.clip(whole[:, 1], -1, 1))
    x[2000, 0] = np.nan
    sf.write(path, x, 8000, subtype="FLOAT")
    with pytest.raises(InputError, match="NaN"):
        clip[1000:3000]
    sf.write(path, x[:4000], 8000, subtype="FLOAT")
    with pytest.raises(InputError, match="changed"):
        clip[3000:5000]


def test_format_2_refuses_a_clip_longer_than_it_holds(tmp_path):
    long = audio_signals.AudioModality()._signal(audio_signals.ClipFile(tmp_path / "none.wav", (1 << 27) + 1, 1), 8000, 0)
    assert AUDIO.default_format(long.descriptor) == 11
    with pytest.raises(InputError, match="longer than format 2 holds"):
        encode_signal(AUDIO, long, EncodeOptions(iters=1, device="cpu", format=2))


def test_descriptor_layout_segments_and_stereo_coding():
    clip = AUDIO.from_array(tones(3.0, 44100, 2), 44100)
    d = latent_audio.descriptor_for(clip.descriptor, clip.data)
    assert (d.hop, d.stereo) == (1024, audio.STEREO_MID_SIDE)  # two near copies: the side is tiny
    assert list(d.segments()) == [(0, mdct.frame_count(clip.descriptor.frames, 1024))]
    apart = np.stack([clip.data[:, 0], np.random.default_rng(0).normal(0, 0.1, len(clip.data))], axis=1)
    assert latent_audio.stereo_for(apart) == audio.STEREO_NONE  # unrelated channels: mixing them only costs
    d = latent_audio.descriptor_for(clip.descriptor, clip.data, segment_coefficients=1 << 15)  # 32 frames at most
    sizes = [b - a for a, b in d.segments()]
    assert max(sizes) <= 32 and max(sizes) - min(sizes) <= len(sizes) and sum(sizes) == 131
    assert latent_audio.hop_log2_for(8000) == 8 and latent_audio.hop_log2_for(16000) == 9


def test_encode_decode_round_trip_beats_silence_and_meets_a_rate(tmp_path):
    signal = AUDIO.from_array(tones(1.0, 8000), 8000)
    res = encode_signal(AUDIO, signal, EncodeOptions(iters=150, device="cpu", seed=1))
    assert res.data[4] == 11 and res.data[5] == 2
    decoded = decode_stream(res.data)[1]
    silence = AUDIO.metrics(signal.data, np.zeros_like(signal.data))["psnr"]
    assert AUDIO.metrics(signal.data, decoded)["psnr"] == pytest.approx(res.metrics["psnr"], abs=1e-6)
    assert res.metrics["psnr"] > silence + 6
    target = 16.0
    small = encode_signal(AUDIO, signal, EncodeOptions(iters=100, device="cpu", seed=1, rate=target))
    assert 8 * len(small.data) * 8000 / 8000 / 1000 <= target


def test_segment_seams_do_not_click(monkeypatch):
    monkeypatch.setattr(latent_audio, "SEGMENT_COEFFICIENTS", 1 << 12)  # 16 frames of 256: 0.5 s segments
    x = tones(2.0, 8000, seed=2)
    signal = AUDIO.from_array(x, 8000)
    res = encode_signal(AUDIO, signal, EncodeOptions(iters=120, device="cpu", seed=0))
    d = audio.read_header(res.data).descriptor
    assert d.segment_count >= 4
    err = (decode_stream(res.data)[1][:, 0] - x[:, 0]) ** 2
    seams = [a * d.hop - d.hop for a, _ in list(d.segments())[1:]]  # the samples where two segments' frames overlap
    near = np.concatenate([err[s - d.hop : s + d.hop] for s in seams])
    assert near.mean() < 3 * err.mean()


def test_cli_encodes_audio_as_version_9_and_info_describes_it(tmp_path):
    src = tmp_path / "clip.wav"
    sf.write(src, tones(1.0, 8000, 2), 8000, subtype="PCM_16")
    run = CliRunner().invoke(main, ["encode", str(src), "--iters", "30", "--device", "cpu"])
    assert run.exit_code == 0, run.output
    stream_path = tmp_path / "clip.wav.nxc"
    info = CliRunner().invoke(main, ["info", str(stream_path)])
    assert "nxc version 11" in info.output and "mid/side" in info.output and "kbps" in info.output
    dec = CliRunner().invoke(main, ["decode", str(stream_path)])
    assert dec.exit_code == 0, dec.output
    out, rate = sf.read(tmp_path / "clip.decoded.wav", dtype="int16")
    assert rate == 8000 and out.shape == (8000, 2)


def test_clips_under_a_second_default_to_format_2():
    assert AUDIO.default_format(AUDIO.from_array(tones(0.99, 8000), 8000).descriptor) == 2
    assert AUDIO.default_format(AUDIO.from_array(tones(1.0, 8000), 8000).descriptor) == 11


@pytest.mark.parametrize("version", [9, 6])
def test_the_audio_escape_case_codes_escapes_with_a_high_part(escapes_read, version):
    """v9/audio/mono_escapes_2segments_8khz is there for SPEC.md 12's high parts (escapes of 2**13 or more), in
    two segments; v6/audio's (make_conformance.legacy_escape_cases) for the same in version 6's tables."""
    data = (CONFORMANCE / f"v{version}" / "audio" / "mono_escapes_2segments_8khz.nxc").read_bytes()
    header = audio.read_header(data)
    assert data[4] == version
    for rows, cols, body in header.planes():
        stream.decode_body(body, (rows, cols))
    assert len(header.bodies) == 2 and sum(e >= 1 << 13 for e in escapes_read) >= 2


def test_the_audio_routing_case_has_ties_and_biases_shifted_by_floor(monkeypatch):
    """v11/audio/mono_k4_ties_floor_8khz (make_conformance.audio_routing_case): every sample's largest manager
    outputs tie, and go to the lower of the two experts (SPEC.md 9.4); its context models' biases are finer than
    their weights, and shifting the negative ones toward zero instead of by floor decodes other integers."""
    from nxcodec.latent.synthesis import expert_choice

    case = next(c for c in CASES if c["stream"].endswith("/mono_k4_ties_floor_8khz.nxc"))
    header = audio.read_header((CONFORMANCE / case["stream"]).read_bytes())
    for rows, cols, body in header.planes():
        tensors, grids = stream.decode_body(body, (rows, cols))
        r, c = np.divmod(np.arange(rows * cols), cols)
        logits = context.fixed_mlp(context.manager_inputs(grids, r, c), stream.fixed_layers(tensors, "manager"))
        assert ((logits == logits.max(axis=1, keepdims=True)).sum(axis=1) >= 2).all()  # every choice a tie
        assert set(expert_choice(grids, stream.float_synthesis(tensors)).tolist()) == {0, 2}
        nets = stream.context_models(body.config, tensors)
        assert all(context.FRAC_BITS + layer.w_shift < layer.b_shift for net in nets for layer in net)

    shift_biases_toward_zero(monkeypatch)
    try:
        digests = [audio.plane_digest(body, rows, cols) for rows, cols, body in header.planes()]
    except StreamError:
        digests = None
    assert digests != case["plane_integers_sha256"]


@pytest.mark.parametrize("case", CASES, ids=[c["stream"] for c in CASES])
def test_conformance_streams_decode_to_their_integers_and_samples(case):
    data = (CONFORMANCE / case["stream"]).read_bytes()
    header = audio.read_header(data)
    digests = [audio.plane_digest(body, rows, cols) for rows, cols, body in header.planes()]
    assert digests == case["plane_integers_sha256"]
    got = decode_stream(data)[1]
    want, _ = sf.read(CONFORMANCE / case["expected"], dtype="float64", always_2d=True)
    bits = dict(FORMATS.values())[sf.info(CONFORMANCE / case["expected"]).subtype]
    if bits:
        diff = np.abs(got.astype(np.float64) - want) * 2.0 ** (bits - 1)  # in code values of the file's format
    else:  # float32 and float64 files hold binary32 values (SPEC.md 2a): in units of their last place
        diff = np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.005


def test_v4_decodes_without_torch():
    run = run_without_torch("from nxcodec.decoder import decode_stream\n"
                            f"print(decode_stream(open({str(CONFORMANCE / CASES[0]['stream'])!r}, 'rb').read())[1].shape)\n")
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("version,too_long", [(9, {"frames": 1 << 27, "channels": 2}),
                                              (10, {"frames": (1 << 32) - 1, "channels": 4}),
                                              (11, {"frames": (1 << 32) - 1, "channels": 4})])
def test_corrupt_truncated_and_hostile_streams_are_refused(version, too_long):
    data = (CONFORMANCE / f"v{version}" / "audio" / "stereo_ms_3segments_8khz.nxc").read_bytes()
    for bad in (data[:-1], data[:40], data[:-5] + bytes(5)):
        with pytest.raises(StreamError):
            decode_stream(bad)
    at, size = stream.PREFIX.size, len(audio.pack(audio.read_header(data).descriptor))

    def patched(**fields) -> bytes:
        d = audio.unpack(data[at : at + size], version)
        new = audio.pack(audio.AudioLatentDescriptor(**{**d.__dict__, **fields}))
        return stream.with_crc(data[:at] + new + data[at + size : -4])

    for fields, message in ((too_long, "beyond the decoder's limits"),
                            ({"hop_log2": 13}, "hop"), ({"stereo": 1, "channels": 1}, "stereo"),
                            ({"hop_log2": 12, "segment": 2048}, "segment"), ({"frames": 1 << 26}, "truncated|fewer bytes")):
        with pytest.raises(StreamError, match=message):
            decode_stream(patched(**fields))


def test_a_stream_declaring_millions_of_segments_is_refused_without_listing_them():
    """A 26-hour clip of one-frame segments (2^26 of them per channel) declared in a stream of a few hundred bytes:
    the segment count is arithmetic, so the refusal costs no memory in proportion to it."""
    import tracemalloc

    data = (CONFORMANCE / "v10" / "audio" / "stereo_ms_3segments_8khz.nxc").read_bytes()
    at, size = stream.PREFIX.size, len(audio.pack(audio.read_header(data).descriptor))
    d = audio.unpack(data[at : at + size], 10)
    hostile = replace(d, frames=(1 << 32) - 1, hop_log2=mdct.MIN_HOP_LOG2, segment=1)
    assert hostile.segment_count == -(-mdct.frame_count(hostile.frames, hostile.hop) // 1) > 1 << 26
    bad = stream.with_crc(data[:at] + audio.pack(hostile) + data[at + size : -4])
    tracemalloc.start()
    try:
        with pytest.raises(StreamError, match="truncated"):
            decode_stream(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("frames", [255, 5000, 5120])
def test_planes_from_slices_of_the_clip_equal_the_whole_clips_transform(frames):
    x = np.random.default_rng(frames).normal(0, 0.1, (frames, 2)).astype(np.float32)
    d = audio.AudioLatentDescriptor(frames, 8000, 2, 4, 8, audio.STEREO_MID_SIDE, 5)
    whole = [mdct.forward(c, d.hop) for c in audio.mix([x[:, 0].astype(float), x[:, 1].astype(float)], d.stereo)]
    planes = latent_audio.planes_of(0, d)
    assert len(planes) == 2 * d.segment_count
    for p in planes:
        a, b = p.frames
        assert np.allclose(latent_audio.coefficients(p, d, x), whole[p.channel][a:b], rtol=0, atol=1e-12)


def test_decoder_limits_refuse_a_v4_stream_before_decoding():
    from nxcodec.limits import Limits

    case = next(c for c in CASES if c["stream"].endswith("stereo_ms_3segments_8khz.nxc"))
    data = (CONFORMANCE / case["stream"]).read_bytes()
    samples, macs, work = audio.work(data)
    assert samples == 2 * case["shape"][0] and macs > 0 and work > samples
    with pytest.raises(StreamError, match="samples"):
        decode_stream(data, limits=Limits(max_samples=samples - 1))
    with pytest.raises(StreamError, match="multiply-adds"):
        decode_stream(data, limits=Limits(max_work=int(work / 2)))
    assert decode_stream(data, limits=Limits(max_samples=samples, max_work=int(work) + 1))[1].shape == tuple(case["shape"])


def spy_rounds(monkeypatch) -> tuple[list, list]:
    """Record every fit's lambdas, and every coding as (lambda, trim, coded bits or None, bits allowed)."""
    fits = []
    real_fit = latent_audio._fit

    def spy_fit(model, target, lams, schedule, seed, device):
        fits.append(list(lams))
        real_fit(model, target, lams, schedule, seed, device)

    monkeypatch.setattr(latent_audio, "_fit", spy_fit)
    return fits, spy_codings(monkeypatch, latent_audio, "code_audio_plane")


def test_a_plane_well_under_its_share_is_fitted_on_at_a_lower_lambda_and_stays_under_the_target(monkeypatch):
    signal = AUDIO.from_array(tones(1.0, 8000), 8000)
    fits, sizes = spy_rounds(monkeypatch)
    target = 128.0  # far above what the lowest lambda the plan gives (1e-6) spends on this clip
    res = encode_signal(AUDIO, signal, EncodeOptions(iters=30, device="cpu", seed=1, rate=target))
    assert 8 * len(res.data) * 8000 / 8000 / 1000 <= target
    bits, allowed = sizes[0][2:]
    assert bits < latent_audio.RATE_UNDER * allowed
    assert len(fits) >= 2 and fits[1][0] == pytest.approx(latent_audio.lambda_for(fits[0][0], bits, allowed))
    assert fits[1][0] < fits[0][0]
    first = fits[0][0]
    fits.clear()
    monkeypatch.setattr(latent_audio, "RATE_UNDER", 0.0)  # without the lower-lambda rounds: the first fit alone
    alone = encode_signal(AUDIO, signal, EncodeOptions(iters=30, device="cpu", seed=1, rate=target))
    # a later round's coding replaces the first only when it fits and is closer (its size may go either way)
    assert fits == [[first]] and res.metrics["psnr"] >= alone.metrics["psnr"]


def test_lambda_follows_the_rate_by_the_measured_elasticity():
    aim = latent_audio.RATE_AIM
    assert latent_audio.lambda_for(1e-3, aim * 1000, 1000) == pytest.approx(1e-3)  # on its aim: unchanged
    doubled = 2 ** (1 / latent_audio.RATE_ELASTICITY)
    assert latent_audio.lambda_for(1e-3, 2 * aim * 1000, 1000) == pytest.approx(1e-3 * doubled)
    assert latent_audio.lambda_for(1e-3, 1e6, 1000) == pytest.approx(1.6e-2)  # at most 16x either way
    assert latent_audio.lambda_for(1e-3, 1, 1000) == pytest.approx(1e-3 / 16)


def test_a_clip_over_its_target_at_the_first_fit_is_fitted_again_at_the_lambda_its_overshoot_calls_for(monkeypatch):
    noise = 0.05 * np.random.default_rng(0).standard_normal((8000, 1)).astype(np.float32)
    signal = AUDIO.from_array(tones(1.0, 8000) + noise, 8000)  # over 14 kbps at quality 2's lambda (30 its)
    fits, sizes = spy_rounds(monkeypatch)
    monkeypatch.setattr(latent_audio, "RATE_UNDER", 0.0)  # no round for coming in well under (tested above)
    table = presets.AUDIO_LATENT_PRESETS
    target = 14.0
    plan = latent_audio._rate_plan  # the plan's shares, at quality 2's lambda, which this clip overshoots
    monkeypatch.setattr(latent_audio, "_rate_plan", lambda *a: [(table[2].lam, bits) for _, bits in plan(*a)])
    misses = []
    attempt = latent_audio._encode_clips
    monkeypatch.setattr(latent_audio, "_encode_clips", lambda *a: misses.append(attempt(*a)) or misses[-1])
    res = encode_signal(AUDIO, signal, EncodeOptions(iters=30, device="cpu", seed=1, rate=target))
    assert 8 * len(res.data) / 1000 <= target
    (clip, over), = misses[0]
    step = (over / latent_audio.RATE_FIRST) ** (1 / latent_audio.RATE_ELASTICITY)
    assert over > 1 and fits[0] == [table[2].lam] and fits[1] == [pytest.approx(table[2].lam * step)]
    assert sizes[0][2] is None and not sizes[0][1]  # the first coding over its share: not trimmed
    assert sizes[-1][2] <= sizes[-1][3]


def test_the_rate_plan_gives_one_lambda_per_clip_and_shares_the_target_as_the_model_spends_it():
    rng = np.random.default_rng(0)
    mid = rng.normal(0, 0.3, 8000)
    x = np.stack([mid + rng.normal(0, 0.01, 8000), mid - rng.normal(0, 0.01, 8000)], axis=1).astype(np.float32)
    signal = AUDIO.from_array(x, 8000)
    d = latent_audio.descriptor_for(signal.descriptor, signal.data, segment_coefficients=1 << 12)
    assert d.stereo == audio.STEREO_MID_SIDE
    planes = latent_audio.planes_of(0, d)
    assert len(planes) > 2 and {p.channel for p in planes} == {0, 1}  # segments of mid and side
    configs = {p.size: latent_audio.config_for(presets.AUDIO_LATENT_PRESETS[5], *p.size) for p in planes}
    plan = latent_audio._rate_plan(AUDIO, [signal], [d], planes, configs, 256.0)
    header = 8 * len(audio.write(d, [b""] * len(planes)))
    assert len({lam for lam, _ in plan}) == 1
    assert sum(bits for _, bits in plan) == pytest.approx(AUDIO.bits_allowed(signal.descriptor, 256.0) - header)
    mids, sides = [bits for p, (_, bits) in zip(planes, plan) if p.channel == 0], [bits for p, (_, bits) in zip(planes, plan) if p.channel == 1]
    assert min(mids) > 1.5 * max(sides)  # not by size: the quiet side channel gets less


def test_the_preset_for_a_rate_target_leaves_the_margin():
    table = presets.AUDIO_LATENT_PRESETS
    for margin in (1.0, latent_audio.RATE_MARGIN):
        for q in range(2, 10):
            just_enough = table[q].rate / margin * 1.001
            assert presets.choose_latent_preset(table, 5, just_enough, margin).quality == q
            assert presets.choose_latent_preset(table, 5, just_enough / 1.002, margin).quality == q - 1
    assert presets.choose_latent_preset(table, 5, 1.0, 0.8).quality == 1  # the lowest when none is within


def test_a_plane_starts_as_a_transform_coder_of_its_coefficients():
    """Before any fit, the quantized latents synthesise every coefficient to within half the step of its lambda."""
    rng = np.random.default_rng(3)
    coefs = [rng.laplace(0, 0.05, (24, 64)) * np.linspace(2, 0.1, 64), rng.normal(0, 0.2, (24, 64))]
    lams = [1e-4, 1e-6]
    cfg = latent_audio.config_for(presets.AUDIO_LATENT_PRESETS[5], 24, 64)
    model = LatentModel(cfg, 2, (24, 64), 1, seed=0)
    latent_audio.start_from_coefficients(model, coefs, lams)
    with torch.no_grad():
        grids, _ = model.quantized_latents("ste")
        out = model.synthesize(grids)[2].numpy()
    for j, (c, lam) in enumerate(zip(coefs, lams)):
        step = latent_audio.step_for(lam)
        assert step == pytest.approx(np.sqrt(24 * lam / np.log(2)))
        error = np.abs(out[j].reshape(c.shape) - c)
        assert error.max() <= 0.5 * step * 1.001
        assert error.max() > 0.3 * step  # rounded, not passed through exactly
    scale = model.nets["arm_a"][-1][1].detach()[:, 1]
    assert float(scale[1]) > float(scale[0])  # wider at finer steps
    # the networks see the finest latents at about unit rms however fine the step: the plane at 1e-6 has latents
    # of tens, and the coded first layers carry the gain
    seen = model.latents[0].detach() * model.input_gain.view(-1, 1, 1)
    assert float(model.latents[0][1].detach().square().mean().sqrt()) > 20
    assert seen.square().mean(dim=(1, 2)).sqrt().numpy() == pytest.approx([1, 1], rel=0.01)
    w = model.nets["experts"][0][0].detach()
    assert torch.equal(model.coded_tensors(1)["experts.0.weight"], w[1] * model.input_gain[1])


def test_the_audio_first_fit_uses_its_presets_optimizer(monkeypatch):
    from dataclasses import replace

    seen = []
    real_fit = latent_audio._fit

    def spy_fit(model, target, lams, schedule, seed, device):
        seen.append(schedule.optimizer)
        real_fit(model, target, lams, schedule, seed, device)

    monkeypatch.setattr(latent_audio, "_fit", spy_fit)
    signal = AUDIO.from_array(tones(1.0, 8000), 8000)
    encode_signal(AUDIO, signal, EncodeOptions(quality=5, iters=5, device="cpu"))
    assert seen and set(seen) == {presets.AUDIO_LATENT_PRESETS[5].optimizer} == {"adam"}
    table = {q: replace(p, optimizer="soap-synthesis") for q, p in presets.AUDIO_LATENT_PRESETS.items()}
    monkeypatch.setattr(presets, "AUDIO_LATENT_PRESETS", table)
    seen.clear()
    res = encode_signal(AUDIO, signal, EncodeOptions(quality=5, iters=5, device="cpu"))
    assert seen and set(seen) == {"soap-synthesis"} and np.isfinite(res.metrics["psnr"])
