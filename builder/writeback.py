"""Keep a prepare's output from piling up in the page cache: write it back as it grows, then drop it.

A ``frames`` prepare writes about 245 KB of JPEG per 1320×1048 frame of the benchmark clips,
terabytes for the whole release, once and front to back; nothing reads it back while the prepare
runs. Linux otherwise keeps every written page cached until memory pressure evicts it (and
everything else with it), and each new page the writes need is one the kernel must find and clear.
Measured on the benchmark VM (BENCHMARKS.md): copying 245 KB into such fresh page-cache pages costs
0.65 ms of CPU, into pages dropped a moment earlier 0.15 ms, which is 4 % of a ``frames`` prepare's
CPU time. The same pattern as ``dd oflag=nocache`` or ``rsync --drop-cache``: start the write-back
of what was written, and once a range is on disk (its write-back started a step earlier, so the
wait is normally nil) advise the kernel to drop it. The last `KEEP_BYTES` of each file stay cached.

Linux only (``sync_file_range`` and ``posix_fadvise``); elsewhere, for output on remote filesystems,
or with ``RAT7M_PAGE_CACHE=keep`` in the environment, it does nothing. Failures are ignored: this is
only about speed, never about what is written.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os

logger = logging.getLogger(__name__)

#: The tail of each file left in the page cache (the writer may still be appending to it).
KEEP_BYTES = 64 << 20
#: ``sync_file_range`` flags (linux/fs.h).
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4
#: Set ``RAT7M_PAGE_CACHE=keep`` to leave the page cache alone.
ENVIRONMENT_VARIABLE = "RAT7M_PAGE_CACHE"


def _sync_file_range():
    """libc's ``sync_file_range``, or None where there is none (not Linux)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError, TypeError):  # TypeError: Windows has no "this process" library
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()


class PageCacheTrimmer:
    """Write back and drop from the page cache the files a writer is appending to.

    Args:
        pattern: a glob of the files (e.g. one `datasets` job's shard files,
            ``…/rat7m-train-00000-of-*.arrow`` with the shard number as ``*``).
        keep_bytes: the tail of each file left cached; None: `KEEP_BYTES`.

    Call `trim` from time to time while the files grow (after each table written); each call
    starts the write-back of what was appended since the last call and drops what lies more than
    ``keep_bytes`` before the end.
    """

    def __init__(self, pattern: str, keep_bytes: int | None = None):
        self._pattern = pattern
        self._keep_bytes = KEEP_BYTES if keep_bytes is None else keep_bytes
        self._done: dict[str, tuple[int, int]] = {}  # path → (bytes whose write-back started, bytes dropped)
        self.enabled = (
            _SYNC_FILE_RANGE is not None
            and hasattr(os, "posix_fadvise")
            and "://" not in pattern
            and os.environ.get(ENVIRONMENT_VARIABLE, "").lower() != "keep"
        )
        self.dropped_bytes = 0

    def trim(self) -> None:
        if not self.enabled:
            return
        for path in glob.glob(self._pattern):
            try:
                self._trim(path)
            except OSError as error:  # e.g. a filesystem without these calls: stop trying
                logger.debug("page cache trimming disabled for %s: %s", self._pattern, error)
                self.enabled = False
                return

    def _trim(self, path: str) -> None:
        started, dropped = self._done.get(path, (0, 0))
        descriptor = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(descriptor).st_size
            if size > started:
                self._call(descriptor, started, size - started, _WRITE)  # start, don't wait
            end = size - self._keep_bytes
            if end > dropped:
                # Started at least one call ago: normally on disk already, the wait is a formality.
                self._call(descriptor, dropped, end - dropped, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
                os.posix_fadvise(descriptor, dropped, end - dropped, os.POSIX_FADV_DONTNEED)
                self.dropped_bytes += end - dropped
                dropped = end
            self._done[path] = (max(size, started), dropped)
        finally:
            os.close(descriptor)

    @staticmethod
    def _call(descriptor: int, offset: int, length: int, flags: int) -> None:
        if _SYNC_FILE_RANGE(descriptor, offset, length, flags) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
