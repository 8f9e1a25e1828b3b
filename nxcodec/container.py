"""Reading and writing ``.nxc`` streams, the format that bitstream/SPEC.md defines.

A stream is a header (magic, version, modality, the signal's descriptor, the model
config), a table of per-tensor quantization parameters, the range-coded payload of
integer weights, and a CRC32 of everything before it. The reader checks every declared
size against fixed limits before it allocates anything.
"""

from __future__ import annotations

import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from nxcodec import entropy
from nxcodec.entropy import LaplacePrior
from nxcodec.errors import StreamError
from nxcodec.model import ModelConfig, tensor_shapes
from nxcodec.quant import MAX_STEP_CODE, QuantizedTensor

MAGIC = b"\x89NXC"
VERSION = 1
MAX_WIDTH = 1024  # any layer
MAX_EXPERTS = 64
MAX_DEPTH = 16
MAX_PARAMETERS = 1 << 22
MAX_DESCRIPTOR = 1024

_PREFIX = struct.Struct("<4sBBH")  # magic, version, modality, descriptor length
_TENSOR = struct.Struct("<BhhhH")  # step code, lo, hi, mu, decay
_U32 = struct.Struct("<I")


@dataclass
class Stream:
    """A decoded (or to-be-encoded) stream: what it is, its network, and the quantized weights."""

    modality: int
    descriptor: bytes
    config: ModelConfig
    tensors: "OrderedDict[str, QuantizedTensor]"


@dataclass
class Layout:
    """Byte sizes of the sections of a stream, for ``nxcodec info``."""

    total: int
    header: int
    descriptor: int
    config: int
    tensor_table: int
    payload: int
    crc: int = 4


def check_config(cfg: ModelConfig) -> None:
    """Refuse a model config beyond the decoder's limits (before building anything)."""
    widths = (cfg.enc_width, cfg.expert_width, cfg.mgr_width)
    depths = (cfg.enc_depth, cfg.expert_depth, cfg.mgr_enc_depth, cfg.mgr_depth)
    if max(widths) > MAX_WIDTH or max(depths) > MAX_DEPTH or cfg.n_experts > MAX_EXPERTS:
        raise StreamError("model config exceeds the decoder's limits")
    if cfg.parameter_count() > MAX_PARAMETERS:
        raise StreamError("model has more parameters than the decoder allows")


def write(stream: Stream) -> bytes:
    """Serialise a stream to bytes."""
    if len(stream.descriptor) > MAX_DESCRIPTOR:
        raise ValueError("descriptor too long")
    shapes = tensor_shapes(stream.config)
    if list(shapes) != list(stream.tensors):
        raise ValueError("tensors do not match the model config")
    out = bytearray(_PREFIX.pack(MAGIC, VERSION, stream.modality, len(stream.descriptor)))
    out += stream.descriptor
    out += stream.config.pack()
    for qt in stream.tensors.values():
        p = qt.prior
        out += _TENSOR.pack(qt.code, p.lo, p.hi, p.mu, p.decay)
    payload = entropy.encode([qt.ints for qt in stream.tensors.values()], [qt.prior for qt in stream.tensors.values()])
    out += _U32.pack(len(payload)) + payload
    out += _U32.pack(zlib.crc32(out))
    return bytes(out)


class _Reader:
    """Bounds-checked sequential reads; running past the end is a truncated stream."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise StreamError("stream is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple:
        return fmt.unpack(self.take(fmt.size))


def _read_header(data: bytes) -> tuple[_Reader, int, bytes, ModelConfig, Layout]:
    r = _Reader(data)
    if len(data) < _PREFIX.size or data[:4] != MAGIC:
        raise StreamError("not an nxcodec stream (bad magic)")
    _, version, modality, desc_len = r.unpack(_PREFIX)
    if version > VERSION:
        raise StreamError(f"stream version {version} is newer than this nxcodec reads (up to {VERSION}); upgrade nxcodec")
    if version < 1:
        raise StreamError(f"unknown stream version {version}")
    if len(data) < _PREFIX.size + 4 or zlib.crc32(data[:-4]) != _U32.unpack(data[-4:])[0]:
        raise StreamError("stream is corrupt or truncated (CRC mismatch)")
    if desc_len > MAX_DESCRIPTOR:
        raise StreamError("descriptor too long")
    descriptor = r.take(desc_len)
    try:
        cfg = ModelConfig.unpack(r.take(ModelConfig.SIZE))
    except (ValueError, struct.error) as exc:
        raise StreamError(f"invalid model config: {exc}") from None
    check_config(cfg)
    n_tensors = len(tensor_shapes(cfg))
    layout = Layout(len(data), _PREFIX.size, desc_len, ModelConfig.SIZE, n_tensors * _TENSOR.size, 0)
    return r, modality, descriptor, cfg, layout


def read_header(data: bytes) -> tuple[int, bytes, ModelConfig, Layout]:
    """Modality, descriptor, model config and section sizes, without decoding the weights."""
    r, modality, descriptor, cfg, layout = _read_header(data)
    r.take(layout.tensor_table)
    (length,) = r.unpack(_U32)
    layout.payload = length
    return modality, descriptor, cfg, layout


def read(data: bytes) -> Stream:
    """Parse and entropy-decode a stream; any defect raises :class:`StreamError`."""
    r, modality, descriptor, cfg, _ = _read_header(data)
    shapes = tensor_shapes(cfg)
    table = []
    for name in shapes:
        code, lo, hi, mu, decay = r.unpack(_TENSOR)
        if code > MAX_STEP_CODE:
            raise StreamError(f"invalid step code for {name}")
        try:
            table.append((code, LaplacePrior(lo, hi, mu, decay)))
        except ValueError as exc:
            raise StreamError(f"invalid prior for {name}: {exc}") from None
    (length,) = r.unpack(_U32)
    if length % 4 or r.pos + length + 4 != len(data):
        raise StreamError("payload length does not match the stream size")
    payload = r.take(length)
    sizes = [_numel(s) for s in shapes.values()]
    try:
        ints = entropy.decode(payload, sizes, [p for _, p in table])
    except Exception as exc:  # constriction reports a malformed payload in several ways
        raise StreamError(f"payload does not decode: {exc}") from None
    tensors: OrderedDict[str, QuantizedTensor] = OrderedDict()
    for (name, shape), (code, prior), q in zip(shapes.items(), table, ints):
        if q.size and (q.min() < prior.lo or q.max() > prior.hi):
            raise StreamError(f"decoded weights of {name} fall outside their declared range")
        tensors[name] = QuantizedTensor(code, prior, q.reshape(shape))
    return Stream(modality, descriptor, cfg, tensors)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
