"""One writer per output: an exclusive lock beside the output, held for the whole run.

The lock is `flock` on a small file beside the output (`pred.zarr.p.znnx-lock`) holding the
holder's PID, host and start time. The kernel drops a `flock` when its holder exits, however it
dies (SIGKILL included), so a lock left behind by a dead process is free to take and is taken over
(the summary says whose it was); a live holder makes a second run fail at once, naming the process.
The holder unlinks the file while still holding it, and a taker checks that the file it locked is
still the one at the path, so two racing runs never both believe they hold it. Within one process
the lock nests (`infer_volume` takes it before compiling, so a second run is refused before it
spends time tuning; the runner it calls takes it again): the outermost release frees it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from znnx.errors import StorageError
from znnx.volume.storage import Location, lock_path


class OutputLock:
    """The held lock; `previous` describes a dead holder whose lock was taken over (else None)."""

    _held: ClassVar[dict[Path, list[OutputLock]]] = {}

    def __init__(self, path: Path, fd: int, previous: dict[str, Any] | None) -> None:
        self.path, self._fd, self.previous = path, fd, previous

    @classmethod
    def acquire(cls, path: Path, output: str) -> OutputLock:
        key = path.absolute()
        if key in cls._held:
            outer = cls._held[key][0]
            nested = cls(path, -1, outer.previous)
            cls._held[key].append(nested)
            return nested
        lock = cls._take(path, output)
        cls._held[key] = [lock]
        return lock

    @classmethod
    def _take(cls, path: Path, output: str) -> OutputLock:
        while True:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise StorageError(f"volume: cannot create the lock {path} of output {output}: {error}; choose a "
                                   f"writable output location") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
                raise StorageError(
                    f"volume: output {output} is being written by process {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')} (since {since}; lock {path}); only one run may write an output: "
                    f"wait for that run to finish or stop it, then rerun this command to resume") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder unlinked it between our open and our lock
                os.close(fd)
                continue
            previous = _read(fd) or None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.time()}).encode(), 0)
            return cls(path, fd, previous)

    def note(self) -> str | None:
        """What the summary says about a taken-over lock."""
        if self.previous is None:
            return None
        return (f"lock: took over the lock of process {self.previous.get('pid', '?')} on host "
                f"{self.previous.get('host', '?')}, which ended without releasing it (a crash or kill)")

    def release(self) -> None:
        holders = self._held.get(self.path.absolute(), [])
        if self in holders:
            holders.remove(self)
        if self._fd < 0:
            return
        self._held.pop(self.path.absolute(), None)
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def writing(output: Location) -> Iterator[list[str]]:
    """Hold the lock of `output` while the block runs (an array in memory has none); the list it
    yields holds the note on a dead holder's lock that was taken over, for the run's summary."""
    if output.kind == "array":
        yield []
        return
    lock = OutputLock.acquire(lock_path(output), str(output))
    try:
        note = lock.note()
        yield [] if note is None else [note]
    finally:
        lock.release()
