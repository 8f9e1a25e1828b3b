"""Encoding images on latent grids (format version 12, the layout of version 3 with a raster context): fit side by
side, code, report.

Images of one size are fitted together (``nxcodec.fit.latent``), as many as a stack holds;
each fitted image is then coded by ``nxcodec.fit.latent_code`` (network precisions chosen
by rate-distortion cost, the stream written), the images of a stack in parallel processes
when the caller allows it (``EncodeOptions.coding_workers``). Under a rate target an image whose coding
missed it is fitted again at a lower quality (``presets.step_down``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from nxcodec.errors import NxcError
from nxcodec.fit import presets
from nxcodec.fit.latent import LatentModel, LatentSchedule, fit
from nxcodec.fit.latent_code import (SMALL_FIT, STACK_PIXELS_CPU, STACK_PIXELS_GPU, OverTarget, code_in_parallel,
                                     coding_workers, config_for)
from nxcodec.latent.stream import LatentConfig
from nxcodec.signals.imagefile import ImageDescriptor

if TYPE_CHECKING:
    from nxcodec.codec import EncodeOptions, EncodeResult
    from nxcodec.signals.base import Modality, Signal


def encode_images(modality: Modality, signals_: list[Signal], opts: EncodeOptions) -> list[EncodeResult]:
    """Encode images as version 12 streams; same-sized images are fitted side by side."""
    from nxcodec.codec import EncodeResult, device_name, resolve_device

    t0 = time.perf_counter()
    device = resolve_device(opts.device)
    descs: list[ImageDescriptor] = [s.descriptor for s in signals_]
    preset = presets.choose_latent_preset(presets.LATENT_PRESETS, opts.quality, opts.rate)
    limit = STACK_PIXELS_GPU if device.type == "cuda" else STACK_PIXELS_CPU
    results: list = [None] * len(signals_)
    presets.step_down(presets.LATENT_PRESETS, preset, opts.rate, _groups(descs, limit),
                      lambda groups, p: [([i], over) for i, over in _encode_groups(modality, signals_, descs, groups, p,
                                                                                    opts, device, results)], "image")
    seconds = (time.perf_counter() - t0) / len(signals_)
    out = []
    for (best, float_samples, cfg), signal, d in zip(results, signals_, descs):
        out.append(EncodeResult(
            data=best.data, rate=modality.rate(d, len(best.data)), rate_unit=modality.rate_unit,
            metrics=modality.metrics(signal.data, best.samples),
            float_metrics=modality.metrics(signal.data, float_samples),
            encode_seconds=seconds, device=device_name(device), configs=[cfg],
            n_params=sum(t.ints.size for t in best.image.tensors.values()),
        ))
    return out


def _groups(descs: list[ImageDescriptor], limit: int) -> list[list[int]]:
    """Indices of same-sized images, at most ``limit`` pixels of them per group."""
    by_size: dict[tuple[int, int, int], list[int]] = {}
    for i, d in enumerate(descs):
        by_size.setdefault((d.height, d.width, d.channels), []).append(i)
    out = []
    for idx in by_size.values():
        per = max(1, limit // (descs[idx[0]].width * descs[idx[0]].height))
        out += [idx[a : a + per] for a in range(0, len(idx), per)]
    return out


def _encode_groups(modality, signals_: list, descs: list[ImageDescriptor], groups: list[list[int]],
                   preset: presets.LatentPreset, opts, device: torch.device, results: list
                   ) -> list[tuple[int, float | None]]:
    """Fit and code each group of same-sized images; those that missed the rate target, with their overshoot.

    A first coding over the target is not trimmed but fitted again lower (``presets.step_down``), except at
    the lowest quality: hopper at ``--bpp 1 --iters 300`` lost 4 dB to trimming."""
    iters = opts.iters if opts.iters is not None else preset.iters
    missed = []
    for g, idx in enumerate(groups):
        d = descs[idx[0]]
        cfg = opts.config if isinstance(opts.config, LatentConfig) else config_for(preset, d)
        target = torch.stack([modality.targets(signals_[i]) for i in idx]).to(device)
        model = LatentModel(cfg, len(idx), (d.height, d.width), d.channels, seed=opts.seed).to(device)
        schedule = LatentSchedule.for_preset(preset, iters, progress=opts.progress,
                                             desc="fit image" + (f" {g + 1}" if g else ""))
        threads = torch.get_num_threads()
        if device.type == "cpu" and len(idx) * d.width * d.height < SMALL_FIT:
            torch.set_num_threads(1)
        try:
            fit(model, target, preset.lam, schedule, seed=opts.seed)
        finally:
            torch.set_num_threads(threads)
        with torch.no_grad():
            grids, _ = model.quantized_latents("ste")
            float_images = model.synthesize(grids)[2].clamp(-1, 1).cpu().numpy()
        bits = None if opts.rate is None else modality.bits_allowed(d, opts.rate)
        trim = preset.quality == min(presets.LATENT_PRESETS)
        jobs = [(d, cfg, {n: t.detach().cpu().numpy() for n, t in model.coded_tensors(j).items()},
                 [lat[j].detach().cpu().numpy().astype(np.float64) for lat in model.latents],
                 signals_[i].data, preset.lam, bits, trim) for j, i in enumerate(idx)]
        del model, target
        workers = opts.coding_workers or coding_workers(len(jobs), d.width * d.height)
        codings = code_in_parallel(jobs, workers)
        for j, (i, best) in enumerate(zip(idx, codings)):
            if isinstance(best, OverTarget):
                missed.append((i, best.bits / bits))
            elif isinstance(best, NxcError):
                missed.append((i, None))
            else:
                float_samples = modality.to_samples(d, float_images[j]).reshape(signals_[i].data.shape)
                results[i] = (best, float_samples, cfg)
    return missed
