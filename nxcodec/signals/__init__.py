"""The registry of signal kinds: one module per modality."""

from __future__ import annotations

from pathlib import Path

from nxcodec.errors import InputError, StreamError
from nxcodec.signals.audio import AudioModality
from nxcodec.signals.base import Modality, Signal
from nxcodec.signals.image import ImageModality
from nxcodec.signals.shape import ShapeModality

MODALITIES: dict[int, Modality] = {m.id: m for m in (ImageModality(), AudioModality(), ShapeModality())}


def for_path(path: Path) -> Modality:
    """The modality that reads files with this extension."""
    ext = Path(path).suffix.lower()
    for m in MODALITIES.values():
        if ext in m.extensions:
            return m
    known = ", ".join(e for m in MODALITIES.values() for e in m.extensions)
    raise InputError(f"{path}: unsupported file type '{ext or '(none)'}' (supported: {known})")


def for_id(modality_id: int) -> Modality:
    """The modality a stream declares."""
    try:
        return MODALITIES[modality_id]
    except KeyError:
        raise StreamError(f"stream has unknown modality {modality_id}") from None


def for_name(name: str) -> Modality:
    for m in MODALITIES.values():
        if m.name == name:
            return m
    raise InputError(f"unknown modality '{name}'")


__all__ = ["MODALITIES", "Modality", "Signal", "for_id", "for_name", "for_path"]
