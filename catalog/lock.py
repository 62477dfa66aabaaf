"""Locks that let several changecat processes share one catalog folder.

Two files in the catalog root, both locked with ``flock`` (the kernel drops a dead process's lock, so a
crashed holder never blocks the next run; the holder facts written inside are only for messages):

- ``.changecat.lock``: the write lock, held exclusively for the short moments a process switches an item
  folder, merges a collection or rewrites the root catalog. Waiters print who holds it and for how long.
- ``.changecat.runs``: held shared by every run for its whole life. Whoever can take it exclusively knows
  no other run is alive, so ``.staging-*`` folders and ``*.tmp`` files are leftovers of a crash and can go.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from generator.errors import CatalogLockedError, OutputError

LOCK_FILE = ".changecat.lock"
RUNS_FILE = ".changecat.runs"
LOCK_NOTE_AFTER_S = 2.0
"""A waiter says who holds the write lock once it has waited this long (critical sections take ms)."""
LOCK_TIMEOUT_S = 600.0
"""A write lock held longer than this by a live process means something is stuck: refuse, naming it."""
LOCK_POLL_S = 0.05

Note = Callable[[str], None]


def _holder_facts() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(path: Path) -> str:
    """Who wrote the lock file last ("pid 123 on host h, for 4 s"), for messages; never raises."""
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
        since = datetime.fromisoformat(str(facts["since"]))
        age = int((datetime.now(UTC) - since).total_seconds())
        pid, host = int(facts["pid"]), str(facts["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return "another changecat process"
    here = host == socket.gethostname()
    state = "" if not here or _pid_alive(pid) else " (no longer running; its lock is released)"
    return f"changecat pid {pid} on host {host}, held for {age} s{state}"


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the catalog's lock file ({exc.strerror or exc})") from exc


@contextmanager
def write_lock(root: Path, note: Note | None = None, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the catalog's write lock; wait (saying for whom) while another process holds it."""
    path = Path(root) / LOCK_FILE
    fd = _open(path)
    try:
        start, noted = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited > timeout_s:
                    raise CatalogLockedError(
                        f"catalog {root} is still locked after {int(waited)} s by {describe_holder(path)}; "
                        f"refusing to wait longer. If that process is stuck, stop it; the lock file is {path}"
                    ) from None
                if note and not noted and waited > LOCK_NOTE_AFTER_S:
                    note(f"catalog {root} is locked by {describe_holder(path)}; waiting …")
                    noted = True
                time.sleep(LOCK_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_facts()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class RunPresence:
    """A run's shared hold on ``.changecat.runs`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / RUNS_FILE
        self._fd: int | None = None

    def enter(self, on_alone: Callable[[], None]) -> None:
        """Join the runs of this catalog; call ``on_alone`` first if no other run is alive."""
        self._fd = _open(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            return
        try:
            on_alone()
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def leave(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def no_run_alive(root: Path) -> bool:
    """Whether no changecat run holds the catalog at ``root`` now (read-only check, for validate)."""
    path = Path(root) / RUNS_FILE
    if not path.is_file():
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
