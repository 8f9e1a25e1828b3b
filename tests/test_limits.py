"""Bounded decoding: hostile-but-valid streams are refused from their header, in well under a second."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from nxcodec import container, entropy, limits
from nxcodec.codec import decode_stream
from nxcodec.entropy import LaplacePrior
from nxcodec.errors import InputError, StreamError
from nxcodec.limits import Limits, macs_per_sample
from nxcodec.model import ENCODING_FOURIER, ENCODING_SINE, ModelConfig, tensor_shapes
from nxcodec.quant import QuantizedTensor
from nxcodec.signals.audio import AudioDescriptor, AudioModality
from nxcodec.signals.image import ImageDescriptor, ImageModality

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = ROOT / "bitstream" / "conformance"


def constant_section(cfg: ModelConfig, prior: LaplacePrior | None = None) -> container.Section:
    """A section whose every tensor is one value (zero payload bits), or drawn from ``prior`` when given."""
    tensors: OrderedDict[str, QuantizedTensor] = OrderedDict()
    for name, shape in tensor_shapes(cfg).items():
        p = prior or LaplacePrior(0, 0, 0, 0)
        tensors[name] = QuantizedTensor(8, p, np.full(shape, p.mu, dtype=np.int64))
    return container.Section(cfg, tensors)


def image_stream(width: int, height: int, cfg: ModelConfig) -> bytes:
    desc = ImageModality().pack_descriptor(ImageDescriptor(width, height, cfg.out_dim, 8))
    return container.write(container.Stream(1, desc, [constant_section(cfg)]))


def refused(data: bytes, lim: Limits | None = None, **options) -> str:
    t0 = time.perf_counter()
    with pytest.raises(StreamError) as info:
        decode_stream(data, limits=lim, **options)
    assert time.perf_counter() - t0 < 1.0
    return str(info.value)


def big_config(**kw) -> ModelConfig:
    base = dict(in_dim=2, out_dim=3, encoding=ENCODING_FOURIER, n_freq=16, w0_first=30, w0_hidden=30,
                enc_width=1024, enc_depth=2, n_experts=1, expert_width=1024, expert_depth=2, mgr_width=0,
                mgr_enc_depth=0, mgr_depth=0)
    return ModelConfig(**{**base, **kw})


def test_a_137_byte_stream_of_a_16k_by_8k_image_and_a_3m_parameter_network_is_refused():
    cfg = big_config()
    data = image_stream(16384, 8192, cfg)
    assert len(data) == 137 and 3_000_000 < cfg.parameter_count() < 3_300_000
    message = refused(data)
    assert "multiply-adds per sample" in message


def test_a_routed_network_within_the_per_sample_limit_is_refused_by_the_total_work():
    cfg = big_config(enc_width=512, n_experts=6, expert_width=480, mgr_width=16, mgr_depth=1)
    assert macs_per_sample(cfg) < limits.MAX_MACS < cfg.parameter_count()  # one expert of six is evaluated
    assert "multiply-adds, over the limit" in refused(image_stream(16384, 8192, cfg))
    # the same network on a small image decodes (its work is small)
    assert decode_stream(image_stream(64, 32, cfg))[1].shape == (32, 64, 3)


def audio_stream(frames: int, window: int, cfg: ModelConfig, prior: LaplacePrior | None = None) -> bytes:
    d = AudioDescriptor(frames, 44100, cfg.out_dim, 0, window, 0)
    sections = [constant_section(cfg, prior) for _ in d.windows()]
    return container.write(container.Stream(2, AudioModality().pack_descriptor(d), sections))


def audio_config(width: int) -> ModelConfig:
    return ModelConfig(in_dim=1, out_dim=1, encoding=ENCODING_SINE, n_freq=0, w0_first=30, w0_hidden=30,
                       enc_width=width, enc_depth=2, n_experts=1, expert_width=width, expert_depth=2, mgr_width=0,
                       mgr_enc_depth=0, mgr_depth=0)


def test_an_audio_stream_of_2_to_the_27_samples_is_refused_by_a_service_before_anything_is_allocated(monkeypatch):
    frames = 1 << 27
    data = audio_stream(frames, 1 << 20, audio_config(4))  # 128 windows of 2^20 frames, tiny networks
    assert len(data) < 20_000
    # the spec's own caps allow 2^27 samples (a 50-minute clip): the defaults pass the check ...
    mod, desc, configs, layout = container.read_header(data)
    d = AudioModality().unpack_descriptor(desc)
    limits.check(configs, AudioModality().decode_points(d), AudioModality().decoded_samples(d), layout.table_work,
                 Limits())
    # ... and a service that lowers the sample limit refuses the stream at once, evaluating and allocating nothing
    monkeypatch.setattr(AudioModality, "reconstruct", None)
    assert "decodes to 134217728 samples, over the limit of 16777216" in refused(data, Limits(max_samples=1 << 24))
    big = audio_stream(frames, 1 << 20, audio_config(400))  # 128 windows of 320k-parameter networks
    assert "parameters" in refused(big)


def test_many_sections_of_maximal_alphabet_priors_are_refused_before_any_table_is_built(monkeypatch):
    cfg = ModelConfig(in_dim=1, out_dim=1, encoding=ENCODING_SINE, n_freq=0, w0_first=30, w0_hidden=30,
                      enc_width=1, enc_depth=1, n_experts=1, expert_width=1, expert_depth=0, mgr_width=0,
                      mgr_enc_depth=0, mgr_depth=0)
    data = audio_stream(512 * 2, 2, cfg, LaplacePrior(-32767, 32767, 0, 65535))  # 512 windows, 4 tensors each
    monkeypatch.setattr(entropy, "_geometric", None)  # building a table would fail loudly
    assert "frequency tables" in refused(data)
    with pytest.raises(StreamError, match="frequency tables"):  # container.read refuses it on its own too
        container.read(data)


def test_descriptor_and_section_count_are_checked_before_any_payload_is_decoded(monkeypatch):
    stream = (CONFORMANCE / "stereo_k2_3windows_8khz.nxc").read_bytes()
    parsed = container.read(stream)

    def forbidden(*args, **kwargs):
        raise AssertionError("a payload was entropy-decoded")

    monkeypatch.setattr(entropy, "decode", forbidden)
    one_too_many = container.write(container.Stream(2, parsed.descriptor, parsed.sections + parsed.sections[:1]))
    assert "sections where its signal needs" in refused(one_too_many)
    bad = bytearray(parsed.descriptor)
    bad[9] = 9  # channels
    assert "channels" in refused(container.write(container.Stream(2, bytes(bad), parsed.sections)))


def test_the_sample_limit_counts_an_image_s_pixels_in_every_format():
    """--max-pixels is pixels (SPEC.md section 1) whether the stream is a coordinate network or latent grids: an RGB
    image of 48 x 32 decodes under a limit of 1536, not three times that."""
    for name in ("v9/image/rgb_k2_refine_48x32.nxc", "v3/rgb_k2_refine_48x32.nxc"):
        data = (CONFORMANCE / name).read_bytes()
        assert "1536 samples, over" in refused(data, Limits(max_samples=1535))
        assert decode_stream(data, limits=Limits(max_samples=1536))[1].shape == (32, 48, 3)


def test_lowered_limits_refuse_conformance_streams_and_the_defaults_decode_them():
    image = (CONFORMANCE / "rgb_k4_24x16.nxc").read_bytes()
    assert decode_stream(image)[1].shape == (16, 24, 3)
    assert "384 samples" in refused(image, Limits(max_samples=383))
    macs = macs_per_sample(container.read_header(image)[2][0])
    assert "per sample" in refused(image, Limits(max_macs=macs - 1))
    assert "multiply-adds, over" in refused(image, Limits(max_work=macs * 384 - 1))
    table = container.read_header(image)[3].table_work
    assert "frequency tables cost" in refused(image, Limits(max_table_work=table - 1))
    decode_stream(image, limits=Limits(max_samples=384, max_macs=macs, max_work=macs * 384, max_table_work=table))
    shape = (CONFORMANCE / "shape_torus_k2.nxc").read_bytes()
    assert "multiply-adds, over" in refused(shape, Limits(max_work=10**9), resolution=1024)
    with pytest.raises(StreamError, match="faces"):
        decode_stream(shape, limits=Limits(max_faces=100), resolution=32)


def test_limits_can_only_be_positive_integers_and_lowered():
    with pytest.raises(InputError):
        Limits(max_work=0)
    assert Limits().lowered(max_work=10**30).max_work == limits.MAX_WORK
    assert Limits().lowered(max_samples=5, max_work=None).max_samples == 5


def test_table_work_bounds_the_loop_it_stands_for():
    for decay in (0, 1, 30000, 60000, 65000, 65400, 65500, 65534, 65535):
        m, value, steps = 65536 - decay, 1 << 30, 0
        while value * m > 65536:
            value, steps = value * decay >> 16, steps + 1
        assert limits.table_work(65535, 32767, decay) >= 65535 + limits.TABLE_STEP * min(32768, steps)


def test_the_cli_refuses_with_one_line_and_status_2(tmp_path):
    path = tmp_path / "big.nxc"
    path.write_bytes(image_stream(16384, 8192, big_config()))
    small = tmp_path / "small.nxc"
    small.write_bytes((CONFORMANCE / "rgb_k4_24x16.nxc").read_bytes())
    for args in ([str(path)], [str(small), "--max-pixels", "100"], [str(small), "--max-work", "1e3"]):
        proc = subprocess.run([sys.executable, "-m", "nxcodec.cli", "decode", *args, "-o", str(tmp_path / "o.png")],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nxcodec: error:") and "limit" in lines[0], proc.stderr
        assert not (tmp_path / "o.png").exists()
