"""Encoding audio as format version 11 (the layout of version 4): MDCT planes fitted on latent grids, side by side.

Every clip is cut into MDCT segments (``nxcodec.latent.audio``); each segment of each
channel is a one-channel plane, fitted exactly like a latent image (``nxcodec.fit.latent``).
Planes of one size, from any clips, are fitted together in one stack, so the memory of
the fit is bounded by a stack of planes, not by the clips. Each plane is then coded under
its share of the rate target (by its number of coefficients) with the image coder's
precision and dead-zone search, and the clip's stream is decoded by the real decoder
for the report.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from nxcodec.errors import NxcError
from nxcodec.fit import presets, rate_model
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.fit.latent_code import (SMALL_FIT, STACK_PIXELS_CPU, STACK_PIXELS_GPU, OverTarget, code_audio_plane,
                                     code_in_parallel, coding_workers, lanes_for, levels_for)
from nxcodec.latent import audio, mdct, tables
from nxcodec.latent.audio import AudioLatentDescriptor
from nxcodec.latent.stream import LatentConfig
from nxcodec.signals.audio import MetricSums
from nxcodec.signals.audiofile import quantize_samples

if TYPE_CHECKING:
    from nxcodec.codec import EncodeOptions, EncodeResult
    from nxcodec.signals.base import Modality, Signal

FRAMES_PER_SECOND = 43  # MDCT hop: the power of two nearest to sample_rate / 43 (1024 at 44.1 kHz, 23 ms)
RATE_TRIES = 3  # under a rate target: fits of a clip from the start, the last one trimmed to its target if need be
# A clip over its target is fitted again at its lambda times (overshoot / RATE_FIRST)^(1 / RATE_ELASTICITY), or
# MISS_STEP (about two presets' ratio) where the overshoot is unknown.
MISS_STEP = 3.0
RATE_ROUNDS = 3  # under a rate target: the fit, then up to two continued fits of the planes well under their share
# Under a rate target the clip's lambda comes from the rate model (``nxcodec.fit.rate_model``), one lambda for
# all its planes, and each plane's share of the target is its part of the model's bits at that lambda. The
# preset, the highest quality whose typical rate is within RATE_MARGIN x the target, only gives the networks (a
# clip over its target is fitted again at the lambda its overshoot calls for: RATE_TRIES).
RATE_MARGIN = 0.9
# The first fit aims at this part of the target: whole files code at 0.95 to 3.0 times the model's latent bits,
# a standard deviation of 0.25 to 0.29 in the log (the v9 files of bench/results: audio_quality_span,
# audio_preset_ends, audio_lambda_sweep), and a plane over its share costs its clip a second fit. 0.9 coded 34 of
# the 40 points of bench/results/audio_full_cpu_rate09 at a higher PSNR than 0.8 did (audio_full_cpu).
RATE_FIRST = 0.9
NET_BITS_PER_PARAMETER = 8.5  # a plane's coded networks and header, per parameter (7.2 to 9.2 on those fits)
RATE_UNDER = 0.65  # a plane coded under this part of its share is fitted on at a lower lambda
REFIT_ITERS = 0.25  # a continued fit runs this part of the first fit's iterations
REFIT_LR = 0.3  # at this part of its learning rates
RATE_AIM = 0.95  # a continued fit aims its plane at this part of its share
# How a plane's rate follows lambda, rate ~ lambda^-RATE_ELASTICITY: the local slopes of the lambda sweep at
# 67dd502 between 10 and 70 kbps ran from 0.23 to 0.8, median near 0.4; those of its re-run at 27eb911
# (bench/results/audio_lambda_sweep_cpu.jsonl, three-clip means) run from 0.23 to 0.84, median near 0.28.
# 0.4 is kept until the continued fits are measured again.
RATE_ELASTICITY = 0.4
# The context models learn this fast: from a transform coder's start their scales must follow latents of up to
# hundreds of steps (bach and orchestra, 1000 iterations: at 5x the networks' rate the rate fell with lambda from 3e-4
# to 3e-5, at 1x it did not; issue 13's notes).
CONTEXT_LR = 5e-2
SEGMENT_COEFFICIENTS = 1 << 19  # about 12 s of 44.1 kHz per plane: bounds the fit's and decoder's memory


def step_for(lam: float) -> float:
    """The quantization step of a coefficient that the fit at ``lam`` would choose at high rate: the loss
    ``D / 4 + lam * R`` per coefficient with ``D = step**2 / 12`` and one bit less per doubling of the step is
    least at ``step**2 = 24 lam / ln 2``."""
    return math.sqrt(24 * lam / math.log(2))


def start_from_coefficients(model: LatentModel, targets: list[np.ndarray], lams: list[float]) -> None:
    """Start plane ``j`` of ``model`` as a transform coder of ``targets[j]`` at ``lams[j]``: its finest latents at
    the coefficients over :func:`step_for`, the synthesis passing the finest latent through times that step (two
    units of every hidden layer carry its positive and negative parts), and the context models' scale at the
    latents' spread. The networks see the latents over their rms (``input_gain``): at a small lambda they run to
    hundreds, and a context model fed those as they are threw its outputs by tens of units a step (counting at
    6.9e-6 went from 43 dB to below 0 in 400 iterations). The coarser grids, and the other units, start as usual
    and learn from there.

    From zero, 1000-iteration fits stopped gaining above about 30 kbps; from this start the ten benchmark excerpts
    score 61.19 dB at 46.0 kbps for the 64 kbps target, where the zero start scored 49.16 at 47.2
    (bench/results/audio_v4_cpu_start against audio_v4_cpu_ratemodel)."""
    experts = model.nets["experts"]
    if model.cfg.syn_width < 2:
        raise ValueError("a pass-through synthesis needs hidden layers at least 2 wide")
    with torch.no_grad():
        for j, (coefs, lam) in enumerate(zip(targets, lams)):
            step = step_for(lam)
            latents = torch.from_numpy(np.asarray(coefs, dtype=np.float64) / step).to(model.latents[0])
            model.latents[0][j] = latents
            spread = float(latents.square().mean().sqrt())
            rms = max(1.0, spread)
            model.input_gain[j] = 1 / rms
            (w_in, b_in), *hidden, (w_out, b_out) = experts
            w_in[j, :, :, :2] = 0
            w_in[j, :, 0, 0], w_in[j, :, 0, 1] = 1.0, -1.0  # feature 0 is the finest grid
            b_in[j, :, :2] = 0
            for w, b in hidden:
                w[j, :, :, :2] = 0
                w[j, :, 0, 0], w[j, :, 1, 1] = 1.0, 1.0
                b[j, :, :2] = 0
            w_out[j] = 0
            w_out[j, :, 0, :], w_out[j, :, 1, :] = step * rms, -step * rms
            b_out[j] = 0
            spread /= math.sqrt(2)  # a Laplace of that variance
            bmin = model.scales.log2_bmin
            index = (math.log2(max(spread, 2.0**bmin)) - bmin) * tables.SCALES_PER_OCTAVE
            for key in ("arm_a", "arm_b"):
                model.nets[key][-1][1][j, 1] = min(index, model.scales.n - 1)


def first_schedule(iters: int, progress: bool = False, desc: str = "fit audio", optimizer: str = "adam"
                   ) -> LatentSchedule:
    """The schedule of a plane's first fit from :func:`start_from_coefficients`: no warm-up race (the planes start
    from their coefficients, not from a random draw worth racing) and the context models at ``CONTEXT_LR``.

    No phase models a residual limit: version 6 codes a residual beyond its table's range with an escape (before
    it, clamping at 24 b cost bach at 2e-5 13 dB at the hard rounding, and modelling the clamp in the relaxed
    phases threw flute at 2.4e-6 from 18 to 85 kbps; issue 13's notes)."""
    return LatentSchedule(iters=iters, progress=progress, desc=desc, race=(), context_lr=CONTEXT_LR,
                          optimizer=optimizer)


def hop_log2_for(sample_rate: int) -> int:
    return int(np.clip(round(math.log2(sample_rate / FRAMES_PER_SECOND)), mdct.MIN_HOP_LOG2, mdct.MAX_HOP_LOG2))


def stereo_for(samples: np.ndarray, block: int = 1024, chunk: int = 1 << 18) -> int:
    """Mid/side when it concentrates the energy: a smaller sum of log block energies over both channels (a rate
    proxy: a coefficient costs about half a bit per doubling of its variance), else the channels as they are.
    Read ``chunk`` frames at a time, so a long clip needs no copy of itself."""
    if samples.shape[1] != 2:
        return audio.STEREO_NONE
    n = len(samples) // block * block or len(samples)
    size = min(block, n)
    step = max(size, chunk // size * size)

    def cost(channels: list[np.ndarray]) -> float:
        return float(sum(np.sum(np.log2(np.mean(c.reshape(-1, size) ** 2, axis=1) + 1e-8)) for c in channels))

    lr = ms = 0.0
    for a in range(0, n, step):
        x = samples[a : min(a + step, n)].astype(np.float64)
        lr += cost([x[:, 0], x[:, 1]])
        ms += cost(audio.mix([x[:, 0], x[:, 1]], audio.STEREO_MID_SIDE))
    return audio.STEREO_MID_SIDE if ms < lr - 1.0 else audio.STEREO_NONE


def descriptor_for(d, samples: np.ndarray, hop_log2: int | None = None, segment_coefficients: int | None = None
                   ) -> AudioLatentDescriptor:
    """The layout of a clip: hop, stereo coding (:func:`stereo_for`), equal segments of at most
    ``segment_coefficients`` (``SEGMENT_COEFFICIENTS`` by default)."""
    hop_log2 = hop_log2_for(d.sample_rate) if hop_log2 is None else hop_log2
    total = mdct.frame_count(d.frames, 1 << hop_log2)
    longest = max(1, (segment_coefficients or SEGMENT_COEFFICIENTS) >> hop_log2)
    segment = -(-total // -(-total // longest))
    stereo = stereo_for(samples)
    return AudioLatentDescriptor(d.frames, d.sample_rate, d.channels, d.sample_format, hop_log2, stereo, segment)


def config_for(preset: presets.LatentPreset, rows: int, cols: int) -> LatentConfig:
    k = preset.n_experts
    return LatentConfig(levels=levels_for(rows, cols), arm_width=preset.arm_width, arm_layers=2, n_experts=k,
                        mgr_width=preset.mgr_width if k > 1 else 0, syn_width=preset.syn_width,
                        syn_layers=preset.syn_layers, refine_width=preset.refine_width,
                        lanes_log2=lanes_for(rows, cols))


@dataclass
class Plane:
    """One segment of one coded channel: where it belongs in which clip."""

    clip: int
    segment: int
    channel: int
    frames: tuple[int, int]  # MDCT frames [start, stop)
    hop: int

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[1] - self.frames[0], self.hop


def planes_of(clip: int, d: AudioLatentDescriptor) -> list[Plane]:
    """Every plane of a clip, in stream order."""
    return [Plane(clip, s, c, (a, b), d.hop) for s, (a, b) in enumerate(d.segments()) for c in range(d.channels)]


def coefficients(plane: Plane, d: AudioLatentDescriptor, samples: np.ndarray) -> np.ndarray:
    """The plane's MDCT coefficients ``(rows, hop)``, from only the samples its frames cover."""
    a, b = plane.frames
    lo = max((a - 1) * d.hop, 0)
    part = samples[lo : b * d.hop].astype(np.float64)
    channel = audio.mix([part[:, c] for c in range(d.channels)], d.stereo)[plane.channel]
    shifted = np.concatenate([np.zeros(lo - (a - 1) * d.hop), channel])  # starts at sample (a - 1) * hop ...
    return mdct.forward(shifted, d.hop, 1, b - a + 1)  # ... so its frame 1 is the clip's frame a


def lambda_for(lam: float, bits: float, allowed: float) -> float:
    """The lambda expected to code at ``RATE_AIM`` of ``allowed`` bits a plane that took ``bits`` at ``lam``
    (at most a factor 16 either way: the elasticity is a median, not a law)."""
    return lam * float(np.clip((bits / (RATE_AIM * allowed)) ** (1 / RATE_ELASTICITY), 1 / 16, 16))


def _groups(planes: list[Plane], limit: int) -> list[list[int]]:
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(planes):
        by_size.setdefault(p.size, []).append(i)
    out = []
    for size, idx in by_size.items():
        per = max(1, limit // (size[0] * size[1]))
        out += [idx[a : a + per] for a in range(0, len(idx), per)]
    return out


class FloatJoin:
    """A clip's fitted (float) reconstruction, measured as its planes come in: planes are joined in stream order
    (one waiting until those before it arrive) and each segment's samples are measured and dropped, so the float
    metrics never need the whole clip's planes or samples."""

    def __init__(self, d: AudioLatentDescriptor, original: np.ndarray) -> None:
        self.d, self.original = d, original
        self.joiner = audio.Joiner(d)
        self.sums = MetricSums()
        self.waiting: dict[int, np.ndarray] = {}  # planes by their index in the clip
        self.next = 0  # the clip's next plane to join

    def put(self, k: int, plane: np.ndarray) -> None:
        """The ``k``-th plane of the clip (stream order) as fitted."""
        self.waiting[k] = plane
        channels = self.d.channels
        while all(self.next + c in self.waiting for c in range(channels)):
            block = quantize_samples(self.joiner.push([self.waiting.pop(self.next + c) for c in range(channels)]),
                                     self.d.sample_format)
            self.sums.add(self.original[self.joiner.done - len(block) : self.joiner.done], block)
            self.next += channels


def stream_metrics(data: bytes, original: np.ndarray) -> dict[str, float]:
    """The metrics of a stream as the decoder writes it, decoded and measured segment by segment."""
    sums = MetricSums()
    pos = 0
    for block in audio.decode_streamed(data)[1].blocks():
        sums.add(original[pos : pos + len(block)], block)
        pos += len(block)
    return sums.result()


def encode_audio(modality: Modality, signals_: list[Signal], opts: EncodeOptions) -> list[EncodeResult]:
    """Encode clips as version 11 streams; planes of one size are fitted side by side."""
    from nxcodec.codec import EncodeResult, device_name, resolve_device

    t0 = time.perf_counter()
    device = resolve_device(opts.device)
    table = presets.AUDIO_LATENT_PRESETS
    preset = presets.choose_latent_preset(table, opts.quality, opts.rate, RATE_MARGIN)
    descs = [descriptor_for(s.descriptor, s.data) for s in signals_]
    results: list = [None] * len(signals_)
    steps = {clip: 1.0 for clip in range(len(signals_))}  # each clip's lambda over its rate plan's
    todo = list(steps)
    for attempt in range(RATE_TRIES):
        last = attempt == RATE_TRIES - 1
        missed = _encode_clips(modality, signals_, descs, todo, preset, steps, last, opts, device, results)
        if not missed:
            break
        if last:
            raise NxcError("the rate target is too small for this clip; raise the target")
        for clip, over in missed:
            steps[clip] *= MISS_STEP if over is None else (max(over, 1.0) / RATE_FIRST) ** (1 / RATE_ELASTICITY)
        todo = [clip for clip, _ in missed]
    seconds = (time.perf_counter() - t0) / len(signals_)
    out = []
    for (data, float_metrics, configs, n_params), signal in zip(results, signals_):
        out.append(EncodeResult(
            data=data, rate=modality.rate(signal.descriptor, len(data)), rate_unit=modality.rate_unit,
            metrics=stream_metrics(data, signal.data), float_metrics=float_metrics,
            encode_seconds=seconds, device=device_name(device), configs=configs, n_params=n_params,
        ))
    return out


def _fit(model: LatentModel, target: torch.Tensor, lams: list[float], schedule: LatentSchedule, seed: int,
         device: torch.device) -> None:
    threads = torch.get_num_threads()
    if device.type == "cpu" and target.numel() < SMALL_FIT:
        torch.set_num_threads(1)  # small ops run faster on one thread than shared
    try:
        fit(model, target, lams, schedule, seed=seed)
    finally:
        torch.set_num_threads(threads)


def _rate_plan(modality, signals_: list, descs: list[AudioLatentDescriptor], planes: list[Plane],
               configs: dict[tuple[int, int], LatentConfig], rate: float) -> list[tuple[float, float]]:
    """Each plane's first lambda and its share of its clip's target (bits): one lambda per clip, at which the rate
    model predicts ``RATE_FIRST`` of the target, and the target shared as the model spends it at that lambda."""
    plan: list[tuple[float, float]] = [(0.0, 0.0)] * len(planes)
    for clip in sorted({p.clip for p in planes}):
        d = descs[clip]
        own = [i for i, p in enumerate(planes) if p.clip == clip]
        header = 8 * len(audio.write(d, [b""] * d.segment_count * d.channels))
        allowed = modality.bits_allowed(signals_[clip].descriptor, rate) - header
        models = [rate_model.PlaneRate(coefficients(planes[i], d, signals_[clip].data)) for i in own]
        nets = [NET_BITS_PER_PARAMETER * sum(math.prod(s) for s in configs[planes[i].size].tensor_shapes(1).values())
                for i in own]
        lam = rate_model.lambda_for_bits(models, RATE_FIRST * allowed - sum(nets))
        predicted = [net + m.bits(lam) for net, m in zip(nets, models)]
        for i, bits in zip(own, predicted):
            plan[i] = (lam, allowed * bits / sum(predicted))
    return plan


def _encode_clips(modality, signals_: list, descs: list[AudioLatentDescriptor], clips: list[int],
                  preset: presets.LatentPreset, steps: dict[int, float], last: bool, opts, device: torch.device,
                  results: list) -> list[tuple[int, float | None]]:
    """Fit and code every plane of ``clips`` (under a rate target, at the rate plan's lambdas times the clip's
    ``steps``; first codings trimmed only if ``last``);
    the clips that missed the rate target, each with its overshoot (its worst plane's coded bits over that plane's
    share; None where unknown)."""
    planes = [p for i in clips for p in planes_of(i, descs[i])]
    limit = STACK_PIXELS_GPU if device.type == "cuda" else STACK_PIXELS_CPU
    iters = opts.iters if opts.iters is not None else preset.iters
    configs = {p.size: opts.config if isinstance(opts.config, LatentConfig) else config_for(preset, *p.size)
               for p in planes}
    plan = None if opts.rate is None else _rate_plan(modality, signals_, descs, planes, configs, opts.rate)

    coded: dict[int, tuple[bytes, np.ndarray | None, LatentConfig, int, float]] = {}  # by plane, with the coding's mse
    first = {clip: min(i for i, p in enumerate(planes) if p.clip == clip) for clip in clips}
    joins = {clip: FloatJoin(descs[clip], signals_[clip].data) for clip in clips}
    failed: dict[int, float | None] = {}  # clips with a plane that missed its share of the target: overshoot
    for g, idx in enumerate(_groups(planes, limit)):
        rows, cols = planes[idx[0]].size
        cfg = configs[rows, cols]
        targets = [coefficients(planes[i], descs[planes[i].clip], signals_[planes[i].clip].data) for i in idx]
        target = torch.stack([torch.from_numpy(t.reshape(-1, 1)).float() for t in targets]).to(device)
        lams = [preset.lam if plan is None else plan[i][0] * steps[planes[i].clip] for i in idx]
        model = LatentModel(cfg, len(idx), (rows, cols), 1, seed=opts.seed)
        start_from_coefficients(model, targets, lams)
        model = model.to(device)
        desc = "fit audio" + (f" {g + 1}" if g else "")
        schedule = start = first_schedule(iters, opts.progress, desc, preset.optimizer)
        bits = [None if plan is None else plan[i][1] for i in idx]
        under: set[int] = set()  # coded planes well under their share, fitted on at a lower lambda
        for attempt in range(RATE_ROUNDS):
            _fit(model, target, lams, schedule, opts.seed, device)
            last = attempt == RATE_ROUNDS - 1
            with torch.no_grad():
                grids, _ = model.quantized_latents("ste")
                floats = model.synthesize(grids)[2].cpu().numpy().astype(np.float64)
            again = []  # planes to fit on from here
            todo = [j for j, i in enumerate(idx) if planes[i].clip not in failed and (i not in coded or i in under)]
            # A first coding over its share is not trimmed (trimming cost bach 2.2 dB more than a fit one quality
            # lower, at 16 kbps): its clip is fitted again at a higher lambda (encode_audio). A later coding is trimmed at
            # once: it only replaces the plane's coding if better.
            jobs = {j: (targets[j], cfg, {n: t.detach().cpu().numpy() for n, t in model.coded_tensors(j).items()},
                     [lat[j].detach().cpu().numpy().astype(np.float64) for lat in model.latents], lams[j], bits[j],
                     idx[j] in coded or last, float(model.input_gain[j]))
                    for j in todo}
            workers = opts.coding_workers or coding_workers(len(jobs), rows * cols)
            codings = dict(zip(todo, code_in_parallel(list(jobs.values()), workers, code_audio_plane)))
            for j, i in enumerate(idx):
                p = planes[i]
                if j not in codings or p.clip in failed:  # a plane of a clip that failed meanwhile is not kept
                    continue
                best = codings[j]
                if isinstance(best, NxcError):
                    if i in coded:
                        under.discard(i)
                    else:
                        over = best.bits / bits[j] if isinstance(best, OverTarget) else None
                        worst = failed.get(p.clip, 0.0)
                        failed[p.clip] = None if over is None or worst is None else max(worst, over)
                    continue
                if i in coded and best.mse >= coded[i][4]:  # no better than the coding it has: keep that
                    under.discard(i)
                    continue
                coded[i] = (best.data, floats[j].reshape(p.size).astype(np.float32), cfg,
                            sum(t.size for t in jobs[j][2].values()), best.mse)
                if bits[j] is not None and 8 * len(best.data) < RATE_UNDER * bits[j]:
                    under.add(i)  # well under its share: fit on at a lower lambda, keep the best that fits
                    lams[j] = lambda_for(lams[j], 8 * len(best.data), bits[j])
                    again.append(j)
                else:
                    under.discard(i)
            if not again or last:
                break
            schedule = replace(start.held_at_end(), iters=max(1, round(iters * REFIT_ITERS)), lr=start.lr * REFIT_LR,
                               latent_lr=start.latent_lr * REFIT_LR, context_lr=CONTEXT_LR * REFIT_LR)
        for i in idx:  # the group's codings are final: measure their fitted samples and let them go
            clip = planes[i].clip
            if clip not in failed:
                joins[clip].put(i - first[clip], coded[i][1])
                coded[i] = (coded[i][0], None, *coded[i][2:])
    for clip in clips:
        if clip in failed:
            continue
        own = [i for i, p in enumerate(planes) if p.clip == clip]
        data = audio.write(descs[clip], [coded[i][0] for i in own])
        results[clip] = (data, joins[clip].sums.result(), [coded[i][2] for i in own], sum(coded[i][3] for i in own))
    return sorted(failed.items())
