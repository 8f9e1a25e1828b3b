"""The container refuses every damaged or hostile stream with a StreamError, fast."""

import struct
import time
import zlib

import numpy as np
import pytest

from nxcodec import container
from nxcodec.codec import decode_stream
from nxcodec.errors import StreamError


def refuses(data: bytes) -> str:
    t0 = time.perf_counter()
    with pytest.raises(StreamError) as info:
        decode_stream(data)
    assert time.perf_counter() - t0 < 5
    return str(info.value)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_every_truncation_is_refused(rgb_stream):
    for n in list(range(0, 64)) + list(range(64, len(rgb_stream), max(1, len(rgb_stream) // 50))):
        refuses(rgb_stream[:n])


def test_random_bit_flips_are_refused(rgb_stream):
    rng = np.random.default_rng(0)
    for _ in range(200):
        data = bytearray(rgb_stream)
        for _ in range(rng.integers(1, 4)):
            i = rng.integers(0, len(data))
            data[i] ^= 1 << rng.integers(0, 8)
        if bytes(data) != rgb_stream:
            refuses(bytes(data))


def test_wrong_magic_and_newer_version_get_clear_messages(rgb_stream):
    assert "magic" in refuses(b"GIF89a" + rgb_stream[6:])
    newer = bytearray(rgb_stream)
    newer[4] = container.NEWEST + 1
    assert "newer" in refuses(with_crc(bytes(newer[:-4])))


def test_trailing_garbage_is_refused(rgb_stream):
    refuses(with_crc(rgb_stream[:-4] + b"\0\0\0\0"))


def test_hostile_sizes_with_a_valid_crc_are_refused_before_allocating(rgb_stream):
    body = bytearray(rgb_stream[:-4])
    huge = bytearray(body)
    struct.pack_into("<II", huge, 8, 65536, 65536)  # 4 gigapixels
    assert "limits" in refuses(with_crc(bytes(huge)))
    wide = bytearray(body)
    cfg_at = 8 + 10 + 2
    struct.pack_into("<H", wide, cfg_at + 8, 60000)  # enc_width
    refuses(with_crc(bytes(wide)))
    bad_payload_len = bytearray(body)
    stream = container.read(rgb_stream)
    at = 8 + 10 + 2 + 19 + 9 * len(stream.sections[0].tensors)
    struct.pack_into("<I", bad_payload_len, at, 0xFFFFFFF0)
    refuses(with_crc(bytes(bad_payload_len)))
    many_sections = bytearray(body)
    struct.pack_into("<H", many_sections, 8 + 10, 60000)
    assert "sections" in refuses(with_crc(bytes(many_sections)))
    two_sections = bytearray(body)
    struct.pack_into("<H", two_sections, 8 + 10, 2)
    refuses(with_crc(bytes(two_sections)))


def test_garbage_payload_with_valid_crc_is_refused_or_decodes_in_range(rgb_stream):
    stream = container.read(rgb_stream)
    at = 8 + 10 + 2 + 19 + 9 * len(stream.sections[0].tensors) + 4
    rng = np.random.default_rng(1)
    for _ in range(20):
        body = bytearray(rgb_stream[:-4])
        body[at:] = rng.integers(0, 256, len(body) - at, dtype=np.uint8).tobytes()
        try:
            decode_stream(with_crc(bytes(body)))
        except StreamError:
            pass
