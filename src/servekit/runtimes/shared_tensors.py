"""Tensors between the server and a model's own process: bytes in shared memory, small
descriptors on the pipe.

One ``SharedRegion`` per model process: a file that lives in memory only (``memfd_create`` on
Linux, so it never counts against a container's small ``/dev/shm``; an unlinked temporary file
elsewhere), opened by the server and inherited by the child, both mapping it. A call's layout:

    [ inputs, each at a 64-byte aligned offset, from 0 ][ outputs, from where the inputs end ]

The server writes the inputs and sends their descriptors; the model's process reads them in
place (no copy), runs the model and writes its outputs after the inputs (never over them: an
output may be a view of an input); the server copies the outputs out. Whichever side needs
more room grows the file (never shrinks it: it keeps the size of the largest batch seen) and
every message carries the size, so the other side maps the new size before it reads.

Arrays under ``INLINE_BELOW_BYTES``, and BYTES (object) arrays, travel pickled inside the
message instead. Measured (benchmarks/results/isolation.md): up to about 4 KiB both ways cost
the same (the call's fixed cost dominates); from 8 KiB the region wins, by 4x at 1 MiB and
40x or more at 4 MiB, where a pickle through the pipe takes milliseconds.

Guarantees:

- ``unpack(pack(arrays))`` gives arrays equal in dtype (byte order included), shape and values;
- ``unpack(..., copy=True)`` returns arrays that own their memory; ``copy=False`` returns
  writable views that are valid only until the region is written again (the next call).
"""

from __future__ import annotations

import math
import mmap
import os
import sys
import tempfile
from typing import Any, Final, NamedTuple

import numpy as np

from servekit.types import Arrays

__all__ = ["ALIGNMENT", "INLINE_BELOW_BYTES", "Packed", "SharedArray", "SharedRegion"]

ALIGNMENT: Final = 64
INLINE_BELOW_BYTES: Final = 4 * 1024
_GROWTH_STEP: Final = 1024 * 1024


class SharedArray(NamedTuple):
    """Where one array lies in the region: what travels on the pipe instead of its bytes (a tuple:
    it pickles several times faster than a dataclass)."""

    offset: int
    dtype: str  # numpy's dtype.str: kind, size and byte order ("<f4", "|b1")
    shape: tuple[int, ...]


# name -> the array itself (pickled with the message) or where it lies in the region
Packed = dict[str, "np.ndarray[Any, Any] | SharedArray"]


def _aligned(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _create_memory_file() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("servekit-tensors")  # close-on-exec; handed to the child explicitly
    with tempfile.TemporaryFile(prefix="servekit-tensors-") as unlinked:
        return os.dup(unlinked.fileno())


class SharedRegion:
    """One memory file mapped by the server and by one model process (one call at a time)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._map: mmap.mmap | None = None

    @classmethod
    def create(cls) -> SharedRegion:
        return cls(_create_memory_file())

    def fileno(self) -> int:
        return self._fd

    @property
    def size(self) -> int:
        """Bytes mapped here (the file may already be larger: see ``follow``)."""
        return 0 if self._map is None else len(self._map)

    def follow(self, size: int) -> None:
        """Map ``size`` bytes, which the other side has made the file's size."""
        if size > self.size:
            self._remap(size)

    def reserve(self, needed: int) -> None:
        """Make the file (and this mapping) at least ``needed`` bytes, growing it by half or more."""
        if needed <= self.size:
            return
        current = os.fstat(self._fd).st_size
        if needed > current:
            wanted = max(needed, current + current // 2)
            wanted = -(-wanted // _GROWTH_STEP) * _GROWTH_STEP
            os.ftruncate(self._fd, wanted)
            if hasattr(os, "posix_fallocate") and sys.platform.startswith("linux"):
                # Take the memory now: a full tmpfs then fails here (an error) rather than with SIGBUS later.
                os.posix_fallocate(self._fd, current, wanted - current)
            current = wanted
        self._remap(current)

    def _remap(self, size: int) -> None:
        # The old mapping is dropped, not closed: views of it (a call's inputs) keep it alive
        # until they go, and closing a mapping with live views raises.
        self._map = mmap.mmap(self._fd, size)

    def pack(self, arrays: Arrays, start: int = 0) -> tuple[Packed, int]:
        """Write the large arrays from offset ``start``; returns their descriptors (small ones
        inline) and the offset where the next writer may start."""
        packed: Packed = {}
        layout: list[tuple[str, np.ndarray[Any, Any], int]] = []
        end = start
        for name, value in arrays.items():
            array = np.asarray(value)
            if array.dtype.hasobject or array.nbytes < INLINE_BELOW_BYTES:
                packed[name] = array
                continue
            offset = _aligned(end)
            layout.append((name, array, offset))
            end = offset + array.nbytes
        if layout:
            self.reserve(end)
        for name, array, offset in layout:
            target = self._view(offset, array.dtype, array.shape)
            np.copyto(target, array, casting="no")
            packed[name] = SharedArray(offset, array.dtype.str, array.shape)
        return packed, end

    def unpack(self, packed: Packed, *, copy: bool) -> Arrays:
        """The arrays of ``pack``: copies (``copy``) or views valid until the next write."""
        arrays: Arrays = {}
        for name, value in packed.items():
            if isinstance(value, SharedArray):
                view = self._view(value.offset, np.dtype(value.dtype), value.shape)
                arrays[name] = view.copy() if copy else view
            else:
                arrays[name] = value
        return arrays

    def _view(self, offset: int, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
        if self._map is None or offset + dtype.itemsize * math.prod(shape) > len(self._map):
            raise ValueError(f"shared tensor at {offset} ({dtype}, {shape}) lies past the mapped {self.size} bytes")
        return np.ndarray(shape, dtype=dtype, buffer=self._map, offset=offset)

    def close(self) -> None:
        """Unmap (when no view is left) and close the file; the memory goes with the last user."""
        self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
