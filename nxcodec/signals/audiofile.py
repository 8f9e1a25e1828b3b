"""Audio sample formats and writing decoded clips, without torch.

Shared by every audio format version: the latent decoder (version 4) uses it directly,
the fitting side through :class:`nxcodec.signals.audio.AudioModality`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

MAX_FRAMES = 1 << 27  # about 50 minutes at 44.1 kHz; the decoder refuses more before allocating
MAX_SAMPLES = 1 << 27  # frames x channels: a decoded array of at most 512 MiB (1 GiB for 32-bit PCM, held in binary64)
# Latent audio from version 10 (SPEC.md sections 16, 17) is written and read segment by segment, never held whole:
# a clip may be as long as its u32 frame count says (27 hours at 44.1 kHz), up to 2^33 samples in all (27 hours of
# stereo).
LONG_MAX_FRAMES = (1 << 32) - 1
LONG_MAX_SAMPLES = 1 << 33
MAX_CHANNELS = 4
MAX_RATE = 768_000
WAV_MAX_DATA = (1 << 32) - (1 << 16)  # sample bytes a WAV file can declare (beyond, RF64: the 64-bit WAV)
EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")  # what the encoder reads

# Sample formats: code -> (soundfile subtype written by the decoder, integer bits or 0 for float).
FORMATS = {0: ("PCM_16", 16), 1: ("PCM_24", 24), 2: ("PCM_32", 32), 3: ("PCM_U8", 8), 4: ("FLOAT", 0), 5: ("DOUBLE", 0)}


def sample_dtype(sample_format: int) -> np.dtype:
    """The float type that holds every value of a sample format exactly: binary32 has a 24-bit
    significand, enough for PCM up to 24 bits and for the float formats (SPEC.md 2a rounds them
    to binary32); 32-bit PCM needs binary64."""
    return np.dtype(np.float64 if FORMATS[sample_format][1] == 32 else np.float32)


def quantize_samples(values: np.ndarray, sample_format: int) -> np.ndarray:
    """Float samples to the values the format can hold, in [-1, 1] (SPEC.md, modality 2), as
    :func:`sample_dtype`: exact, so :func:`to_int` gives back the format's integers."""
    bits = FORMATS[sample_format][1]
    v = np.clip(values, -1.0, 1.0)
    if bits == 0:
        return v.astype(np.float32)
    scale = float(1 << (bits - 1))
    q = np.clip(np.rint(np.asarray(v, dtype=np.float64) * scale), -scale, scale - 1)
    return (q / scale).astype(sample_dtype(sample_format))


def to_int(array: np.ndarray, bits: int) -> np.ndarray:
    """Samples on the format's grid (from :func:`quantize_samples`) to the integers soundfile writes exactly."""
    scale = float(1 << (bits - 1))
    q = np.clip(np.rint(array.astype(np.float64) * scale), -scale, scale - 1)
    if bits == 16:
        return q.astype(np.int16)
    return (q * (1 << (32 - bits))).astype(np.int32)  # 24/32-bit and 8-bit: left-aligned in int32


def write(frames: int, channels: int, sample_rate: int, sample_format: int, samples: Any, path: Path) -> None:
    """Write a clip as a WAV file (RF64 past 4 GiB) in its own sample format.

    ``samples`` is the ``(frames, channels)`` array, or anything with a ``blocks()`` method
    that yields it in order (a decoder that never holds the whole clip): written block by
    block, memory stays that of one block.
    """
    subtype, bits = FORMATS[sample_format]
    width = bits // 8 if bits else (4 if subtype == "FLOAT" else 8)
    container = "WAV" if frames * channels * width < WAV_MAX_DATA else "RF64"  # a WAV's sizes are 32-bit
    blocks = samples.blocks() if hasattr(samples, "blocks") else [np.asarray(samples).reshape(frames, channels)]
    written = 0
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=channels, subtype=subtype, format=container) as f:
        for block in blocks:
            f.write(to_int(block, bits) if bits else block)
            written += len(block)
    if written != frames:
        raise ValueError(f"{written} frames were decoded where the clip declares {frames}")


def layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")


def rate(d: Any, n_bytes: int) -> float:
    """Kilobits per second of a stream of ``n_bytes`` over the clip ``d`` (``frames``, ``sample_rate``)."""
    return 8.0 * n_bytes * d.sample_rate / d.frames / 1000.0


class AudioFiles:
    """What a decoder needs of the audio modality: its name, output types, rate and writer."""

    name = "audio"
    rate_unit = "kbps"
    rate = staticmethod(rate)
    extensions = EXTENSIONS
    default_extension = ".wav"
    output_extensions: tuple[str, ...] = (".wav",)

    def write(self, d: Any, array: np.ndarray, path: Path) -> None:
        write(d.frames, d.channels, d.sample_rate, d.sample_format, array, path)

    def write_as(self, d: Any, array: np.ndarray, path: Path, suffix: str) -> None:
        self.write(d, array, path)

    def describe(self, d: Any) -> str:
        return d.describe()
