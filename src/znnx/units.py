"""Memory sizes as people write and read them: `parse_bytes("8GiB")`, `human_bytes(2**20)`."""

from __future__ import annotations

import re

from znnx.errors import InputError


def parse_bytes(text: str) -> int:
    """'8GiB', '512MiB', '2G', '1.5e9' -> bytes."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not match:
        raise InputError(f"memory size: cannot read {text!r}; write e.g. 8GiB, 512MiB or 2G")
    scale = {"": 1, "k": 1, "m": 2, "g": 3, "t": 4}[match.group(2)]
    base = 1000 if match.group(3) == "b" else 1024
    value = int(float(match.group(1)) * base ** (scale if match.group(2) else 0))
    if value < 1:
        raise InputError(f"memory size: {text!r} is no memory at all; give a positive size such as 8GiB")
    return value


def human_bytes(nbytes: float) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1, e.g. '1.0 MiB', '2.50 GiB'."""
    for unit, power in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if abs(nbytes) >= 2**power:
            value = nbytes / 2**power
            return f"{value:.2f} {unit}" if unit in ("TiB", "GiB") else f"{value:.1f} {unit}"
    return f"{int(nbytes)} B"
