"""Is a file-backed store still the file we serve? Cheap checks for D6.

A backing file can change under a running daemon: truncated (``truncate -s``,
a careless ``cp``), unlinked (``rm``, a log rotation gone wrong) or its
filesystem full. Reads past the end of a truncated file return nothing, and
zeros are not data; writes to an unlinked file land in an inode nobody can
reach after the daemon stops. Detecting that on every command would cost the
datapath a syscall, so the device actor asks here once a second (one
``fstat``) and the store itself notices short reads; what is wrong is
returned as a sentence for the log and the device's ``last_error``.
"""

from __future__ import annotations

import logging
import os
import stat
import time

#: seconds between two fstat checks of a backing file
CHECK_INTERVAL = 1.0
#: at most one warning per device and kind of trouble within this many seconds
WARN_INTERVAL = 10.0


def file_problem(fd: int, path: str, expected_size: int) -> str | None:
    """What is wrong with the open backing file ``fd``, or None.

    Unlinked: its inode has no name left (``st_nlink == 0``), so every write
    would vanish when the daemon stops. Truncated: it holds fewer bytes than
    the device reports, so reads past its end would be zeros."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        return f"backing file {path}: fstat failed: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return None  # a block device cannot be truncated or unlinked under us
    if st.st_nlink == 0:
        return f"backing file {path} was deleted while served (writes would be lost)"
    if st.st_size < expected_size:
        return (
            f"backing file {path} was truncated while served: {st.st_size} bytes, "
            f"the device has {expected_size}"
        )
    return None


class RateLimitedWarning:
    """Log a WARNING at most once per ``interval`` seconds, counting the rest."""

    def __init__(self, logger: logging.Logger, interval: float = WARN_INTERVAL) -> None:
        self._log = logger
        self._interval = interval
        self._last = -interval
        self._suppressed = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        self._last, self._suppressed = now, 0
        self._log.warning(message + more, *args)
