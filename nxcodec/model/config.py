"""The architecture of one Neural-Experts network, as recorded in every stream.

Nothing about the network's shape is fixed in code: the encoder picks a
:class:`ModelConfig` (from a quality preset or a rate target) and writes it into the
stream; the decoder rebuilds exactly that network from it.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from dataclasses import dataclass, fields

# Input encodings of the coordinates (the stream stores the integer).
ENCODING_SINE = 0  # raw coordinates into a SIREN first layer
ENCODING_FOURIER = 1  # [x, sin(2^i pi x), cos(2^i pi x)] for i < n_freq, then sine layers


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the expert encoder, the experts and the manager.

    ``enc_depth`` sine layers of width ``enc_width`` form the expert encoder shared by all
    experts. Each of the ``n_experts`` experts has ``expert_depth`` sine layers of width
    ``expert_width`` and a linear output layer. The manager has ``mgr_enc_depth`` sine
    layers of its own over the encoded coordinates, whose output is concatenated with
    the expert-encoder features, then ``mgr_depth`` sine layers of width ``mgr_width``
    and a linear layer to ``n_experts`` logits.
    """

    in_dim: int
    out_dim: int
    encoding: int
    n_freq: int
    w0_first: int
    w0_hidden: int
    enc_width: int
    enc_depth: int
    n_experts: int
    expert_width: int
    expert_depth: int
    mgr_width: int
    mgr_enc_depth: int
    mgr_depth: int

    _FORMAT = "<BBBBHH" + "HB" + "BHB" + "HBB"
    SIZE = struct.calcsize(_FORMAT)

    def __post_init__(self) -> None:
        if self.encoding not in (ENCODING_SINE, ENCODING_FOURIER):
            raise ValueError(f"unknown input encoding {self.encoding}")
        if self.encoding == ENCODING_SINE and self.n_freq != 0:
            raise ValueError("the sine encoding takes no Fourier frequencies")
        if not 1 <= self.in_dim <= 3 or not 1 <= self.out_dim <= 4:
            raise ValueError("coordinates must have 1-3 dimensions and outputs 1-4 channels")
        if self.n_experts < 1 or self.enc_depth < 1 or self.expert_depth < 0:
            raise ValueError("a network needs at least one expert and one encoder layer")
        if min(self.enc_width, self.expert_width) < 1 or self.w0_first < 1 or self.w0_hidden < 1:
            raise ValueError("layer widths and frequencies must be positive")
        if self.n_experts > 1 and self.mgr_width < 1:
            raise ValueError("a manager needs a positive width")
        if self.n_freq > 16:
            raise ValueError("at most 16 Fourier frequencies")

    @property
    def encoded_dim(self) -> int:
        """Width of the encoded coordinates fed to the first sine layers."""
        return self.in_dim * (1 + 2 * self.n_freq)

    def pack(self) -> bytes:
        """The config's bytes in the stream (see bitstream/SPEC.md, section "Model")."""
        return struct.pack(self._FORMAT, *(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def unpack(cls, data: bytes) -> "ModelConfig":
        """Inverse of :meth:`pack`; raises ``ValueError`` on values no network can have."""
        return cls(*struct.unpack(cls._FORMAT, data))

    def parameter_count(self) -> int:
        """Number of weights and biases, all of which are coded in the stream."""
        return sum(math.prod(shape) for shape in tensor_shapes(self).values())


def tensor_shapes(cfg: ModelConfig) -> "OrderedDict[str, tuple[int, ...]]":
    """Name and shape of every coded tensor, in stream order (bitstream/SPEC.md, "Tensors")."""
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    fan_in = cfg.encoded_dim
    for i in range(cfg.enc_depth):
        shapes[f"encoder.{i}.weight"] = (fan_in, cfg.enc_width)
        shapes[f"encoder.{i}.bias"] = (cfg.enc_width,)
        fan_in = cfg.enc_width
    k = cfg.n_experts
    for i in range(cfg.expert_depth):
        shapes[f"experts.{i}.weight"] = (k, fan_in, cfg.expert_width)
        shapes[f"experts.{i}.bias"] = (k, 1, cfg.expert_width)
        fan_in = cfg.expert_width
    shapes["experts.out.weight"] = (k, fan_in, cfg.out_dim)
    shapes["experts.out.bias"] = (k, 1, cfg.out_dim)
    if k > 1:
        fan_in = cfg.encoded_dim
        for i in range(cfg.mgr_enc_depth):
            shapes[f"manager_encoder.{i}.weight"] = (fan_in, cfg.mgr_width)
            shapes[f"manager_encoder.{i}.bias"] = (cfg.mgr_width,)
            fan_in = cfg.mgr_width
        fan_in = (fan_in if cfg.mgr_enc_depth else 0) + cfg.enc_width
        for i in range(cfg.mgr_depth):
            shapes[f"manager.{i}.weight"] = (fan_in, cfg.mgr_width)
            shapes[f"manager.{i}.bias"] = (cfg.mgr_width,)
            fan_in = cfg.mgr_width
        shapes["manager.out.weight"] = (fan_in, k)
        shapes["manager.out.bias"] = (k,)
    return shapes
