"""What every modality provides: reading, its coordinate grid, writing and metrics.

A modality is one module under ``nxcodec/signals/`` with a :class:`Modality` subclass;
the codec, the container and the CLI only talk to this interface, so adding a kind of
signal adds a module rather than branches across the code.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from nxcodec.errors import InputError

if TYPE_CHECKING:  # torch is needed to fit and to evaluate networks, not to describe a signal
    import torch

    from nxcodec.fit.losses import LossFn

DECODE_CHUNK = 1 << 16
Field = Callable[["torch.Tensor"], "torch.Tensor"]  # a section's network: coordinates (n, d) -> outputs (n, channels)


def psnr_from_mse(mse: float, peak: float) -> float:
    """PSNR in dB of an MSE on values whose full range is ``peak``; infinite for a lossless result."""
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def evaluate(field: Field, coords: "torch.Tensor", device: "torch.device") -> np.ndarray:
    """The field's float outputs at ``coords``, in chunks so memory stays bounded, in the field's own precision.

    A decoded network's binary64 outputs are rounded to samples from binary64, not
    through binary32 (SPEC.md section 7).
    """
    import torch

    with torch.no_grad():
        return _evaluate(field, coords, device)


def _evaluate(field: Field, coords: "torch.Tensor", device: "torch.device") -> np.ndarray:
    parts = [field(coords[a : a + DECODE_CHUNK].to(device)).cpu().numpy() for a in range(0, len(coords), DECODE_CHUNK)]
    return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)


@dataclass
class Signal:
    """A signal ready to fit: its descriptor (what the decoder needs to know) and samples."""

    descriptor: Any
    data: np.ndarray


class Modality(ABC):
    """One kind of signal (image, audio, shape)."""

    id: int
    name: str
    extensions: tuple[str, ...]
    rate_unit: str  # "bpp" or "kbps"
    coord_dim: int  # dimensions of the coordinate grid
    default_extension: str  # what ``decode`` writes when no output is named
    decode_options: tuple[str, ...] = ()  # names of the decode-time options ``reconstruct`` takes
    formats: tuple[int, ...] = (2,)  # stream versions the encoder can write
    latent_format: int | None = None  # the version this modality's latent-grid streams are written as

    def default_format(self, descriptor: Any) -> int:
        """The stream version written for this signal when the user does not choose one."""
        return 2

    def check_format(self, descriptor: Any, version: int) -> None:
        """Raise ``InputError`` if the signal cannot be written as stream ``version`` (all can, unless overridden)."""

    def encode_latent(self, signals_: list["Signal"], opts: Any) -> list[Any]:
        """Fit and code signals as latent-grid streams (``latent_format``): one ``EncodeResult`` each."""
        raise NotImplementedError(f"{self.name} has no latent-grid format")

    @property
    def loss(self) -> "LossFn":
        """What fitting minimises, per network of a stack: the gate-weighted squared error by default."""
        from nxcodec.fit.losses import gated_mse

        return gated_mse

    @property
    def output_extensions(self) -> tuple[str, ...]:
        """The file types ``decode`` may write (the first is the default)."""
        return (self.default_extension,)

    @abstractmethod
    def sniff(self, data: bytes) -> str | None:
        """The extension a file of this kind holding ``data`` would have (from its first bytes, or its size), or
        None if it is not one: how ``nxcodec encode -`` tells what standard input holds."""

    @abstractmethod
    def read(self, path: Path) -> Signal:
        """Read a file; raise :class:`nxcodec.errors.InputError` with a clear message if unusable."""

    @abstractmethod
    def from_array(self, array: np.ndarray) -> Signal:
        """Wrap an in-memory array (the Python API)."""

    @abstractmethod
    def pack_descriptor(self, descriptor: Any) -> bytes:
        """The descriptor's bytes in the stream."""

    @abstractmethod
    def unpack_descriptor(self, data: bytes) -> Any:
        """Parse and bound-check a descriptor; raise :class:`nxcodec.errors.StreamError` if invalid."""

    @abstractmethod
    def channels(self, descriptor: Any) -> int:
        """Number of output values per coordinate."""

    @abstractmethod
    def num_samples(self, descriptor: Any) -> int:
        """Number of coordinates on the decode grid."""

    def sections(self, descriptor: Any) -> list[tuple[int, int]]:
        """Ranges of samples (grid order) that each get a network of their own: all in one by default."""
        return [(0, self.num_samples(descriptor))]

    def decode_points(self, descriptor: Any, **options: Any) -> list[int]:
        """How many coordinates each section's network is evaluated at when decoding (an upper bound)."""
        return [b - a for a, b in self.sections(descriptor)]

    def decoded_samples(self, descriptor: Any) -> int:
        """Samples the decoded signal holds in memory (an image's pixels, an audio clip's frames x channels)."""
        return self.num_samples(descriptor)

    @abstractmethod
    def coords(self, descriptor: Any, start: int, stop: int) -> torch.Tensor:
        """Coordinates of samples ``start:stop`` (within one section), in [-1, 1]^d.

        Decoding asks for chunks, so memory stays bounded for any signal size.
        """

    @abstractmethod
    def targets(self, signal: Signal) -> torch.Tensor:
        """The samples to fit, ``(num_samples, channels)`` in [-1, 1], in grid order."""

    def training_set(self, signal: Signal, targets: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinates and targets that section ``start:stop`` is fitted to: by default its grid.

        ``targets`` is :meth:`targets` of the signal, computed once for all sections.
        """
        return self.coords(signal.descriptor, start, stop), targets[start:stop]

    def predict(self, descriptor: Any, field: Field, start: int, stop: int, device: torch.device) -> np.ndarray:
        """A section's network on grid samples ``start:stop``, as stored samples, chunk by chunk."""
        parts = []
        for a in range(start, stop, DECODE_CHUNK):
            coords = self.coords(descriptor, a, min(a + DECODE_CHUNK, stop))
            parts.append(self.to_samples(descriptor, evaluate(field, coords, device)))
        return np.concatenate(parts)

    def reconstruct(self, descriptor: Any, fields: list[Field], device: torch.device, **options: Any) -> Any:
        """The decoded signal from each section's network: by default each on its range of the grid.

        ``options`` are decode-time choices (see :attr:`decode_options`); a modality that takes
        none refuses them.
        """
        if options:
            raise InputError(f"{self.name} streams take no decode option {', '.join(sorted(options))}")
        parts = [self.predict(descriptor, f, a, b, device) for f, (a, b) in zip(fields, self.sections(descriptor))]
        return self.assemble(descriptor, np.concatenate(parts))

    @abstractmethod
    def to_samples(self, descriptor: Any, values: np.ndarray) -> np.ndarray:
        """Network outputs ``(n, channels)`` in [-1, 1] to stored samples (elementwise, chunk by chunk)."""

    @abstractmethod
    def assemble(self, descriptor: Any, samples: np.ndarray) -> np.ndarray:
        """All samples in grid order ``(num_samples, channels)`` into the signal's own array.

        The grid is the modality's own: a modality whose sections overlap in the signal
        (audio windows) lists overlapping samples once per section and joins them here.
        """

    @abstractmethod
    def write(self, descriptor: Any, array: np.ndarray, path: Path) -> None:
        """Write a decoded array to ``path`` (the caller makes this atomic)."""

    def write_as(self, descriptor: Any, array: Any, path: Path, suffix: str) -> None:
        """Write in the format the output name's ``suffix`` asks for; ``path`` may be a temporary name."""
        self.write(descriptor, array, path)

    @abstractmethod
    def metrics(self, original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
        """Quality of ``decoded`` against ``original`` (both as this modality's arrays)."""

    def summary(self, metrics: dict[str, float]) -> str:
        """The headline quality of :meth:`metrics`, for the encoder's one-line report."""
        return f"PSNR {metrics['psnr']:.2f} dB"

    @abstractmethod
    def rate(self, descriptor: Any, n_bytes: int) -> float:
        """The rate of a stream of ``n_bytes`` in this modality's unit (header included)."""

    @abstractmethod
    def bits_allowed(self, descriptor: Any, rate: float) -> float:
        """The whole-file size in bits that a rate target in this modality's unit allows."""

    @abstractmethod
    def describe(self, descriptor: Any) -> str:
        """One line for ``nxcodec info``."""
