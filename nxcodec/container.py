"""Reading and writing ``.nxc`` streams, the format that bitstream/SPEC.md defines.

A stream is a header (magic, version, modality, the signal's descriptor), one or more
sections (each a network: model config, a table of per-tensor quantization parameters
and the range-coded payload of its integer weights), and a CRC32 of everything before
it. An image is one section; a long signal can be cut into windows, a section each. The
reader checks every declared size against fixed limits before it allocates anything.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from nxcodec import entropy, limits
from nxcodec.entropy import LaplacePrior
from nxcodec.errors import StreamError
from nxcodec.model import ModelConfig, tensor_shapes
from nxcodec.steps import MAX_STEP_CODE, QuantizedTensor

MAGIC = b"\x89NXC"
VERSION = 2  # 2 adds audio (modality 2) and shape (modality 3) streams; version 1 (images) is still read
NEWEST = 12  # versions 3 to 12 (latent grids) have their own body: nxcodec.latent
MODALITIES_OF_VERSION = {1: (1,), 2: (1, 2, 3)}
MAX_WIDTH = 1024  # any layer
MAX_EXPERTS = 64
MAX_DEPTH = 16
MAX_PARAMETERS = 1 << 22
MAX_DESCRIPTOR = 1024
MAX_SECTIONS = 4096
MAX_TOTAL_PARAMETERS = 1 << 24

_PREFIX = struct.Struct("<4sBBH")  # magic, version, modality, descriptor length
_TENSOR = struct.Struct("<BhhhH")  # step code, lo, hi, mu, decay
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


@dataclass
class Section:
    """One network of a stream: its config and its quantized weights."""

    config: ModelConfig
    tensors: "OrderedDict[str, QuantizedTensor]"


@dataclass
class Stream:
    """A decoded (or to-be-encoded) stream: what it is and the networks that represent it."""

    modality: int
    descriptor: bytes
    sections: list[Section]


@dataclass
class Layout:
    """Byte sizes of the parts of a stream, for ``nxcodec info`` (section parts summed)."""

    total: int
    header: int
    descriptor: int
    n_sections: int = 0
    config: int = 0
    tensor_table: int = 0
    payload: int = 0
    parameters: int = 0
    crc: int = 4
    table_work: int = 0  # cost of building the frequency tables (limits.table_work), before any is built


def describe_config(cfg: ModelConfig) -> str:
    """One line for a network: experts, encoder, manager, input encoding."""
    encoding = f"Fourier ({cfg.n_freq} frequencies)" if cfg.encoding else "raw coordinates"
    return (f"{cfg.n_experts} experts of {cfg.expert_depth}x{cfg.expert_width}, encoder {cfg.enc_depth}x{cfg.enc_width}, "
            f"manager {cfg.mgr_enc_depth}+{cfg.mgr_depth}x{cfg.mgr_width}, input {encoding}, w0 {cfg.w0_first}, "
            f"{cfg.parameter_count()} parameters")


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
    if not 1 <= len(stream.sections) <= MAX_SECTIONS:
        raise ValueError("a stream holds 1 to 4096 sections")
    out = bytearray(_PREFIX.pack(MAGIC, VERSION, stream.modality, len(stream.descriptor)))
    out += stream.descriptor
    out += _U16.pack(len(stream.sections))
    for section in stream.sections:
        if list(tensor_shapes(section.config)) != list(section.tensors):
            raise ValueError("tensors do not match the model config")
        out += section.config.pack()
        for qt in section.tensors.values():
            p = qt.prior
            out += _TENSOR.pack(qt.code, p.lo, p.hi, p.mu, p.decay)
        tensors = list(section.tensors.values())
        payload = entropy.encode([qt.ints for qt in tensors], [qt.prior for qt in tensors])
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


def _read_prefix(data: bytes) -> tuple[_Reader, int, bytes, int]:
    """Magic, version, CRC, descriptor and section count, in the order SPEC.md requires."""
    r = _Reader(data)
    if len(data) < _PREFIX.size or data[:4] != MAGIC:
        raise StreamError("not an nxcodec stream (bad magic)")
    _, version, modality, desc_len = r.unpack(_PREFIX)
    if version > NEWEST:
        raise StreamError(f"stream version {version} is newer than this nxcodec reads (up to {NEWEST}); upgrade nxcodec")
    if version >= 3:
        raise StreamError(f"a version {version} stream holds latent grids, not network sections (decode it with "
                          f"nxcodec.decoder)")
    if version < 1:
        raise StreamError(f"unknown stream version {version}")
    if len(data) < _PREFIX.size + 4 or zlib.crc32(memoryview(data)[:-4]) != _U32.unpack(data[-4:])[0]:
        raise StreamError("stream is corrupt or truncated (CRC mismatch)")
    if modality not in MODALITIES_OF_VERSION[version]:
        raise StreamError(f"a version {version} stream cannot hold modality {modality}")
    if desc_len > MAX_DESCRIPTOR:
        raise StreamError("descriptor too long")
    descriptor = r.take(desc_len)
    (n_sections,) = r.unpack(_U16)
    if not 1 <= n_sections <= MAX_SECTIONS:
        raise StreamError(f"invalid number of sections ({n_sections})")
    return r, modality, descriptor, n_sections


def _read_section_header(r: _Reader) -> tuple[ModelConfig, list[tuple[int, LaplacePrior]], int]:
    try:
        cfg = ModelConfig.unpack(r.take(ModelConfig.SIZE))
    except (ValueError, struct.error) as exc:
        raise StreamError(f"invalid model config: {exc}") from None
    check_config(cfg)
    table = []
    for name in tensor_shapes(cfg):
        code, lo, hi, mu, decay = r.unpack(_TENSOR)
        if code > MAX_STEP_CODE:
            raise StreamError(f"invalid step code for {name}")
        try:
            table.append((code, LaplacePrior(lo, hi, mu, decay)))
        except ValueError as exc:
            raise StreamError(f"invalid prior for {name}: {exc}") from None
    (length,) = r.unpack(_U32)
    if length % 4 or r.pos + length + 4 > len(r.data):
        raise StreamError("payload length does not match the stream size")
    return cfg, table, length


def read_header(data: bytes) -> tuple[int, bytes, list, Layout]:
    """Modality, descriptor, each section's config and the part sizes, without decoding weights.

    A latent image stream (version 3, 4, 6, 9, 11 or 12 with modality 1) has one config (its
    ``LatentConfig``) and no sections; a latent audio stream is refused here (it has
    planes, not sections: ``nxcodec.latent.audio.read_header`` reads it).
    """
    from nxcodec.latent import stream as latent_stream

    if len(data) > 5 and data[:4] == MAGIC and data[4] in latent_stream.IMAGE_VERSIONS and data[5] == 1:
        h = latent_stream.read_header(data)
        layout = Layout(len(data), h.sizes["header"], h.sizes["descriptor"], config=h.sizes["config"],
                        tensor_table=h.sizes["tensor_table"], payload=h.sizes["payload"],
                        parameters=sum(math.prod(shape) for shape, *_ in h.body.table.values()))
        return 1, data[_PREFIX.size : _PREFIX.size + h.sizes["descriptor"]], [h.config], layout
    r, modality, descriptor, n_sections = _read_prefix(data)
    layout = Layout(len(data), _PREFIX.size, len(descriptor), n_sections)
    configs = []
    for _ in range(n_sections):
        cfg, table, length = _read_section_header(r)
        r.take(length)
        configs.append(cfg)
        layout.config += ModelConfig.SIZE
        layout.tensor_table += len(table) * _TENSOR.size
        layout.payload += 4 + length
        layout.parameters += cfg.parameter_count()
        layout.table_work += sum(limits.table_work(p.size, max(p.mu - p.lo, p.hi - p.mu), p.decay) for _, p in table)
    _check_end(r, layout.parameters)
    if layout.table_work > limits.MAX_TABLE_WORK:
        raise StreamError("the stream's frequency tables exceed the decoder's limits")
    return modality, descriptor, configs, layout


def _check_end(r: _Reader, parameters: int) -> None:
    if r.pos + 4 != len(r.data):
        raise StreamError("stream has bytes beyond its last section")
    if parameters > MAX_TOTAL_PARAMETERS:
        raise StreamError("stream has more parameters than the decoder allows")


def read(data: bytes) -> Stream:
    """Parse and entropy-decode a stream; any defect raises :class:`StreamError`."""
    read_header(data)  # validates every size before anything is decoded
    r, modality, descriptor, n_sections = _read_prefix(data)
    sections = []
    for _ in range(n_sections):
        cfg, table, length = _read_section_header(r)
        payload = r.take(length)
        shapes = tensor_shapes(cfg)
        sizes = [math.prod(s) for s in shapes.values()]
        try:
            ints = entropy.decode(payload, sizes, [p for _, p in table])
        except Exception as exc:  # constriction reports a malformed payload in several ways
            raise StreamError(f"payload does not decode: {exc}") from None
        tensors: OrderedDict[str, QuantizedTensor] = OrderedDict()
        for (name, shape), (code, prior), q in zip(shapes.items(), table, ints):
            if q.size and (q.min() < prior.lo or q.max() > prior.hi):
                raise StreamError(f"decoded weights of {name} fall outside their declared range")
            tensors[name] = QuantizedTensor(code, prior, q.reshape(shape))
        sections.append(Section(cfg, tensors))
    return Stream(modality, descriptor, sections)
