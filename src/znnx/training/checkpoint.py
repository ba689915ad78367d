"""Checkpoints: `step-NNNNNNNN.safetensors` (the net's parameters and buffers, the optimizer's
tensors) and `step-NNNNNNNN.json` (step, optimizer scalars, the learning-rate schedule's state, the
RNG state, the conv algorithms, the history so far), each written to a temporary name and renamed,
the JSON last: a checkpoint exists once its JSON does, so a run killed while writing one resumes
from the one before."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from znnx.errors import InputError

PREFIX = "step-"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    tensors: dict[str, np.ndarray]
    state: dict[str, Any]


def _replace(path: Path, write: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    write(partial)
    os.replace(partial, path)


def save(folder: Path, step: int, tensors: dict[str, np.ndarray], state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint `step` in `folder`; older checkpoints beyond the last `keep` are removed."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{step:08d}"
    _replace(folder / f"{name}.safetensors",
             lambda p: save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(p)))
    _replace(folder / f"{name}.json", lambda p: p.write_text(json.dumps({"step": step, **state})))
    for old in sorted(folder.glob(f"{PREFIX}*.json"))[:-keep]:
        old.unlink()
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    return folder / f"{name}.json"


def latest(folder: Path) -> Checkpoint | None:
    """The newest complete checkpoint in `folder`, or None."""
    from safetensors.numpy import load_file

    for meta in sorted(folder.glob(f"{PREFIX}*.json"), reverse=True):
        weights = meta.with_suffix(".safetensors")
        if not weights.is_file():
            continue
        try:
            state = json.loads(meta.read_text())
            tensors = load_file(str(weights))
        except (OSError, ValueError) as error:
            raise InputError(f"train: checkpoint {str(meta)!r} cannot be read ({error}); remove it to resume from "
                             f"the one before") from None
        return Checkpoint(int(state.pop("step")), tensors, state)
    return None
