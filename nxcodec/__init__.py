"""nxcodec: a neural codec that overfits a mixture-of-experts network to each file."""

from nxcodec.api import decode, decode_file, encode, encode_file, info
from nxcodec.errors import InputError, NxcError, OutputError, StreamError
from nxcodec import pillow_plugin  # noqa: F401  (registers .nxc image streams with Pillow; imports no torch)
from nxcodec.limits import Limits

__version__ = "0.1.0"

__all__ = ["InputError", "Limits", "NxcError", "OutputError", "StreamError", "__version__", "decode", "decode_file",
           "encode", "encode_file", "info"]
