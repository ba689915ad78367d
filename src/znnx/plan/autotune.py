"""Choose each convolution's algorithm by measuring the candidates on the layer's real shape.

For every conv the backend can run more than one way (`candidates`), each candidate is built,
run once to warm up and then timed (median of `REPS`, repeated while the runs disagree, see
`_timed`); a candidate is kept only if its output is
within its `tolerance` (plan/algorithm.py: max |y - y_direct| / max |y_direct|) of the direct convolution, which the
reference executor tests pin down. The fastest survivor wins; direct is always a candidate, so a
layer never gets slower than direct. Layers with fewer than `MIN_CHANNELS` input channels are
timed with the direct kernels only (direct, and the backend's implicit GEMM where it offers one):
the input transform costs more than the multiplications it saves (1 -> 8 channels at 108^3: 7.7 ms
direct, 45 ms Winograd F(4,3); 8 -> 8 at 106^3: 29.3 and 29.6). Few output channels do not make a
layer narrow: oneDNN's direct conv is slow there, and Winograd F(4,5) ran PZnet's 28 -> 3 (1,5,5)
score layer in 28 ms against 49.
FFT is timed beside Winograd only on kernels larger than 3: on 3x3x3 layers it measured 2-10x slower
than Winograd on this project's machine, so timing it there would only lengthen tuning; on n537's
80-channel 5^3 fragment layers the C FFT (16-point tiles) ran 1.5x faster than F(4,5).

Choices are cached on disk (`cache_dir()/autotune.json`) under a key of the layer's signature
(shapes, kernel, pads, epilogue), the batch, dtype, thread count, library versions and the backend's
`context` (its machine and kernel sources), so a net compiled again (another process, a rerun) times
only its close calls (`close_rival`), and measures a layer again where one now runs the other way;
a network file carries its choices itself (plan/plan.py). `forced` forces one
algorithm, by name, for every layer where it applies, or, as a mapping, per named layer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from znnx import heap, status
from znnx.cache import cache_dir
from znnx.errors import GraphError, KernelUnavailable
from znnx.ir.graph import Graph, Node, TensorType
from znnx.ir.ops import conv_input, conv_sources, conv_spatial
from znnx.plan.algorithm import DIRECT, NAMES, Algorithm, by_name, known
from znnx.version import __version__

MIN_CHANNELS = 8
TIMING_BYTES = 8 << 20
"""Candidates are timed on a slab of the layer whose input and output take at most this much
(`timing_layer`): the time per voxel of a layer this large no longer depends on its size (ffn and
tiny: the same choices as timing whole layers; aniso and plantseg at 16 MB: the same but for two
near ties), while timing the whole of a wide layer held its input, the reference, an output and
oneDNN's reorders at once (a 1 -> 12 conv of 77 MB outputs raised a net's compile to 739 MiB
resident against its run's 580; at 16 MB slabs the 32-channel ffn's compile still peaked at 580 MiB
against its run's 450, at 8 MB 459)."""
FRAGMENT_TIMING_BYTES = 64 << 20
"""A fragmented layer is timed on this many bytes of whole fragments (about twice the 32 MB L3 here):
timed on one 25^3 fragment, which stays in the caches, n537's last 80-channel 5^3 layer at 338^3
estimated F(4,5) Winograd at 10.8 s and FFT 16 at 16.5, and F(4,5) then took 18.2 s over the layer's 512
fragments, which stream from memory."""
LEAN_MARGIN = 0.05
LEAN_BYTES = 16 << 20
"""Of the candidates measured within LEAN_MARGIN of the fastest, the one whose kernel holds the fewest
extra weight bytes runs, where that saves at least LEAN_BYTES: the original U-Net's 512 -> 512 layer
at 9x11x11 measured 26.1 ms in F(2,3) against 27.3 direct, and F(2,3)'s transformed weights took
64 MB of a run whose peak was above OpenVINO's. Small layers keep their fastest kernel."""
REPS = 3
ROUNDS = 3
ROUND_SECONDS = 0.03
MAX_REPS = 50
"""A round of timed runs lasts ROUND_SECONDS or REPS runs, whichever is longer (at most MAX_REPS runs):
kernels of a millisecond or less timed three times drew their verdict from scheduler jitter, and the
CPU time of the process's other threads is booked at their context switches, so a few short runs
seemed descheduled on a quiet machine. MONAI's 6^3 layers of 128-256 channels measured noisy at every
compile and got the noisy rule's F(4,3): 3.9 ms where F(2,3) runs 1.3."""
NOISE = 1.3
CLOSE = 1.5
RECHECK_RUNS = 2
"""A cached choice whose runner-up measured within CLOSE of it is a close call: each compile that
reads it runs both again (RECHECK_RUNS after a warm-up run) and measures the layer afresh where the
runner-up now runs more than NOISE times faster. One compile of nnunet cached oneDNN direct for a
fused-concat layer at 98 ms a patch; Winograd runs it in 50."""
CONTENDED = 0.75
"""A timed run on CPU threads whose process CPU time is below this share of threads x wall time did
not have its cores (another process ran on them)."""
CONTENDED_RETRIES = 2
"""A layer whose timings ran beside another process is measured again up to this many times: on this
VM such spells pass (the hypervisor's), and the fallback for timings that stay contended
(`_noisy_choice`) cost n537 at 338^3 a patch of 118.8 s instead of 64.4 (F(4,5) on three 5^3 layers
where FFT runs them 1.2-3.7x faster)."""
FFT_TRUSTED = 2.0
"""A contended FFT timing this many times faster than the largest Winograd tile's is taken over it
(contention misled Winograd tiles against each other by about 2x, `_noisy_choice`)."""
Conv = Callable[..., torch.Tensor]
"""A conv alone: (input, *, out=None, residual=None) -> output, written into `out` when given; the
input of a conv with sources (a fused concat) is the tuple of them."""
Input = torch.Tensor | tuple[torch.Tensor, ...]
Builder = Callable[[Node, Algorithm], Conv]
LayerBuilder = Callable[[Graph, Node, Algorithm], Conv]
"""A backend's conv kernel for one node of a graph (the tuner passes the layer it times)."""
Candidates = Callable[[Node], tuple[Algorithm, ...]]
Sizes = Callable[[Graph, Node, Algorithm], tuple[int, int]]
"""A backend's (weight bytes beyond the raw weights, scratch bytes) of a conv under an algorithm."""
Forced = str | Mapping[str, str] | None


@dataclass(frozen=True)
class LayerChoice:
    """The algorithm one conv runs with; `seconds` and `errors` per measured candidate, by name (a
    candidate that failed to build has an infinite time); `source`: measured, noisy (measured, but
    the timings never agreed: not cached), cache, forced, rule or saved (read from a network file)."""

    node: str
    algorithm: Algorithm
    seconds: tuple[tuple[str, float], ...] = ()
    errors: tuple[tuple[str, float], ...] = ()
    source: str = "rule"

    @property
    def time(self) -> float | None:
        return dict(self.seconds).get(self.algorithm.name)


def direct_speedup(choices: Sequence[LayerChoice]) -> float | None:
    """How much faster the chosen algorithms measured than direct on the layers timed both ways
    (their summed direct seconds over their summed chosen seconds); None where no layer was. Layers
    timed one way only (narrow ones, forced ones) count in neither sum."""
    pairs = [(dict(c.seconds)["direct"], c.time) for c in choices if "direct" in dict(c.seconds) and c.time]
    chosen = sum(t for _, t in pairs)
    return sum(d for d, _ in pairs) / chosen if pairs and chosen > 0 else None


def cache_file() -> Path:
    return cache_dir() / "autotune.json"


def _signature(graph: Graph, node: Node, batch: int, precision: str, context: str) -> str:
    x, y = conv_input(graph.types, node), graph.types[node.output]
    a = node.attrs
    parts = [graph.types[name].channels for name in node.inputs[:conv_sources(node)]]
    fields = [node.op, parts, y.channels, x.spatial, a["kernel"], a["pads"], a["stride"], a["dilation"],
              a["groups"], list(a.get("epilogue", ())), float(a.get("alpha", 0.0)), batch * x.fragments,
              "float32" if precision == "fp32" else precision, torch.get_num_threads(), torch.__version__,
              __version__, context]
    return hashlib.sha256(json.dumps(fields, default=list).encode()).hexdigest()[:24]


def _read_cache() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(entries: Mapping[str, dict[str, object]]) -> None:
    """Merge `entries` into the cache file, replacing it atomically (a racing writer loses at most
    its own new entries, which are measured again next time)."""
    if not entries:
        return
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_read_cache(), **entries}
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(merged, f, indent=0)
        os.replace(f.name, path)
    except OSError:
        pass


def _error(y: torch.Tensor, reference: torch.Tensor) -> float:
    scale = float(reference.abs().max())
    return float((y - reference).abs().max()) / (scale if scale > 0 else 1.0)


@dataclass(frozen=True)
class Timing:
    """A candidate's `seconds`; `unsteady`: its runs never agreed; `contended`: it ran beside another
    process (then `seconds` is its CPU time per thread)."""

    seconds: float
    unsteady: bool = False
    contended: bool = False


def _timed(conv: Conv, x: Input, out: torch.Tensor, residual: torch.Tensor | None,
           threads: int | None = None) -> Timing:
    """The median of a round of runs (REPS, or as many as fill ROUND_SECONDS), rounds repeated (up
    to ROUNDS) until a round's upper quartile is within NOISE of its fastest run; the best round's
    median. With `threads` (the kernels run on this process's CPU threads), a round whose CPU time
    stays under CONTENDED of threads x its wall time ran beside another process: its runs can agree
    and still mislead (a compile beside two busy processes chose F(2,3) over F(4,3) on five layers of
    the symmetric U-Net, 1.11x slower on a quiet machine), so the estimate is the CPU time per thread
    and run, what the kernel costs with the cores to itself."""
    medians = []
    reps = REPS
    for _ in range(ROUNDS):
        runs: list[float] = []
        began, used = time.perf_counter(), time.process_time()
        while len(runs) < reps:
            start = time.perf_counter()
            conv(x, out=out, residual=residual)
            runs.append(time.perf_counter() - start)
            if len(runs) == 1 and runs[0] > 0:
                reps = min(MAX_REPS, max(reps, math.ceil(ROUND_SECONDS / runs[0])))
        wall, cpu = time.perf_counter() - began, time.process_time() - used
        medians.append(statistics.median(runs))
        if threads and cpu < CONTENDED * threads * wall:
            return Timing(cpu / threads / len(runs), contended=True)
        if sorted(runs)[3 * len(runs) // 4] <= NOISE * min(runs):
            return Timing(min(medians))
    return Timing(min(medians), unsteady=True)


def _measure(build: Builder, node: Node, x: Input, residual: torch.Tensor | None,
             algorithms: tuple[Algorithm, ...], label: str = "",
             threads: int | None = None) -> tuple[dict[str, float], dict[str, float], str]:
    """Seconds (see `_timed`) and error against direct of each algorithm that builds, by name, and
    the noise: "contended" where a timing ran beside another process, else "unsteady" where one's runs
    never agreed, else "" (a backend's kernels return once their work is done: a GPU kernel
    synchronizes). The timed runs write into one preallocated output, as the net's convs
    write into arena slots: a fresh output would add its page faults, which cost Winograd (whose
    output transform writes it from every thread at once) more than direct and turned 15 ms layers
    into 28 ms ones. A candidate whose first run is over three times the best so far is timed once
    more before it is set aside: one spike (another process, threads still spinning after a build)
    had set aside the fastest candidate. Direct runs first, once, for the reference, and is timed
    last, so that a direct convolution many times slower than the fast kernels (large kernels,
    dense nets: a minute a run) costs two runs, not a full timing. Besides the input, only the
    reference and one output buffer live across candidates, and one candidate's kernel at a time
    (the original U-Net's widest layer holds 490 MB per tensor: compiling it peaked at 3.5 GB)."""
    seconds: dict[str, float] = {}
    errors: dict[str, float] = {}
    timings: list[Timing] = []
    reference: torch.Tensor | None = None
    out: torch.Tensor | None = None
    began = time.perf_counter()
    first: dict[str, tuple[Conv, float]] = {}
    if algorithms and algorithms[0].kind == "direct":
        status.report(f"{label}: reference by direct", force=True)
        conv = build(node, algorithms[0])
        start = time.perf_counter()
        reference = conv(x, residual=residual)
        first[algorithms[0].name] = (conv, time.perf_counter() - start)
        del conv
    for algorithm in (*algorithms[bool(first):], *algorithms[:bool(first)]):
        name = algorithm.name
        status.report(f"{label}: timing {name} ({time.perf_counter() - began:.0f} s)", force=True)
        if name in first:
            conv, warm = first.pop(name)
            errors[name] = 0.0
        else:
            try:
                conv = build(node, algorithm)
            except KernelUnavailable:
                seconds[name] = float("inf")
                continue
            start = time.perf_counter()
            y = conv(x, out=out, residual=residual)
            warm = time.perf_counter() - start
            if reference is None:
                reference = y.clone()
            out = y
            errors[name] = _error(y, reference)
        best = min(seconds.values(), default=float("inf"))
        if errors[name] > algorithm.tolerance:
            seconds[name] = warm
            del conv
            continue
        if out is None:
            assert reference is not None, "direct ran first for the reference"
            out = torch.empty_like(reference)
        if warm > 3 * best:
            start = time.perf_counter()
            conv(x, out=out, residual=residual)
            again = time.perf_counter() - start
            if again > 3 * best:
                seconds[name] = again
                del conv
                continue
        timings.append(_timed(conv, x, out, residual, threads))
        seconds[name] = timings[-1].seconds
        del conv
    order = [a.name for a in algorithms]
    noise = "contended" if any(t.contended for t in timings) else "unsteady" if any(t.unsteady for t in timings) \
        else ""
    return ({n: seconds[n] for n in order if n in seconds}, {n: errors[n] for n in order if n in errors}, noise)


def _forced(forced: Forced, convs: dict[str, tuple[Algorithm, ...]]) -> dict[str, Algorithm]:
    if forced is None or forced == "auto":
        return {}
    if isinstance(forced, str):
        return {name: by_name(forced, applicable) or DIRECT for name, applicable in convs.items()}
    chosen = {}
    for name, spelled in forced.items():
        if name not in convs:
            raise GraphError(f"autotune: algorithm forced for {name!r}, which is not a convolution of this net; "
                             f"its convolutions are {sorted(convs)}")
        algorithm = by_name(spelled, convs[name])
        if algorithm is None:
            raise GraphError(f"autotune: {spelled!r} cannot run {name!r}; it can run with "
                             f"{[a.name for a in convs[name]]}")
        chosen[name] = algorithm
    return chosen


def direct_only(graph: Graph, forced: Forced, precision: str) -> tuple[LayerChoice, ...]:
    """Every conv direct (`precision` below fp32, which znnx's own kernels do not run); forcing
    anything else is refused."""
    names = [node.name for node in graph.nodes if node.op == "conv"]
    spelled = {} if forced is None else {name: forced for name in names} if isinstance(forced, str) else dict(forced)
    unknown = sorted({a for a in spelled.values() if a != "auto" and not known(a)})
    if unknown:
        raise GraphError(f"autotune: unknown algorithm {unknown[0]!r}; use one of {['auto', *NAMES]}")
    wrong = sorted({a for a in spelled.values() if a not in ("auto", "direct")})
    if wrong:
        raise GraphError(f"autotune: {wrong} run in fp32 only, but this net runs in {precision}, where every "
                         f"convolution is direct; use algorithm auto or direct, or precision fp32")
    return tuple(LayerChoice(name, DIRECT) for name in names)


def choosable(graph: Graph, node: Node, candidates: tuple[Algorithm, ...]) -> tuple[Algorithm, ...]:
    """The algorithms `tune` may give `node` unforced: the direct ones (direct, implicit) alone below
    MIN_CHANNELS input channels, else its `candidates` less FFT on kernels of at most 3 per axis where
    Winograd F(4,r) applies (FFT is timed only on larger kernels)."""
    narrow = conv_input(graph.types, node).channels < MIN_CHANNELS
    if narrow:
        return tuple(a for a in candidates if a.kind in ("direct", "implicit"))
    winograd4 = any(a.kind == "winograd" and a.tile == 4 for a in candidates) and max(node.attrs["kernel"]) <= 3
    return tuple(a for a in candidates if a.kind != "fft" or not winograd4)


def reserved_bytes(graph: Graph, candidates: Candidates, sizes: Sizes) -> tuple[int, int]:
    """(weight bytes beyond the raw weights, scratch bytes) to reserve before `tune` has chosen:
    each conv's most memory-hungry `choosable` algorithm by the backend's `sizes` (weights, scratch),
    weights summed, scratch the largest (one slab buffer serves every layer)."""
    options = [[sizes(graph, node, a) for a in choosable(graph, node, candidates(node))]
               for node in graph.nodes if node.op == "conv"]
    return (sum(max(w for w, _ in per_node) for per_node in options),
            max((s for per_node in options for _, s in per_node), default=0))


def tune(graph: Graph, batch: int, candidates: Candidates, build: LayerBuilder, sizes: Sizes,
         forced: Forced = None, device: torch.device | None = None, precision: str = "fp32", context: str = "",
         refresh: bool = False, cpu_threads: bool = False) -> tuple[LayerChoice, ...]:
    """One LayerChoice per conv of `graph` (run `batch` patches at a time on `device`, the CPU by
    default): the fastest valid candidate, or a leaner one nearly as fast (`lean_choice`, by the
    backend's `sizes`); `context` names the backend's machine and kernel versions in the cache key. With
    `refresh` every conv is measured again and its cache entry replaced. A choice whose timings
    stayed noisy (source `noisy`) is used but not cached, so the next compile measures again. Layers
    of the same signature take the choice measured for the first of them (source `cache`): measured
    again they could choose apart, and the cache, which keeps one, then gave a later compile of the
    same net another plan than the first (not bit-identical outputs). `cpu_threads`: the kernels
    run on this process's CPU threads, so their CPU time shows whether another process took the
    cores (see `_timed`)."""
    device = device or torch.device("cpu")
    nodes = {node.name: node for node in graph.nodes if node.op == "conv"}
    convs = {name: candidates(node) for name, node in nodes.items()}
    chosen = _forced(forced, convs)
    cache = _read_cache()
    new: dict[str, dict[str, object]] = {}
    confirmed: set[str] = set()
    choices = []
    started = time.perf_counter()
    for i, (name, node) in enumerate(nodes.items(), 1):
        if name in chosen:
            choices.append(LayerChoice(name, chosen[name], source="forced"))
            continue
        timed = choosable(graph, node, convs[name])
        if timed == (DIRECT,):
            choices.append(LayerChoice(name, DIRECT))
            continue
        by_names = {a.name: a for a in convs[name]}
        key = _signature(graph, node, batch, precision, context)
        entry = new.get(key) or (None if refresh else cache.get(key))
        layer = timing_layer(graph, node, batch, timed)
        if isinstance(entry, dict) and entry.get("algorithm") in by_names:
            cached = LayerChoice(name, by_names[str(entry["algorithm"])], _pairs(entry.get("seconds")),
                                 _pairs(entry.get("errors")), "cache")
            rival = None if key in new or key in confirmed else close_rival(cached, timed)
            contradicted = rival is not None and _contradicted(
                functools.partial(build, layer), node, _inputs(layer, node, batch, device), cached.algorithm, rival)
            if rival is not None:
                heap.release()  # the re-check's slabs and kernels, not left resident under the net's arena
            if rival is None or not contradicted:
                confirmed.add(key)
                choices.append(cached)
                continue
            status.report(f"autotune: {name}: {rival.name} now runs faster than its cached {cached.algorithm.name}; "
                          "measuring again", force=True)
        x, residual = _inputs(layer, node, batch, device)
        label = f"autotune: conv {i} of {len(nodes)} ({name}), {time.perf_counter() - started:.0f} s so far"
        layer_build, threads = functools.partial(build, layer), torch.get_num_threads() if cpu_threads else None
        with torch.inference_mode():
            for _ in range(1 + CONTENDED_RETRIES):
                seconds, errors, noise = _measure(layer_build, node, x, residual, timed, label, threads)
                if noise != "contended":
                    break
        del x, residual
        heap.release()
        scales = {a.name: slab_scale(graph.types[node.output], layer.types[node.output], a, node.attrs["kernel"])
                  for a in timed}
        seconds = {a: t * scales[a] for a, t in seconds.items()}
        valid = [a for a in timed if errors.get(a.name, float("inf")) <= a.tolerance]
        best = _noisy_choice(valid, seconds) if noise == "contended" else \
            lean_choice(valid, seconds, functools.partial(_weight_bytes, sizes, graph, node))
        choices.append(LayerChoice(name, best, tuple(seconds.items()), tuple(errors.items()),
                                   "noisy" if noise else "measured"))
        if not noise:
            new[key] = {"node": name, "algorithm": best.name, "seconds": seconds, "errors": errors}
    _write_cache(new)
    status.clear()
    return tuple(choices)


def close_rival(cached: LayerChoice, timed: Sequence[Algorithm]) -> Algorithm | None:
    """The valid candidate of `timed` that measured nearest behind a cached choice, where within
    CLOSE of it (a close call, which the noise of one compile can decide the wrong way); else None."""
    seconds, errors = dict(cached.seconds), dict(cached.errors)
    own = seconds.get(cached.algorithm.name)
    others = [a for a in timed if a != cached.algorithm and a.name in seconds
              and errors.get(a.name, float("inf")) <= a.tolerance]
    if own is None or not others:
        return None
    rival = min(others, key=lambda a: seconds[a.name])
    return rival if seconds[rival.name] <= CLOSE * own else None


def _contradicted(build: Builder, node: Node, inputs: tuple[Input, torch.Tensor | None], chosen: Algorithm,
                  rival: Algorithm) -> bool:
    """Whether `rival` now runs more than NOISE times faster than `chosen` (each built, run once to
    warm up, then the best of RECHECK_RUNS)."""
    x, residual = inputs
    best = {}
    with torch.inference_mode():
        out: torch.Tensor | None = None
        for algorithm in (chosen, rival):
            try:
                conv = build(node, algorithm)
            except KernelUnavailable:
                return algorithm == chosen
            out = conv(x, out=out, residual=residual)
            runs = []
            for _ in range(RECHECK_RUNS):
                start = time.perf_counter()
                conv(x, out=out, residual=residual)
                runs.append(time.perf_counter() - start)
            best[algorithm] = min(runs)
            del conv
    return best[rival] * NOISE < best[chosen]


def _weight_bytes(sizes: Sizes, graph: Graph, node: Node, algorithm: Algorithm) -> int:
    return sizes(graph, node, algorithm)[0]


def lean_choice(valid: Sequence[Algorithm], seconds: Mapping[str, float],
                weight_bytes: Callable[[Algorithm], int]) -> Algorithm:
    """The fastest of `valid`, unless one measured within LEAN_MARGIN of it holds at least LEAN_BYTES
    fewer kernel weight bytes: then the leanest of those (the faster among equals)."""
    fastest = min(valid, key=lambda a: seconds[a.name])
    close = [a for a in valid if seconds[a.name] <= seconds[fastest.name] * (1 + LEAN_MARGIN)]
    leanest = min(close, key=lambda a: (weight_bytes(a), seconds[a.name]))
    return leanest if weight_bytes(fastest) - weight_bytes(leanest) >= LEAN_BYTES else fastest


def _noisy_choice(valid: list[Algorithm], seconds: Mapping[str, float]) -> Algorithm:
    """The choice from timings that ran beside another process: the largest valid Winograd tile (the
    fewest multiplications), or the measured best where Winograd does not apply or an FFT measured
    FFT_TRUSTED times faster than that tile (timings that merely never agreed choose by what they
    measured, uncached).
    Such timings mislead by more than any margin: another process's memory traffic slows the
    transform-bound Winograd kernels far more than direct ones (beside two busy processes F(2,3)
    measured over 2x faster than F(4,3) on layers where it is slower on a quiet machine; a plan
    chosen by those timings ran 1.13-1.20x slower quiet)."""
    best = min(valid, key=lambda a: seconds[a.name])
    tile = max((a for a in valid if a.kind == "winograd"), key=lambda a: a.tile, default=best)
    trusted = best.kind == "fft" and seconds[tile.name] >= FFT_TRUSTED * seconds[best.name]
    return best if trusted else tile


def timing_layer(graph: Graph, node: Node, batch: int, algorithms: Sequence[Algorithm] = (),
                 limit: int = TIMING_BYTES, fragment_limit: int = FRAGMENT_TIMING_BYTES) -> Graph:
    """The conv alone in a graph of its own, cut to a slab whose input and output take at most `limit`
    bytes for `batch` patches: a fragmented layer whose fragment fits `limit` to as many whole
    max-pooling fragments (each a patch of its own, its time per voxel the same) as `fragment_limit`
    holds, else to one fragment and then along depth, then height, keeping along a cut axis at least 8
    output voxels and two of the largest output tile of `algorithms` (or the whole axis); `graph`
    itself where the layer is within `limit`, timed whole. `slab_scale` scales its times. Cut to 8
    outputs, a tile of 18 (FFT 24 on a 7^3 kernel) computed 2.25x the outputs it kept: on n726's
    dense layers fft24 measured 2.5x slower than fft16, whole layers the other way round; at one
    tile per cut axis a slab of 80 channels gave its GEMMs too few tiles to keep two threads busy
    (6.2 us per output voxel, at two 4.5, the whole 59^3 layer 4.6)."""
    x, y = conv_input(graph.types, node), graph.types[node.output]
    largest = max(x.numel, y.numel) * batch * 4
    per_fragment = largest // x.fragments
    fragments = x.fragments if largest <= limit else (
        min(x.fragments, max(1, fragment_limit // per_fragment)) if per_fragment <= limit else 1)
    largest = per_fragment * fragments
    spatial = list(x.spatial)
    a = node.attrs
    for axis in (0, 1):
        if largest <= limit or fragments > 1:
            break
        reach = a["dilation"][axis] * (a["kernel"][axis] - 1) + 1 - a["pads"][axis] - a["pads"][axis + 3]
        outputs = max([8, *(2 * algorithm.outputs(a["kernel"][axis]) for algorithm in algorithms)])
        least = min(spatial[axis], (outputs - 1) * a["stride"][axis] + reach)
        cut = max(least, spatial[axis] * limit // largest)
        largest = largest * cut // spatial[axis]
        spatial[axis] = cut
    if tuple(spatial) == x.spatial and fragments == x.fragments:
        return graph
    d, h, w = spatial
    od, oh, ow = conv_spatial(spatial, a["kernel"], a["pads"], a["stride"], a["dilation"])
    out = replace(y, spatial=(od, oh, ow), fragments=fragments)
    sources = conv_sources(node)
    types = {name: replace(graph.types[name], spatial=(d, h, w), fragments=fragments) if i < sources else out
             for i, name in enumerate(node.inputs)}
    layer = Graph((node,), tuple(dict.fromkeys(node.inputs)), (node.output,), {**types, node.output: out},
                  graph.spatial_rank, f"{graph.name}:{node.name}")
    return layer


def slab_scale(whole: TensorType, cut: TensorType, algorithm: Algorithm, kernel: Sequence[int]) -> float:
    """How many times a slab's work (`cut`, the output of `timing_layer`) the layer's (`whole`) is
    under `algorithm`: outputs counted in whole tiles along each axis, since a tile computes all its
    outputs, kept or not. In exact outputs, n726's dense 38^3 layer (three 18-voxel FFT tiles per
    axis, 54 computed) was estimated from a 36-deep slab (two, none wasted) at 18.7 s, and took 51.5."""
    ratio = whole.fragments / cut.fragments
    for layer, slab, k in zip(whole.spatial, cut.spatial, kernel):
        m = algorithm.outputs(k)
        ratio *= (-(-layer // m) * m) / (-(-slab // m) * m)
    return ratio


def as_sources(x: Input) -> tuple[torch.Tensor, ...]:
    """A conv's input as its tuple of sources."""
    return (x,) if isinstance(x, torch.Tensor) else x


def _inputs(graph: Graph, node: Node, batch: int, device: torch.device) -> tuple[Input, torch.Tensor | None]:
    """Random channels-last input (its sources, for a conv with several) and residual (for a conv
    that adds one) of `node`'s shapes."""
    generator = torch.Generator().manual_seed(0)
    shapes = [graph.types[name] for name in node.inputs]
    tensors = [torch.rand((batch * t.fragments, t.channels, *t.spatial), generator=generator).to(device).contiguous(
        memory_format=torch.channels_last_3d) for t in shapes]
    sources = conv_sources(node)
    residual = tensors[sources] if len(tensors) > sources else None
    return (tensors[0] if sources == 1 else tuple(tensors[:sources])), residual


def _pairs(value: object) -> tuple[tuple[str, float], ...]:
    return tuple((str(k), float(v)) for k, v in value.items()) if isinstance(value, dict) else ()
