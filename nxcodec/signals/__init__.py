"""The registry of signal kinds: one module per modality.

The modality modules (and torch, which fitting needs) are imported on first use, so
reading a stream's header or decoding a latent image stream does not load them.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nxcodec.errors import InputError, StreamError

if TYPE_CHECKING:
    from nxcodec.signals.base import Modality


_MODULES = {1: ("image", "ImageModality"), 2: ("audio", "AudioModality"), 3: ("shape", "ShapeModality")}


@lru_cache(maxsize=None)
def _load(modality_id: int) -> "Modality":
    module, cls = _MODULES[modality_id]
    return getattr(importlib.import_module(f"nxcodec.signals.{module}"), cls)()


def modalities() -> dict[int, "Modality"]:
    """Every modality, by the id streams use (imports all of them)."""
    return {i: _load(i) for i in _MODULES}


def _extensions() -> list[str]:
    """Every file extension the encoder reads, for messages."""
    return [e for m in modalities().values() for e in m.extensions]


def for_path(path: Path) -> "Modality":
    """The modality that reads files with this extension."""
    ext = Path(path).suffix.lower()
    for m in modalities().values():
        if ext in m.extensions:
            return m
    known = ", ".join(_extensions())
    raise InputError(f"{path}: unsupported file type '{ext or '(none)'}' (supported: {known})")


def for_bytes(data: bytes) -> tuple["Modality", str]:
    """The modality that reads a file holding ``data`` (standard input), and the extension such a file would have."""
    for m in modalities().values():
        ext = m.sniff(data)
        if ext is not None:
            return m, ext
    known = ", ".join(e for e in _extensions() if e != ".gltf")  # a .gltf's buffers are other files
    raise InputError(f"stdin: not a kind of file nxcodec reads (it reads {known})")


def for_id(modality_id: int) -> "Modality":
    """The modality a stream declares."""
    if modality_id in _MODULES:
        return _load(modality_id)
    raise StreamError(f"stream has unknown modality {modality_id}")


def for_name(name: str) -> "Modality":
    for m in modalities().values():
        if m.name == name:
            return m
    raise InputError(f"unknown modality '{name}'")


def __getattr__(name: str) -> Any:
    if name in ("Modality", "Signal"):
        from nxcodec.signals import base

        return getattr(base, name)
    if name == "MODALITIES":
        return modalities()
    raise AttributeError(f"module 'nxcodec.signals' has no attribute '{name}'")


__all__ = ["MODALITIES", "Modality", "Signal", "for_id", "for_name", "for_path", "modalities"]
