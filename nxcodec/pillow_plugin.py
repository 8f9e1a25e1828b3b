"""Pillow reads ``.nxc`` image streams: ``Image.open("photo.nxc")`` after ``import nxcodec``.

Opening reads the stream's header (size and mode, no decoding); the pixels are decoded by
:func:`nxcodec.decode` when Pillow first needs them (``load()``, ``convert()``, ``np.asarray``),
as with Pillow's own formats. A stream of another kind (audio, a shape) or a corrupt one
is not identified, so Pillow raises its usual ``UnidentifiedImageError``. Pillow finds
plugins only by import (it has no entry points for them), hence the import in
``nxcodec/__init__.py``. This module imports nothing heavy until a stream is opened.
"""

from __future__ import annotations

from PIL import Image, ImageFile

MAGIC = b"\x89NXC"  # the first bytes of every stream (bitstream/SPEC.md)
FORMAT = "NXC"
MODES = {(1, 8): "L", (2, 8): "LA", (3, 8): "RGB", (4, 8): "RGBA", (1, 16): "I;16"}  # (channels, bits) -> mode


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == MAGIC


class NxcImageFile(ImageFile.ImageFile):
    """An ``.nxc`` image stream, opened by Pillow."""

    format = FORMAT
    format_description = "nxcodec neural image stream"

    def _open(self) -> None:
        from nxcodec import signals
        from nxcodec.container import read_header
        from nxcodec.errors import NxcError

        assert self.fp is not None
        data = self.fp.read()
        try:
            modality_id, descriptor, _, _ = read_header(data)
            modality = signals.for_id(modality_id)
            if modality.name != "image":
                raise SyntaxError(f"an nxcodec {modality.name} stream, not an image")
            d = modality.unpack_descriptor(descriptor)
        except NxcError as exc:
            raise SyntaxError(str(exc)) from None
        self._mode = MODES[(d.channels, d.bit_depth)]
        self._size = (d.width, d.height)
        self.tile = [(FORMAT, (0, 0, d.width, d.height), 0, None)]  # decoded at load()


class NxcDecoder(ImageFile.PyDecoder):
    """Decodes a whole stream through :func:`nxcodec.decode` (no partial decoding)."""

    _pulls_fd = True

    def decode(self, buffer: bytes) -> tuple[int, int]:
        from nxcodec.api import decode
        from nxcodec.errors import NxcError

        assert self.fd is not None
        try:
            array = decode(self.fd.read())
        except NxcError as exc:
            raise OSError(str(exc)) from None
        self.set_as_raw(array.astype("<u2" if array.dtype.itemsize == 2 else "u1").tobytes())
        return -1, 0


def register() -> None:
    """Make Pillow open ``.nxc`` image streams (done on ``import nxcodec``)."""
    Image.register_open(FORMAT, NxcImageFile, _accept)
    Image.register_decoder(FORMAT, NxcDecoder)
    Image.register_extension(FORMAT, ".nxc")


register()
