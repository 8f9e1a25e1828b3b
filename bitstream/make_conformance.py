"""Regenerate the conformance streams of bitstream/conformance/ (run after any format change).

Each case is a tiny signal fitted briefly with a fixed seed and a network chosen to
exercise one branch of the format (manager encoder, single expert, raw coordinates,
grayscale, alpha, odd sizes), a short stereo tone in three windows (modality 2), or the
bundled sample mesh as a shape (modality 3). The manifest records, per case, the stream,
the image, WAV or mesh (PLY, decoded at ``SHAPE_RESOLUTION``) it must decode to, and a
SHA-256 of the decoded integer weights, which must match exactly.

    python bitstream/make_conformance.py            # every version 2 case
    python bitstream/make_conformance.py NAME ...   # only these (e.g. a new case)
    python bitstream/make_conformance.py v12        # the version 12 image streams, into conformance/v12/image/
    python bitstream/make_conformance.py v11        # the version 11 audio streams, into conformance/v11/audio/
    python bitstream/make_conformance.py v8         # the version 8 shape streams, into conformance/v8/shape/
    python bitstream/make_conformance.py v12-image NAME ...  # only these version 12 image cases (e.g. a new one)
    python bitstream/make_conformance.py v11-audio NAME ...  # only these version 11 audio cases
    python bitstream/make_conformance.py v10        # the version 9 audio streams as version 10, into conformance/v10/
    python bitstream/make_conformance.py outputs    # only the expected outputs of the v1/v2 streams, re-decoded
    python bitstream/make_conformance.py image-outputs  # the latent image streams' outputs that now decode otherwise
    python bitstream/make_conformance.py invalid    # the streams a decoder must refuse, into conformance/invalid/
    python bitstream/make_conformance.py legacy-escapes  # written v6 audio, v6 and v7 shape streams with escapes,
                                                         # and a v3 image whose residuals are clamped

Version 6 has one folder per modality (``v6/image``, ``v6/audio``, ``v6/shape``), versions 7
and 8 one for shapes (``v7/shape``, ``v8/shape``), versions 9 and 11 one for images and one for audio
(``v9/image``, ``v9/audio``, ``v11/image``, ``v11/audio``), version 10 one for audio (``v10/audio``), version 12
one for images (``v12/image``); ``v6/``, ``v7/shape``, ``v9/`` and ``v11/image`` were written by earlier writers
(``v9/`` by this script's ``v9`` command of its time, the cases that ``v11`` then wrote; ``v11/image`` by its
``v11`` command, the cases that ``v12`` now writes with the raster context, SPEC.md 18). An image
case records, instead of the weights' digest, the SHA-256 of every decoded integer
(tensors, then latent grids finest first) and of the expert map; an audio case records
that digest for each of its planes, in stream order; a shape case records the digest of
its integers (with, in versions 7 and 8, the occupancy map), of the experts chosen at fixed points, and the field's
values there. The
version 3, 4, 5 and 6 streams (``v3/`` to ``v6/``, the same records) were written by
earlier writers and are kept as they are: this script no longer fits those versions; ``legacy-escapes`` only
writes three streams of versions 6 and 7 from random networks (escapes their fitted cases lack) and one version 3
image from a fitted one's networks (residuals clamped to their tables' edges, which its fitted cases lack).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from nxcodec import container
from nxcodec.codec import EncodeOptions, decode_stream, encode_signal
from nxcodec.latent.stream import FLAG_BUILTIN_CONTEXT, FLAG_RASTER_CONTEXT, LatentConfig
from nxcodec.model import ENCODING_FOURIER, ENCODING_SINE, ModelConfig
from nxcodec.signals import Signal, for_id, for_name
from nxcodec.signals.audio import AudioDescriptor

HERE = Path(__file__).parent / "conformance"
SAMPLE = Path(__file__).parents[1] / "nxcodec" / "samples" / "hopper.png"
MESH = Path(__file__).parents[1] / "nxcodec" / "samples" / "bumpy_torus.ply"
SHAPE_RESOLUTION = 32
SHAPE_CASE = "shape_torus_k2"


def weights_digest(data: bytes) -> str:
    """SHA-256 over every tensor's integers (int64, little-endian, sections and tensors in stream order)."""
    h = hashlib.sha256()
    for section in container.read(data).sections:
        for qt in section.tensors.values():
            h.update(qt.ints.astype("<i8").tobytes())
    return h.hexdigest()


def cfg(**kw) -> ModelConfig:
    base = dict(in_dim=2, out_dim=3, encoding=ENCODING_FOURIER, n_freq=4, w0_first=30, w0_hidden=30,
                enc_width=12, enc_depth=2, n_experts=4, expert_width=8, expert_depth=1, mgr_width=8,
                mgr_enc_depth=0, mgr_depth=1)
    return ModelConfig(**{**base, **kw})


def cases() -> list[tuple[str, np.ndarray, ModelConfig]]:
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    gray = np.asarray(Image.open(SAMPLE).convert("L"))
    rgba = np.concatenate([rgb[100:116, 100:124], np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (16, 1))[..., None]], 2)
    return [
        ("rgb_k4_24x16", rgb[40:56, 120:144].copy(), cfg()),
        ("gray_k2_mgrenc_13x11", gray[70:81, 60:73].copy(), cfg(out_dim=1, n_experts=2, mgr_enc_depth=1)),
        ("rgba_k1_sine_24x16", rgba, cfg(out_dim=4, encoding=ENCODING_SINE, n_freq=0, n_experts=1, expert_depth=0)),
        # the first sine layers' w0 differs from the others' (the cases above share 30), and Fourier features
        # with no frequencies are the coordinates alone
        ("gray_k3_w0_f0_19x13", gray[150:163, 30:49].copy(),
         cfg(out_dim=1, n_freq=0, n_experts=3, w0_first=12, w0_hidden=45, mgr_enc_depth=1)),
    ]


def audio_case() -> tuple[str, Signal, ModelConfig]:
    """A stereo 16-bit tone at 8 kHz, 2400 frames in three windows of 1024 with 64 frames of overlap."""
    t = np.arange(2400) / 8000.0
    left = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)
    right = 0.4 * np.sin(2 * np.pi * 330 * t + 1.0) * np.exp(-2 * t)
    data = np.rint(np.stack([left, right], 1) * 32768) / 32768
    signal = Signal(AudioDescriptor(2400, 8000, 2, 0, 1024, 64), data.astype(np.float32))
    return "stereo_k2_3windows_8khz", signal, cfg(in_dim=1, out_dim=2, n_freq=10, n_experts=2)


def main(only: list[str] | None = None) -> None:
    """Regenerate every case, or only those named (the others keep their files and manifest entries)."""
    HERE.mkdir(exist_ok=True)
    image = for_name("image")
    old = {c["stream"]: c for c in json.loads((HERE / "manifest.json").read_text())} if only else {}
    audio_name, audio_signal, audio_config = audio_case()
    runs = [(name, image, image.from_array(array), config, ".png") for name, array, config in cases()]
    runs.append((audio_name, for_name("audio"), audio_signal, audio_config, ".wav"))
    manifest = []
    for name, modality, signal, config, ext in runs:
        if only and name not in only:
            manifest.append(old[f"{name}.nxc"])
            continue
        res = encode_signal(modality, signal, EncodeOptions(iters=200, device="cpu", seed=7, config=config))
        decoded = decode_stream(res.data)[1]
        (HERE / f"{name}.nxc").write_bytes(res.data)
        modality.write(modality.unpack_descriptor(container.read(res.data).descriptor), decoded, HERE / f"{name}{ext}")
        manifest.append({
            "stream": f"{name}.nxc",
            "expected": f"{name}{ext}",
            "stream_sha256": hashlib.sha256(res.data).hexdigest(),
            "weights_sha256": weights_digest(res.data),
            "shape": list(decoded.shape),
        })
        print(f"{name}: {len(res.data)} bytes, PSNR {res.metrics['psnr']:.2f} dB")
    manifest.append(shape_case() if not only or SHAPE_CASE in only else old[f"{SHAPE_CASE}.nxc"])
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def redecode_outputs() -> None:
    """Rewrite the expected output of every version 1 and 2 stream from the current decoder; the streams stay.

    For a change in how the networks are evaluated (SPEC.md section 7), not in the format:
    the streams, their digests and their weights' digests must not change.
    """
    for folder in (HERE, HERE / "v1"):
        manifest = json.loads((folder / "manifest.json").read_text())
        for case in manifest:
            data = (folder / case["stream"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == case["stream_sha256"], case["stream"]
            header = container.read(data)
            modality = for_id(header.modality)
            desc = modality.unpack_descriptor(header.descriptor)
            if case.get("modality") == "shape":
                mesh = decode_stream(data, resolution=case["resolution"])[1]
                modality.write_as(desc, mesh, folder / case["expected"], ".ply")
                case["shape"] = [int(len(mesh.vertices)), int(len(mesh.faces))]
            else:
                decoded = decode_stream(data)[1]
                modality.write(desc, decoded, folder / case["expected"])
            print(f"{folder.name}/{case['expected']}")
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def regenerate(out_dir: Path, makers: dict, only: list[str] | None, record) -> None:
    """Make the cases of ``makers`` (name -> a function giving the stream) into ``out_dir`` and its manifest.json:
    ``record(name, data)`` writes a case's files and returns its manifest entry. With ``only``, just the cases
    named are made; the others keep their files and entries. Entries follow the makers' order."""
    unknown = sorted(set(only or ()) - set(makers))
    if unknown:
        raise SystemExit(f"no such case: {', '.join(unknown)} (the cases: {', '.join(makers)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = json.loads((out_dir / "manifest.json").read_text()) if only else []
    manifest = [c for c in kept if c["stream"][: -len(".nxc")] not in only]
    strays = [c["stream"] for c in manifest if c["stream"][: -len(".nxc")] not in makers]
    if strays:
        raise SystemExit(f"{out_dir / 'manifest.json'} lists cases this script does not make: {', '.join(strays)}")
    for name, make in makers.items():
        if not only or name in only:
            manifest.append(record(name, make()))
    order = list(makers)
    manifest.sort(key=lambda case: order.index(case["stream"][: -len(".nxc")]))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def latent_config(**kw) -> LatentConfig:
    base = dict(levels=4, arm_width=8, arm_layers=2, n_experts=1, mgr_width=0, syn_width=8, syn_layers=1,
                refine_width=0, lanes_log2=1)
    return LatentConfig(**{**base, **kw})


def image_config(**kw) -> LatentConfig:
    """:func:`latent_config` with the raster context of version 12 (SPEC.md 18)."""
    return latent_config(flags=FLAG_RASTER_CONTEXT, **kw)


def latent_cases() -> list[tuple[str, np.ndarray, LatentConfig]]:
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    gray = np.asarray(Image.open(SAMPLE).convert("L"))
    return [
        ("rgb_k2_refine_48x32", rgb[40:72, 100:148].copy(),
         image_config(n_experts=2, mgr_width=6, refine_width=4, lanes_log2=2)),
        ("gray_k1_37x29", gray[60:89, 50:87].copy(), image_config(levels=3, syn_layers=2, lanes_log2=0)),
        ("gray16_k3_21x17", (gray[100:117, 90:111].astype(np.uint16) * 257 + 3).copy(),
         image_config(levels=3, n_experts=3, mgr_width=4, arm_layers=1, syn_layers=0)),
        ("rgb_k1_tiles_133x67", rgb[20:87, 60:193].copy(), image_config(levels=3, syn_width=6, lanes_log2=3)),
    ]


def random_networks(config: LatentConfig, rng: np.random.Generator, channels: int = 1,
                    dims: int = 2) -> dict[str, np.ndarray]:
    """The networks of ``config`` for ``channels`` of a ``dims``-dimensional signal drawn at random (images and audio
    with bicubic upsampling): for the written cases, whose coding, not their picture, is the point."""
    weights = {n: rng.normal(0, 0.5, s).astype(np.float32) for n, s in config.tensor_shapes(channels, dims).items()}
    if dims == 2:
        weights["upsample"] = np.array([-0.0234375, 0.2265625, 0.8671875, -0.0703125], dtype=np.float32)
    return weights


def escape_case() -> tuple[str, bytes]:
    """Random networks over latents far beyond their tables' ranges: a stream whose residuals escape (SPEC.md 12)."""
    from nxcodec.fit.latent_code import quantize_networks
    from nxcodec.latent import context, stream
    from nxcodec.signals.imagefile import ImageDescriptor

    rng = np.random.default_rng(12)
    d, config = ImageDescriptor(19, 21, 1, 8), image_config(levels=3, n_experts=2, mgr_width=4, lanes_log2=2)
    weights = random_networks(config, rng)
    latents = [rng.normal(0, 3, s) for s in context.level_sizes((d.height, d.width), config.levels)]
    for level, row, col, value in [(0, 3, 4, 5000.4), (0, 7, 7, -70.0), (0, 12, 1, 300.0), (1, 2, 3, -20000.0),
                                   (2, 1, 1, 9000.0), (0, 15, 15, 1.0e6)]:
        latents[level][row, col] = value
    return "gray_k2_escapes_21x19", stream.write(d, config, quantize_networks(weights, 7, 5), latents)[0]


def routing_case() -> tuple[str, bytes]:
    """Random networks written so that the parts of SPEC.md 9 the fitted cases leave untried are used: four experts
    with the manager's outputs 0 and 1 (and 2 and 3) equal, so every pixel routed to such a pair goes to its lower
    index (ties); fixed-point biases 2^9 to 2^10 times finer than their weights (the floor branch of 9.4); and a
    tensor of equal values, 12 symbols under a one-entry table among 8 coder lanes (they keep their turns, 9.5.1)."""
    from nxcodec.fit.latent_code import quantize_networks
    from nxcodec.latent import context, stream
    from nxcodec.signals.imagefile import ImageDescriptor

    rng = np.random.default_rng(14)
    d = ImageDescriptor(23, 17, 3, 8)
    config = image_config(levels=3, n_experts=4, mgr_width=4, syn_width=5, lanes_log2=3)
    weights = random_networks(config, rng, d.channels)
    for pair in ((0, 1), (2, 3)):
        weights["manager.out.weight"][:, pair[1]] = weights["manager.out.weight"][:, pair[0]]
        weights["manager.out.bias"][pair[1]] = weights["manager.out.bias"][pair[0]]
    weights["experts.out.bias"][:] = 0.25
    finer_biases = {name: 10 for name in weights if name.startswith(stream.FIXED_POINT) and name.endswith(".bias")}
    latents = [rng.normal(0, 3, s) for s in context.level_sizes((d.height, d.width), config.levels)]
    return "rgb_k4_ties_23x17", stream.write(d, config, quantize_networks(weights, 2, 5, finer_biases), latents)[0]


def in_range_context_model(weights: dict[str, np.ndarray], rng: np.random.Generator, net: str, scale: float
                            ) -> dict[str, int]:
    """Make the random context model ``net`` (two hidden layers) keep its outputs in range: its scale output ``scale``
    plus a little, from hidden unit 0 of constant activation 0.45, its means a few latents wide, its hidden biases
    within 0.45 of 0. Returns the ``finer`` of :func:`quantize_networks` that puts its biases 2^9 times finer than
    its weights (2^-12 against 2^-3 at 3 fractional bits; such a bias spans at most 1: 4096 integers, SPEC.md 9.3),
    so that they are aligned by 9.4's floor."""
    for layer in ("0", "1"):
        weights[f"{net}.{layer}.bias"] = rng.uniform(-0.45, 0.45, weights[f"{net}.{layer}.bias"].shape)
    weights[f"{net}.1.weight"][:, 0], weights[f"{net}.1.bias"][0] = 0.0, 0.45  # hidden unit 0: 0.45 always
    weights[f"{net}.out.weight"][:, 0] *= 0.2
    weights[f"{net}.out.weight"][0] = (0.0, scale / 0.45)  # the scale output: ``scale`` + its bias
    weights[f"{net}.out.bias"] = np.array([-0.37, 0.3])
    return {f"{net}.{layer}.bias": 9 for layer in ("0", "1", "out")}


def floor_case() -> tuple[str, bytes]:
    """Random networks whose context model stays in range, so that the floor of 9.4's bias alignment reaches the
    decoded integers: every bias of the context model 2^9 times finer than its weights (shifted down by one bit,
    rounding toward minus infinity), its scale output centred on index 16 by one hidden unit of constant activation
    (the 1008 latents take scales 2 to 24, most of them with 16 or 32 phases, SPEC.md 18.4) and its means a few
    latents wide. A decoder that shifts negative biases toward zero decodes ``rgb_k4_ties_23x17`` all the same (found
    by a decoder written from the spec alone): there 14 of its 529 latents take another table under that reading,
    but each symbol lies where both tables give it the same frequency and cumulative frequency. In this stream 3 of
    the 1008 latents take another table, and from the first of them that decoder reads other symbols."""
    from nxcodec.fit.latent_code import quantize_networks
    from nxcodec.latent import context, stream
    from nxcodec.signals.imagefile import ImageDescriptor

    rng = np.random.default_rng(15)
    d, config = ImageDescriptor(32, 24, 1, 8), image_config(levels=3, lanes_log2=1)
    weights = random_networks(config, rng)
    finer = in_range_context_model(weights, rng, "arm", 16)
    weights = {name: np.asarray(w, dtype=np.float32) for name, w in weights.items()}
    latents = [rng.normal(0, 3, s) for s in context.level_sizes((d.height, d.width), config.levels)]
    return "gray_k1_floor_32x24", stream.write(d, config, quantize_networks(weights, 3, 5, finer), latents)[0]


ESCAPE_LENGTHS = (1, 0, 13, 14, 2, 15, 1, 3, 12, 4, 0, 11, 5, 10, 6, 9, 7, 8)  # in decode order


def escape_lengths_case() -> tuple[str, bytes]:
    """Random networks over latents placed so that the finest grid's escapes (SPEC.md 12) take every bit length, 0
    to 15, in the order of ``ESCAPE_LENGTHS`` over four coder lanes: lengths 13 (12 bits below the leading one:
    one ``U_12`` symbol, no high part; no other stream has one) and 14 (the shortest with a high part) both occur,
    and lengths 0 and 1, which code no symbol after their length, come before others (a decoder that coded a
    ``U_0`` symbol for them would shift every later lane's turn). The placed latents are set, in decode order, to
    the predicted centre plus the residual limit plus the escape wanted, so each escape is exactly the one aimed
    at."""
    from nxcodec.fit.latent_code import quantize_networks
    from nxcodec.latent import context, stream
    from nxcodec.signals.imagefile import ImageDescriptor

    rng = np.random.default_rng(16)
    d, config = ImageDescriptor(24, 20, 1, 8), image_config(levels=2, lanes_log2=2)
    tensors = quantize_networks(random_networks(config, rng), 7, 5)
    latents = [rng.normal(0, 2, s) for s in context.level_sizes((d.height, d.width), config.levels)]
    # an escape of bit length k: 2^(k-1) plus some of the k-1 bits below (2731 only spreads them), 0 for k = 0
    escapes = [0 if k == 0 else (1 << (k - 1)) + (k * 2731) % (1 << (k - 1)) for k in ESCAPE_LENGTHS]
    wanted = {(1 + i, (7 * i) % d.width): (e, 1 - 2 * (i % 2)) for i, e in enumerate(escapes)}
    scales = stream.latent_tables(stream.VERSION, config)

    def place(level: int, pos: tuple[np.ndarray, ...], centre: np.ndarray, table: np.ndarray) -> np.ndarray:
        limit = scales.residual_limit(table)
        grid = latents[level]
        for i, at in enumerate(zip(*(p.tolist() for p in pos))):
            if level == 0 and at in wanted:
                e, sign = wanted[at]
                grid[at] = (centre[i] + sign * (limit[i] + e) * context.ONE) / context.ONE
        v = grid[pos] - centre / context.ONE
        return stream.split_residuals(np.sign(v) * np.floor(np.abs(v) + 0.5), limit)[0]

    stream.walk_latents(config, (d.height, d.width), stream.context_models(config, tensors), place, scales)
    return "gray_k1_escape_lengths_24x20", stream.write(d, config, tensors, latents)[0]


def latent_main(only: list[str] | None = None) -> None:
    """Regenerate the version 12 image cases into conformance/v12/image/ (``only``: just these, the others kept)."""
    from nxcodec.latent import stream

    out_dir = HERE / "v12" / "image"
    image = for_name("image")

    def fitted(array: np.ndarray, config: LatentConfig) -> bytes:
        options = EncodeOptions(iters=300, device="cpu", seed=7, config=config, format=stream.VERSION)
        return encode_signal(image, image.from_array(array), options).data

    makers = {name: functools.partial(fitted, array, config) for name, array, config in latent_cases()}
    for written in (escape_case, routing_case, floor_case, escape_lengths_case):  # written, not fitted: quick
        name, data = written()
        makers[name] = functools.partial(bytes, data)

    def record(name: str, data: bytes) -> dict:
        (out_dir / f"{name}.nxc").write_bytes(data)
        print(f"{name}: {len(data)} bytes")
        return image_record(out_dir, name, data)

    regenerate(out_dir, makers, only, record)


def image_record(out_dir: Path, name: str, data: bytes) -> dict:
    """Write the image a latent image stream decodes to beside it, and return its manifest entry."""
    from nxcodec.latent import stream

    latents = stream.decode_latents(data)
    decoded, experts = stream.reconstruct(latents)
    for_name("image").write(latents.descriptor, decoded, out_dir / f"{name}.png")
    return {
        "stream": f"{name}.nxc",
        "expected": f"{name}.png",
        "stream_sha256": hashlib.sha256(data).hexdigest(),
        "integers_sha256": latents.digest(),
        "experts_sha256": hashlib.sha256(experts.astype("<i8").tobytes()).hexdigest(),
        "shape": list(decoded.shape),
    }


def audio_cases() -> list[tuple[str, np.ndarray, LatentConfig, int, str]]:
    """(name, clip, config, coefficients per segment, the input WAV's subtype): 8 kHz tones, mono whole, stereo in
    segments, three channels of 32-bit PCM (whose samples need binary64, SPEC.md 2a), and a short mono clip in
    each other sample format."""
    t = np.arange(12000) / 8000
    partials = [0.2 / k * np.sin(2 * np.pi * 220 * k * t) * np.exp(-t / (0.5 + k)) for k in (1, 2, 3)]
    mono = (sum(partials[:2]) + 0.3 * partials[2] * (t > 0.7))[:8000, None]
    stereo = np.stack([sum(partials), 0.8 * sum(partials) - 0.3 * partials[2]], axis=1)  # correlated: mid/side
    three = np.stack([sum(partials), partials[0] - partials[1], 0.5 * partials[2]], axis=1)[:4000]
    return [
        ("mono_8khz_1s", mono, latent_config(levels=3, lanes_log2=0), 1 << 19, "PCM_16"),
        ("stereo_ms_3segments_8khz", stereo, latent_config(levels=3, n_experts=2, mgr_width=4, refine_width=2,
                                                           lanes_log2=2), 1 << 12, "PCM_16"),
        ("three_ch_pcm32_8khz", three, latent_config(levels=2, lanes_log2=1), 1 << 19, "PCM_32"),
        *[(f"mono_{name}_8khz", mono[:1000], latent_config(levels=2, lanes_log2=1), 1 << 19, subtype)
          for name, subtype in (("pcm24", "PCM_24"), ("u8", "PCM_U8"), ("float32", "FLOAT"), ("float64", "DOUBLE"))],
    ]


def audio_escape_case() -> tuple[str, bytes]:
    """Random networks over latents far beyond their tables' ranges, in two segments of a mono clip: audio planes
    whose residuals escape, some with a high part (SPEC.md 12; escapes of 2**13 and more)."""
    from nxcodec.fit.latent_code import quantize_networks
    from nxcodec.latent import audio, context, stream

    rng = np.random.default_rng(13)
    d = audio.AudioLatentDescriptor(frames=1500, sample_rate=8000, channels=1, sample_format=0, hop_log2=6,
                                    stereo=audio.STEREO_NONE, segment=16)  # 25 MDCT frames: planes of 16 and 9 rows
    config = latent_config(levels=3, n_experts=2, mgr_width=4, lanes_log2=1)
    weights = random_networks(config, rng)
    bodies = []
    for (a, b), spikes in zip(d.segments(), ([(0, 3, 40, 12000.4), (0, 9, 2, -1.0e6), (1, 2, 7, -9000.0),
                                               (2, 1, 3, 300.0)], [(0, 4, 60, -30000.0), (1, 0, 31, 70.0)])):
        latents = [rng.normal(0, 3, size) for size in context.level_sizes((b - a, d.hop), config.levels)]
        for level, row, col, value in spikes:
            latents[level][row, col] = value
        bodies.append(stream.write_body(config, 1, quantize_networks(weights, 7, 5), latents, audio.VERSION)[0])
    return "mono_escapes_2segments_8khz", audio.write(d, bodies)


def audio_routing_case() -> tuple[str, bytes]:
    """Random networks written so that audio planes take the parts of SPEC.md 9.4 that no other audio case does:
    four experts whose manager outputs 0 and 1 (and 2 and 3) are equal, so every sample's choice is a tie and goes
    to the lower index; and fixed-point biases 2^9 times finer than their weights (the floor branch), in context
    models whose outputs stay in range (a scale near 30 from one hidden unit of constant activation, means a few
    latents wide), so that shifting a negative bias toward zero would move latents. Found missing by a decoder of
    version 11 audio written from the spec alone, which decoded every other case under either reading."""
    from nxcodec.fit.latent_code import quantize_networks
    from nxcodec.latent import audio, context, stream

    rng = np.random.default_rng(16)
    d = audio.AudioLatentDescriptor(frames=1000, sample_rate=8000, channels=1, sample_format=0, hop_log2=6,
                                    stereo=audio.STEREO_NONE, segment=16)
    config = latent_config(levels=3, n_experts=4, mgr_width=4, lanes_log2=1)
    weights = random_networks(config, rng)
    finer = {**in_range_context_model(weights, rng, "arm_a", 30), **in_range_context_model(weights, rng, "arm_b", 30)}
    for name in ("manager.0.bias", "manager.out.bias"):
        weights[name] = rng.uniform(-0.45, 0.45, weights[name].shape)
        finer[name] = 9
    for a, b in ((0, 1), (2, 3)):
        weights["manager.out.weight"][:, b] = weights["manager.out.weight"][:, a]
        weights["manager.out.bias"][b] = weights["manager.out.bias"][a]
    weights = {name: np.asarray(w, dtype=np.float32) for name, w in weights.items()}
    tensors = quantize_networks(weights, 3, 5, finer)
    bodies = []
    for a, b in d.segments():
        latents = [rng.normal(0, 3, size) for size in context.level_sizes((b - a, d.hop), config.levels)]
        bodies.append(stream.write_body(config, 1, tensors, latents, audio.VERSION)[0])
    return "mono_k4_ties_floor_8khz", audio.write(d, bodies)


def audio_main(only: list[str] | None = None) -> None:
    """Regenerate the version 11 audio cases into conformance/v11/audio/ (``only``: just these, the others kept)."""
    import tempfile

    import soundfile as sf

    from nxcodec.fit import latent_audio
    from nxcodec.latent import audio
    from nxcodec.signals.audiofile import FORMATS, AudioFiles, quantize_samples, to_int

    out_dir = HERE / "v11" / "audio"
    clips = for_name("audio")

    def fitted(name: str, array: np.ndarray, config: LatentConfig, segment: int, subtype: str) -> bytes:
        latent_audio.SEGMENT_COEFFICIENTS = segment
        fmt, bits = next((code, bits) for code, (sub, bits) in FORMATS.items() if sub == subtype)
        pcm = to_int(quantize_samples(array, fmt), bits) if bits else quantize_samples(array, fmt)  # 0: float
        with tempfile.TemporaryDirectory() as tmp:  # through a file of these integers: the clip keeps its format
            sf.write(Path(tmp) / "in.wav", pcm, 8000, subtype=subtype)
            signal = clips.read(Path(tmp) / "in.wav")
        options = EncodeOptions(iters=200, device="cpu", seed=7, config=config, format=audio.VERSION)
        res = encode_signal(clips, signal, options)
        print(f"{name}: PSNR {res.metrics['psnr']:.2f} dB")
        return res.data

    makers = {case[0]: functools.partial(fitted, *case) for case in audio_cases()}
    for written in (audio_escape_case, audio_routing_case):  # written, not fitted: milliseconds
        written_name, written_data = written()
        makers[written_name] = functools.partial(bytes, written_data)

    def record(name: str, data: bytes) -> dict:
        header = audio.read_header(data)
        descriptor, decoded = audio.decode(data)
        (out_dir / f"{name}.nxc").write_bytes(data)
        AudioFiles().write(descriptor, decoded, out_dir / f"{name}.wav")
        print(f"{name}: {len(data)} bytes, {len(header.bodies)} planes")
        return {
            "stream": f"{name}.nxc",
            "expected": f"{name}.wav",
            "stream_sha256": hashlib.sha256(data).hexdigest(),
            "plane_integers_sha256": [audio.plane_digest(b, r, c) for r, c, b in header.planes()],
            "shape": list(decoded.shape),
        }

    regenerate(out_dir, makers, only, record)


def long_audio_main() -> None:
    """Write conformance/v10/audio/: the version 9 audio cases as version 10 streams.

    Version 10 is version 9 with longer clips allowed (SPEC.md section 16): the same bytes
    with the version byte 10 and the CRC made again are valid version 10 streams of the
    same planes and samples. (A clip long enough to need version 10 would take minutes to
    decode and a WAV of over 256 MiB.)
    """
    import struct
    import zlib

    src, out_dir = HERE / "v9" / "audio", HERE / "v10" / "audio"
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = []
    for case in json.loads((src / "manifest.json").read_text()):
        old = (src / case["stream"]).read_bytes()
        body = old[:4] + bytes([10]) + old[5:-4]
        data = body + struct.pack("<I", zlib.crc32(body))
        (out_dir / case["stream"]).write_bytes(data)
        (out_dir / case["expected"]).write_bytes((src / case["expected"]).read_bytes())
        manifest.append({**case, "stream_sha256": hashlib.sha256(data).hexdigest()})
        print(f"{case['stream']}: {len(data)} bytes")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def shape_field_points() -> np.ndarray:
    """The binary32 points at which latent shape fields are checked: a seeded sample of the cube, plus its corners."""
    rng = np.random.default_rng(5)
    corners = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=np.float32)
    return np.concatenate([rng.uniform(-1, 1, (504, 3)).astype(np.float32), corners])


def latent_shape_cases() -> list[tuple[str, int, int, LatentConfig]]:
    """(name, grid_log2, occupancy_log2, config): the sample torus on small grids: with the built-in context
    models and an occupancy map as fine as the finest grid, and with its own (linear) context models and a map
    coarser than the grid."""
    return [
        ("torus_g4_builtin_k2", 4, 4, latent_config(levels=4, n_experts=2, mgr_width=4, syn_width=8, lanes_log2=1,
                                                     flags=FLAG_BUILTIN_CONTEXT)),
        ("torus_g3_occ2_k1_linear_arm", 3, 2, latent_config(levels=2, arm_layers=0, syn_width=6, syn_layers=1)),
    ]


def pockets_shape_case(points: np.ndarray) -> tuple[str, bytes]:
    """:func:`pockets_shape_parts` as a version 8 stream."""
    from nxcodec.latent import shape

    return "pockets_g3_occ3_k2", shape.write(*pockets_shape_parts(points))[0]


def pockets_shape_parts(points: np.ndarray) -> tuple:
    """(descriptor, config, tensors, latents, occupancy) of a shape written from random networks over a hand-made
    occupancy map of 8^3 cells: every cell occupied but the outer layer (the outside, component 1) and three free
    pockets, one inside, one touching it only at a corner (a component of its own: components are face-connected,
    SPEC.md 13.3) and outside, one inside again; so the inside bits read 0, 1, 0, 1 in the components' raster order.
    Each pocket holds points of ``points``, where the field is -1 or +1. Its latents hold escapes (section 12). The
    experts give about +0.5 elsewhere, so the mesh is the inside pockets' boxes."""
    from nxcodec.fit.latent_code import quantize_networks
    from nxcodec.latent import context, occupancy, shape
    from nxcodec.signals.meshfile import ShapeDescriptor

    rng = np.random.default_rng(15)
    cells = np.ones((8, 8, 8), dtype=bool)
    cells[[0, -1], :, :] = cells[:, [0, -1], :] = cells[:, :, [0, -1]] = False
    held = np.zeros_like(cells)
    held[tuple(np.clip(np.floor((points.astype(np.float64) + 1.0) * 4.0), 0, 7).astype(np.int64).T)] = True
    enclosed = [c for c in zip(*np.nonzero(held)) if min(c) >= 2 and max(c) <= 5]  # not touching the outer layer
    inner = next(c for c in enclosed if max(c) <= 4 and held[tuple(np.add(c, 1))])
    corner = tuple(np.add(inner, 1))
    far = next(c for c in enclosed  # touching neither (Chebyshev distance 2 or more from both)
               if min(np.abs(np.subtract(c, inner)).max(), np.abs(np.subtract(c, corner)).max()) >= 2)
    for c in (inner, corner, far):
        cells[c] = False
    labels, n = occupancy.components(cells)
    inside = np.array([labels[inner] == k or labels[far] == k for k in range(1, n + 1)])
    d = shape.ShapeLatentDescriptor(ShapeDescriptor((0.0, 0.0, 0.0), 1.0, 0.1), 3)
    config = latent_config(levels=2, n_experts=2, mgr_width=4, syn_width=6)
    weights = random_networks(config, rng, dims=3)
    for name in weights:
        if name.startswith("experts."):
            weights[name] *= 0.05
    weights["experts.out.bias"][:] = 0.5
    latents = [rng.normal(0, 3, s) for s in context.level_sizes(d.grid, config.levels)]
    latents[0][4, 4, 4], latents[0][2, 5, 3], latents[1][2, 2, 2] = 5000.4, -20000.0, 900.0
    return d, config, quantize_networks(weights, 7, 5), latents, occupancy.Occupancy(cells, inside)


def shape_floor_case() -> tuple[str, bytes]:
    """Random networks over a map of 8^3 cells (all occupied but the outer layer) whose context models' biases are
    2^9 times finer than their weights, with their outputs in range (a scale near 30 from one hidden unit of
    constant activation, means a few latents wide): in 9.6's two passes a latent is its residual plus its mean, so
    shifting a negative bias toward zero instead of by SPEC.md 9.4's floor moves integers. No other shape case
    takes that branch (the built-in models' biases are as fine as their weights), found by a decoder written from
    the spec alone."""
    from nxcodec.fit.latent_code import quantize_networks
    from nxcodec.latent import context, occupancy, shape
    from nxcodec.signals.meshfile import ShapeDescriptor

    rng = np.random.default_rng(17)
    cells = np.ones((8, 8, 8), dtype=bool)
    cells[[0, -1], :, :] = cells[:, [0, -1], :] = cells[:, :, [0, -1]] = False
    d = shape.ShapeLatentDescriptor(ShapeDescriptor((0.0, 0.0, 0.0), 1.0, 0.1), 3)
    config = latent_config(levels=2, syn_width=6)
    weights = random_networks(config, rng, dims=3)
    finer = {}
    for net in ("arm_a", "arm_b"):
        finer.update(in_range_context_model(weights, rng, net, 30))
        weights[f"{net}.0.weight"] *= 0.3
    weights = {name: np.asarray(w, dtype=np.float32) for name, w in weights.items()}
    latents = [rng.normal(0, 3, s) for s in context.level_sizes(d.grid, config.levels)]
    occ = occupancy.Occupancy(cells, np.array([False]))
    return "cube_g3_occ3_floor", shape.write(d, config, quantize_networks(weights, 3, 5, finer), latents, occ)[0]


def disagreeing_levels_case() -> tuple[str, bytes]:
    """``torus_g4_builtin_k2`` with its occupancy map coded again over levels that disagree with it: one free cell of
    a coarser level, whose parent is occupied, coded as occupied (its eight children then coded, all free). The map
    and so every latent, expert and field value stay the same; a decoder must use the occupancy recomputed from
    the map for the latents (SPEC.md 13.3), not the coded levels, which would keep latents around that cell."""
    import struct
    import zlib

    from nxcodec.latent import occupancy, shape

    data = (HERE / "v8" / "shape" / "torus_g4_builtin_k2.nxc").read_bytes()
    head = shape.read_header(data)
    start = head.sizes["header"] + head.sizes["descriptor"]
    end = start + head.sizes["occupancy"]
    occ = head.occupancy
    levels = occ.pyramid()
    level = next(h for h in range(1, occ.log2) if not levels[h].all())  # the coarsest level with a free cell
    free = tuple(int(i[0]) for i in np.nonzero(~levels[level] & occupancy._repeat(levels[level - 1], 2)))  # its
    # parent occupied
    levels[level][free] = True
    _, *probs, _ = occupancy.HEAD.unpack_from(data, start)  # the source's tables
    section = occupancy.code_section(occ.log2, np.array(probs), *occupancy.level_bits(levels), occ.inside)
    out = data[:start] + section + data[end:-4]
    return "torus_g4_levels_disagree", out + struct.pack("<I", zlib.crc32(out))


def latent_shape_main(only: list[str] | None = None) -> None:
    """Regenerate the version 8 shape cases into conformance/v8/shape/ (``only``: just these, the others kept)."""
    from dataclasses import replace

    import nxcodec.signals.shape as shape_mod
    from nxcodec.fit import presets
    from nxcodec.latent import shape as latent_shape

    out_dir = HERE / "v8" / "shape"
    out_dir.mkdir(parents=True, exist_ok=True)
    shapes = for_name("shape")
    shape_mod.TRAIN_POINTS = 8192
    points = shape_field_points()
    np.save(out_dir / "field_points.npy", points)

    def fitted(grid_log2: int, occupancy_log2: int, config: LatentConfig) -> bytes:
        presets.SHAPE_LATENT_PRESETS[5] = replace(presets.SHAPE_LATENT_PRESETS[5], grid_log2=grid_log2,
                                                  occupancy_log2=occupancy_log2)
        return encode_signal(shapes, shapes.read(MESH), EncodeOptions(quality=5, iters=150, device="cpu", seed=7,
                                                                        config=config, format=8)).data

    makers = {name: functools.partial(fitted, *case) for name, *case in latent_shape_cases()}
    for written_name, written in (pockets_shape_case(points), shape_floor_case()):  # written, not fitted: milliseconds
        makers[written_name] = functools.partial(bytes, written)
    makers["torus_g4_levels_disagree"] = lambda: disagreeing_levels_case()[1]  # after its source is (re)made

    def record(name: str, data: bytes) -> dict:
        image = latent_shape.decode_latents(data)
        field = latent_shape.Field(image)
        mesh = latent_shape.reconstruct(image, SHAPE_RESOLUTION)
        (out_dir / f"{name}.nxc").write_bytes(data)
        np.save(out_dir / f"{name}.field.npy", field(points))
        shapes.write_as(image.descriptor, mesh, out_dir / f"{name}.ply", ".ply")
        print(f"{name}: {len(data)} bytes, {len(mesh.faces)} faces")
        return {
            "stream": f"{name}.nxc", "expected": f"{name}.ply", "field": f"{name}.field.npy",
            "resolution": SHAPE_RESOLUTION, "stream_sha256": hashlib.sha256(data).hexdigest(),
            "integers_sha256": image.digest(),
            "experts_sha256": hashlib.sha256(field.experts_of(points).astype("<i8").tobytes()).hexdigest(),
            "shape": [int(len(mesh.vertices)), int(len(mesh.faces))],
        }

    regenerate(out_dir, makers, only, record)


def shape_case() -> dict:
    """The sample torus as a 2-expert SDF, 4096 training points, decoded at SHAPE_RESOLUTION."""
    import nxcodec.signals.shape as shape_mod

    shape = for_name("shape")
    name = SHAPE_CASE
    config = cfg(in_dim=3, out_dim=1, n_experts=2, enc_width=16, expert_width=12)
    shape_mod.TRAIN_POINTS, shape_mod.DEFAULT_RESOLUTION = 4096, SHAPE_RESOLUTION
    res = encode_signal(shape, shape.read(MESH), EncodeOptions(iters=200, device="cpu", seed=7, config=config))
    decoded, mesh = decode_stream(res.data, resolution=SHAPE_RESOLUTION)
    (HERE / f"{name}.nxc").write_bytes(res.data)
    shape.write_as(decoded.descriptor, mesh, HERE / f"{name}.ply", ".ply")
    print(f"{name}: {len(res.data)} bytes, {shape.summary(res.metrics)}")
    return {"stream": f"{name}.nxc", "expected": f"{name}.ply", "modality": "shape", "resolution": SHAPE_RESOLUTION,
            "stream_sha256": hashlib.sha256(res.data).hexdigest(), "weights_sha256": weights_digest(res.data),
            "shape": [int(len(mesh.vertices)), int(len(mesh.faces))]}


INVALID_SOURCE = "v12/image/gray_k1_37x29.nxc"  # the valid stream each invalid one is made from


def invalid_cases() -> list[tuple[str, bytes, str, str]]:
    """Streams a decoder must refuse, each ``INVALID_SOURCE`` with one defect (and its CRC made right again, but
    for the CRC case): (name, stream, SPEC.md section, what is wrong), grouped as the stream is read (container,
    descriptor, config, tensor table, payload). Made from the committed file, so they stay as they are while it
    does."""
    import dataclasses
    import struct
    import zlib

    from nxcodec.latent import stream

    good = (HERE / INVALID_SOURCE).read_bytes()
    head = stream.read_header(good)
    desc_at = head.sizes["header"]
    config_at = desc_at + head.sizes["descriptor"]
    table_at = config_at + head.sizes["config"]
    length_at = table_at + head.sizes["tensor_table"]
    payload = good[length_at + 4 : -4]
    config = head.config
    w, h, channels, depth = struct.unpack_from("<IIBB", good, desc_at)
    _, code, lo, hi, mu, decay = next(iter(head.body.table.values()))  # arm.0.weight's entry
    entry_end = stream.read_entry(good, table_at, length_at, True)[1]
    entry = stream.pack_entry(code, lo, hi, mu, decay, True)  # step_code, decay (3 bytes), then z, a, b
    assert entry == good[table_at:entry_end] and entry[3] < 0x80, "the cases below rewrite a one-byte z"

    def crc(body: bytes) -> bytes:
        return body + struct.pack("<I", zlib.crc32(body))

    def with_byte(at: int, value: int) -> bytes:
        return crc(good[:at] + bytes([value]) + good[at + 1 : -4])

    def with_descriptor(*fields) -> bytes:
        return crc(good[:desc_at] + struct.pack("<IIBB", *fields) + good[config_at:-4])

    def with_config(**changes) -> bytes:
        return crc(good[:config_at] + dataclasses.replace(config, **changes).pack() + good[table_at:-4])

    def with_first_entry(new: bytes) -> bytes:
        return crc(good[:table_at] + new + good[entry_end:-4])

    def with_payload(data: bytes, declared: int | None = None) -> bytes:
        return crc(good[:length_at] + struct.pack("<I", len(data) if declared is None else declared) + data)

    long_desc = crc(good[:6] + struct.pack("<H", 12) + good[desc_at:config_at] + b"\0\0" + good[config_at:-4])
    too_many = stream.max_levels((h, w)) + 1
    heavy = dict(arm_width=64, arm_layers=3, syn_width=64, syn_layers=3, refine_width=16)
    lanes = 1 << config.lanes_log2
    return [
        ("bad_magic", with_byte(0, good[0] ^ 1), "1", "the magic is not 89 4E 58 43"),
        ("shorter_than_12_bytes", crc(good[:7]), "1", "11 bytes: the prefix and CRC do not fit"),
        ("version_0", with_byte(4, 0), "8", "version byte 0"),
        ("newer_version", with_byte(4, 13), "1, 8", "version 13, newer than this specification"),
        ("version_10_image", with_byte(4, 10), "8, 16", "a version 10 stream of modality 1"),
        ("audio_modality", with_byte(5, 2), "9.1, 18", "a version 12 stream of modality 2"),
        ("modality_4", with_byte(5, 4), "1, 9.1", "modality 4 (reserved)"),
        ("bad_crc", good[:-1] + bytes([good[-1] ^ 1]), "1", "the CRC-32 does not match"),
        ("desc_len_12", long_desc, "9.1", "desc_len 12 (an image's is 10), two more bytes after the descriptor"),
        ("width_0", with_descriptor(0, h, channels, depth), "2", "an image 0 pixels wide"),
        ("over_2_27_pixels", with_descriptor(65536, 2049, channels, depth), "2, 1",
         "65536 x 2049 pixels, each side in range, more than 2^27 in all"),
        ("gray_alpha_16_bits", with_descriptor(w, h, 2, 16), "2", "16 bits per sample with 2 channels"),
        ("levels_0", with_config(levels=0), "9.2", "no grids"),
        ("too_many_levels", with_config(levels=too_many), "9.2", f"{too_many} grids, more than a {w}x{h} image allows"),
        ("manager_without_experts", with_config(mgr_width=1), "9.2", "a manager width with one expert"),
        ("lanes_log2_9", with_config(lanes_log2=9), "9.2", "512 coder lanes (at most 256)"),
        ("flags_1", with_config(flags=1), "9.2, 14.1, 18.1", "the built-in context models' flag in an image"),
        ("flags_3", with_config(flags=3), "9.2, 18.1", "config flags 3 (a version 12 image takes 0 or 2)"),
        ("raster_in_version_11", with_byte(4, 11), "9.2, 18.1", "the raster context's flag in a version 11 stream"),
        ("work_per_pixel", with_config(**heavy), "9.2", "networks beyond 16384 multiply-adds per pixel"),
        ("fixed_point_step", with_first_entry(bytes([13]) + entry[1:]), "9.3",
         "a context model tensor whose step_code is not a multiple of 4"),
        ("fixed_point_step_64", with_first_entry(bytes([64]) + entry[1:]), "9.3",
         "a context model tensor of step_code 64 (a multiple of 4, but beyond 60)"),
        ("varint_not_shortest", with_first_entry(entry[:3] + bytes([entry[3] | 0x80, 0]) + entry[4:]), "17",
         "a varint written in two bytes where one does"),
        ("varint_four_bytes", with_first_entry(entry[:3] + b"\x80\x80\x80\x00" + entry[4:]), "17",
         "a varint whose third byte continues"),
        ("prior_range", with_first_entry(stream.pack_entry(code, mu - 4095, mu + 4095, mu, decay, True)), "9.3",
         "a tensor whose range hi - lo + 1 exceeds 4096"),
        ("lo_minus_32768", with_first_entry(stream.pack_entry(code, -32768, -32768 + hi - lo, -32768, decay, True)),
         "9.3, 17", "a tensor whose lo and mu are -32768"),
        ("table_cut", crc(good[: table_at + 4]), "9.1, 17", "the file ends inside the first tensor table entry"),
        ("payload_past_end", with_payload(payload, len(payload) + 2), "9.1", "payload_len runs past the stream"),
        ("bytes_after_payload", crc(good[:-4] + b"\0\0"), "9.1", "two bytes between the payload and the CRC"),
        ("payload_odd_length", with_payload(payload[:-1]), "9.5.1", "the payload's words are not whole"),
        ("payload_shorter_than_lanes", with_payload(payload[: 4 * lanes - 2]), "9.5.1",
         "a payload shorter than its lanes' initial states"),
        ("rans_state_low", with_payload(struct.pack("<I", (1 << 16) - 1) + payload[4:]), "9.5.1",
         "a lane's initial state below 2^16"),
        ("rans_unused_words", with_payload(payload + b"\0\0"), "9.5.1", "a word left unread after the last symbol"),
        ("rans_truncated", with_payload(payload[:-10]), "9.5.1", "the payload ends before its last symbol"),
    ]


def invalid_main() -> None:
    """Write the invalid streams into conformance/invalid/ (its old streams removed first) with a manifest: the
    SPEC.md section, what is wrong, and the reference decoder's refusal, checked here for every stream."""
    from nxcodec.errors import StreamError

    out_dir = HERE / "invalid"
    out_dir.mkdir(exist_ok=True)
    for old in out_dir.glob("*.nxc"):
        old.unlink()
    manifest = []
    for name, data, section, why in invalid_cases():
        try:
            decode_stream(data)
        except StreamError as exc:
            refusal = str(exc)
        else:
            raise SystemExit(f"{name}: the reference decoder did not refuse it")
        print(f"{name}: {refusal}")
        (out_dir / f"{name}.nxc").write_bytes(data)
        manifest.append({"stream": f"{name}.nxc", "section": section, "defect": why, "reference_refusal": refusal,
                         "stream_sha256": hashlib.sha256(data).hexdigest()})
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def legacy_escape_cases() -> list[tuple[str, str, bytes]]:
    """(folder, name, stream): written streams of older versions whose residuals escape (SPEC.md 12), where no fitted
    case of theirs did (found by decoders written from the spec alone): version 6 audio (two segments of a mono
    clip: planes shaped as the v11 case's, in version 6's tables and tensor table), version 6 shapes (a 9^3 finest
    grid, no occupancy map) and version 7 shapes (the v8 pockets case, whose latents escape, with its own context
    models); and a version 3 image whose residuals reach their tables' edges, where a version 3 decoder reads no
    escape (:func:`clamped_case`)."""
    from nxcodec.fit.latent_code import quantize_networks
    from nxcodec.latent import audio, context, occupancy, shape
    from nxcodec.latent.stream import PREFIX, write_body, with_crc
    from nxcodec.signals.meshfile import ShapeDescriptor

    def legacy(version: int, modality: int, desc: bytes, *parts: bytes) -> bytes:
        return with_crc(PREFIX.pack(container.MAGIC, version, modality, len(desc)) + desc + b"".join(parts))

    cases = [("v3", *clamped_case(legacy))]
    rng = np.random.default_rng(13)
    d = audio.AudioLatentDescriptor(frames=1500, sample_rate=8000, channels=1, sample_format=0, hop_log2=6,
                                    stereo=audio.STEREO_NONE, segment=16)  # 25 MDCT frames: planes of 16 and 9 rows
    config = latent_config(levels=3, n_experts=2, mgr_width=4, lanes_log2=1)
    tensors = quantize_networks(random_networks(config, rng), 7, 5)
    bodies = []
    for (a, b), spikes in zip(d.segments(), ([(0, 3, 40, 12000.4), (0, 9, 2, -1.0e6), (1, 2, 7, -9000.0)],
                                              [(0, 4, 60, -30000.0), (2, 1, 3, 300.0)])):
        latents = [rng.normal(0, 3, size) for size in context.level_sizes((b - a, d.hop), config.levels)]
        for level, row, col, value in spikes:
            latents[level][row, col] = value
        bodies.append(write_body(config, 1, tensors, latents, 6)[0])
    cases.append(("v6/audio", "mono_escapes_2segments_8khz", legacy(6, audio.MODALITY_AUDIO, audio.pack(d), *bodies)))

    rng = np.random.default_rng(18)
    d = shape.ShapeLatentDescriptor(ShapeDescriptor((0.0, 0.0, 0.0), 1.0, 0.1), 3)
    config = latent_config(levels=2, n_experts=2, mgr_width=4, syn_width=6)
    latents = [rng.normal(0, 3, s) for s in context.level_sizes(d.grid, config.levels)]
    latents[0][1, 6, 2], latents[0][7, 0, 7], latents[1][3, 3, 0] = -7000.0, 40000.4, 600.0
    weights = random_networks(config, rng, dims=3)
    for name in weights:  # a field that crosses zero in a few places: a mesh of a few hundred faces, not noise
        if name.startswith("experts."):
            weights[name] *= 0.1
    weights["experts.out.bias"][:] = 0.3
    body = write_body(config, 1, quantize_networks(weights, 7, 5), latents, 6)[0]
    cases.append(("v6/shape", "cube_g3_k2_escapes", legacy(6, shape.MODALITY_SHAPE, shape.pack(d), body)))

    d, config, tensors, latents, occ = pockets_shape_parts(shape_field_points())
    assert config.flags == 0  # its own context models: a valid version 7 config
    body = write_body(config, 1, tensors, latents, 7, masks=occ.latent_masks(d.grid_log2, config.levels))[0]
    cases.append(("v7/shape", "pockets_g3_occ3_k2", legacy(7, shape.MODALITY_SHAPE, shape.pack(d),
                                                           occupancy.write(occ), body)))
    return cases


def clamped_case(legacy) -> tuple[str, bytes]:
    """The networks and latents of ``v3/gray_k1_37x29`` with five latents set far from what their context predicts,
    written again as version 3: their residuals are clamped to their tables' edges, +-A_s (SPEC.md 9.5), and the
    symbols after them are latents, not escapes (those came with version 6)."""
    from nxcodec.latent import context, stream
    from nxcodec.signals import imagefile

    image = stream.decode_latents((HERE / "v3" / "gray_k1_37x29.nxc").read_bytes())
    latents = [g / context.ONE for g in image.grids]
    for level, row, col, value in [(0, 3, 4, 5000.4), (0, 20, 30, -20000.0), (0, 28, 36, 70.0), (1, 5, 6, -300.0),
                                   (2, 3, 2, 1.0e6)]:
        latents[level][row, col] = value
    d = image.descriptor
    body = stream.write_body(image.config, d.channels, image.tensors, latents, 3)[0]
    return "gray_k1_clamped_37x29", legacy(3, stream.MODALITY_IMAGE, imagefile.pack(d), body)


def legacy_escapes_main() -> None:
    """Write :func:`legacy_escape_cases` into their folders, adding (or replacing) their manifest entries; the
    folders' other cases, from earlier writers, stay as they are."""
    from nxcodec.latent import audio, shape
    from nxcodec.signals.audiofile import AudioFiles

    shapes = for_name("shape")
    for folder, name, data in legacy_escape_cases():
        out_dir = HERE / folder
        (out_dir / f"{name}.nxc").write_bytes(data)
        if folder == "v3":
            entry = image_record(out_dir, name, data)
        elif folder.endswith("audio"):
            header = audio.read_header(data)
            descriptor, decoded = audio.decode(data)
            AudioFiles().write(descriptor, decoded, out_dir / f"{name}.wav")
            entry = {"stream": f"{name}.nxc", "expected": f"{name}.wav",
                     "stream_sha256": hashlib.sha256(data).hexdigest(),
                     "plane_integers_sha256": [audio.plane_digest(b, r, c) for r, c, b in header.planes()],
                     "shape": list(decoded.shape)}
        else:
            points = np.load(out_dir / "field_points.npy")
            image = shape.decode_latents(data)
            field = shape.Field(image)
            mesh = shape.reconstruct(image, SHAPE_RESOLUTION)
            np.save(out_dir / f"{name}.field.npy", field(points))
            shapes.write_as(image.descriptor, mesh, out_dir / f"{name}.ply", ".ply")
            entry = {"stream": f"{name}.nxc", "expected": f"{name}.ply", "field": f"{name}.field.npy",
                     "resolution": SHAPE_RESOLUTION, "stream_sha256": hashlib.sha256(data).hexdigest(),
                     "integers_sha256": image.digest(),
                     "experts_sha256": hashlib.sha256(field.experts_of(points).astype("<i8").tobytes()).hexdigest(),
                     "shape": [int(len(mesh.vertices)), int(len(mesh.faces))]}
        manifest = [c for c in json.loads((out_dir / "manifest.json").read_text()) if c["stream"] != entry["stream"]]
        (out_dir / "manifest.json").write_text(json.dumps(manifest + [entry], indent=2) + "\n")
        print(f"{folder}/{name}: {len(data)} bytes")


def redecode_image_outputs() -> None:
    """Rewrite the expected output of every latent image stream (``v3/``, ``v6/image``, ``v9/image``, ``v11/image``,
    ``v12/image``)
    whose samples the current decoder gives differently; the streams stay.

    For a change in the float synthesis or the sample rounding (SPEC.md 9.7), not in the format: each stream's
    digest, integers and expert map must not change.
    """
    from nxcodec.latent import stream
    from nxcodec.signals import imagefile

    for folder in (HERE / "v3", HERE / "v6" / "image", HERE / "v9" / "image", HERE / "v11" / "image",
                   HERE / "v12" / "image"):
        for case in json.loads((folder / "manifest.json").read_text()):
            data = (folder / case["stream"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == case["stream_sha256"], case["stream"]
            latents = stream.decode_latents(data)
            assert latents.digest() == case["integers_sha256"], case["stream"]
            samples, experts = stream.reconstruct(latents)
            assert hashlib.sha256(experts.astype("<i8").tobytes()).hexdigest() == case["experts_sha256"], case["stream"]
            expected = np.asarray(Image.open(folder / case["expected"])).reshape(samples.shape)
            if not np.array_equal(samples, expected):
                imagefile.write(latents.descriptor, samples, folder / case["expected"])
                print(f"{folder.relative_to(HERE)}/{case['expected']}: {int(np.sum(samples != expected))} samples")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["v12"]:
        latent_main()
    elif sys.argv[1:] == ["v11"]:
        audio_main()
    elif sys.argv[1:2] in (["v12-image"], ["v11-audio"]):
        if len(sys.argv) < 3:
            raise SystemExit(f"{sys.argv[1]} NAME...: name the cases to make (`v12` or `v11` makes them all)")
        (latent_main if sys.argv[1] == "v12-image" else audio_main)(sys.argv[2:])
    elif sys.argv[1:] == ["v10"]:
        long_audio_main()
    elif sys.argv[1:2] == ["v8"]:
        latent_shape_main(sys.argv[2:])
    elif sys.argv[1:] == ["outputs"]:
        redecode_outputs()
    elif sys.argv[1:] == ["image-outputs"]:
        redecode_image_outputs()
    elif sys.argv[1:] == ["invalid"]:
        invalid_main()
    elif sys.argv[1:] == ["legacy-escapes"]:
        legacy_escapes_main()
    else:
        main(sys.argv[1:] or None)
