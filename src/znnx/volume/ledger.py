"""The resume ledger: which blocks of a run are finished, stored beside the output.

A text file: one JSON header line (format, the run's key, a readable description, block count),
then one finished block index per line. A block's index is appended (and fsynced) only after its
output was written and flushed, so a crash at any moment leaves every listed block complete; a
half-written block is not listed and is recomputed. A torn last line (a kill mid-write) is ignored
and cut off before the ledger is appended to again. The key hashes
everything that decides the output (model weights and graph, input, normalization, block layout,
output dtype), so a ledger is never applied to a different run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from znnx.errors import StorageError

FORMAT = "znnx-ledger"
VERSION = 1


def run_key(description: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


class Ledger:
    """Finished blocks of one run; `open` resumes a matching ledger or starts a new one."""

    def __init__(self, path: Path | None, done: set[int], handle: IO[str] | None) -> None:
        self.path = path
        self.done = done
        self._handle = handle

    @classmethod
    def in_memory(cls) -> Ledger:
        """A ledger kept nowhere (an output array in memory cannot outlive the process to be resumed)."""
        return cls(None, set(), None)

    @classmethod
    def read(cls, path: Path) -> tuple[dict[str, Any], set[int]]:
        """The header and finished block indices of an existing ledger."""
        lines = path.read_text().split("\n")
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            raise StorageError(f"ledger: {path} has no readable header; it is not a znnx ledger or it is "
                               f"damaged; delete it (and the output) to start over") from None
        if header.get("format") != FORMAT:
            raise StorageError(f"ledger: {path} is not a znnx ledger (format {header.get('format')!r})")
        return header, {int(line) for line in lines[1:-1] if line.strip().isdigit()}

    @classmethod
    def open(cls, path: Path, key: str, description: Mapping[str, Any], blocks: int) -> Ledger:
        """Resume the ledger at `path` if its key is `key`; refuse a ledger of another run."""
        if path.exists():
            header, done = cls.read(path)
            if header.get("key") != key:
                changed = sorted(k for k, v in description.items()
                                 if json.dumps(header.get("run", {}).get(k), default=str)
                                 != json.dumps(v, default=str))
                finished = len(done) >= int(header.get("blocks", -1))
                state = ("holds the finished output of a different run" if finished else
                         "already holds part of a different run")
                advice = "" if finished else "Rerun the original command to finish it, "
                raise StorageError(
                    f"ledger: the output {state} (ledger {path}); what differs: "
                    f"{', '.join(changed) or 'the model weights'}. {advice}pass --overwrite to replace it, or "
                    f"write to another output")
            _cut_torn_line(path)
            return cls(path, {d for d in done if d < blocks}, path.open("a"))
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("w")
        handle.write(json.dumps({"format": FORMAT, "version": VERSION, "key": key, "blocks": blocks,
                                 "run": dict(description)}, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
        return cls(path, set(), handle)

    def finish(self, index: int) -> None:
        """Record block `index` as written (call only after its output is flushed)."""
        if self._handle is not None:
            self._handle.write(f"{index}\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
        self.done.add(index)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _cut_torn_line(path: Path) -> None:
    """Drop a last line a kill cut short, so the next append starts on a line of its own."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
