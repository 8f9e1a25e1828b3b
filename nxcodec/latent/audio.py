"""Latent audio streams (versions 4, 6, 9, 10 and 11): a clip as MDCT planes coded on latent grids (SPEC.md sections
10, 12, 15, 16 and 17).

A clip's samples go through the MDCT (``nxcodec.latent.mdct``), one channel at a time
(mid and side in place of left and right when the stream says so). The frames are cut
into segments; each segment of each channel is one plane of ``frames x hop``
coefficients, coded exactly as a one-channel latent image (a body: config, tensor
table, payload). The decoder rebuilds a segment's planes, runs the inverse MDCT with the
half frame carried over from the previous segment, and so never holds more than one
segment's planes: seams between segments are ordinary MDCT overlaps, with no clicks.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from nxcodec.errors import StreamError
from nxcodec.latent import mdct
from nxcodec.latent.stream import (MAGIC, PREFIX, Body, LatentConfig, decode_body, describe_config, digest,
                                   float_synthesis, read_body, read_prefix, with_crc)
from nxcodec.latent.synthesis import synthesize
from nxcodec.signals import audiofile

VERSION = 11  # written (SPEC.md 17); versions 4 (no escapes), 6 (coarser latent tables), 9 and 10 are read
LONG_VERSION = 10  # the first version whose clips may be longer than version 9's limits (SPEC.md section 16)
VERSIONS = (4, 6, 9, 10, 11)
MODALITY_AUDIO = 2
STEREO_NONE, STEREO_MID_SIDE = 0, 1
MAX_PLANE = 1 << 22  # coefficients in one segment's plane: bounds the decoder's working memory
_DESC = struct.Struct("<IIBBBBH")  # frames, sample rate, channels, sample format, hop log2, stereo, segment


@dataclass(frozen=True)
class AudioLatentDescriptor:
    """What the decoder needs to rebuild a clip from its planes."""

    frames: int
    sample_rate: int
    channels: int
    sample_format: int
    hop_log2: int  # MDCT hop (coefficients per frame) is 2**hop_log2
    stereo: int  # STEREO_NONE, or STEREO_MID_SIDE (two channels only)
    segment: int  # MDCT frames per segment (the last may be shorter)

    @property
    def hop(self) -> int:
        return 1 << self.hop_log2

    @property
    def subtype(self) -> str:
        return audiofile.FORMATS[self.sample_format][0]

    @property
    def segment_count(self) -> int:
        """How many segments the clip has: known from the descriptor alone, before any is listed."""
        return -(-mdct.frame_count(self.frames, self.hop) // self.segment)

    def segments(self) -> Iterator[tuple[int, int]]:
        """MDCT frame ranges ``[start, stop)`` of the segments, in order, one at a time: a stream of a few
        bytes may declare billions of them, so nothing lists them all."""
        total = mdct.frame_count(self.frames, self.hop)
        return ((a, min(a + self.segment, total)) for a in range(0, total, self.segment))

    def describe(self) -> str:
        coding = ", mid/side" if self.stereo == STEREO_MID_SIDE else ""
        return (f"audio {self.frames / self.sample_rate:.3f} s ({self.frames} frames) {self.sample_rate} Hz "
                f"{audiofile.layout(self.channels)} {self.subtype}, MDCT hop {self.hop}{coding}, "
                f"{self.segment_count} segment(s) of {self.segment} MDCT frames")


def pack(d: AudioLatentDescriptor) -> bytes:
    return _DESC.pack(d.frames, d.sample_rate, d.channels, d.sample_format, d.hop_log2, d.stereo, d.segment)


def length_limits(version: int) -> tuple[int, int]:
    """The most frames and frames x channels a stream of ``version`` may declare (SPEC.md 10.2 and 16)."""
    if version >= LONG_VERSION:
        return audiofile.LONG_MAX_FRAMES, audiofile.LONG_MAX_SAMPLES
    return audiofile.MAX_FRAMES, audiofile.MAX_SAMPLES


def unpack(data: bytes, version: int = VERSION) -> AudioLatentDescriptor:
    """Parse and bound-check an audio descriptor of a ``version`` stream (``StreamError`` if invalid)."""
    if len(data) != _DESC.size:
        raise StreamError("audio descriptor has the wrong size")
    d = AudioLatentDescriptor(*_DESC.unpack(data))
    if not 1 <= d.channels <= audiofile.MAX_CHANNELS or d.sample_format not in audiofile.FORMATS:
        raise StreamError("declared channels or sample format are invalid")
    max_frames, max_samples = length_limits(version)
    if not (1 <= d.frames <= max_frames and d.frames * d.channels <= max_samples):
        raise StreamError(f"declared length of {d.frames} frames x {d.channels} channels is beyond the decoder's limits")
    if not 1 <= d.sample_rate <= audiofile.MAX_RATE:
        raise StreamError(f"declared sample rate {d.sample_rate} Hz is beyond the decoder's limits")
    if not mdct.MIN_HOP_LOG2 <= d.hop_log2 <= mdct.MAX_HOP_LOG2:
        raise StreamError("declared MDCT hop is invalid")
    if d.stereo not in (STEREO_NONE, STEREO_MID_SIDE) or (d.stereo == STEREO_MID_SIDE and d.channels != 2):
        raise StreamError("declared stereo coding is invalid")
    if not 1 <= d.segment or d.segment * d.hop > MAX_PLANE:
        raise StreamError("declared segment length is invalid")
    return d


@dataclass
class AudioHeader:
    """The parsed, checked parts of a latent audio stream (any version from 4): descriptor and every plane's body."""

    descriptor: AudioLatentDescriptor
    bodies: list[Body]  # segment by segment, channel by channel within a segment

    def planes(self) -> Iterator[tuple[int, int, Body]]:
        """(rows, columns, body) of every plane, in stream order."""
        d = self.descriptor
        it = iter(self.bodies)
        for a, b in d.segments():
            for _ in range(d.channels):
                yield b - a, d.hop, next(it)


def _prefix(data: bytes) -> tuple[AudioLatentDescriptor, int]:
    desc, end = read_prefix(data, VERSIONS, MODALITY_AUDIO, "latent audio")
    return unpack(desc, data[4]), end


def read_header(data: bytes) -> AudioHeader:
    """Parse and check every plane's config and table before anything is decoded."""
    d, pos = _prefix(data)
    end = len(data) - 4
    planes = d.segment_count * d.channels
    if planes * (LatentConfig.SIZE + 4) > end - pos:
        raise StreamError("stream is truncated (fewer bytes than its planes need)")
    bodies = []
    for a, b in d.segments():
        for _ in range(d.channels):
            body, pos = read_body(data, pos, end, (b - a, d.hop), 1, data[4])
            bodies.append(body)
    if pos != end:
        raise StreamError("payload length does not match the stream size")
    return AudioHeader(d, bodies)


def work(data: bytes) -> tuple[int, float, float]:
    """Samples, the most multiply-adds per sample of any plane, and in all (header only).

    A plane's work is its networks' per coefficient plus the inverse MDCT (about
    ``4 log2(2 hop)`` per sample with an FFT); a coefficient decodes one sample.
    """
    h = read_header(data)
    d = h.descriptor
    imdct = 4.0 * (d.hop_log2 + 1)
    per_plane = [(body.config.mac_per_pixel(1) + imdct, rows * cols) for rows, cols, body in h.planes()]
    return (d.frames * d.channels, max(m for m, _ in per_plane), sum(m * n for m, n in per_plane))


def info(data: bytes) -> list[tuple[str, str]]:
    """What ``nxcodec info`` shows of an audio stream, from its header."""
    h = read_header(data)
    d = h.descriptor
    samples, macs, total = work(data)
    configs = sorted({describe_config(b.config) for b in h.bodies})
    return [("signal", d.describe()), ("rate", f"{audiofile.rate(d, len(data)):.2f} kbps (whole file)"),
            ("planes", f"{len(h.bodies)} ({', '.join(str(b.size) for b in h.bodies[:8])} bytes"
                       f"{', ...' if len(h.bodies) > 8 else ''})"),
            ("parameters", str(sum(math.prod(shape) for b in h.bodies for shape, *_ in b.table.values()))),
            *(("model", c) for c in configs),
            ("decoder", f"{total / samples:.0f} multiply-adds per sample")]


def plane_values(body: Body, rows: int, cols: int) -> np.ndarray:
    """One plane's decoded coefficients ``(rows, cols)``, synthesized in binary64 (SPEC.md 10.3)."""
    tensors, grids = decode_body(body, (rows, cols))
    return synthesize(grids, float_synthesis(tensors), 1, np.float64)[0].reshape(rows, cols)


def plane_digest(body: Body, rows: int, cols: int) -> str:
    """SHA-256 of one plane's decoded integers (as :func:`nxcodec.latent.stream.digest`)."""
    return digest(*decode_body(body, (rows, cols)))


def unmix(planes: list[np.ndarray], stereo: int) -> list[np.ndarray]:
    """Left and right from mid and side (``(m + s) / sqrt 2``, ``(m - s) / sqrt 2``), else unchanged."""
    if stereo != STEREO_MID_SIDE:
        return planes
    m, s = planes
    return [(m + s) / math.sqrt(2.0), (m - s) / math.sqrt(2.0)]


def mix(channels: list[np.ndarray], stereo: int) -> list[np.ndarray]:
    """Mid and side from left and right (the inverse of :func:`unmix`, also orthonormal)."""
    if stereo != STEREO_MID_SIDE:
        return channels
    left, right = channels
    return [(left + right) / math.sqrt(2.0), (left - right) / math.sqrt(2.0)]


class Joiner:
    """Samples from planes, segment by segment in clip order, as the decoder joins them (SPEC.md 10.3).

    Each channel keeps its inverse MDCT's half frame between segments, so only one
    segment's planes and samples are held at a time. The encoder joins its fitted planes
    with the same code.
    """

    def __init__(self, d: AudioLatentDescriptor) -> None:
        self.d = d
        self.inverse = [mdct.Inverse(d.hop) for _ in range(d.channels)]
        self.done = 0

    def push(self, planes: list[np.ndarray]) -> np.ndarray:
        """The next segment's samples ``(n, channels)`` in float64 from its ``channels`` planes (stream order)."""
        planes = unmix([np.asarray(c, dtype=np.float64) for c in planes], self.d.stereo)
        block = np.stack([inv.push(c) for inv, c in zip(self.inverse, planes)], axis=1)
        block = block[: self.d.frames - self.done]
        self.done += len(block)
        return block


def decode_blocks(header: AudioHeader) -> Iterator[np.ndarray]:
    """The clip's samples ``(n, channels)`` in float64, one segment at a time, in order."""
    d = header.descriptor
    joiner = Joiner(d)
    planes = header.planes()
    for _ in range(d.segment_count):
        yield joiner.push([plane_values(body, rows, cols) for rows, cols, body in (next(planes) for _ in range(d.channels))])


@dataclass
class DecodedClip:
    """A decoded clip that is not held in memory: :meth:`blocks` decodes it segment by segment as it is read,
    so writing it to a file takes one segment's memory however long the clip."""

    header: AudioHeader

    def blocks(self) -> Iterator[np.ndarray]:
        """The samples ``(n, channels)`` on the sample format's grid, a segment at a time."""
        fmt = self.header.descriptor.sample_format
        for block in decode_blocks(self.header):
            yield audiofile.quantize_samples(block, fmt)

    def array(self) -> np.ndarray:
        """The whole clip ``(frames, channels)``, as :meth:`blocks`."""
        d = self.header.descriptor
        out = np.empty((d.frames, d.channels), dtype=audiofile.sample_dtype(d.sample_format))
        pos = 0
        for block in self.blocks():
            out[pos : pos + len(block)] = block
            pos += len(block)
        return out


def decode_streamed(data: bytes) -> tuple[AudioLatentDescriptor, DecodedClip]:
    """A latent audio stream to its descriptor and a :class:`DecodedClip` (header checked, nothing decoded yet)."""
    header = read_header(data)
    return header.descriptor, DecodedClip(header)


def decode(data: bytes) -> tuple[AudioLatentDescriptor, np.ndarray]:
    """A latent audio stream to its descriptor and samples ``(frames, channels)`` on the format's grid."""
    d, clip = decode_streamed(data)
    return d, clip.array()


def write(d: AudioLatentDescriptor, bodies: list[bytes]) -> bytes:
    """A version 11 audio stream from its descriptor and the bodies of its planes (written as version 11 bodies), in
    stream order."""
    if len(bodies) != d.segment_count * d.channels:
        raise ValueError("one body per segment and channel is needed")
    desc = pack(d)
    return with_crc(PREFIX.pack(MAGIC, VERSION, MODALITY_AUDIO, len(desc)) + desc + b"".join(bodies))
