"""What a decoder may be asked to do, bounded before it does any of it (bitstream/SPEC.md section 1).

A stream declares its output size, its networks and its frequency tables in a few hundred
bytes; the cost of decoding follows from them. :func:`check` compares that cost with
:class:`Limits` right after the header and the section tables are parsed, before any
entropy decoding, network evaluation or output allocation, so a hostile stream is
refused in milliseconds. The defaults are the spec's limits; a service lowers them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from nxcodec.errors import InputError, StreamError
from nxcodec.model import ModelConfig, tensor_shapes

MAX_SAMPLES = 1 << 27  # decoded samples held in memory: an image's pixels, an audio clip's frames x channels
MAX_MACS = 1 << 20  # multiply-accumulates per evaluated point (one section's manager plus one expert)
MAX_WORK = 1 << 46  # MACs x evaluated points, over all sections
MAX_TABLE_WORK = 1 << 30  # cost of building the frequency tables (see table_work)
MAX_FACES = 1 << 26  # faces of a decoded shape (the per-resolution rule is stricter below resolution 1024)
TABLE_STEP = 16  # a step of the geometric loop costs about this many table entries


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one stream may make the decoder do; lower them to serve strangers' files."""

    max_samples: int = MAX_SAMPLES
    max_macs: int = MAX_MACS
    max_work: int = MAX_WORK
    max_table_work: int = MAX_TABLE_WORK
    max_faces: int = MAX_FACES

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"the decoding limit {f.name} must be a positive integer, not {value!r}")

    def lowered(self, **values: int | None) -> "Limits":
        """These limits with some of them lowered (None keeps one; a value above the spec's is capped)."""
        given = {k: min(v, getattr(self, k)) for k, v in values.items() if v is not None}
        return Limits(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **given})


def macs_per_sample(cfg: ModelConfig) -> int:
    """Weights and biases that the routed evaluation of one point uses.

    That is every tensor of the expert encoder and of the manager, and one expert's slice
    of each expert tensor: decoding evaluates only the expert a point is routed to.
    """
    total = 0
    for name, shape in tensor_shapes(cfg).items():
        size = math.prod(shape)
        total += size // cfg.n_experts if name.startswith("experts.") else size
    return total


def table_work(n: int, span: int, decay: int) -> int:
    """The cost of one tensor's frequency table (SPEC.md section 1), in table entries.

    ``n`` entries, plus ``TABLE_STEP`` per step of the geometric loop, which runs at most
    ``span + 1`` steps and, with ``m = 65536 - decay``, at most ``ceil(21 * 65536 / m)``
    (then the sequence counts down by one, filled at once). A one-value table costs nothing.
    """
    if n <= 1:
        return 0
    return n + TABLE_STEP * min(span + 1, -(-21 * 65536 // (65536 - decay)))


def check(configs: list[ModelConfig], points: list[int], samples: int, table: int, limits: Limits) -> None:
    """Refuse a stream whose decoding exceeds ``limits``, with one line that says which limit and by how much.

    ``points`` are the coordinates each section's network is evaluated at, ``samples`` the
    decoded signal's size in memory and ``table`` the stream's total :func:`table_work`.
    """
    if samples > limits.max_samples:
        raise StreamError(f"the stream decodes to {samples} samples, over the limit of {limits.max_samples}")
    macs = [macs_per_sample(c) for c in configs]
    if max(macs, default=0) > limits.max_macs:
        raise StreamError(f"the stream's network needs {max(macs)} multiply-adds per sample, "
                          f"over the limit of {limits.max_macs}")
    work = sum(m * p for m, p in zip(macs, points))
    if work > limits.max_work:
        raise StreamError(f"decoding the stream needs {work:.3g} multiply-adds, over the limit of "
                          f"{limits.max_work:.3g}")
    if table > limits.max_table_work:
        raise StreamError(f"the stream's frequency tables cost {table} entries to build, over the limit of "
                          f"{limits.max_table_work}")
