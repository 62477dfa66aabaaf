"""File modes of what changecat writes: as a plain ``open()`` would make them (0666 less the umask).

Files are written under temporary names from ``tempfile.mkstemp`` (mode 0600, readable by their owner
only) and renamed into place; without a chmod, a web server running as another user answers 404 for them.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_FILE_MODE = 0o666
"""What ``open()`` asks for before the umask is applied."""


def current_umask() -> int:
    """The process umask; read from /proc on Linux (setting it to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_public(path: str | Path) -> None:
    """Give a temporary file the mode a plain ``open()`` would have given it."""
    os.chmod(path, DEFAULT_FILE_MODE & ~current_umask())
