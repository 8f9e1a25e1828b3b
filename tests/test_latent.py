"""Format versions 3 and 6: latent grids, the fixed-point context model, rANS with escapes and the expert synthesis."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nxcodec.codec import EncodeOptions, encode_signal
from nxcodec.errors import NxcError, StreamError
from nxcodec.fit import latent as fit_latent
from nxcodec.fit.latent import LatentModel
from nxcodec.fit.latent_code import quantize_networks
from nxcodec.latent import audio, context, rans, stream, synthesis, tables
from nxcodec.latent.stream import LatentConfig
from nxcodec.signals import for_name
from nxcodec.signals.imagefile import ImageDescriptor

from conftest import CONFORMANCE, conformance_cases, real_image, spy_codings

ROOT = Path(__file__).resolve().parents[1]
CASES = conformance_cases("v3", "v6/image", "v9/image", "v11/image", "v12/image")
IMAGE = for_name("image")


def small_config(**kw) -> LatentConfig:
    base = dict(levels=4, arm_width=8, arm_layers=2, n_experts=2, mgr_width=6, syn_width=8, syn_layers=1,
                refine_width=4, lanes_log2=2)
    return LatentConfig(**{**base, **kw})


def random_stream(seed: int, d: ImageDescriptor, cfg: LatentConfig, spikes: dict | None = None):
    """A stream of random networks and latents: exercises every path of the coder without a fit. ``spikes``
    sets latents, {(level, row, column): value}."""
    rng = np.random.default_rng(seed)
    weights = {n: rng.normal(0, 0.5, s).astype(np.float32) for n, s in cfg.tensor_shapes(d.channels).items()}
    weights["upsample"] = np.array([-0.0234375, 0.2265625, 0.8671875, -0.0703125], dtype=np.float32)
    for k in ("arm_a.out.bias", "arm_b.out.bias"):
        weights[k] = np.array([0.0, 10.0], dtype=np.float32)
    coded = quantize_networks(weights, 7, 5)
    latents = [rng.normal(0, 3, s) for s in context.level_sizes((d.height, d.width), cfg.levels)]
    for (level, *at), value in (spikes or {}).items():
        latents[level][tuple(at)] = value
    return stream.write(d, cfg, coded, latents)


@pytest.mark.parametrize("seed", range(4))
def test_the_decoder_rebuilds_exactly_what_the_encoder_recorded(seed):
    d = ImageDescriptor(23 + seed, 17 + 2 * seed, 1 + seed % 4, 8)
    cfg = small_config(n_experts=1 + seed % 3, mgr_width=0 if seed % 3 == 0 else 5, lanes_log2=seed)
    data, recorded = random_stream(seed, d, cfg)
    decoded = stream.decode_latents(data)
    assert decoded.digest() == recorded.digest()
    for a, b in zip(decoded.grids, recorded.grids):
        assert np.array_equal(a, b)
    image, experts = stream.reconstruct(decoded)
    assert image.shape == (d.height, d.width, d.channels) and experts.shape == (d.height, d.width)


def test_residuals_beyond_their_tables_range_escape_instead_of_being_clamped():
    d = ImageDescriptor(21, 19, 1, 8)
    far = {(0, 3, 4): 5000.4, (0, 5, 5): -777.0, (0, 9, 2): 17.0, (1, 2, 2): 40000.0, (2, 1, 1): -2.0e6}
    data, recorded = random_stream(7, d, small_config(), far)
    assert data[4] == stream.VERSION >= stream.ESCAPE_VERSION
    decoded = stream.decode_latents(data)
    assert decoded.digest() == recorded.digest()
    for (level, *at), value in far.items():
        got = decoded.grids[level][tuple(at)]
        if abs(value) < 30000:  # within the escapes' reach: the nearest value, as if there were no limit
            assert abs(got - value * context.ONE) <= context.ONE // 2
        else:  # beyond it: clamped at the table's edge plus the largest escape, off a mean of at most 1024
            assert np.sign(got) == np.sign(value) and (tables.MAX_ESCAPE - 1024) * context.ONE < abs(got) < 1 << 24


def test_the_escape_conformance_stream_holds_latents_beyond_every_tables_range():
    case = next(c for c in CASES if "escapes" in c["stream"])
    data = (CONFORMANCE / case["stream"]).read_bytes()
    assert data[4] == 6
    grids = stream.decode_latents(data).grids
    assert max(int(np.abs(g).max()) for g in grids) > (tables.COARSE.residual_limit(tables.COARSE.n - 1) + 1024) * context.ONE


@pytest.mark.parametrize("case", [c for c in CASES if c["stream"].startswith("v3/") and "clamped" not in c["stream"]],
                         ids=lambda c: c["stream"])
def test_version_3_bodies_written_again_are_their_conformance_streams_byte_for_byte(case):
    data = (CONFORMANCE / case["stream"]).read_bytes()
    image = stream.decode_latents(data)
    d = image.descriptor
    body, grids = stream.write_body(image.config, d.channels, image.tensors, [g / context.ONE for g in image.grids], 3)
    assert data[len(data) - 4 - len(body) : -4] == body
    assert all(np.array_equal(a, b) for a, b in zip(grids, image.grids))


def test_a_version_3_residual_beyond_its_table_is_clamped_to_the_edge_and_no_escape_follows():
    case = next(c for c in CASES if "clamped" in c["stream"])
    data = (CONFORMANCE / case["stream"]).read_bytes()
    assert data[4] == 3
    image = stream.decode_latents(data)
    scales = stream.latent_tables(3, image.config)
    at_edge = []

    def residuals(level, pos, centre, table):  # the residuals the stream holds, from the grids it decodes to
        r = (image.grids[level][pos] - centre) // context.ONE
        edge = np.abs(r) == scales.residual_limit(table)
        at_edge.extend((level, *(int(axis[edge][k]) for axis in pos)) for k in range(int(edge.sum())))
        return r

    grids = stream.walk_latents(image.config, image.grids[0].shape, stream.context_models(image.config, image.tensors),
                                residuals, scales)
    assert all(np.array_equal(a, b) for a, b in zip(grids, image.grids))
    assert {(0, 3, 4), (0, 20, 30), (0, 28, 36), (1, 5, 6), (2, 3, 2)} <= set(at_edge)  # the latents set far away
    header = stream.read_header(data)
    header.body.escape = True  # read as a version 6 decoder would: the symbols after an edge taken for escapes
    with pytest.raises(StreamError):
        stream.decode_body(header.body, image.grids[0].shape)


@pytest.mark.parametrize("scales", [tables.COARSE, tables.FINE])
@pytest.mark.parametrize("values", [[], [0], [1, 2, 3], [4095, 4096, 8191, 8192, 2**15 - 1], list(range(200))])
def test_escapes_round_trip_through_the_coder_at_their_stated_cost(values, scales):
    e = np.array(values, dtype=np.int64)
    parts = stream.escape_symbols(e, scales.n)
    coder_tables = stream._coder_tables([], scales)
    symbols = np.concatenate([s for s, _ in parts]).astype(np.int64)
    models = np.concatenate([m for _, m in parts]).astype(np.int64)
    decoder = rans.Decoder(rans.encode(symbols, models, coder_tables, 2), coder_tables, 2)
    assert np.array_equal(stream.read_escapes(decoder, e.size, scales.n), e)
    decoder.finish()
    ideal = sum(tables.PREC - np.log2(coder_tables.freq[coder_tables.base[m] + s]) for s, m in zip(symbols, models))
    assert ideal == pytest.approx(float(np.sum(tables.escape_bits(e))))


def test_fixed_point_mlp_is_exact_integer_arithmetic():
    rng = np.random.default_rng(0)
    layers = [context.FixedLayer(rng.integers(-32767, 32768, (21, 16)), rng.integers(-32767, 32768, 16), 15, 0),
              context.FixedLayer(rng.integers(-32767, 32768, (16, 2)), rng.integers(-32767, 32768, 2), 3, 15)]
    x = rng.integers(-(1 << 19), 1 << 19, (500, 21))
    got = context.fixed_mlp(x, layers)
    # the same computation with Python integers (unbounded, exact)
    want = []
    for row in x.tolist():
        h = row
        for i, layer in enumerate(layers):
            shift = context.FRAC_BITS + layer.w_shift - layer.b_shift
            out = []
            for j in range(layer.weight.shape[1]):
                acc = sum(a * int(w) for a, w in zip(h, layer.weight[:, j]))
                b = int(layer.bias[j])
                acc += b << shift if shift >= 0 else b >> -shift
                v = acc >> layer.w_shift
                out.append(min(max(v, 0), context.HIDDEN_MAX) if i < len(layers) - 1 else v)
            h = out
        want.append(h)
    assert np.array_equal(got, np.array(want))


@pytest.mark.parametrize("dims", [2, 3])
def test_context_predictions_in_blocks_match_a_latent_by_latent_reading_of_the_spec(dims, monkeypatch):
    """``predict`` gathers its inputs by flat index, in blocks; the reference reads every neighbour with a
    bounds check, one latent at a time (SPEC.md 9.4, 11.4)."""
    rng = np.random.default_rng(dims)
    shape = (21, 18) if dims == 2 else (9, 8, 7)
    coarser_shape = tuple(-(-n // 2) for n in shape)
    grid = rng.integers(-5000, 5000, shape)
    coarser = rng.integers(-5000, 5000, coarser_shape)
    coarse_offsets, same_offsets = context.OFFSETS[dims]

    def at(g: np.ndarray, p: tuple[int, ...]) -> int:
        return int(g[p]) if all(0 <= i < n for i, n in zip(p, g.shape)) else 0

    monkeypatch.setattr(context, "BLOCK", 7)  # many blocks, the last one partial
    for parity in (0, 1):
        n_in = context.context_sizes(dims)[parity]
        net = [context.FixedLayer(rng.integers(-300, 300, (n_in, 8)), rng.integers(-300, 300, 8), 11, 6),
               context.FixedLayer(rng.integers(-300, 300, (8, 2)), rng.integers(-300, 300, 2), 9, 4)]
        pos = context.pass_positions(shape, parity)
        pos = tuple(p[::2] for p in pos)  # a subset, as a shape's occupancy mask keeps
        for coarse in (coarser, None):
            mu, scale = context.predict(net, grid, coarse, pos, parity, tables.FINE.n)
            rows = []
            for p in zip(*(q.tolist() for q in pos)):
                same = [at(grid, tuple(a + b for a, b in zip(p, o))) for o in same_offsets] if parity else []
                parent = tuple(a // 2 for a in p)
                up = [0 if coarse is None else at(coarse, tuple(a + b for a, b in zip(parent, o)))
                      for o in coarse_offsets]
                rows.append(same + up)
            want_mu, want_scale = context.means_and_scales(context.fixed_mlp(np.array(rows, dtype=np.int64), net),
                                                           tables.FINE.n)
            assert np.array_equal(mu, want_mu) and np.array_equal(scale, want_scale)


def test_ties_route_to_the_lowest_expert():
    assert context.route(np.array([[3, 7, 7], [5, 5, 5], [-1, -2, -1]])).tolist() == [1, 0, 0]


def test_the_written_routing_case_has_ties_fine_biases_and_one_entry_tables_among_lanes():
    """v9/image/rgb_k4_ties_23x17 (make_conformance.routing_case) holds what no fitted case does, so that a decoder
    reading SPEC.md 9.4 to 9.6 otherwise fails on it: pixels whose largest manager outputs tie, routed to both
    experts the ties leave; fixed-point biases finer than 2^-(8 + s) (the floor branch); and a one-entry table
    whose symbols do not fill whole rows of the coder's lanes."""
    image = stream.decode_latents((CONFORMANCE / "v9" / "image" / "rgb_k4_ties_23x17.nxc").read_bytes())
    t, lanes = image.tensors, 1 << image.config.lanes_log2
    assert any(c.lo == c.hi and c.ints.size % lanes for c in t.values())
    floored = [(t[n].ints, t[n].code // 4 - context.FRAC_BITS - t[n[: -len("bias")] + "weight"].code // 4)
               for n in t if n.startswith(stream.FIXED_POINT) and n.endswith(".bias")]
    assert any(shift > 0 and (ints % (1 << shift)).any() and (ints < 0).any() for ints, shift in floored)
    h, w = image.grids[0].shape
    rows, cols = np.divmod(np.arange(h * w), w)
    logits = context.fixed_mlp(context.manager_inputs(image.grids, rows, cols).astype(np.float64),
                               stream.fixed_layers(t, "manager"))
    top = logits == logits.max(axis=1, keepdims=True)
    assert top.sum(axis=1).min() >= 2  # every pixel's choice is a tie
    experts = stream.reconstruct(image)[1].ravel()
    assert np.array_equal(experts, context.route(logits)) and set(experts.tolist()) == {0, 2}


@pytest.mark.parametrize("case", [c for c in CASES if c["folder"] in ("v9/image", "v11/image")
                                  and "escapes" not in c["stream"]], ids=lambda c: c["stream"])
def test_version_9_and_11_conformance_images_code_latents_under_the_finer_tables(case):
    data = (CONFORMANCE / case["stream"]).read_bytes()
    image = stream.decode_latents(data)
    used = []

    def charge(level, pos, mu, scale):
        used.append(scale)
        return (image.grids[level][pos] - mu) // context.ONE  # the decoded residuals: the walk rebuilds the grids

    grids = stream.walk_latents(image.config, image.grids[0].shape, stream.context_models(image.config, image.tensors),
                                charge, stream.scales_of(data[4]))
    assert data[4] == {"v9/image": 9, "v11/image": 11}[case["folder"]]
    assert all(np.array_equal(a, b) for a, b in zip(grids, image.grids))
    assert int(np.concatenate(used).min()) < len(tables.FINE_SCALES)


@pytest.mark.parametrize("scales", [tables.COARSE, tables.FINE])
def test_scale_tables_follow_the_rule_and_sum_to_two_to_the_sixteen(scales):
    for s in range(scales.n):
        f = scales.table(s)
        theta, rho, a = scales.rows[s]
        assert f.size == 2 * a + 1 and f.sum() == 1 << 16 and f.min() >= 1
        assert np.array_equal(f, f[::-1])  # symmetric around residual 0
        assert f[a] == f.max()
        b = 2.0 ** (scales.log2_bmin + s / tables.SCALES_PER_OCTAVE)  # the rule the rows were rounded from
        p0, p1 = 1 - math.exp(-0.5 / b), 0.5 * (math.exp(-0.5 / b) - math.exp(-1.5 / b))
        assert (theta, rho, a) == (round(math.exp(-1 / b) * 65536), round(p1 / p0 * 65536),
                                   min(2047, max(16, math.ceil(24 * b))))


def test_version_9_tables_extend_version_6s_below_and_make_a_certain_zero_nearly_free():
    assert tables.FINE.rows[-tables.COARSE.n :] == tables.COARSE.rows
    assert tables.FINE.log2_bmin == tables.COARSE.log2_bmin - len(tables.FINE_SCALES) / tables.SCALES_PER_OCTAVE
    zero_bits = [tables.PREC - math.log2(sc.table(0)[sc.residual_limit(0)]) for sc in (tables.COARSE, tables.FINE)]
    assert 0.026 < zero_bits[0] < 0.028 and zero_bits[1] < 0.001
    assert stream.scales_of(6) is tables.COARSE and stream.scales_of(9) is tables.FINE


@pytest.mark.parametrize("marker, rows", [("scale-table", tables.SCALES), ("fine-scale-table", tables.FINE_SCALES)])
def test_spec_lists_the_scale_tables_of_the_code(marker, rows):
    text = (ROOT / "bitstream" / "SPEC.md").read_text()
    block = text.split(f"<!-- {marker} -->")[1]
    listed = [tuple(int(v) for v in line.strip("| ").split("|")[1:]) for line in block.splitlines()
              if line.startswith("| ") and line[2].isdigit()]
    assert listed == list(rows)


def test_torch_and_numpy_synthesis_agree():
    torch.manual_seed(0)
    cfg = small_config()
    d = ImageDescriptor(30, 21, 3, 8)
    model = LatentModel(cfg, 1, (d.height, d.width), d.channels)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        model.input_gain.fill_(0.5)  # folded into the coded first layers
    coded = quantize_networks({n: t.detach().numpy() for n, t in model.coded_tensors(0).items()}, 15, 14)
    with torch.no_grad():  # torch's float networks become the dequantized ones
        for n, t in model.coded_tensors(0).items():
            t.copy_(torch.from_numpy(coded[n].values()))  # views of the parameters, but the first layers
        for key, layers in model.nets.items():
            layers[0][0][0].copy_(torch.from_numpy(coded[f"{key}.0.weight"].values()) / 0.5)
    rng = np.random.default_rng(0)
    grids = [rng.integers(-600, 600, s) for s in context.level_sizes((d.height, d.width), cfg.levels)]
    with torch.no_grad():
        _, logits, image_t = model.synthesize([torch.from_numpy(g / context.ONE).float()[None] for g in grids])
    image_n, routed = synthesis.synthesize(grids, stream.float_synthesis(coded), d.channels)
    # the fixed-point manager agrees with torch's float one except near ties; where it agrees on a pixel and its
    # neighbours (the refinement is two 3 x 3 convolutions) the pixels agree to rounding
    same = logits[0].argmax(-1).numpy() == routed
    assert same.mean() > 0.9 and len(set(routed.tolist())) == 2
    near = np.pad(same.reshape(d.height, d.width), 2, constant_values=True)
    same = np.all([near[2 + a : 2 + a + d.height, 2 + b : 2 + b + d.width] for a in range(-2, 3) for b in range(-2, 3)],
                  axis=0).ravel()
    assert np.abs(image_n[same] - image_t[0].numpy()[same]).max() < 1e-4


def test_encode_decode_round_trip_beats_a_floor_and_meets_a_rate():
    array = real_image((80, 64))
    res = encode_signal(IMAGE, IMAGE.from_array(array), EncodeOptions(quality=5, iters=120, device="cpu"))
    assert res.data[4] == stream.VERSION == 12 and stream.read_header(res.data).config.raster_context
    d, decoded = stream.decode(res.data)
    assert decoded.shape == array.shape and decoded.dtype == np.uint8
    assert res.metrics["psnr"] == pytest.approx(IMAGE.metrics(array, decoded)["psnr"])
    assert res.metrics["psnr"] > 22
    # a rate target is met: by the final quantization, else by refitting with a smaller lambda
    target = 0.8 * res.rate
    small = encode_signal(IMAGE, IMAGE.from_array(array), EncodeOptions(rate=target, iters=40, device="cpu"))
    assert 8 * len(small.data) <= target * array.shape[0] * array.shape[1]
    assert small.metrics["psnr"] > 20
    with pytest.raises(NxcError, match="rate target is too small"):
        encode_signal(IMAGE, IMAGE.from_array(array), EncodeOptions(rate=0.05, iters=20, device="cpu",
                                                                     config=res.configs[0]))


def test_images_of_one_size_are_fitted_together_and_decode_to_their_own():
    a, b = real_image((40, 32)), real_image((40, 32))[::-1].copy()
    opts = EncodeOptions(quality=3, iters=80, device="cpu", config=small_config(levels=3), format=12)
    from nxcodec.codec import encode_signals

    res = encode_signals(IMAGE, [IMAGE.from_array(a), IMAGE.from_array(b)], opts)
    for r, array in zip(res, (a, b)):
        assert IMAGE.metrics(array, stream.decode(r.data)[1])["psnr"] == pytest.approx(r.metrics["psnr"])
    assert res[0].data != res[1].data


@pytest.mark.parametrize("case", CASES, ids=[c["stream"] for c in CASES])
def test_conformance_streams_decode_to_their_integers_experts_and_pixels(case):
    data = (CONFORMANCE / case["stream"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == case["stream_sha256"]
    latents = stream.decode_latents(data)
    assert latents.digest() == case["integers_sha256"]
    decoded, experts = stream.reconstruct(latents)
    assert hashlib.sha256(experts.astype("<i8").tobytes()).hexdigest() == case["experts_sha256"]
    expected = np.asarray(Image.open(CONFORMANCE / case["expected"])).reshape(decoded.shape)
    diff = np.abs(decoded.astype(int) - expected.astype(int))
    assert list(decoded.shape) == case["shape"] and diff.max() <= 1 and np.mean(diff > 0) <= 0.005


def test_samples_are_rounded_in_binary64_and_16_bit_images_synthesized_in_it(monkeypatch):
    """SPEC.md 9.7: binary32 arithmetic would round about one 16-bit sample in 800 the other way, and binary32
    synthesis differences between machines move about one in 250; 8-bit images stay in binary32."""
    from nxcodec.signals.imagefile import ImageDescriptor, to_samples

    v = np.array([[0.34012371301651]], dtype=np.float32)  # (v + 1) x 32767.5 is 43912 in binary32 arithmetic
    assert to_samples(ImageDescriptor(1, 1, 1, 16), v).item() == round((float(v[0, 0]) + 1) * 32767.5) == 43913
    dtypes = []
    real = stream.synthesize
    monkeypatch.setattr(stream, "synthesize", lambda *a: dtypes.append(a[3]) or real(*a))
    for name in ("gray16_k3_21x17.nxc", "gray_k1_37x29.nxc"):
        stream.decode((CONFORMANCE / "v9" / "image" / name).read_bytes())
    assert dtypes == [np.float64, np.float32]


DECODE_SCRIPT = """
import sys, hashlib
sys.modules['torch'] = None  # import torch fails, as on a machine without it
from nxcodec.decoder import decode_stream
from nxcodec.latent import stream
for path in sys.argv[1:]:
    data = open(path, 'rb').read()
    latents = stream.decode_latents(data)
    image, experts = stream.reconstruct(latents)
    print(latents.digest(), hashlib.sha256(experts.astype('<i8').tobytes()).hexdigest(), decode_stream(data)[1].shape)
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_v3_decodes_without_torch_and_identically_on_any_thread_count(threads):
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    paths = [str(CONFORMANCE / c["stream"]) for c in CASES]
    out = subprocess.run([sys.executable, "-c", DECODE_SCRIPT, *paths], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    for line, case in zip(out.stdout.splitlines(), CASES):
        digest, experts, _ = line.split(" ", 2)
        assert digest == case["integers_sha256"] and experts == case["experts_sha256"]


def test_decoding_imports_no_fitting_code_and_the_cli_no_torch():
    paths = [str(CONFORMANCE / name) for name in (CASES[0]["stream"], "v11/audio/mono_8khz_1s.nxc",
                                                  "v8/shape/torus_g4_builtin_k2.nxc")]
    script = ("import sys; import nxcodec.decoder, nxcodec.latent.stream; "
              f"[nxcodec.decoder.describe_stream(open(p, 'rb').read()) for p in {paths!r}]; "  # `nxcodec info`
              "print([m for m in sys.modules if m == 'torch' or m.startswith(('nxcodec.fit', 'nxcodec.model.experts'))]); "
              "import nxcodec.cli; print([m for m in sys.modules if m == 'torch'])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.split() == ["[]", "[]"], out.stdout + out.stderr


def _recrc(data: bytearray) -> bytes:
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    return bytes(data)


def test_corrupt_truncated_and_hostile_streams_are_refused():
    data = (CONFORMANCE / CASES[0]["stream"]).read_bytes()
    with pytest.raises(StreamError):
        stream.decode(data[:-9])
    flipped = bytearray(data)
    flipped[40] ^= 0x10
    with pytest.raises(StreamError, match="CRC"):
        stream.decode(bytes(flipped))
    for offset, value in ((18, 200), (19, 65), (21, 17), (26, 9), (27, 1)):  # levels, arm width, experts, lanes, reserved
        bad = bytearray(data)
        bad[offset] = value
        with pytest.raises(StreamError, match="limits"):
            stream.decode(_recrc(bad))
    rng = np.random.default_rng(1)
    for _ in range(200):  # damage inside the payload, CRC recomputed: refused or decoded, never anything else
        bad = bytearray(data)
        pos = int(rng.integers(len(data) - 200, len(data) - 4))
        bad[pos] = int(rng.integers(0, 256))
        try:
            stream.decode(_recrc(bad))
        except StreamError:
            pass


def _rewritten(data: bytes, version: int, entries: list[bytes] | None = None) -> bytes:
    """An image stream with its version byte set and its tensor table written again: compact from version 11 on, or
    with these entries' bytes (in order, the rest as they were)."""
    header = stream.read_header(data)
    head = stream.PREFIX.size + int.from_bytes(data[6:8], "little")  # prefix and descriptor
    out = bytearray(data[:head]) + header.config.pack()
    out[4] = version
    written = [stream.pack_entry(*entry[1:], version >= stream.COMPACT_VERSION) for entry in header.body.table.values()]
    for i, raw in enumerate(entries or []):
        written[i] = raw
    out += b"".join(written) + len(header.body.payload).to_bytes(4, "little") + bytes(header.body.payload)
    return stream.with_crc(bytes(out))


@pytest.mark.parametrize("entry", [(0, -32767, -32767, -32767, 0), (255, 32767, 32767, 32767, 65535), (37, -5, 9, 0, 1),
                                   (40, -4000, 95, -63, 60000), (12, 8000, 12095, 8191, 5), (12, -8192, 0, -8192, 5),
                                   (3, -100, 60, -64, 7), (3, 0, 100, 64, 7),
                                   (12, 8000, 8400, 8192, 5)])
def test_compact_entries_read_back_as_written_in_6_to_10_bytes(entry):
    raw = stream.pack_entry(*entry, compact=True)
    code, lo, hi, mu, decay = entry
    small = -64 <= mu < 64 and mu - lo < 128 and hi - mu < 128
    assert (len(raw) == 6) == small and 6 <= len(raw) <= 10
    assert stream.read_entry(raw + b"\xff", 0, len(raw) + 1, compact=True) == (entry, len(raw))
    assert stream.read_entry(stream.pack_entry(*entry, compact=False), 0, 9, compact=False) == (entry, 9)


@pytest.mark.parametrize("name", [c["stream"] for c in CASES if c["folder"] == "v9/image"])
def test_a_version_9_stream_with_its_table_made_compact_is_a_version_11_stream_of_the_same_integers(name):
    data = (CONFORMANCE / name).read_bytes()
    old = stream.read_header(data)
    compact = _rewritten(data, stream.COMPACT_VERSION)
    new = stream.read_header(compact)
    assert new.body.table == old.body.table
    assert new.sizes["tensor_table"] == len(compact) - len(data) + 9 * len(old.body.table)
    case = next(c for c in CASES if c["stream"] == name)
    assert stream.decode_latents(compact).digest() == case["integers_sha256"]
    as_nine = compact[:4] + b"\x09" + compact[5:-4]
    with pytest.raises(StreamError):  # the version byte says how the table is laid out
        stream.decode_latents(stream.with_crc(as_nine))


def test_version_11_conformance_tables_use_every_varint_length_and_negative_means():
    def varint_bytes(v: int) -> int:
        return 1 if v < 1 << 7 else 2 if v < 1 << 14 else 3

    lengths, negative = set(), 0
    for case in conformance_cases("v11/image", "v11/audio"):
        data = (CONFORMANCE / case["stream"]).read_bytes()
        bodies = [stream.read_header(data).body] if data[5] == 1 else audio.read_header(data).bodies
        for _, _, lo, hi, mu, _ in (e for body in bodies for e in body.table.values()):
            zigzag = 2 * mu if mu >= 0 else -2 * mu - 1
            lengths |= {("z", varint_bytes(zigzag)), ("a", varint_bytes(mu - lo)), ("b", varint_bytes(hi - mu))}
            negative += mu < 0
    assert lengths == {("z", 1), ("z", 2), ("z", 3), ("a", 1), ("a", 2), ("b", 1), ("b", 2)} and negative > 0


@pytest.mark.parametrize("raw, message", [
    (bytes([40, 0, 0, 0x80, 0x00, 0, 0]), "shortest form"),  # mu = 0 written in two bytes
    (bytes([40, 0, 0, 0x80, 0x80, 0x80, 0x01, 0, 0]), "longer than 3 bytes"),
    (bytes([40, 0, 0, 0xFD, 0xFF, 0x03, 2, 0]), "prior"),  # mu = -32767, lo = -32769
    (bytes([40, 0, 0, 0x80, 0x80, 0x04, 0, 0]), "prior"),  # mu = 32768
    (bytes([40, 0, 0, 0, 0xFF, 0x1F, 1]), "prior"),  # lo = -4095, hi = 1: 4097 values
    (bytes([41, 0, 0, 0, 0, 0]), "step code"),  # a fixed-point tensor's step must be a power of two
])
def test_invalid_compact_entries_are_refused_with_a_reason(raw, message):
    data = (CONFORMANCE / "v11" / "image" / "gray_k1_37x29.nxc").read_bytes()
    with pytest.raises(StreamError, match=message):
        stream.read_header(_rewritten(data, stream.COMPACT_VERSION, [raw]))
    valid = bytes([40, 0, 0, 1, 0x80, 0x10, 1])  # mu = -1, lo = -2049, hi = 0: 2050 values, the table parses
    assert stream.read_header(_rewritten(data, stream.COMPACT_VERSION, [valid])).body.table["arm_a.0.weight"][2:] == (
        -2049, 0, -1, 0)


def test_a_compact_table_cut_short_is_truncated_not_misread():
    data = (CONFORMANCE / "v11" / "image" / "gray_k1_37x29.nxc").read_bytes()
    entry = bytes([40, 0, 0, 0x80])  # a varint whose continuation bit points past the end
    cut = data[:28] + entry
    for end in range(28, len(cut) + 1):
        with pytest.raises(StreamError, match="truncated"):
            stream.read_header(stream.with_crc(cut[:end]))


def test_a_config_beyond_the_work_limit_is_refused_before_decoding():
    d = ImageDescriptor(64, 64, 3, 8)
    cfg = LatentConfig(levels=6, arm_width=64, arm_layers=3, n_experts=16, mgr_width=64, syn_width=64, syn_layers=3,
                       refine_width=16, lanes_log2=0)
    with pytest.raises(StreamError, match="work per pixel"):
        cfg.check((d.height, d.width), d.channels)


def test_the_warm_up_race_keeps_each_signals_best_starts_and_charges_its_iterations(monkeypatch):
    model = LatentModel(small_config(levels=2), 2, (8, 8), 3, seed=0)
    # Losses by warm-up call. Round 1 (calls 0-2): signal 0 ranks calls 2, 1, 0 and signal 1 ranks 0, 2, 1, so
    # round 2 goes on from (2, 0) and (1, 2). Round 2 (calls 3-4): signal 0 is best from call 4, signal 1 from 3.
    losses = [[3.0, 1.0], [2.0, 5.0], [1.0, 4.0], [5.0, 1.0], [2.0, 3.0]]
    seen = []

    def warm_up(cand, target, lam, schedule, seed):
        k = len(seen)
        start = [float(next(cand.parameters())[s].detach().flatten()[0]) for s in range(2)]
        seen.append((cand is model, schedule.iters, start))
        assert schedule.ste_frac == 0.0 and not schedule.decay and schedule.race == ()
        assert schedule.temperature == (0.35, 0.35) and schedule.noise == (0.22, 0.22)  # held at the start
        with torch.no_grad():
            for p in cand.parameters():
                p.fill_(float(k))
        return losses[k]

    monkeypatch.setattr(fit_latent, "fit", warm_up)
    schedule = fit_latent.LatentSchedule(iters=100, race=((3, 0.1), (2, 0.2)), temperature=(0.35, 0.08),
                                         noise=(0.22, 0.15))
    left = fit_latent._race(model, torch.zeros(2, 64, 3), 1e-3, schedule, seed=0)
    assert [(own, iters) for own, iters, _ in seen] == [(True, 10), (False, 10), (False, 10), (True, 20), (False, 20)]
    assert [start for _, _, start in seen[3:]] == [[2.0, 0.0], [1.0, 2.0]]  # each signal's two best, by rank
    assert left.iters == 100 - 3 * 10 - 2 * 20 and left.race == () and left.temperature == (0.35, 0.08)
    for p in model.parameters():
        assert torch.all(p[0] == 4.0) and torch.all(p[1] == 3.0)


def test_a_straight_through_phase_at_a_latent_rate_of_zero_holds_the_latents_and_fits_the_networks():
    model = LatentModel(small_config(levels=2), 1, (8, 8), 3, seed=0)
    target = torch.rand(1, 64, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        for lat in model.latents:
            lat.copy_(torch.randn_like(lat) * 2)
    before = [p.detach().clone() for p in model.parameters()]
    schedule = fit_latent.LatentSchedule(iters=20, race=(), ste_frac=1.0, ste_lr=1e-2, ste_latent_lr=0.0)
    fit_latent.fit(model, target, 1e-3, schedule)
    latent_ids = {id(lat) for lat in model.latents}
    for p, start in zip(model.parameters(), before):
        if id(p) in latent_ids:
            assert torch.equal(p, start)
    moved = [p for p, start in zip(model.parameters(), before) if id(p) not in latent_ids and not torch.equal(p, start)]
    assert moved  # the networks went on fitting
    schedule = fit_latent.LatentSchedule(iters=20, race=(), ste_frac=1.0, ste_lr=1e-2)  # by default the latents move
    fit_latent.fit(model, target, 1e-3, schedule)
    assert any(not torch.equal(lat, start) for lat, start in zip(model.latents, before))


def test_images_are_fitted_with_their_presets_schedule(monkeypatch):
    from nxcodec.fit import latent_image, presets

    preset = presets.latent_preset(4)
    schedule = fit_latent.LatentSchedule.for_preset(preset, 300, race=(), latent_lr=0.2)
    assert (schedule.iters, schedule.optimizer, schedule.race, schedule.latent_lr) == (300, preset.optimizer, (), 0.2)
    assert presets.AUDIO_LATENT_PRESETS[5].latent_lr is None  # a preset without its own keeps the schedule's
    assert fit_latent.LatentSchedule.for_preset(presets.AUDIO_LATENT_PRESETS[5], 300).latent_lr == 0.3
    # image latents' straight-through rate: the schedule's up to the presets' length, falling as 1 / length beyond
    assert schedule.ste_latent_lr is None and preset.iters == preset.ste_latent_iters == 2000
    longer = fit_latent.LatentSchedule.for_preset(preset, 5000)
    assert longer.ste_latent_lr == pytest.approx(longer.ste_lr * 2000 / 5000) and longer.ste_lr == 1e-4
    assert fit_latent.LatentSchedule.for_preset(presets.AUDIO_LATENT_PRESETS[5], 5000).ste_latent_lr is None
    seen = []

    class Stop(Exception):
        pass

    def spy(model, target, lam, schedule, seed):
        seen.append((lam, schedule.iters, schedule.optimizer, schedule.latent_lr))
        raise Stop

    monkeypatch.setattr(latent_image, "fit", spy)
    with pytest.raises(Stop):
        encode_signal(IMAGE, IMAGE.from_array(real_image((80, 64))), EncodeOptions(quality=4, iters=30, device="cpu"))
    assert seen == [(preset.lam, 30, preset.optimizer, preset.latent_lr)]


def test_a_small_image_gets_the_narrower_synthesis_its_preset_names(monkeypatch):
    """Quality 5 fits an image of 512x512 pixels or more with its 24-wide synthesis and a smaller one (under
    SMALL_IMAGE_PIXELS, as half-size Kodak) 16 wide; a preset without a small width keeps one width."""
    from nxcodec.fit import latent_image, presets

    widths = []

    class Stop(Exception):
        pass

    def spy(model, target, lam, schedule, seed):
        widths.append(model.cfg.syn_width)
        raise Stop

    monkeypatch.setattr(latent_image, "fit", spy)
    rng = np.random.default_rng(0)
    for h, w in ((256, 384), (512, 512)):
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        with pytest.raises(Stop):
            encode_signal(IMAGE, IMAGE.from_array(array), EncodeOptions(quality=5, iters=30, device="cpu"))
    assert widths == [16, 24]
    assert [presets.latent_preset(q).synthesis_width(98304) for q in (5, 6, 7)] == [16, 24, 24]
    q4 = presets.latent_preset(4)
    assert q4.synthesis_width(1) == q4.synthesis_width(1 << 20) == q4.syn_width


def test_gradients_are_clipped_per_signal():
    a, b = torch.zeros(2, 3, requires_grad=True), torch.zeros(2, 4, requires_grad=True)
    a.grad = torch.tensor([[3.0, 0, 0], [0.01, 0, 0]])
    b.grad = torch.tensor([[4.0, 0, 0, 0], [0, 0.02, 0, 0]])
    fit_latent.clip_per_signal([a, b], 1.0)
    assert torch.allclose(a.grad[0], torch.tensor([0.6, 0, 0])) and torch.allclose(b.grad[0], torch.tensor([0.8, 0, 0, 0]))
    assert torch.equal(a.grad[1], torch.tensor([0.01, 0, 0])) and torch.equal(b.grad[1], torch.tensor([0, 0.02, 0, 0]))


def test_an_image_over_its_target_is_fitted_again_lower_not_trimmed(monkeypatch):
    from nxcodec.fit import latent_code, presets

    array = real_image((80, 64))
    calls = spy_codings(monkeypatch, latent_code, "code_image")
    free = encode_signal(IMAGE, IMAGE.from_array(array), EncodeOptions(quality=5, iters=40, device="cpu"))
    target = 0.7 * free.rate  # quality 5 itself overshoots this
    calls.clear()
    res = encode_signal(IMAGE, IMAGE.from_array(array), EncodeOptions(quality=5, rate=target, iters=40, device="cpu"))
    assert 8 * len(res.data) <= target * array.shape[0] * array.shape[1]
    table = presets.LATENT_PRESETS
    first = presets.latent_preset_for_rate(target)
    assert calls[0][:2] == (first.lam, first.quality == 1) and calls[0][2] is None  # over: not trimmed
    assert calls[-1][2] is not None and calls[-1][0] > first.lam  # then a lower quality (a higher lambda) fits
    assert all(lam in {p.lam for p in table.values()} for lam, *_ in calls)


def test_laplace_bits_are_the_binned_integral_and_keep_the_scales_gradient_far_in_the_tail():
    r = torch.tensor([0.0, 0.3, -0.49, 0.5, 1.0, -3.0, 7.0, 40.0, 700.0])
    log2_scale = torch.tensor([-3.0, 0.0, 1.0, 0.0, 2.5, 0.0, 1.0, 0.0, 0.0], requires_grad=True)
    b = np.exp2(log2_scale.detach().double().numpy())

    def cdf(x):
        return 0.5 + 0.5 * np.sign(x) * -np.expm1(-np.abs(x) / b[near])

    x = r.double().numpy()
    near = np.abs(x) < 10
    expected = -np.log2(cdf(x[near] + 0.5) - cdf(x[near] - 0.5))
    bits = fit_latent.laplace_bits(r, log2_scale)
    np.testing.assert_allclose(bits.detach().numpy()[near], expected, rtol=1e-4)
    # far out, where the probability underflows, the bits still grow with |r| / b ...
    assert float(bits[-1].detach()) == pytest.approx(1 + (699.5 - np.log(-np.expm1(-1.0))) / np.log(2), rel=1e-5)
    bits.sum().backward()
    grad = log2_scale.grad.numpy()
    assert np.isfinite(grad).all()
    assert grad[-1] < grad[-2] < 0  # ... so a wider scale is cheaper, the more the further out


def test_a_small_input_gain_codes_the_fixed_point_first_layers_finer():
    """Weights that take latents times a gain of 1/8 get 3 more fractional bits; other tensors are untouched."""
    from nxcodec.fit.latent_code import finer_for
    assert finer_for(1.0) == {} and finer_for(0.9) == {}
    finer = finer_for(1 / 8)
    assert finer == {"arm_a.0.weight": 3, "arm_b.0.weight": 3, "arm.0.weight": 3, "manager.0.weight": 3}
    rng = np.random.default_rng(0)
    weights = {"arm_a.0.weight": rng.normal(0, 0.05, (9, 8)), "arm_a.0.bias": rng.normal(0, 0.5, 8),
               "experts.0.weight": rng.normal(0, 0.05, (4, 8))}
    plain, fine = quantize_networks(weights, 7, 5), quantize_networks(weights, 7, 5, finer)
    assert fine["arm_a.0.weight"].code == plain["arm_a.0.weight"].code + 4 * 3  # a step of 2**-s has code 4 s
    for name in ("arm_a.0.bias", "experts.0.weight"):
        assert fine[name].code == plain[name].code
    errors = [np.abs(c["arm_a.0.weight"].values() - weights["arm_a.0.weight"]).max() for c in (fine, plain)]
    assert errors[0] <= 2.0**-11 < errors[1]


@pytest.mark.parametrize("unfold", [False, True])  # True: as on a GPU
@pytest.mark.parametrize("size", [(9, 7), (16, 16), (5, 12), (1, 3)])
def test_the_fits_contexts_are_the_specs_neighbours(monkeypatch, size, unfold):
    """The fit's context gathers (slices, or an unfold on a GPU) give each position the grid's value at every SAME offset
    and the coarser grid's at every COARSE offset around ``i // 2``, zero outside (SPEC.md's context positions)."""
    monkeypatch.setattr(fit_latent, "few_kernels", lambda t: unfold)
    h, w = size
    coarse, same = context.OFFSETS[2]
    cfg = LatentConfig(levels=2, arm_width=8, arm_layers=2, n_experts=1, mgr_width=0, syn_width=8, syn_layers=1,
                       refine_width=0, lanes_log2=0)
    model = LatentModel(cfg, 2, size, 3)
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn(2, h, w, dtype=torch.float64, generator=gen)
    coarser = torch.randn(2, (h + 1) // 2, (w + 1) // 2, dtype=torch.float64, generator=gen)
    want_same = torch.zeros(2, h, w, len(same), dtype=torch.float64)
    want_coarse = torch.zeros(2, h, w, len(coarse), dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for k, (dy, dx) in enumerate(same):
                if 0 <= i + dy < h and 0 <= j + dx < w:
                    want_same[:, i, j, k] = grid[:, i + dy, j + dx]
            for k, (ay, ax) in enumerate(coarse):
                y, x = i // 2 + ay, j // 2 + ax
                if 0 <= y < coarser.shape[1] and 0 <= x < coarser.shape[2]:
                    want_coarse[:, i, j, k] = coarser[:, y, x]
    assert torch.equal(model._same_context(grid), want_same)
    assert torch.equal(model._coarse_context(coarser, size), want_coarse)


@pytest.mark.parametrize("unfold", [False, True])  # True: as on a GPU
@pytest.mark.parametrize("dim, size", [(2, 13), (3, 14), (2, 2)])
def test_the_fits_upsampling_is_the_decoders(monkeypatch, dim, size, unfold):
    monkeypatch.setattr(fit_latent, "few_kernels", lambda t: unfold)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64, generator=gen)
    taps = torch.randn(2, 4, dtype=torch.float64, generator=gen)
    got = fit_latent.upsample2(x, taps, dim, size)
    for m in range(2):
        want = synthesis.upsample2(x[m].numpy(), taps[m].numpy(), dim - 1, size)
        np.testing.assert_allclose(got[m].numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=[c["stream"] for c in CASES])
def test_the_container_reads_every_latent_image_version_as_one_config(case):
    from nxcodec import container

    data = (CONFORMANCE / case["stream"]).read_bytes()
    modality, _, configs, layout = container.read_header(data)
    assert modality == 1 and configs == [stream.read_header(data).config] and layout.total == len(data)
