"""Audio: WAV, FLAC, OGG and MP3 in (through soundfile); WAV out at the original rate, channels and format.

A clip is cut into windows of at most ``MAX_WINDOW`` frames that overlap by ``OVERLAP``
frames; each window is one section of the stream, its own network, so encoding and
decoding memory is bounded by the window, not the clip. The decode grid is the
concatenation of the windows (overlapping frames appear twice); :meth:`assemble` joins
neighbouring windows with a raised-cosine crossfade over their overlap, so the seams
carry no clicks. Inside a window, frame ``j`` has the time coordinate
``(j + 0.5) * 2 / W - 1`` where ``W`` is the nominal window length (the last, possibly
shorter, window covers a prefix of [-1, 1]), so every window has the same time scale.
Samples are the file's values in [-1, 1], one network output per channel.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import torch

from nxcodec.errors import InputError, StreamError
from nxcodec.signals import audiofile
from nxcodec.signals.audiofile import (EXTENSIONS, FORMATS, LONG_MAX_FRAMES, LONG_MAX_SAMPLES, MAX_CHANNELS,
                                       MAX_FRAMES, MAX_RATE, MAX_SAMPLES,
                                       quantize_samples)
from nxcodec.signals.base import Modality, Signal, psnr_from_mse

if TYPE_CHECKING:
    from nxcodec.codec import EncodeOptions, EncodeResult

MAX_WINDOW = 1 << 16  # frames per section chosen by the encoder (1.49 s at 44.1 kHz)
MAX_WINDOW_STREAM = 1 << 20  # the largest window a decoder accepts
OVERLAP = 512  # frames crossfaded between neighbouring windows (11.6 ms at 44.1 kHz)
MAX_SECTIONS = 4096  # as the container
SEGMENT = 1024  # frames per segment of the segmental SNR
LATENT_MIN_SECONDS = 1.0  # shorter clips are written as format 2 unless asked otherwise
LAZY_SAMPLES = 1 << 24  # a file's clip over this many samples (64 MiB of float32) is read as it is sliced ...
SEEKABLE = ("WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF")  # ... where its file seeks to a sample exactly
SEG_SNR_RANGE = (-10.0, 35.0)  # per-segment SNR clamp, as usual for segmental SNR

_SUBTYPE_CODE = {"PCM_16": 0, "PCM_24": 1, "PCM_32": 2, "PCM_U8": 3, "PCM_S8": 3, "FLOAT": 4, "DOUBLE": 5}

_DESC = struct.Struct("<IIBBIH")  # frames, sample rate, channels, format, window, overlap


@dataclass(frozen=True)
class AudioDescriptor:
    """What the decoder needs to rebuild a clip and cut it into windows."""

    frames: int
    sample_rate: int
    channels: int
    sample_format: int  # key of FORMATS
    window: int  # nominal frames per section, overlap included
    overlap: int

    @property
    def subtype(self) -> str:
        return FORMATS[self.sample_format][0]

    def windows(self) -> list[tuple[int, int]]:
        """Frame ranges ``[start, stop)`` of the sections; neighbours share ``overlap`` frames."""
        if self.frames <= self.window:
            return [(0, self.frames)]
        hop = self.window - self.overlap
        n = math.ceil((self.frames - self.overlap) / hop)
        return [(i * hop, min(i * hop + self.window, self.frames)) for i in range(n)]


def _checked(data: np.ndarray) -> np.ndarray:
    """Samples as float32 in [-1, 1] (``InputError`` for NaN or infinities)."""
    if not np.all(np.isfinite(data)):
        raise InputError("audio holds NaN or infinite samples")
    return np.clip(data, -1.0, 1.0).astype(np.float32)


class ClipFile:
    """A long clip's samples, read from its file when sliced.

    ``clip[a:b]`` reads frames ``a..b-1`` as float32 ``(n, channels)`` in [-1, 1], checked
    as :meth:`AudioModality.read` checks a whole clip; anything else (``np.asarray(clip)``,
    other indices) reads the whole clip. The latent encoder only slices, so its memory
    holds what it works on, however long the file.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, path: Path, frames: int, channels: int) -> None:
        self.path = path
        self.shape = (frames, channels)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not (isinstance(key, slice) and key.step in (None, 1)):
            return np.asarray(self)[key]
        start, stop, _ = key.indices(self.shape[0])
        n = max(0, stop - start)
        try:
            with sf.SoundFile(str(self.path)) as f:
                f.seek(start)
                data = f.read(n, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            raise InputError(f"{self.path}: cannot read audio ({exc})") from None
        if data.shape != (n, self.shape[1]):
            raise InputError(f"{self.path}: the file changed while it was read")
        return _checked(data)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def choose_window(frames: int, overlap: int, max_window: int) -> int:
    """The nominal window: equal windows of at most ``max_window`` frames (longer for very long clips)."""
    if frames <= max_window:
        return frames
    n = math.ceil((frames - overlap) / (max_window - overlap))
    n = min(n, MAX_SECTIONS)
    return math.ceil((frames - overlap) / n) + overlap


class AudioModality(Modality):
    id = 2
    name = "audio"
    extensions = EXTENSIONS
    formats = (2, 11)  # 2: coordinate networks per window; 11: MDCT planes on latent grids (SPEC.md 10, 12, 15-17)
    latent_format = 11
    rate_unit = audiofile.AudioFiles.rate_unit
    coord_dim = 1
    default_extension = ".wav"

    def sniff(self, data: bytes) -> str | None:
        if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
            return ".wav"
        if data.startswith(b"fLaC"):
            return ".flac"
        if data.startswith(b"OggS"):  # Vorbis or Opus: libsndfile tells them apart by the first packet
            return ".ogg"
        if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):  # a tag, a frame
            return ".mp3"
        return None

    def default_format(self, d: AudioDescriptor) -> int:
        """MDCT planes, except for clips under ``LATENT_MIN_SECONDS``: a latent plane carries about 1 KB of
        tables and networks, more than a fraction of a second is worth at the rates people use."""
        return self.latent_format if d.frames >= LATENT_MIN_SECONDS * d.sample_rate else 2

    def check_format(self, d: AudioDescriptor, version: int) -> None:
        """Format 2 holds at most ``MAX_SAMPLES`` samples (its decoder holds the clip); latent audio is written and
        read segment by segment, up to ``LONG_MAX_SAMPLES``."""
        if version != self.latent_format and (d.frames > MAX_FRAMES or d.frames * d.channels > MAX_SAMPLES):
            raise InputError(f"audio of {d.frames} frames x {d.channels} channels is longer than format {version} "
                             f"holds ({MAX_SAMPLES} samples); format {self.latent_format} holds it")

    def encode_latent(self, signals_: list[Signal], opts: EncodeOptions) -> list[EncodeResult]:
        from nxcodec.fit.latent_audio import encode_audio

        return encode_audio(self, signals_, opts)

    def read(self, path: Path) -> Signal:
        """The clip of an audio file; one over ``LAZY_SAMPLES`` samples in a ``SEEKABLE`` file is read as the
        encoder slices it (:class:`ClipFile`), so encoding it holds the slices, not the clip."""
        try:
            info = sf.info(str(path))
            if info.frames * info.channels > LAZY_SAMPLES and info.format in SEEKABLE:
                return self._signal(ClipFile(Path(path), info.frames, info.channels), info.samplerate,
                                    self._format_of(info))
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a directory") from None
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read audio ({exc})") from None
        return self._signal(data, int(rate), self._format_of(info))

    @staticmethod
    def _format_of(info: Any) -> int:
        fmt = _SUBTYPE_CODE.get(info.subtype, 0)  # lossy inputs (MP3, Vorbis, Opus) come back as 16-bit PCM
        if info.format not in ("WAV", "WAVEX", "FLAC", "RF64", "W64") and fmt in (4, 5):
            fmt = 0
        return fmt

    def from_array(self, array: np.ndarray, sample_rate: int = 44100) -> Signal:
        """A float array ``(frames,)`` or ``(frames, channels)`` in [-1, 1], or int16 PCM."""
        a = np.asarray(array)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise InputError("an audio array must be (frames,) or (frames, channels)")
        if a.dtype == np.int16:
            return self._signal(a.astype(np.float32) / 32768.0, sample_rate, 0)
        if a.dtype in (np.float32, np.float64):
            return self._signal(np.clip(a, -1.0, 1.0).astype(np.float32), sample_rate, 4)
        raise InputError(f"audio arrays must be int16 or float, not {a.dtype}")

    def _signal(self, data: np.ndarray, rate: int, fmt: int) -> Signal:
        frames, channels = data.shape
        if frames == 0:
            raise InputError("audio is empty")
        if channels > MAX_CHANNELS:
            raise InputError(f"audio with {channels} channels is not supported (at most {MAX_CHANNELS})")
        if frames > LONG_MAX_FRAMES or frames * channels > LONG_MAX_SAMPLES:
            raise InputError(f"audio of {frames} frames x {channels} channels exceeds the limit of "
                             f"{LONG_MAX_SAMPLES} samples")
        if not 1 <= rate <= MAX_RATE:
            raise InputError(f"sample rate {rate} Hz is not supported (1..{MAX_RATE})")
        window = choose_window(frames, OVERLAP, MAX_WINDOW)
        desc = AudioDescriptor(frames, rate, channels, fmt, window, OVERLAP if frames > window else 0)
        if isinstance(data, ClipFile):
            return Signal(desc, data)  # checked slice by slice as it is read
        return Signal(desc, _checked(data))

    def pack_descriptor(self, d: AudioDescriptor) -> bytes:
        return _DESC.pack(d.frames, d.sample_rate, d.channels, d.sample_format, d.window, d.overlap)

    def unpack_descriptor(self, data: bytes) -> AudioDescriptor:
        if len(data) != _DESC.size:
            raise StreamError("audio descriptor has the wrong size")
        frames, rate, channels, fmt, window, overlap = _DESC.unpack(data)
        if not 1 <= channels <= MAX_CHANNELS or fmt not in FORMATS:
            raise StreamError("declared channels or sample format are invalid")
        if not (1 <= frames <= MAX_FRAMES and frames * channels <= MAX_SAMPLES):
            raise StreamError(f"declared length of {frames} frames x {channels} channels is beyond the decoder's limits")
        if not 1 <= rate <= MAX_RATE:
            raise StreamError(f"declared sample rate {rate} Hz is beyond the decoder's limits")
        if not (1 <= window <= MAX_WINDOW_STREAM and 2 * overlap < window):
            raise StreamError("declared window or overlap is invalid")
        d = AudioDescriptor(frames, rate, channels, fmt, window, overlap)
        if frames > window and math.ceil((frames - overlap) / (window - overlap)) > MAX_SECTIONS:
            raise StreamError("declared window is too short for the clip's length")
        return d

    def channels(self, d: AudioDescriptor) -> int:
        return d.channels

    def num_samples(self, d: AudioDescriptor) -> int:
        return sum(b - a for a, b in d.windows())

    def decoded_samples(self, d: AudioDescriptor) -> int:
        return d.frames * d.channels

    def sections(self, d: AudioDescriptor) -> list[tuple[int, int]]:
        """Grid ranges of the windows: window ``i`` starts at grid index ``i * window``."""
        return [(i * d.window, i * d.window + (b - a)) for i, (a, b) in enumerate(d.windows())]

    def coords(self, d: AudioDescriptor, start: int, stop: int) -> torch.Tensor:
        j = torch.arange(start, stop, dtype=torch.int64) % d.window
        return ((j.double() + 0.5) * (2.0 / d.window) - 1.0).float()[:, None]

    def targets(self, signal: Signal) -> torch.Tensor:
        d = signal.descriptor
        return torch.from_numpy(np.concatenate([signal.data[a:b] for a, b in d.windows()]))

    def to_samples(self, d: AudioDescriptor, values: np.ndarray) -> np.ndarray:
        return quantize_samples(values, d.sample_format)

    def assemble(self, d: AudioDescriptor, samples: np.ndarray) -> np.ndarray:
        """Join the windows (concatenated in grid order), crossfading each overlap with a raised cosine."""
        windows = d.windows()
        if len(windows) == 1:
            return samples.reshape(d.frames, d.channels)
        out = np.empty((d.frames, d.channels), dtype=np.float64)
        o = d.overlap
        fade_in = (0.5 - 0.5 * np.cos(np.pi * (np.arange(o) + 0.5) / o))[:, None]
        pos = 0
        for i, (a, b) in enumerate(windows):
            part = samples[pos : pos + (b - a)].astype(np.float64)
            pos += b - a
            if i == 0:
                out[a:b] = part
            else:
                out[a : a + o] = out[a : a + o] * (1.0 - fade_in) + part[:o] * fade_in
                out[a + o : b] = part[o:]
        return quantize_samples(out, d.sample_format)

    def write(self, d: AudioDescriptor, array: np.ndarray, path: Path) -> None:
        audiofile.write(d.frames, d.channels, d.sample_rate, d.sample_format, array, path)

    def metrics(self, original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
        return audio_metrics(original, decoded)

    def rate(self, d: AudioDescriptor, n_bytes: int) -> float:
        return audiofile.rate(d, n_bytes)

    def bits_allowed(self, d: AudioDescriptor, rate: float) -> float:
        return rate * 1000.0 * d.frames / d.sample_rate

    def describe(self, d: AudioDescriptor) -> str:
        layout = {1: "mono", 2: "stereo"}.get(d.channels, f"{d.channels} channels")
        return (f"audio {d.frames / d.sample_rate:.3f} s ({d.frames} frames) {d.sample_rate} Hz {layout} {d.subtype}, "
                f"{len(d.windows())} window(s) of {d.window} frames")


def audio_metrics(original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """PSNR on [-1, 1] samples (peak-to-peak 2, as COIN++), SNR and segmental SNR, all in dB."""
    sums = MetricSums()
    sums.add(original, decoded)
    return sums.result()


class MetricSums:
    """:func:`audio_metrics` of a clip fed block by block in order, so a long clip is measured in a block's memory.

    The segmental SNR is the mean over segments of ``SEGMENT`` frames of their SNR clamped
    to ``SEG_SNR_RANGE``, silent segments (below -80 dBFS RMS) skipped; a clip shorter
    than one segment is one segment, a longer one's last partial segment is left out.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.signal = 0.0  # sum of squared samples
        self.noise = 0.0  # sum of squared errors
        self.segments = 0  # whole segments seen
        self.seg_sum = 0.0  # clamped SNRs of the non-silent ones, and their count
        self.seg_kept = 0
        self.rest: tuple[np.ndarray, np.ndarray] | None = None  # frames of an unfinished segment

    def add(self, original: np.ndarray, decoded: np.ndarray) -> None:
        x = np.asarray(original, dtype=np.float64).reshape(len(original), -1)
        y = np.asarray(decoded, dtype=np.float64).reshape(len(decoded), -1)
        self.samples += x.size
        self.signal += float(np.sum(x**2))
        self.noise += float(np.sum((x - y) ** 2))
        if self.rest is not None:
            x, y = np.concatenate([self.rest[0], x]), np.concatenate([self.rest[1], y])
        n = len(x) // SEGMENT
        if n:
            count, total, kept = _segment_snrs(x[: n * SEGMENT].reshape(n, -1), y[: n * SEGMENT].reshape(n, -1))
            self.segments, self.seg_sum, self.seg_kept = self.segments + count, self.seg_sum + total, self.seg_kept + kept
        self.rest = x[n * SEGMENT :], y[n * SEGMENT :]

    def result(self) -> dict[str, float]:
        seg_sum, seg_kept = self.seg_sum, self.seg_kept
        if self.segments == 0 and self.rest is not None and len(self.rest[0]):  # a clip shorter than a segment
            _, seg_sum, seg_kept = _segment_snrs(self.rest[0].reshape(1, -1), self.rest[1].reshape(1, -1))
        mse = self.noise / self.samples
        if self.noise == 0:
            snr = math.inf
        else:
            snr = 10.0 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf
        seg = seg_sum / seg_kept if seg_kept else math.nan
        return {"psnr": psnr_from_mse(mse, 2.0), "mse": mse, "snr": snr, "seg_snr": seg}


def _segment_snrs(x: np.ndarray, y: np.ndarray) -> tuple[int, float, int]:
    """Segments (one per row), the sum of the non-silent ones' clamped SNRs in dB, and how many those are."""
    s = np.sum(x**2, axis=1)
    e = np.sum((x - y) ** 2, axis=1)
    keep = s > x.shape[1] * 1e-8  # below -80 dBFS RMS counts as silence
    snr = 10.0 * np.log10(np.maximum(s[keep], 1e-30) / np.maximum(e[keep], 1e-30))
    return len(x), float(np.sum(np.clip(snr, *SEG_SNR_RANGE))), int(np.sum(keep))
