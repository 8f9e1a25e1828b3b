"""Errors that reach the user as one line on stderr.

Every failure a user can cause (a bad path, an unreadable image, a corrupt or hostile
stream) is raised as an :class:`NxcError` subclass; the CLI prints its message and exits
with status 2. Anything else is a bug and keeps its traceback.
"""


class NxcError(Exception):
    """A user-facing failure with a message that stands on its own."""


class InputError(NxcError):
    """An input file that cannot be read or is not a supported signal."""


class StreamError(NxcError):
    """A ``.nxc`` stream that is corrupt, truncated, hostile or of an unknown version."""


class OutputError(NxcError):
    """An output that cannot be written, or would replace a file without ``--force``."""


class UsageError(NxcError, ValueError):
    """An option out of its range (a quality of 12, a negative rate, an unknown device).

    Also a ``ValueError``, which is what these failures raised before.
    """


class ResourceError(NxcError):
    """The machine ran out of something (GPU memory) for a valid request; the message says what to try."""
