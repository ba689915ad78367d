"""One status line on a terminal for long steps (tuning, compiling, the demo), redrawn in place.

Silent when stderr is not a terminal (logs and pipes get no control characters) and after
`set_quiet(True)` (`--quiet`). Volume runs have their own progress line (volume/progress.py).
"""

from __future__ import annotations

import sys
import time

_state = {"quiet": False, "shown": False, "last": 0.0}
INTERVAL = 0.1


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def _live() -> bool:
    return not _state["quiet"] and sys.stderr.isatty()


def report(text: str, force: bool = False) -> None:
    """Show `text` as the status line (at most every INTERVAL seconds unless `force`)."""
    now = time.monotonic()
    if not _live() or (not force and now - float(_state["last"]) < INTERVAL):
        return
    width = 119
    sys.stderr.write("\r" + text[:width].ljust(width))
    sys.stderr.flush()
    _state["shown"], _state["last"] = True, now


def clear() -> None:
    """Remove the status line (before normal output follows)."""
    if _state["shown"] and _live():
        sys.stderr.write("\r" + " " * 119 + "\r")
        sys.stderr.flush()
    _state["shown"] = False
