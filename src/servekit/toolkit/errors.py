"""The toolkit's one error: something the user asked for cannot be done, said plainly.

    ToolkitError        a bad source, option or environment; the CLI prints the message and exits 1
    └── ParityError     the converted model's outputs differ from the source's past the tolerance
"""

from __future__ import annotations

__all__ = ["ParityError", "ToolkitError"]


class ToolkitError(Exception):
    """A failure to report to the user as is (no traceback): the message says what to do."""


class ParityError(ToolkitError):
    """The ONNX model answers differently from its source; nothing was written to the repository."""
