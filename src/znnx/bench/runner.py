"""Run the side-by-side benchmark: every (net, runtime[, patch]) in its own worker process."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from znnx.bench.models import NETS
from znnx.bench.peers import PEERS, REFERENCE_PEER, thread_environment

ERROR_FLAG = 1e-4


def error_flag(peer: str, precision: str = "fp32") -> float:
    """The error above which a peer's result is flagged: ERROR_FLAG in fp32, else the stated
    tolerance of the peer's precision (the run's, or bf16 for the -bf16 peers)."""
    from znnx.plan.precision import PRECISIONS

    own = "bf16" if peer.endswith("-bf16") else precision
    return ERROR_FLAG if own == "fp32" else PRECISIONS[own].tolerance


@dataclass(frozen=True)
class Measurement:
    net: str
    peer: str
    patch: tuple[int, ...]
    ok: bool
    median_s: float = float("nan")
    times: tuple[float, ...] = ()
    output_shape: tuple[int, ...] = ()
    peak_rss_mib: float = float("nan")
    prepare_s: float = float("nan")
    error: str = ""
    max_rel_error: float = float("nan")
    layers: tuple[dict, ...] = field(default_factory=tuple)
    peak_gpu_mib: float = float("nan")

    @classmethod
    def from_dict(cls, raw: dict) -> Measurement:
        """A measurement from results.json or a worker's result; keys that are no field are ignored."""
        tuples = {"patch", "times", "output_shape", "layers"}
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in raw.items() if k in names}
        return cls(**values)

    @property
    def output_voxels(self) -> int:
        return int(np.prod(self.output_shape[2:])) * (self.output_shape[0] if self.output_shape else 0)

    @property
    def voxels_per_s(self) -> float:
        return self.output_voxels / self.median_s if self.ok else float("nan")


@dataclass(frozen=True)
class Settings:
    threads: int = 2
    warmup: int = 1
    reps: int = 5
    tiny: bool = False
    timeout_s: float = 3600.0
    rounds: int = 1
    device: str = "cpu"
    precision: str = "fp32"


def _run_worker(job: dict, folder: Path, timeout_s: float, threads: int) -> dict:
    path = folder / f"{job['net']}-{job['peer']}-{'x'.join(map(str, job['patch']))}.json"
    path.write_text(json.dumps(job))
    try:
        completed = subprocess.run([sys.executable, "-m", "znnx.bench.worker", str(path)],
                                   env=thread_environment(threads), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout_s:.0f} s"}
    result_path = path.with_suffix(".result.json")
    if not result_path.exists():
        tail = (completed.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return {"ok": False,
                "error": f"worker died with exit code {completed.returncode} (out of memory?): {tail[0][:200]}"}
    return dict(json.loads(result_path.read_text()))


def measure(nets: Sequence[str], peers: Sequence[str], settings: Settings,
            patches: dict[str, tuple[int, ...]] | None = None, profile: bool = False,
            progress: Callable[[str], None] = print, with_reference: bool = True) -> list[Measurement]:
    """Measure every net with every peer; with_reference runs PyTorch eager first and attaches each
    runtime's max error relative to it. With `settings.rounds` > 1 the runtimes of a net take turns,
    round after round (eager only in the first), and each reports the median over all its timed runs,
    so a slow spell of a shared machine does not fall on one runtime alone."""
    order = [REFERENCE_PEER, *(p for p in peers if p != REFERENCE_PEER)] if with_reference else list(peers)
    results = []
    with tempfile.TemporaryDirectory(prefix="znnx-bench-") as tmp:
        folder = Path(tmp)
        for net in nets:
            patch = (patches or {}).get(net) or (NETS[net].tiny_patch if settings.tiny else NETS[net].patch)
            reference = None
            merged: dict[str, dict] = {}
            for round_ in range(settings.rounds):
                for peer in order:
                    failed = peer in merged and not merged[peer]["ok"]
                    if failed or (round_ and peer == REFERENCE_PEER):
                        continue
                    missing = PEERS[peer].missing()
                    if missing:
                        merged[peer] = {"ok": False, "error": f"absent ({missing})"}
                        continue
                    output = folder / f"{net}-{peer}.npy"
                    job = {"net": net, "peer": peer, "patch": list(patch), "threads": settings.threads,
                           "warmup": settings.warmup, "reps": settings.reps, "tiny": settings.tiny,
                           "output": str(output), "profile": profile and round_ == settings.rounds - 1,
                           "device": settings.device, "precision": settings.precision}
                    turn = f" (round {round_ + 1} of {settings.rounds})" if settings.rounds > 1 else ""
                    progress(f"  {net:10s} {peer:22s} patch {'x'.join(map(str, patch))}{turn} ...")
                    raw = _run_worker(job, folder, settings.timeout_s, settings.threads)
                    raw["ok"] = bool(raw.get("ok"))
                    if raw["ok"]:
                        out = np.load(output)
                        if peer == REFERENCE_PEER:
                            reference = out
                        if reference is not None and reference.shape == out.shape:
                            raw["max_rel_error"] = float(np.abs(out - reference).max()
                                                         / max(np.abs(reference).max(), 1e-30))
                    merged[peer] = _merge(merged.get(peer), raw)
                    named = {**raw, "net": net, "peer": peer, "patch": patch}
                    progress(f"    -> {_summary(Measurement.from_dict(named))}")
            results += [Measurement.from_dict({**merged[peer], "net": net, "peer": peer, "patch": patch})
                        for peer in order if peer in merged]
    return results


def _merge(earlier: dict | None, raw: dict) -> dict:
    """One runtime's rounds as one result: all timed runs and their median, the highest peak RSS and
    error, the first preparation time, the last round's layer profile; a failed round fails it."""
    if earlier is None or not raw["ok"]:
        return raw
    times = [*earlier["times"], *raw["times"]]
    return {**raw, "times": times, "median_s": float(np.median(times)), "prepare_s": earlier["prepare_s"],
            "peak_rss_mib": max(earlier["peak_rss_mib"], raw["peak_rss_mib"]),
            "peak_gpu_mib": max(earlier.get("peak_gpu_mib", float("nan")), raw.get("peak_gpu_mib", float("nan"))),
            "max_rel_error": max(earlier.get("max_rel_error", 0.0), raw.get("max_rel_error", 0.0)),
            "layers": raw.get("layers") or earlier.get("layers", ())}


def _summary(m: Measurement) -> str:
    if not m.ok:
        return m.error
    return f"{m.median_s * 1e3:.0f} ms, {m.voxels_per_s / 1e6:.2f} Mvox/s, RSS {m.peak_rss_mib:.0f} MiB, " \
           f"err {m.max_rel_error:.1e}"


def sweep(net: str, peers: Sequence[str], sizes: Sequence[tuple[int, ...]], settings: Settings,
          progress: Callable[[str], None] = print) -> list[Measurement]:
    """Throughput against patch size for `peers` (ZNNi's figure); each size in its own process."""
    results: list[Measurement] = []
    for size in sizes:
        results += measure([net], peers, settings, {net: size}, progress=progress, with_reference=False)
    return results
