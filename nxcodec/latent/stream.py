"""Latent image streams (versions 3, 6, 9, 11 and 12): layout, limits and the whole decoder (bitstream/SPEC.md 9,
12, 15, 17, 18).

After the common prefix (magic, version, modality 1, the image descriptor) a stream
holds a latent config, a tensor table, and one rANS payload with every network integer
followed by every latent residual. Version 6 adds escapes, which code a residual beyond
its table's range instead of clamping it, version 9 finer latent tables, version 11 a compact tensor table, and
version 12 the raster context (a config flag: one context model over the latents before each one, in tiles);
audio and shapes share this body. :func:`walk_latents` is the decode order, shared by
the encoder (which chooses the residuals) and the decoder (which reads them), so the two
cannot disagree on a context, a mean or a table.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np

from nxcodec.errors import StreamError
from nxcodec.latent import builtin, context, rans, tables
from nxcodec.latent.context import (N_CONTEXT_RASTER, FixedLayer, Positions, RasterGrid, centres_and_tables,
                                    context_sizes, level_sizes, max_levels, pass_positions, predict, predict_raster)
from nxcodec.latent.synthesis import Synthesis, synthesize
from nxcodec.signals import imagefile
from nxcodec.signals.imagefile import ImageDescriptor
from nxcodec.steps import MAX_STEP_CODE, dequantize

MAGIC = b"\x89NXC"
VERSION = 12  # what latent images are written as (SPEC.md section 18; audio: nxcodec.latent.audio, shapes: .shape)
LATENT_VERSION = 3  # the first version with latent-grid bodies (SPEC.md 9)
ESCAPE_VERSION = 6  # the first version whose residuals may escape their table's range
FINE_VERSION = 9  # the first version with the finer scale tables (SPEC.md 15)
COMPACT_VERSION = 11  # the first version with the compact tensor table (SPEC.md 17)
RASTER_VERSION = 12  # the first version whose bodies may have the raster context (SPEC.md 18)
IMAGE_VERSIONS = (3, 4, 6, 9, 11, 12)
MODALITY_IMAGE = 1
PREFIX = struct.Struct("<4sBBH")
_TENSOR = struct.Struct("<BhhhH")  # step code, lo, hi, mu, decay
_COMPACT_HEAD = struct.Struct("<BH")  # step code, decay; then mu, mu - lo, hi - mu as varints (version 11)
MAX_VARINT_BYTES = 3  # a compact entry's numbers are below 2**16, so 3 bytes of 7 bits hold any of them
_U32 = struct.Struct("<I")
CONTEXT_MODELS = ("arm_a.", "arm_b.", "arm.")  # tensors of the context models, which code the latents and nothing else
FIXED_POINT = (*CONTEXT_MODELS, "manager.")  # tensors evaluated in fixed point: power-of-two steps
FLAG_BUILTIN_CONTEXT = 1  # config flag (version 8 shapes): the context models are built in, not coded
FLAG_RASTER_CONTEXT = 2  # config flag (version 12, 2-D): one context model in raster order within tiles (SPEC.md 18)
MAX_MAC_PER_PIXEL = 1 << 14


@dataclass(frozen=True)
class LatentConfig:
    """Sizes of the latent pyramid and of the networks (10 bytes in the stream)."""

    levels: int  # grids at 1:1 .. 1:2**(levels-1)
    arm_width: int  # hidden width of the context models (two, or one with the raster context)
    arm_layers: int  # hidden layers of each context model
    n_experts: int  # K synthesis experts
    mgr_width: int  # hidden width of the manager (0 when K = 1)
    syn_width: int  # hidden width of each expert
    syn_layers: int  # hidden layers of each expert
    refine_width: int  # channels of the 3x3 refinement (0: none)
    lanes_log2: int  # the rANS coder interleaves 2**lanes_log2 states
    flags: int = 0  # FLAG_BUILTIN_CONTEXT (version 8 shapes) or FLAG_RASTER_CONTEXT (version 12); 0 before 8

    _FORMAT = struct.Struct("<10B")
    SIZE = _FORMAT.size

    @property
    def builtin_context(self) -> bool:
        """The context models are the built-in ones (:mod:`nxcodec.latent.builtin`), not coded in the stream."""
        return bool(self.flags & FLAG_BUILTIN_CONTEXT)

    @property
    def raster_context(self) -> bool:
        """One context model reads the latents before each one in raster order within tiles (SPEC.md 18)."""
        return bool(self.flags & FLAG_RASTER_CONTEXT)

    def pack(self) -> bytes:
        return self._FORMAT.pack(*(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def unpack(cls, data: bytes) -> "LatentConfig":
        return cls(*cls._FORMAT.unpack(data))

    def check(self, shape: tuple[int, ...], channels: int) -> None:
        """Refuse sizes beyond the spec's limits for latents of ``shape`` (a plane's rows and columns, or a
        volume's three sides), before anything is allocated. Volumes have no 3x3 refinement."""
        ok = (1 <= self.levels <= max_levels(shape) and (len(shape) == 2 or self.refine_width == 0)
              and 1 <= self.arm_width <= 64 and self.arm_layers <= 3 and 1 <= self.n_experts <= 16
              and (self.mgr_width == 0) == (self.n_experts == 1) and self.mgr_width <= 64
              and 1 <= self.syn_width <= 64 and self.syn_layers <= 3 and self.refine_width <= 16
              and self.lanes_log2 <= 8 and self.flags in (0, FLAG_BUILTIN_CONTEXT, FLAG_RASTER_CONTEXT)
              and (len(shape) == 2 or not self.raster_context))
        if self.builtin_context:  # the built-in models are 3-D and of one size
            ok = ok and len(shape) == 3 and (self.arm_width, self.arm_layers) == (builtin.WIDTH, builtin.LAYERS)
        if not ok:
            raise StreamError("latent config is outside the decoder's limits")
        if len(shape) == 2 and self.mac_per_pixel(channels) > MAX_MAC_PER_PIXEL:
            raise StreamError("the stream's networks exceed the decoder's limit on work per pixel")

    def tensor_shapes(self, channels: int, dims: int = 2) -> "OrderedDict[str, tuple[int, ...]]":
        """Name and shape of every coded tensor, in stream order (SPEC.md 9.3; 11.3 for ``dims`` = 3, whose
        features are interpolated without a learned filter)."""
        shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()

        def mlp(prefix: str, fan_in: int, width: int, layers: int, out: int, experts: int = 0) -> None:
            lead = (experts,) if experts else ()
            for i in range(layers):
                shapes[f"{prefix}.{i}.weight"] = (*lead, fan_in, width)
                shapes[f"{prefix}.{i}.bias"] = (*lead, width)
                fan_in = width
            shapes[f"{prefix}.out.weight"] = (*lead, fan_in, out)
            shapes[f"{prefix}.out.bias"] = (*lead, out)

        n_a, n_b = context_sizes(dims)
        if self.raster_context:
            mlp("arm", N_CONTEXT_RASTER, self.arm_width, self.arm_layers, 2)
        elif not self.builtin_context:
            mlp("arm_a", n_a, self.arm_width, self.arm_layers, 2)
            mlp("arm_b", n_b, self.arm_width, self.arm_layers, 2)
        if self.n_experts > 1:
            mlp("manager", self.levels, self.mgr_width, 1, self.n_experts)
        if dims == 2:
            shapes["upsample"] = (4,)
        mlp("experts", self.levels, self.syn_width, self.syn_layers, channels, self.n_experts)
        if self.refine_width:
            r = self.refine_width
            shapes.update({"refine.0.weight": (r, channels, 3, 3), "refine.0.bias": (r,),
                           "refine.1.weight": (channels, r, 3, 3), "refine.1.bias": (channels,)})
        return shapes

    def mac_per_pixel(self, channels: int) -> float:
        """Multiply-adds per decoded pixel: context model (per latent, times latents per pixel),
        manager, one expert, refinement, upsampling."""
        shapes = self.tensor_shapes(channels)

        def macs(prefix: str) -> int:
            return sum(math.prod(s[-2:]) for n, s in shapes.items() if n.startswith(prefix) and n.endswith("weight"))

        latents_per_pixel = sum(4.0**-l for l in range(self.levels))
        arm = (macs("arm.") if self.raster_context else (macs("arm_a.") + macs("arm_b.")) / 2) * latents_per_pixel
        expert = macs("experts.")
        refine = 9 * 2 * channels * self.refine_width
        upsample = 8 * sum(l for l in range(self.levels))  # two 4-tap passes per doubling, about one sample each
        return arm + macs("manager.") + expert + refine + upsample


@dataclass
class CodedTensor:
    """One network tensor as stored: step code, prior parameters and integers."""

    code: int
    lo: int
    hi: int
    mu: int
    decay: int
    ints: np.ndarray  # int64, the tensor's shape

    def table(self) -> np.ndarray:
        return tables.weight_table(self.lo, self.hi, self.mu, self.decay)

    def values(self) -> np.ndarray:
        return dequantize(self.ints, self.code)


@dataclass
class LatentImage:
    """Everything a version 3 stream decodes to before synthesis."""

    descriptor: ImageDescriptor
    config: LatentConfig
    tensors: "OrderedDict[str, CodedTensor]"
    grids: list[np.ndarray]  # int64 latent values with context.FRAC_BITS fractional bits, finest first

    def digest(self) -> str:
        return digest(self.tensors, self.grids)


def digest(tensors: "OrderedDict[str, CodedTensor]", grids: list[np.ndarray]) -> str:
    """SHA-256 of decoded integers (tensors in stream order, then grids finest first), as int64 LE."""
    h = hashlib.sha256()
    for t in tensors.values():
        h.update(np.ascontiguousarray(t.ints, dtype="<i8").tobytes())
    for g in grids:
        h.update(np.ascontiguousarray(g, dtype="<i8").tobytes())
    return h.hexdigest()


def fixed_layers(tensors: "OrderedDict[str, CodedTensor]", prefix: str) -> list[FixedLayer]:
    """The fixed-point layers of one network (``arm_a``, ``arm_b``, ``manager``) from its tensors."""
    names = [n[: -len(".weight")] for n in tensors if n.startswith(prefix + ".") and n.endswith(".weight")]
    return [FixedLayer(tensors[f"{n}.weight"].ints, tensors[f"{n}.bias"].ints, tensors[f"{n}.weight"].code // 4,
                       tensors[f"{n}.bias"].code // 4) for n in names]


def context_models(config: LatentConfig, tensors: "OrderedDict[str, CodedTensor]") -> list[list[FixedLayer]]:
    """The context models in the order the walk uses them: pass A's and pass B's (the stream's, or the built-in ones
    its config names), or the raster context's one."""
    if config.raster_context:
        return [fixed_layers(tensors, "arm")]
    if config.builtin_context:
        return [builtin.layers("arm_a"), builtin.layers("arm_b")]
    return [fixed_layers(tensors, "arm_a"), fixed_layers(tensors, "arm_b")]


def float_synthesis(tensors: "OrderedDict[str, CodedTensor]") -> Synthesis:
    """The float networks, dequantized."""
    def layers(prefix: str) -> list[tuple[np.ndarray, np.ndarray]]:
        names = [n[: -len(".weight")] for n in tensors if n.startswith(prefix) and n.endswith(".weight")]
        return [(tensors[f"{n}.weight"].values(), tensors[f"{n}.bias"].values()) for n in names]

    return Synthesis(tensors["upsample"].values(), layers("experts."), layers("refine."), fixed_layers(tensors, "manager"))


Residuals = Callable[[int, Positions, np.ndarray, np.ndarray], np.ndarray]


def scales_of(version: int) -> tables.ScaleSet:
    """The latent tables of a stream version's two-pass bodies: the finer set from version 9 on."""
    return tables.FINE if version >= FINE_VERSION else tables.COARSE


def latent_tables(version: int, config: LatentConfig) -> tables.ScaleSet:
    """The latent tables of a body: per scale and phase of the mean with the raster context, else per scale."""
    return tables.PHASED if config.raster_context else scales_of(version)


def walk_latents(config: LatentConfig, shape: tuple[int, ...], nets: list[list[FixedLayer]], residuals: Residuals,
                 scales: tables.ScaleSet, masks: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Build the grids of latents of ``shape`` in decode order, coarsest first: pass A then pass B (SPEC.md 9.6), or
    with the raster context, step by step (SPEC.md 18).

    At each pass or step the context model gives every latent a centre (fixed point) and a table (one of
    ``scales``, :func:`latent_tables`); ``residuals(level, positions, centre, table)`` supplies the integer
    residuals (the encoder chooses them, the decoder reads them), and a latent's value is
    ``residual * 2**FRAC_BITS + centre``. In two passes the centre is the predicted mean and the table its
    scale's; in raster order the centre is the integer nearest the mean, and the table that of its scale and of
    the phase of the mean. With ``masks`` (one bool array per grid, version 7 and 8 shapes), only the positions a
    mask keeps are coded; the others stay 0.
    """
    if config.raster_context:
        return _walk_raster(config, shape, nets[0], residuals, scales)
    arm_a, arm_b = nets
    sizes = level_sizes(shape, config.levels)
    grids: list[np.ndarray] = [np.zeros(0)] * config.levels
    coarser = None
    for level in range(config.levels - 1, -1, -1):
        grid = np.zeros(sizes[level], dtype=np.int64)
        for parity, net in ((0, arm_a), (1, arm_b)):
            pos = pass_positions(sizes[level], parity)
            if masks is not None:
                pos = tuple(p[masks[level][pos]] for p in pos)
            if pos[0].size == 0:
                continue
            mu, scale = predict(net, grid, coarser, pos, parity, scales.n)
            grid[pos] = residuals(level, pos, mu, scale) * context.ONE + mu
        grids[level] = coarser = grid
    return grids


def _walk_raster(config: LatentConfig, shape: tuple[int, ...], net: list[FixedLayer], residuals: Residuals,
                 phased: tables.PhasedSet) -> list[np.ndarray]:
    """:func:`walk_latents` with the raster context: every grid in its steps (SPEC.md 18.3)."""
    sizes = level_sizes(shape, config.levels)
    grids: list[np.ndarray] = [np.zeros(0)] * config.levels
    coarser = None
    for level in range(config.levels - 1, -1, -1):
        grid = RasterGrid(sizes[level], coarser)
        for step in grid.steps():
            mu, scale = predict_raster(net, grid, step, phased.phase_counts.size)
            centre, table = centres_and_tables(mu, scale, phased.first, phased.phase_counts)
            grid.put(step.place, residuals(level, step.pos, centre, table) * context.ONE + centre)
        grids[level] = coarser = grid.grid()
    return grids


def pack_entry(code: int, lo: int, hi: int, mu: int, decay: int, compact: bool) -> bytes:
    """One tensor table entry: 9 fixed bytes (SPEC.md 4), or, from version 11, the compact form (SPEC.md 17): step code
    and decay, then ``mu`` zigzagged, ``mu - lo`` and ``hi - mu`` as varints: 6 to 10 bytes, 6 for most tensors."""
    if not compact:
        return _TENSOR.pack(code, lo, hi, mu, decay)
    zigzag = 2 * mu if mu >= 0 else -2 * mu - 1
    return _COMPACT_HEAD.pack(code, decay) + _varint(zigzag) + _varint(mu - lo) + _varint(hi - mu)


def _varint(n: int) -> bytes:
    """A non-negative integer in the fewest 7-bit groups, low group first; every byte but the last has its high bit
    set."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A varint at ``data[pos:end]`` and where it ends: at most ``MAX_VARINT_BYTES``, in its shortest form."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos >= end:
            raise StreamError("stream is truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise StreamError("invalid tensor table entry (a number not in its shortest form)")
            return value, pos
    raise StreamError(f"invalid tensor table entry (a number longer than {MAX_VARINT_BYTES} bytes)")


def read_entry(data: bytes, pos: int, end: int, compact: bool) -> tuple[tuple[int, int, int, int, int], int]:
    """``(code, lo, hi, mu, decay)`` of the table entry at ``data[pos:end]`` and where it ends (values unchecked)."""
    if not compact:
        if pos + _TENSOR.size > end:
            raise StreamError("stream is truncated")
        return _TENSOR.unpack_from(data, pos), pos + _TENSOR.size
    if pos + _COMPACT_HEAD.size > end:
        raise StreamError("stream is truncated")
    code, decay = _COMPACT_HEAD.unpack_from(data, pos)
    zigzag, pos = _read_varint(data, pos + _COMPACT_HEAD.size, end)
    below, pos = _read_varint(data, pos, end)
    above, pos = _read_varint(data, pos, end)
    mu = zigzag >> 1 if zigzag % 2 == 0 else -(zigzag >> 1) - 1
    return (code, mu - below, mu + above, mu, decay), pos


def table_size(tensors: "OrderedDict[str, CodedTensor]", version: int) -> int:
    """Bytes the tensor table of ``tensors`` takes in a stream of ``version``."""
    compact = version >= COMPACT_VERSION
    return sum(len(pack_entry(t.code, t.lo, t.hi, t.mu, t.decay, compact)) for t in tensors.values())


@dataclass
class Body:
    """One coded plane as stored: its latent config, tensor table and rANS payload (SPEC.md 9.1)."""

    config: LatentConfig
    table: "OrderedDict[str, tuple[tuple[int, ...], int, int, int, int, int]]"  # shape, code, lo, hi, mu, decay
    payload: bytes | memoryview  # a decoded stream's is a view into it: its planes hold no copy of it
    escape: bool = True  # residuals at a table's edge are followed by escapes (version 6)
    scales: tables.ScaleSet = tables.FINE  # the latent tables (the finer set from version 9; latent_tables)
    table_size: int = 0  # bytes of the tensor table in the stream (9 per tensor before version 11)

    @property
    def size(self) -> int:
        """Bytes the body takes in the stream."""
        return LatentConfig.SIZE + self.table_size + 4 + len(self.payload)


def read_body(data: bytes, pos: int, end: int, shape: tuple[int, ...], channels: int, version: int
              ) -> tuple[Body, int]:
    """Parse and check the body of latents of ``shape`` at ``data[pos:end]`` of a stream of ``version``; returns it
    and where it ends. Whether its residuals carry escapes, which latent tables they use and how its tensor table
    is laid out follow from the version.

    The limits hold before anything is decoded: the config against the plane, every step
    code and prior, and the payload length against the bytes that are there.
    """
    if pos + LatentConfig.SIZE > end:
        raise StreamError("stream is truncated")
    config = LatentConfig.unpack(data[pos : pos + LatentConfig.SIZE])
    config.check(shape, channels)
    if config.raster_context and version < RASTER_VERSION:
        raise StreamError("latent config is outside the decoder's limits (a raster context before version 12)")
    pos += LatentConfig.SIZE
    start = pos
    table: OrderedDict = OrderedDict()
    for name, dims in config.tensor_shapes(channels, len(shape)).items():
        (code, lo, hi, mu, decay), pos = read_entry(data, pos, end, version >= COMPACT_VERSION)
        if code > MAX_STEP_CODE or (name.startswith(FIXED_POINT) and (code % 4 or code // 4 > context.MAX_SHIFT)):
            raise StreamError(f"invalid step code for {name}")
        try:
            tables.check_weight_prior(lo, hi, mu, decay)
        except ValueError as exc:
            raise StreamError(f"invalid prior for {name}: {exc}") from None
        table[name] = (dims, code, lo, hi, mu, decay)
    table_bytes = pos - start
    if pos + 4 > end:
        raise StreamError("stream is truncated")
    (length,) = _U32.unpack_from(data, pos)
    pos += 4
    if pos + length > end:
        raise StreamError("payload length exceeds the stream")
    payload = memoryview(data)[pos : pos + length]
    return Body(config, table, payload, version >= ESCAPE_VERSION, latent_tables(version, config), table_bytes), \
        pos + length


# The coder's models are the latent tables (``scales.n`` of them), then an escape's bit length (model
# ``scales.n``), the uniform tables of b bits (``scales.n + 1 + b``), then tensor t's table (``weight_model + t``).
def weight_model(scales: tables.ScaleSet) -> int:
    return scales.n + 2 + tables.ESCAPE_CHUNK


def _coder_tables(weight_tables: list[np.ndarray], scales: tables.ScaleSet) -> rans.Tables:
    """The coder's models: the latent scales, the escape tables, then each tensor's table."""
    return rans.Tables(scales.tables() + tables.escape_tables() + weight_tables)


def _escape_parts(k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For escapes of bit lengths ``k``: the bits under the leading one, which escapes have a high chunk, the
    bits of their low chunk, and which have one (SPEC.md 12)."""
    below = np.maximum(k - 1, 0)
    low = np.minimum(below, tables.ESCAPE_CHUNK)
    return below, below > tables.ESCAPE_CHUNK, low, low > 0


def escape_symbols(e: np.ndarray, first: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(symbols, models) that code the escapes ``e`` of one pass, in the order of SPEC.md 12: every bit length
    (model ``first``, the number of latent tables), then every high chunk, then every low chunk (the uniform
    table of b bits is model ``first + 1 + b``)."""
    k = tables.bit_length(e)
    below, high, low, has_low = _escape_parts(k)
    rest = e - np.where(k > 0, np.left_shift(1, below), 0)
    chunk = tables.ESCAPE_CHUNK
    return [(k, np.full(k.size, first, dtype=np.int64)),
            (rest[high] >> chunk, first + 1 + below[high] - chunk),
            (rest[has_low] & ((1 << low[has_low]) - 1), first + 1 + low[has_low])]


def read_escapes(decoder: rans.Decoder, n: int, first: int) -> np.ndarray:
    """Decode ``n`` escapes coded by :func:`escape_symbols` (``first``: the model of their bit lengths)."""
    k = decoder.decode(np.full(n, first, dtype=np.int64))
    below, high, low, has_low = _escape_parts(k)
    rest = np.zeros(n, dtype=np.int64)
    rest[high] = decoder.decode(first + 1 + below[high] - tables.ESCAPE_CHUNK) << tables.ESCAPE_CHUNK
    rest[has_low] += decoder.decode(first + 1 + low[has_low])
    return np.where(k > 0, np.left_shift(1, below) + rest, 0)


def split_residuals(q: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The residuals version 6 can code nearest to the integers ``q`` under tables of residual limit ``limit``:
    (residuals, their table symbols, the escapes of those at a table's edge, in order)."""
    most = limit + tables.MAX_ESCAPE
    r = np.clip(q, -most, most).astype(np.int64)
    symbol = np.clip(r, -limit, limit) + limit
    edge = np.abs(r) >= limit
    return r, symbol, np.abs(r[edge]) - limit[edge]


def decode_body(body: Body, shape: tuple[int, ...], masks: list[np.ndarray] | None = None
                ) -> tuple["OrderedDict[str, CodedTensor]", list[np.ndarray]]:
    """Entropy-decode one body into its integer tensors and latent grids (finest first, the finest of ``shape``;
    with ``masks``, only the latents they keep)."""
    scales = body.scales
    shift = weight_model(scales)
    weight_tables = [tables.weight_table(lo, hi, mu, decay) for _, _, lo, hi, mu, decay in body.table.values()]
    try:
        decoder = rans.Decoder(body.payload, _coder_tables(weight_tables, scales), 1 << body.config.lanes_log2)
        tensors: OrderedDict[str, CodedTensor] = OrderedDict()
        for t, (name, (dims, code, lo, hi, mu, decay)) in enumerate(body.table.items()):
            ints = decoder.decode(np.full(math.prod(dims), shift + t, dtype=np.int64)) + lo
            tensors[name] = CodedTensor(code, lo, hi, mu, decay, ints.reshape(dims))

        def read(level: int, pos: Positions, centre: np.ndarray, table: np.ndarray) -> np.ndarray:
            limit = scales.residual_limit(table)
            r = decoder.decode(table) - limit
            if body.escape:
                edge = np.abs(r) == limit
                if edge.any():  # a pass or step without escapes codes none (SPEC.md 12)
                    r[edge] += np.sign(r[edge]) * read_escapes(decoder, int(np.count_nonzero(edge)), scales.n)
            return r

        grids = walk_latents(body.config, shape, context_models(body.config, tensors), read, scales, masks)
        decoder.finish()
    except rans.CorruptStream as exc:
        raise StreamError(f"payload does not decode: {exc}") from None
    return tensors, grids


def write_body(config: LatentConfig, channels: int, tensors: "OrderedDict[str, CodedTensor]",
               latents: list[np.ndarray], version: int, dead_zone: float = 0.5,
               masks: list[np.ndarray] | None = None) -> tuple[bytes, list[np.ndarray]]:
    """Code one plane as a body of a stream of ``version`` (3 or later, in the latent tables and tensor table layout
    of that version): the encoder's float latents (in latent units, finest first) are quantized in decode order.

    A residual ``v`` becomes ``sign(v) * floor(|v| + 1 - dead_zone)`` (0.5: rounding; larger
    values give more zeros, a smaller file), clamped beyond the largest escape (version 6 on) or, before version 6,
    which has no escapes, to its table's edge. With ``masks``, only the latents they keep are coded (version 7 and 8
    shapes). Returns the body's bytes and the grids a decoder will rebuild from them.
    """
    if version < LATENT_VERSION or (config.raster_context and version < RASTER_VERSION):
        raise ValueError(f"version {version} bodies of this config are read, not written")
    scales = latent_tables(version, config)
    shape = latents[0].shape
    config.check(shape, channels)
    shapes = config.tensor_shapes(channels, len(shape))
    if list(shapes) != list(tensors) or any(tensors[n].ints.shape != s for n, s in shapes.items()):
        raise ValueError("tensors do not match the latent config")
    symbols, models = [], []
    shift = weight_model(scales)
    for t, qt in enumerate(tensors.values()):
        tables.check_weight_prior(qt.lo, qt.hi, qt.mu, qt.decay)
        symbols.append(qt.ints.ravel() - qt.lo)
        models.append(np.full(qt.ints.size, shift + t, dtype=np.int64))

    def choose(level: int, pos: Positions, centre: np.ndarray, table: np.ndarray) -> np.ndarray:
        target = latents[level][pos] * context.ONE
        limit = scales.residual_limit(table)
        v = (target - centre) / context.ONE
        q, symbol, escapes = split_residuals(np.sign(v) * np.floor(np.abs(v) + 1 - dead_zone), limit)
        if version < ESCAPE_VERSION:
            q, escapes = symbol - limit, escapes[:0]
        symbols.append(symbol)
        models.append(table)
        for sym, mod in escape_symbols(escapes, scales.n):
            symbols.append(sym)
            models.append(mod)
        return q

    grids = walk_latents(config, shape, context_models(config, tensors), choose, scales, masks)
    weight_tables = [qt.table() for qt in tensors.values()]
    payload = rans.encode(np.concatenate(symbols), np.concatenate(models), _coder_tables(weight_tables, scales),
                          1 << config.lanes_log2)
    out = bytearray(config.pack())
    for qt in tensors.values():
        out += pack_entry(qt.code, qt.lo, qt.hi, qt.mu, qt.decay, version >= COMPACT_VERSION)
    out += _U32.pack(len(payload)) + payload
    return bytes(out), grids


def check_crc(data: bytes) -> None:
    """The last four bytes are the CRC-32 of everything before them."""
    if len(data) < 4 or zlib.crc32(memoryview(data)[:-4]) != _U32.unpack(data[-4:])[0]:
        raise StreamError("stream is corrupt or truncated (CRC mismatch)")


def with_crc(data: bytes) -> bytes:
    return data + _U32.pack(zlib.crc32(data))


@dataclass
class Header:
    """The parsed, checked parts of a one-body stream (a version 3 image, a version 5 shape) that precede its
    payload; ``descriptor`` is the modality's."""

    descriptor: Any
    body: Body
    sizes: dict[str, int]

    @property
    def config(self) -> LatentConfig:
        return self.body.config


# --- images (modality 1) --------------------------------------------------------------------
def read_prefix(data: bytes, versions: tuple[int, ...], modality: int, what: str) -> tuple[bytes, int]:
    """Check a latent stream's magic, version, modality and CRC; its descriptor bytes and where they end."""
    if len(data) < PREFIX.size + 4 or data[:4] != MAGIC:
        raise StreamError("not an nxcodec stream (bad magic)")
    _, version, found, desc_len = PREFIX.unpack_from(data)
    if version not in versions or found != modality:
        raise StreamError(f"not a {what} stream")
    check_crc(data)
    end = PREFIX.size + desc_len
    if end > len(data) - 4:
        raise StreamError("stream is truncated")
    return data[PREFIX.size : end], end


def _prefix(data: bytes) -> tuple[ImageDescriptor, int]:
    desc, end = read_prefix(data, IMAGE_VERSIONS, MODALITY_IMAGE, "latent image")
    return imagefile.unpack(desc), end


def read_header(data: bytes) -> Header:
    """Parse and check everything but the payload: the limits hold before anything is decoded."""
    d, pos = _prefix(data)
    body, end = read_body(data, pos, len(data) - 4, (d.height, d.width), d.channels, data[4])
    if end != len(data) - 4:
        raise StreamError("payload length does not match the stream size")
    sizes = {"header": PREFIX.size, "descriptor": len(imagefile.pack(d)), "config": LatentConfig.SIZE,
             "tensor_table": body.table_size, "payload": 4 + len(body.payload), "crc": 4}
    return Header(d, body, sizes)


def work(data: bytes) -> tuple[int, float, float]:
    """Samples held (pixels, as section 1 counts them for every image), multiply-adds per pixel and in all that
    decoding the stream would take (header only)."""
    h = read_header(data)
    d = h.descriptor
    macs = h.config.mac_per_pixel(d.channels)
    return d.width * d.height, macs, macs * d.width * d.height


def describe_config(cfg: LatentConfig) -> str:
    """One line for a plane's networks: grids, context model, experts."""
    experts = f"{cfg.n_experts} experts (manager {cfg.mgr_width})" if cfg.n_experts > 1 else "1 expert"
    refine = f", 3x3 refinement of {cfg.refine_width} channels" if cfg.refine_width else ""
    arm = f"{cfg.arm_layers}x{cfg.arm_width}" + (" (built in)" if cfg.builtin_context else "") + (
        " in raster order" if cfg.raster_context else "")
    return (f"{cfg.levels} latent grids, context model {arm}, {experts} of "
            f"{cfg.syn_layers}x{cfg.syn_width}{refine}, {1 << cfg.lanes_log2} coder lanes")


def info(data: bytes) -> list[tuple[str, str]]:
    """What ``nxcodec info`` shows of an image stream, from its header."""
    h = read_header(data)
    d, cfg = h.descriptor, h.config
    return [("signal", imagefile.describe(d)),
            ("rate", f"{imagefile.rate(d, len(data)):.4f} bpp (whole file)"),
            ("bytes", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in h.sizes.items())),
            ("parameters", str(sum(math.prod(shape) for shape, *_ in h.body.table.values()))),
            ("model", describe_config(cfg)),
            ("decoder", f"{cfg.mac_per_pixel(d.channels):.0f} multiply-adds per pixel")]


def decode_latents(data: bytes) -> LatentImage:
    """Entropy-decode a latent image stream into its integer tensors and latent grids."""
    h = read_header(data)
    tensors, grids = decode_body(h.body, (h.descriptor.height, h.descriptor.width))
    return LatentImage(h.descriptor, h.config, tensors, grids)


def image_samples(d: ImageDescriptor, grids: list[np.ndarray], syn: Synthesis) -> tuple[np.ndarray, np.ndarray]:
    """The stored samples ``(H, W, C)`` of an image's latents and each pixel's expert ``(H, W)``: synthesized in
    binary32, or binary64 for 16 bits per sample, whose step binary32's rounding would move (SPEC.md 9.7)."""
    values, choice = synthesize(grids, syn, d.channels, np.float64 if d.bit_depth == 16 else np.float32)
    return imagefile.to_samples(d, values).reshape(d.height, d.width, d.channels), choice.reshape(d.height, d.width)


def reconstruct(image: LatentImage) -> tuple[np.ndarray, np.ndarray]:
    """The decoded image ``(H, W, C)`` and each pixel's expert ``(H, W)``."""
    return image_samples(image.descriptor, image.grids, float_synthesis(image.tensors))


def decode(data: bytes) -> tuple[ImageDescriptor, np.ndarray]:
    """A latent image stream to its descriptor and image array."""
    image = decode_latents(data)
    return image.descriptor, reconstruct(image)[0]


def write(d: ImageDescriptor, config: LatentConfig, tensors: "OrderedDict[str, CodedTensor]",
          latents: list[np.ndarray], dead_zone: float = 0.5) -> tuple[bytes, LatentImage]:
    """Code an image as a version 12 stream (see :func:`write_body`); returns it and what a decoder rebuilds."""
    if latents[0].shape != (d.height, d.width):
        raise ValueError("latents do not match the image")
    body, grids = write_body(config, d.channels, tensors, latents, VERSION, dead_zone)
    out = PREFIX.pack(MAGIC, VERSION, MODALITY_IMAGE, len(imagefile.pack(d))) + imagefile.pack(d) + body
    return with_crc(out), LatentImage(d, config, tensors, grids)
