"""Quality presets: how big a network, how long a fit, and how rate is traded for quality.

A preset scales the network to the signal (a number of parameters per sample), so a
quality level gives a similar rate on a small and a large image. ``--bpp`` picks the
network size from the rate target instead and lets step search meet the target.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from nxcodec.errors import NxcError, UsageError
from nxcodec.model import ENCODING_FOURIER, ENCODING_SINE, ModelConfig

BITS_PER_PARAMETER = 6.0  # typical coded size of one weight, to size a network for a rate
MIN_WIDTH = 4
MAX_WIDTH = 256


@dataclass(frozen=True)
class Preset:
    """One quality level."""

    quality: int
    params_per_sample: float
    iters: int
    lam_db: float  # dB one more bit per parameter must buy, for step search


PRESETS = {
    p.quality: p
    for p in (
        Preset(1, 0.012, 2000, 1.0),
        Preset(2, 0.018, 2500, 0.85),
        Preset(3, 0.025, 3000, 0.7),
        Preset(4, 0.032, 3500, 0.6),
        Preset(5, 0.040, 4000, 0.5),
        Preset(6, 0.055, 4500, 0.42),
        Preset(7, 0.075, 5000, 0.35),
        Preset(8, 0.100, 6000, 0.3),
        Preset(9, 0.140, 7000, 0.25),
    )
}
DEFAULT_QUALITY = 5


def get(quality: int, table: dict[int, Preset] = PRESETS) -> Preset:
    """The preset of a quality level in ``table`` (images' by default; ``UsageError`` outside 1..9)."""
    try:
        return table[quality]
    except (KeyError, TypeError):
        raise UsageError(f"quality must be an integer from 1 to 9, not {quality!r}") from None


def preset_for_rate(bits_per_sample: float, table: dict[int, Preset] = PRESETS) -> Preset:
    """The preset of ``table`` (images' by default) whose typical rate is nearest to ``bits_per_sample``."""
    return min(table.values(), key=lambda p: abs(p.params_per_sample * BITS_PER_PARAMETER - bits_per_sample))


@dataclass(frozen=True)
class Shape:
    """The modality-specific shape of a network family; a width scales it to a budget."""

    in_dim: int
    n_freq: int
    w0: int = 30
    n_experts: int = 4
    enc_depth: int = 2
    expert_depth: int = 2
    enc_ratio: float = 1.5  # encoder width relative to the expert width
    mgr_ratio: float = 0.5  # manager width relative to the expert width
    mgr_depth: int = 1

    def config(self, out_dim: int, width: int) -> ModelConfig:
        return ModelConfig(
            in_dim=self.in_dim,
            out_dim=out_dim,
            encoding=ENCODING_FOURIER,
            n_freq=self.n_freq,
            w0_first=self.w0,
            w0_hidden=self.w0,
            enc_width=max(MIN_WIDTH, round(width * self.enc_ratio)),
            enc_depth=self.enc_depth,
            n_experts=self.n_experts,
            expert_width=width,
            expert_depth=self.expert_depth,
            mgr_width=max(MIN_WIDTH, round(width * self.mgr_ratio)),
            mgr_enc_depth=0,
            mgr_depth=self.mgr_depth,
        )

    def fit_budget(self, out_dim: int, n_params: float) -> ModelConfig:
        """The widest network of this shape with at most ``n_params`` parameters (at least the smallest)."""
        best = self.config(out_dim, MIN_WIDTH)
        for width in range(MIN_WIDTH + 1, MAX_WIDTH + 1):
            cfg = self.config(out_dim, width)
            if cfg.parameter_count() > n_params:
                break
            best = cfg
        return best


# Format 2 (coordinate networks): each kind of signal's family of networks, which the presets above scale to a
# budget, and audio's own presets.
IMAGE_SHAPE = Shape(in_dim=2, n_freq=8)
# Measured at equal parameter budgets (bench/param_split.py, bench/experts_count.py): on
# 256x256 crops one expert beats 2, 4 and 8 by 1-3 dB; on full 768x512 images 1, 2 and 4
# experts lie on one rate-distortion curve. Small images therefore get fewer experts.
EXPERTS_BY_SIZE = ((1 << 17, 1), (1 << 18, 2))


def image_network_shape(pixels: int) -> Shape:
    """The format 2 network family of an image of ``pixels`` pixels (fewer experts for small images)."""
    experts = next((k for limit, k in EXPERTS_BY_SIZE if pixels < limit), IMAGE_SHAPE.n_experts)
    return replace(IMAGE_SHAPE, n_experts=experts)


@dataclass(frozen=True)
class AudioShape(Shape):
    """A 1-D network over time: raw time into a SIREN first layer of frequency ``w0_first``."""

    encoding: int = ENCODING_SINE
    w0_first: int = 3000

    def config(self, out_dim: int, width: int) -> ModelConfig:
        base = super().config(out_dim, width)
        return replace(base, encoding=self.encoding, n_freq=self.n_freq, w0_first=self.w0_first)


# First-layer frequency of the SIREN in radians per frame (times the unit-range weights).
# Measured with bench/audio_shape.py on 0.5 s of speech at quality 6 (CPU, 600-1000
# iterations): raw time fits to 36-39 dB where 14 octave Fourier features reach 27 dB,
# and one expert beats three (36.4 against 31.2 dB float at 600 iterations) at these
# sizes, as for small images; longer fits may favour more experts. The frequency sets
# how precisely the first layer must be coded (phase error grows with it): at 32 kbps,
# 400 iterations, on the middle 1.45 s of bach / piano / male speech, 0.1 rad/frame
# decodes to 18.5 / 18.2 / 20.2 dB and 0.01 to 27.9 / 23.2 / 22.0 dB (0.005: 24.3 dB on
# bach, 24.8 on speech; 0.002: 22.8 on bach).
OMEGA_PER_FRAME = 0.01
AUDIO_SHAPE = AudioShape(in_dim=1, n_freq=0, n_experts=1, enc_depth=2, expert_depth=2, enc_ratio=1.5,
                         mgr_ratio=0.5, mgr_depth=1)


def audio_network_shape(window: int) -> Shape:
    """The format 2 network family of a clip cut into windows of ``window`` frames."""
    return replace(AUDIO_SHAPE, w0_first=max(1, round(OMEGA_PER_FRAME * window / 2)))


# Quality presets in parameters per frame: audio needs ~10x the images' density, since a
# frame carries a full-band sample. Rates for 44.1 kHz mono are about 44 x 6 x pps kbps.
AUDIO_PRESETS = {
    p.quality: p
    for p in (
        Preset(1, 0.020, 2000, 1.0),
        Preset(2, 0.030, 2000, 0.85),
        Preset(3, 0.045, 2500, 0.7),
        Preset(4, 0.065, 2500, 0.6),
        Preset(5, 0.090, 3000, 0.5),
        Preset(6, 0.125, 3000, 0.42),
        Preset(7, 0.170, 3500, 0.35),
        Preset(8, 0.230, 4000, 0.3),
        Preset(9, 0.300, 4500, 0.25),
    )
}


SHAPE_SHAPE = Shape(in_dim=3, n_freq=4, w0=30, n_experts=2)  # format 2 shapes: one network over the cube


@dataclass(frozen=True)
class NetworkPolicy:
    """Format 2's encoder policy for one kind of signal: its network family, quality presets, and the coded bits per
    weight a rate target sizes the network for."""

    network_shape: Callable[[Any], Shape]  # the signal's descriptor -> its network family
    presets: dict[int, Preset]
    bits_per_parameter: float = BITS_PER_PARAMETER

    def preset(self, quality: int) -> Preset:
        """The quality level's network density, fitting budget and rate trade-off."""
        return get(quality, self.presets)

    def preset_for_rate(self, bits_per_sample: float) -> Preset:
        """The preset whose typical rate is nearest to ``bits_per_sample``."""
        return preset_for_rate(bits_per_sample, self.presets)


# A rate target sizes an audio network for 8 coded bits per weight (images: 6): a smaller network quantized finer.
# Measured on the middle 1.45 s, 400 iterations (quick bench), decoded dB at 48 / 32 kbps for speech-male and bach,
# with 6 / 7 / 8 / 10 bits: 35.3 / 36.1 / 36.4 / 35.9, 34.7 / 35.5 / 35.8 / 35.1, 31.2 / 31.6 / 31.5 / 31.1,
# 30.5 / 30.9 / 31.0 / 30.1 (rates within 0.6 kbps of each other, all under target; at 10 the steps hit the finest
# shift the rate search tries).
AUDIO_BITS_PER_PARAMETER = 8.0

NETWORK_POLICIES = {  # by modality name
    "image": NetworkPolicy(lambda d: image_network_shape(d.width * d.height), PRESETS),
    "audio": NetworkPolicy(lambda d: audio_network_shape(d.window), AUDIO_PRESETS, AUDIO_BITS_PER_PARAMETER),
    "shape": NetworkPolicy(lambda d: SHAPE_SHAPE, PRESETS),
}


@dataclass(frozen=True)
class LatentPreset:
    """One quality level of the latent-grid image codec (format version 3)."""

    quality: int
    lam: float  # weight of latent bits per sample (pixel, MDCT coefficient) against the MSE of [0, 1] samples
    rate: float  # typical rate (images: bpp on Kodak; audio: kbps on the benchmark clips), to map a target to a preset
    iters: int
    arm_width: int
    syn_width: int
    syn_layers: int = 2
    refine_width: int = 0
    n_experts: int = 1
    mgr_width: int = 8
    optimizer: str = "adam"  # how the networks are fitted (nxcodec.fit.latent.LatentSchedule.optimizer)
    latent_lr: float | None = None  # the latents' learning rate (None: LatentSchedule's; image presets: 0.1)
    # Fits longer than this take the latents' straight-through learning rate down as 1 / iterations, so that their
    # travel in that phase stays what it is at this length (None: the schedule's rate at any length)
    ste_latent_iters: int | None = None
    syn_width_small: int | None = None  # the synthesis width for images under SMALL_IMAGE_PIXELS (None: syn_width)
    # Images: "raster", version 12's raster context (SPEC.md 18), or "two-pass" (9.6). Coded on four 256x256 Kodak
    # crops, raster cost 12.7%, 12.9%, 6.8%, 7.4% and 8.7% less than two-pass at qualities 1, 3, 5, 7 and 9, every
    # crop lower (bench/results/raster_format_cpu.jsonl).
    context: str = "raster"

    def synthesis_width(self, pixels: int) -> int:
        """The synthesis width for an image of ``pixels`` pixels: a small image shares its networks' bits among
        fewer pixels, so a preset may give it a narrower synthesis."""
        small = self.syn_width_small is not None and pixels < SMALL_IMAGE_PIXELS
        return self.syn_width_small if small else self.syn_width


SYNTHESIS_SOAP = "soap-synthesis"
SMALL_IMAGE_PIXELS = 1 << 17  # between half-size Kodak (98,304 pixels) and a 512x512 image (262,144)


# The synthesis is fitted by SOAP and the context models by Adam ("soap-synthesis"), at every quality
# (bench/optimizer_ablation.py, four 256x256 Kodak crops; rows in bench/results/optimizer_ablation_cpu.jsonl).
# Against Adam for every network, at 500 iterations and two seeds, it lowered the rate-distortion cost on 15 of
# 16 (crop, seed) pairs at qualities 3 and 5 (on average 4% at quality 3, 7% at 5), and with 1500 iterations on 7
# of 8 crops (1% and 5.5%). SOAP for the context models too ("soap") did as well at quality 5 but lost at quality 3
# with 500 iterations (+6% on average: 7 to 12% more bits).
# Quality 1's lambda is set so full-size Kodak codes under 0.1 bpp: with 2.0e-2, its lambda until this was
# measured, kodim01 and kodim02 at full size coded to 0.192 and 0.099 bpp (bench/results/kodak_full2_cpu_q1q9).
# The ladder between quality 1 and quality 9 (38.3 dB on the two images below with the latents at 0.3) puts the
# default, quality 5, near 0.5 bpp, as the issue asks; the earlier ladder, geometric in lambda, coded 0.70 bpp there.
# Each lambda is interpolated (log lambda against log rate) from that ladder's full-size run
# (bench/results/kodak_full2_cpu_v9_500it) for a rate that grows by a factor of 2.3 at the bottom of the range down
# to 1.4 at its top: 0.043, 0.10, 0.19, 0.32, 0.50, 0.75, 1.10, 1.60, 2.25 bpp. Each quality keeps the networks of
# the old quality nearest to it in rate.
# The latents' learning rate is 0.1 instead of the schedule's 0.3 (chosen at 400 iterations): with the presets'
# 2000 iterations it lowered the rate-distortion cost of four 256x256 Kodak crops (bench/preset_ablation.py,
# bench/results/latent_lr_cpu.jsonl) by 7.2% at quality 5 (2.0 to 12.9%; 0.05: 6.7%, 0.03: 3.9%) and by 3.3% at
# quality 3 (1.8 to 5.8%). Ending the cosine decay at 1% of the start instead of 10% changed little (-7.1%, -4.2%).
# With 500-iteration fits 0.3 cost 5.2% more than 0.1 at quality 5. At quality 9 (2000 iterations) 0.2 cost 1.1% more
# (same file, commit dec2638).
# Quality 5's synthesis is 24 wide (was 16): on two 512x512 crops (kodim01, kodim04) with the presets' 2000
# iterations, coded streams, 24 cost 2.1% and 3.0% less and 32 1.7% less and 0.4% more; at quality 3, 24 cost
# 0.5% less and 2.9% more, so quality 3 (and 4, between them) stays at 16 (bench/results/synthesis_width_512_cpu.jsonl;
# a 512x512 crop has two thirds of a Kodak image's pixels, so the networks' bits weigh on it about as on a whole
# image, where a 256x256 crop charges them to a sixth). Quality 6 (quality 5's networks) at 32 wide cost 1.7% less
# and 4.0% more, so it stays at 24 (same file, commit 5e869ed); quality 5's context models 16 wide instead of 12
# cost 1.8% and 2.3% more (commit 5e493c7). On smaller images quality 5 stays 16 wide (``syn_width_small``): the
# quick subset (kodim01-04 at half size, 98,304 pixels, 2000 iterations) coded 1 to 6% larger with 24 at about the
# same PSNR, its costs 1.0 to 3.4% higher (bench/results/kodak_quick_cpu_v9_q5syn24 against kodak_quick_cpu_v9_llr01).
# Qualities 6 and 7 keep 24: on four 256x256 crops (65,536 pixels; bench/results/synthesis_width_256_cpu.jsonl,
# commit 0fdc64e) 16 wide cost 1.2% and 1.6% less, but quality 7 at 16 on the quick subset (98,304 pixels;
# bench/results/kodak_quick_cpu_v9_small16_q7, commit e669169) lost PSNR on all four images (BD-rate against WebP
# -12.5% -> -12.2%), so the 256x256 crops do not tell what half-size images want.
# Quality 1's context models are 4 wide (were 8): on two 512x512 crops (kodim01, kodim04) with the presets' 2000
# iterations, coded streams, 4 cost 1.8% and 2.2% less (11 and 13% fewer bytes for 0.12 and 0.41 dB), and one hidden
# synthesis layer instead of two 1.1% less and 0.2% more (bench/results/quality1_networks_512_cpu.jsonl, commit
# 20be937). At about 0.05 bpp a Kodak image codes to under 2.5 KB, and the two context models held 436 of the 731
# network weights (188 when 4 wide).
# ``rate`` (what --bpp picks a quality by) is each quality's mean over kodim01 and kodim02 at full size, coded as
# version 12 with these presets and 500-iteration fits (the presets' 2000 iterations code a little smaller, so a
# target is met at the first try more often): bench/results/kodak_full2_cpu_v12_500it (commit 7b09d33). kodim01 is
# the fourth most detailed of the 24 (JPEG's rate at quality 75) and kodim02 the ninth least; JPEG, WebP and AVIF
# code the two at 0.86 to 1.17 times their 24-image means (bench/results/kodak_gpu_h100). As version 9
# (bench/results/kodak_full2_cpu_v9_llr01_500it, commit b359ad5, quality 1's context models 8 wide and quality 5's
# synthesis 16) the ladder coded 7 to 30% larger (0.046 to 1.877 bpp), its mean PSNR within 0.4 dB; with the
# latents at 0.3 it had met the aimed rates above within 4% (bench/results/kodak_full2_cpu_v9_ladder_500it,
# commit 8eb16a8).


# A fit longer than the presets' 2000 iterations takes the latents' straight-through learning rate down as
# 1 / iterations: at 5000 iterations and the schedule's 1e-4 kodim01 (256x256, quality 5) coded 5.4% above its
# 2000-iteration cost, at 4e-5 0.1% above and the other three crops 0.1 to 6.6% below; held at 0 the crops cost 0.3 to
# 0.8% more on average at 2000 (qualities 3, 5, 7; bench/results/ste_latents_256_cpu.jsonl).


def _image(quality: int, lam: float, rate: float, iters: int, arm_width: int, syn_width: int, **kw) -> LatentPreset:
    """An image quality level: the synthesis fitted by SOAP, the latents at a learning rate of 0.1 (and in the
    straight-through phase of a fit longer than the presets' 2000 iterations, at a lower one)."""
    return LatentPreset(quality, lam, rate, iters, arm_width, syn_width, optimizer=SYNTHESIS_SOAP, latent_lr=0.1,
                        ste_latent_iters=2000, **kw)


LATENT_PRESETS = {
    p.quality: p
    for p in (
        _image(1, 6.0e-2, 0.041, 2000, 4, 12),
        _image(2, 2.3e-2, 0.083, 2000, 8, 16),
        _image(3, 1.0e-2, 0.129, 2000, 8, 16),
        _image(4, 4.8e-3, 0.261, 2000, 12, 16),
        _image(5, 2.25e-3, 0.437, 2000, 12, 24, refine_width=6, syn_width_small=16),
        _image(6, 1.15e-3, 0.653, 2000, 12, 24, refine_width=6),
        _image(7, 5.9e-4, 0.909, 2000, 16, 24, refine_width=8),
        _image(8, 2.6e-4, 1.196, 2000, 16, 24, refine_width=8),
        _image(9, 9.0e-5, 1.440, 2000, 16, 32, refine_width=8),
    )
}


def latent_preset(quality: int) -> LatentPreset:
    """The format 3 preset of a quality level (the same range check as :func:`get`)."""
    get(quality)
    return LATENT_PRESETS[quality]


def choose_latent_preset(table: dict[int, LatentPreset], quality: int, rate: float | None,
                         margin: float = 1.0) -> LatentPreset:
    """The preset of ``quality``, or under a rate target the one :func:`latent_preset_for_rate` picks for
    ``margin`` x the target."""
    if rate is None:
        get(quality)
        return table[quality]
    if not rate > 0:
        raise UsageError("the rate target must be positive")
    return latent_preset_for_rate(margin * rate, table)


def step_down(table: dict[int, LatentPreset], preset: LatentPreset, rate: float | None, todo: list,
              attempt: Callable[[list, LatentPreset], list[tuple[Any, float | None]]], what: str) -> None:
    """``attempt(todo, preset)`` fits and codes ``todo`` and returns what missed the rate target, each with its
    overshoot (coded bits over allowed bits; None where unknown). Each is attempted again at the quality
    :func:`quality_after_miss` gives, until nothing is left (``NxcError`` below quality 1)."""
    pending = {preset.quality: list(todo)}
    while pending:
        quality = max(pending)
        missed = attempt(sorted(pending.pop(quality)), table[quality])
        if missed and (quality == min(table) or rate is None):
            raise NxcError(f"the rate target is too small for this {what}; raise the target")
        for item, over in missed:
            pending.setdefault(quality_after_miss(table, quality, over), []).append(item)


def quality_after_miss(table: dict[int, LatentPreset], quality: int, over: float | None) -> int:
    """Where to fit again a signal whose coding at ``quality`` came out ``over`` times its target: the highest
    lower quality whose typical rate, scaled as this signal's was, is within the target (one lower if the
    overshoot is unknown, the lowest if none is small enough). A short fit can overshoot the typical rates
    several times over: stepping one quality at a time would refit it again and again."""
    lower = [p for p in table.values() if p.quality < quality]
    if over is None:
        return max(p.quality for p in lower)
    fitting = [p.quality for p in lower if p.rate * over <= table[quality].rate]
    return max(fitting) if fitting else min(table)


def latent_preset_for_rate(rate: float, table: dict[int, LatentPreset] = LATENT_PRESETS) -> LatentPreset:
    """The highest quality whose typical rate is within the target (the lowest if none is)."""
    fitting = [p for p in table.values() if p.rate <= rate]
    return max(fitting, key=lambda p: p.quality) if fitting else table[1]


# Audio as MDCT planes (formats 4, 6, 9 and 11): one latent per coefficient at the finest grid, the
# context model predicts each one's scale. ``rate`` is the estimated mean rate of a first fit (no
# target, started from the transform, version 9's tables) over the middle 3 s of the ten
# benchmark clips (44.1 kHz), 1000-iteration CPU fits with bench/audio_lambda_sweep.py. The shape
# of the rate curve comes from three clips (bach, orchestra, female speech) at nine lambdas
# (bench/results/audio_lambda_sweep_v9_cpu.jsonl, commit d6730f8; mean kbps):
#   lambda 1e-2:   5.3     1e-4:  20.4     1e-5:  41.3     1e-6:  75.1     1e-7: 227.4
#          1e-3:  10.3     3e-5:  29.9     3e-6:  54.3     3e-7: 162.1
# its level on all ten clips from the two ends of the previous table (bench/results/audio_quality_span_v9_cpu.jsonl,
# commit d6730f8; ten-clip mean kbps, and its ratio to the three clips'):
#   lambda 3.4e-3: 5.3 (0.73)   2.9e-7: 124.5 (0.76)
# ``python bench/audio_presets.py`` derives the table from those two files: the three-clip curve times the ratio
# (interpolated in log lambda), quality q aiming at 8 * sqrt(2)**(q - 1) kbps. Version 9's finer
# tables made the low rates cheaper: version 6's table (from the *_v6_cpu.jsonl files) gave quality 1 3.4e-3, which
# now codes at 5.3 kbps. One clip's rate is up to 2x the ten-clip mean at one lambda (orchestra, 247 kbps at 2.9e-7).
# Under a rate target these rates do not set the lambda (the rate model does, nxcodec.fit.rate_model): they pick
# the networks and the steps down after a miss. An expert of 16x2 beat one of 8x1 by 2.8 dB on bach (format 4).
# The networks stay on Adam: SOAP (as the image presets) lowered the rate-distortion cost of bach, orchestra and
# female speech at lambdas 1.5e-4 and 1.2e-5 by 1.8% on average for the synthesis alone and 2.3% for every
# network, but mostly on one fit (bach at 1.2e-5, -13% and -12%), and raised it on one or two of the six
# (bench/audio_lambda_sweep.py with OPTIMIZER, 1000 iterations; bench/results/audio_optimizer_cpu.jsonl).
AUDIO_LATENT_PRESETS = {
    p.quality: p
    for p in (
        LatentPreset(1, 8.3e-4, 8.0, 1000, 16, 16),
        LatentPreset(2, 2.6e-4, 11.3, 1000, 16, 16),
        LatentPreset(3, 8.4e-5, 16.0, 1000, 16, 16),
        LatentPreset(4, 2.8e-5, 22.7, 1000, 16, 16),
        LatentPreset(5, 8.6e-6, 32.0, 1000, 16, 16),
        LatentPreset(6, 2.1e-6, 45.5, 1000, 16, 16),
        LatentPreset(7, 8.3e-7, 64.0, 1000, 16, 16),
        LatentPreset(8, 4.8e-7, 91.1, 1000, 16, 16),
        LatentPreset(9, 2.7e-7, 127.3, 1000, 16, 16),
    )
}


@dataclass(frozen=True)
class ShapeLatentPreset(LatentPreset):
    """One quality level of shapes on 3-D latent grids (format version 8); ``lam`` weighs latent kilobytes
    against the mean absolute error of the truncated distance, ``rate`` is in KB."""

    grid_log2: int = 6  # the finest grid has 2**grid_log2 + 1 vertices per axis
    levels: int = 6
    occupancy_log2: int = 4  # the occupancy map has 2**occupancy_log2 cells per axis (at most grid_log2)
    builtin_context: bool = True  # use the decoder's built-in context models where the size allows (8x2)
    trunc: float = 0.025  # where the coded distance is truncated (network coordinates; measured below)


# Measured on the bunny, 400-iteration CPU fits starting from the distance (one-off sweeps, numbers
# in issue 14's notes, truncation 0.1): 33^3 grids, experts 12x2 (16-wide networks cost 0.9 KB more
# for the same Chamfer); two experts cost 50% more bytes for 4% lower Chamfer; 17^3 grids were worse.
# Format 8's built-in context models (nxcodec.latent.builtin, fitted on synthetic shapes at the
# lambdas of the old qualities 1 to 6) against each stream's own, bench/shape_ablation.py (400
# iterations, bench/results/shape_ablation_cpu.jsonl): a fifth to a third fewer bytes at equal
# Chamfer on all three meshes on 33^3 grids. At 65^3 and truncation 0.1 they were no better;
# at 0.025 they are (below), so every quality uses them.
# The truncation: a field truncated at 0.1 came out about 3.4 times flatter than the distance at the
# surface (bunny, quality 5: gradient 2.9 against 10), so the loss, in units of the truncation,
# paid little for moving the surface. Truncated at 0.05, then 0.025, the same lambdas gave more
# bytes and lower Chamfer, and at equal Chamfer fewer bytes (400-iteration one-thread fits, numbers
# in issue 14's notes; bench/shape_ablation.py truncX --lam L makes such fits): the bunny 3286 B at Chamfer 0.00098 where 0.1 needed about 4000, the
# armadillo 1770 B at 0.00141 (0.1: 1816 B at 0.00158), Lucy 892 B at 0.00389 (0.1: 938 B at
# 0.00450). Weighting the surface samples 4x instead was worse (bunny 1660 B at 0.00269); 0.025
# decodes in about 1.6x the time of 0.1 (thinner blocks; 5 s at 256^3 for the bunny).
# Lambdas for 0.025 on 33^3 grids (bunny, the same fits): 0.2 gave 1.4 KB at 0.00243, 0.1 1.7 KB
# at 0.00169, 4e-2 2.3 KB at 0.00126, 1.5e-2 3.3 KB at 0.00098, 2.5e-3 6.1 KB at 0.00078. There
# the armadillo stops improving (5.0e-3: 3.6 KB at 0.00133) and Lucy's thin parts stay coarse.
# On 65^3 grids with the built-in models (bench/shape_ablation.py gridG and synW, rows in
# bench/results/shape_ablation_cpu.jsonl; bytes at Chamfer, bunny / armadillo / Lucy):
#   4e-2:   4670 at 0.00098 / 3478 at 0.00095 / 2350 at 0.00244
#   1.5e-2: 6050 at 0.00075 / 4648 at 0.00075 / 3354 at 0.00175
#   6e-3:   8746 at 0.00062 / 6904 at 0.00062 / 4962 at 0.00159
#   16-wide experts (bunny): 1.5e-3 17762 at 0.00047, 4e-4 32514 at 0.00040
# against the stream's own models, 12 wide, 5e-3: 10408 at 0.00061 / 12162 at 0.00055 / 6368 at
# 0.00153 (bench/results/shape_v8_t025_cpu). 0.1 on 65^3 was worse than 33^3 (bunny 4032 B at
# 0.00157), so qualities 1 to 4 stay on 33^3.
# ``rate`` (KB, what --kb picks a preset by): the bunny's bytes in those fits; the armadillo and
# Lucy need 0.5 to 1.2 times as many.
SHAPE_LATENT_PRESETS = {
    p.quality: p
    for p in (
        ShapeLatentPreset(1, 2.0e-1, 1.4, 1000, 8, 12, grid_log2=5, levels=5),
        ShapeLatentPreset(2, 1.0e-1, 1.7, 1000, 8, 12, grid_log2=5, levels=5),
        ShapeLatentPreset(3, 4.0e-2, 2.3, 1000, 8, 12, grid_log2=5, levels=5),
        ShapeLatentPreset(4, 1.5e-2, 3.3, 1000, 8, 12, grid_log2=5, levels=5),
        ShapeLatentPreset(5, 4.0e-2, 4.7, 1000, 8, 12, grid_log2=6, levels=6),
        ShapeLatentPreset(6, 1.5e-2, 6.0, 1000, 8, 12, grid_log2=6, levels=6),
        ShapeLatentPreset(7, 6.0e-3, 8.7, 1000, 8, 12, grid_log2=6, levels=6),
        ShapeLatentPreset(8, 1.5e-3, 17.8, 1000, 8, 16, grid_log2=6, levels=6),
        ShapeLatentPreset(9, 4.0e-4, 32.5, 1000, 8, 16, grid_log2=6, levels=6),
    )
}
