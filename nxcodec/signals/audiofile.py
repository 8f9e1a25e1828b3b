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
MAX_SAMPLES = 1 << 27  # frames x channels: the decoded array stays below 512 MiB of float32
MAX_CHANNELS = 4
MAX_RATE = 768_000
EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")  # what the encoder reads

# Sample formats: code -> (soundfile subtype written by the decoder, integer bits or 0 for float).
FORMATS = {0: ("PCM_16", 16), 1: ("PCM_24", 24), 2: ("PCM_32", 32), 3: ("PCM_U8", 8), 4: ("FLOAT", 0), 5: ("DOUBLE", 0)}


def quantize_samples(values: np.ndarray, sample_format: int) -> np.ndarray:
    """Float samples to the values the format can hold, as float32 in [-1, 1] (SPEC.md, modality 2)."""
    bits = FORMATS[sample_format][1]
    v = np.clip(values, -1.0, 1.0)
    if bits == 0:
        return v.astype(np.float32)
    scale = float(1 << (bits - 1))
    q = np.clip(np.rint(np.asarray(v, dtype=np.float64) * scale), -scale, scale - 1)
    return (q / scale).astype(np.float32)


def to_int(array: np.ndarray, bits: int) -> np.ndarray:
    """float32 samples on the format's grid to the integers soundfile writes exactly."""
    scale = float(1 << (bits - 1))
    q = np.clip(np.rint(array.astype(np.float64) * scale), -scale, scale - 1)
    if bits == 16:
        return q.astype(np.int16)
    return (q * (1 << (32 - bits))).astype(np.int32)  # 24/32-bit and 8-bit: left-aligned in int32


def write(frames: int, channels: int, sample_rate: int, sample_format: int, array: np.ndarray, path: Path) -> None:
    """Write ``(frames, channels)`` samples as a WAV file in the clip's own sample format."""
    subtype, bits = FORMATS[sample_format]
    data = array.reshape(frames, channels)
    if bits:
        data = to_int(data, bits)
    sf.write(str(path), data, sample_rate, subtype=subtype, format="WAV")


def layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")


class AudioFiles:
    """What a decoder needs of the audio modality: its name, output types and writer."""

    name = "audio"
    extensions = EXTENSIONS
    default_extension = ".wav"
    output_extensions: tuple[str, ...] = (".wav",)

    def write(self, d: Any, array: np.ndarray, path: Path) -> None:
        write(d.frames, d.channels, d.sample_rate, d.sample_format, array, path)

    def write_as(self, d: Any, array: np.ndarray, path: Path, suffix: str) -> None:
        self.write(d, array, path)

    def describe(self, d: Any) -> str:
        return d.describe()
