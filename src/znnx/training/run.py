"""`znnx.train`: a net, an image and its segmentation in; a trained network file out.

The run: read the volumes (any format `znnx infer` reads) into memory, normalized; import the model
(fresh weights by an init rule if asked); size the net's input for the output patch asked; hold
out the last sections for validation; choose each conv's forward and input-gradient algorithms by
measurement; then steps of (batch of random augmented patches read ahead in threads, forward,
weighted loss, backward, optimizer step, schedule), a progress line, validation every
`validate_every` steps, a checkpoint every `checkpoint_every`. At the end: `net.znnx` (the network
file, BatchNorm folded, recording the input normalization), `history.json` and `curves.png`.

A rerun with `resume` continues from the newest checkpoint: weights, optimizer, schedule, RNG, the
conv algorithms and the history come back, and sample i is the same patch in every run, so a resumed
deterministic run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from znnx import backends
from znnx.errors import DeviceError, InputError, ModelError
from znnx.ir.graph import Graph
from znnx.plan.autotune import Forced
from znnx.plan.plan import choices_from_json, choices_json
from znnx.training import checkpoint
from znnx.training.conv import TrainChoice, choose
from znnx.training.data import TARGETS, Augment, Sampler, Volumes, Window, batches
from znnx.training.loss import head_form, loss_function, probability
from znnx.training.module import TrainableNet, final_activation, initialized, training_graph, without_final_activation
from znnx.training.validate import Scores, predict, score

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCALES = {"uint8": 1 / 255, "uint16": 1 / 65535, "int8": 1 / 127, "int16": 1 / 32767}


@dataclass(frozen=True)
class TrainOptions:
    """How to train. `patch`: the output patch per sample (D, H, W; default the net's output at its
    imported input shape); `validation`: the fraction of sections (from the end of z) held out, 0
    for none; `scale`: the input normalization (x * scale; default by dtype: 1/255 for uint8, 1/65535
    for uint16, 1 for floats); `init`: redraw the weights by a ZNN init rule; `algorithm`: force
    conv algorithms as for `compile`; `deterministic`: PyTorch's deterministic algorithms; `device`
    ("cpu", "cuda", "cuda:1", ...) and `precision` ("fp32"; "bf16" on CPUs and GPUs, "fp16" on GPUs,
    both under `torch.autocast`, fp16 with a gradient scaler): anything but fp32 on the CPU runs every
    op as PyTorch's own (cuDNN / oneDNN), znnx's kernels being fp32 CPU kernels."""

    target: str = "boundary"
    patch: tuple[int, ...] | None = None
    steps: int = 1000
    batch: int = 1
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    loss: str = "bce"
    rebalance: bool = True
    augment: Augment = field(default_factory=Augment)
    validation: float = 0.2
    validate_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    threads: int | None = None
    init: str | None = None
    scale: float | None = None
    algorithm: Forced = None
    deterministic: bool = True
    resume: bool = False
    device: str = "cpu"
    precision: str = "fp32"


@dataclass(frozen=True)
class TrainSummary:
    steps: int
    seconds: float
    loss: float
    scores: Scores | None
    network_file: Path
    onnx: Path
    history: Path
    curves: Path | None
    choices: str


def _check(options: TrainOptions) -> None:
    if options.target not in TARGETS:
        raise InputError(f"train: target {options.target!r} is not one of {sorted(TARGETS)}")
    if options.optimizer not in OPTIMIZERS:
        raise InputError(f"train: optimizer {options.optimizer!r} is not one of {list(OPTIMIZERS)}")
    if options.schedule not in SCHEDULES:
        raise InputError(f"train: schedule {options.schedule!r} is not one of {list(SCHEDULES)}")
    if options.steps < 1 or options.batch < 1:
        raise InputError(f"train: steps ({options.steps}) and batch ({options.batch}) must be at least 1")
    if not 0 <= options.validation < 1:
        raise InputError(f"train: validation must be a fraction in [0, 1), got {options.validation}")
    if options.precision not in PRECISIONS:
        raise InputError(f"train: precision {options.precision!r} is not one of {list(PRECISIONS)}")
    try:
        backends.get(backends.kind_of(options.device)).precision(options.precision)
    except DeviceError as error:
        raise InputError(f"train: {error}") from error


def read_volumes(image: Any, labels: Any, mask: Any = None, scale: float | None = None) -> tuple[Volumes, float]:
    """The volumes in memory (image (C, D, H, W) float32 times `scale`, default by its dtype) and the
    scale used."""
    from znnx.volume import storage

    def whole(spec: Any) -> np.ndarray:
        volume = storage.open_volume(spec)
        return np.asarray(volume.read(tuple(slice(0, n) for n in volume.shape)))

    raw = whole(image)
    if raw.ndim == 3:
        raw = raw[None]
    if raw.ndim != 4:
        raise InputError(f"train: the image must be (D, H, W) or (C, D, H, W), got shape {raw.shape}")
    used = scale if scale is not None else SCALES.get(str(raw.dtype), 1.0)
    segmentation = whole(labels)
    if segmentation.dtype.kind not in "iu":
        raise InputError(f"train: the labels must be an integer segmentation, got dtype {segmentation.dtype}")
    masked = None if mask is None else whole(mask) != 0
    return Volumes((raw.astype(np.float32) * np.float32(used)), segmentation.astype(np.int64), masked), used


def fitted(graph: Graph, patch: Sequence[int] | None) -> tuple[Graph, Window]:
    """`graph` at the input size whose output is `patch`, and the training window."""
    from znnx.net import reshape
    from znnx.report import geometry

    g = geometry(graph)
    if any(s != 1 for s in g.stride):
        raise ModelError(f"train: the net's output has stride {tuple(map(str, g.stride))} against its input; znnx "
                         f"trains nets whose output voxel matches an input voxel (U-Nets, valid or padded)")
    rank = graph.spatial_rank
    own_in, own_out = graph.types[graph.inputs[0]].spatial, graph.types[graph.outputs[0]].spatial
    wanted = tuple(own_out) if patch is None else (1,) * (3 - rank) + tuple(int(p) for p in patch)[-rank:]
    size = [o + i - oo for o, i, oo in zip(wanted, own_in, own_out)]
    shaped = graph if tuple(size) == tuple(own_in) else reshape(graph, size[3 - rank:])
    got = shaped.types[shaped.outputs[0]].spatial
    if tuple(got) != wanted:
        raise ModelError(f"train: the net gives output {got} at input {tuple(size)}, not the patch {wanted} asked; "
                         f"choose a patch the net's pooling divides")
    offset = tuple(math.floor(o) for o in geometry(shaped).offset)
    offset = (0,) * (3 - len(offset)) + offset
    return shaped, Window(tuple(size), tuple(wanted), offset)  # type: ignore[arg-type]


def _optimizer(options: TrainOptions, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if options.optimizer == "sgd":
        return torch.optim.SGD(params, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay)
    return torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)


def _schedule(options: TrainOptions, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    steps = options.steps
    if options.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                 lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    if options.schedule == "step":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.1 ** (3 * s // steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def _tensors(net: TrainableNet, optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    tensors = {f"net/{k}": v for k, v in net.params().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"opt/{index}/{key}"] = value.detach().cpu().numpy().copy() if torch.is_tensor(value) \
                else np.asarray(value)
    return tensors


def _restore(net: TrainableNet, optimizer: torch.optim.Optimizer, saved: checkpoint.Checkpoint) -> None:
    with torch.no_grad():
        for name, tensor in net.named_tensors().items():
            tensor.copy_(torch.from_numpy(saved.tensors[f"net/{name}"]))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in saved.tensors.items():
        if key.startswith("opt/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = torch.from_numpy(value.copy())
    optimizer.load_state_dict({"state": state, "param_groups": saved.state["param_groups"]})


PASSES = ("forward", "data", "weight")


def _choices_json(choice: TrainChoice) -> dict[str, list[dict[str, Any]]]:
    """The conv choices as network files store them (plan/plan.py), per pass."""
    return {part: choices_json(getattr(choice, part)) for part in PASSES}


def _choices_from_json(data: dict[str, list[dict[str, Any]]]) -> TrainChoice:
    return TrainChoice(*(choices_from_json(data[part]) for part in PASSES))


class _Progress:
    """One line per `every` steps (rewritten in place on a terminal): step, loss, steps/s, ETA."""

    def __init__(self, total: int, first: int, stream: TextIO | None) -> None:
        self.total, self.first, self.stream = total, first, stream
        self.start = time.perf_counter()
        self.tty = stream is not None and stream.isatty()
        self.every = 1 if self.tty else max(1, total // 50)
        self.last = 0.0

    def step(self, step: int, loss: float, extra: str = "") -> None:
        if self.stream is None:
            return
        now = time.perf_counter()
        done = step - self.first
        if not extra and step != self.total and step % self.every and not (self.tty and now - self.last > 0.5):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        line = (f"train: step {step}/{self.total}  loss {loss:.4f}  {rate:.2f} steps/s  "
                f"ETA {eta:.0f} s{('  ' + extra) if extra else ''}")
        end = "\r" if self.tty and not extra and step != self.total else "\n"
        self.stream.write(("\r" if self.tty else "") + line + end)
        self.stream.flush()


def train(model: Any, image: Any, labels: Any, out: str | Path, options: TrainOptions | None = None, *,
          mask: Any = None, input_shape: Sequence[int] | None = None, weights: Any = None,
          stream: TextIO | None = sys.stderr) -> TrainSummary:
    """Train `model` (anything `znnx.load` takes, or a Graph) on `image` with the segmentation
    `labels`; writes `out`/net.znnx, history.json, curves.png and checkpoints/. PyTorch's thread
    count and deterministic mode are set for the run and restored after it."""
    options = options or TrainOptions()
    _check(options)
    threads = torch.get_num_threads()
    deterministic, warn_only = (torch.are_deterministic_algorithms_enabled(),
                                torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        if options.threads:
            torch.set_num_threads(options.threads)
        torch.use_deterministic_algorithms(options.deterministic, warn_only=True)
        return _run(model, image, labels, Path(out), options, mask, input_shape, weights, stream)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _run(model: Any, image: Any, labels: Any, folder: Path, options: TrainOptions, mask: Any,
         input_shape: Sequence[int] | None, weights: Any, stream: TextIO | None) -> TrainSummary:
    from znnx.frontends import load

    volumes, scale = read_volumes(image, labels, mask, options.scale)
    graph = model if isinstance(model, Graph) else load(model, input_shape=input_shape, weights=weights)
    if options.init:
        graph = initialized(graph, options.init, seed=options.seed)
    graph, window = fitted(training_graph(graph), options.patch)
    logits = without_final_activation(graph)
    form = head_form(final_activation(graph), graph.types[graph.outputs[0]].channels, TARGETS[options.target])
    loss_fn = loss_function(options.loss, form)
    train_part, val_part = _regions(volumes, window, options.validation)
    sampler = Sampler(train_part, window, options.target, options.rebalance, options.augment, options.seed)

    saved = checkpoint.latest(folder / "checkpoints") if options.resume else None
    torch.manual_seed(options.seed)
    backend, device = backends.resolve(options.device)
    native = not backend.TRAINING_KERNELS or options.precision != "fp32"
    if native:
        choice = TrainChoice((), (), ())
    else:
        choice = _choices_from_json(saved.state["choices"]) if saved else choose(logits, options.batch,
                                                                                options.algorithm)
    net = TrainableNet(logits, choice.algorithms(), native=native, device=str(device)).train()
    optimizer = _optimizer(options, list(net.parameters()))
    schedule = _schedule(options, optimizer)
    mixed = torch.autocast(device.type, PRECISIONS[options.precision], enabled=options.precision != "fp32")
    scaler = torch.amp.GradScaler(device.type, enabled=options.precision == "fp16")
    history: list[dict[str, Any]] = []
    first, elapsed = 0, 0.0
    if saved is not None:
        _restore(net, optimizer, saved)
        schedule.load_state_dict(saved.state["schedule"])
        torch.set_rng_state(torch.tensor(saved.state["rng"], dtype=torch.uint8))
        history, first, elapsed = saved.state["history"], saved.step, float(saved.state["seconds"])
        if saved.state.get("scaler"):
            scaler.load_state_dict(saved.state["scaler"])
    progress = _Progress(options.steps, first, stream)
    began = time.perf_counter() - elapsed
    loss_value = float("nan")
    scores: Scores | None = None
    for step, samples in enumerate(batches(sampler, first, options.steps - first, options.batch), first + 1):
        x, t, w = (torch.from_numpy(np.stack([getattr(s, k) for s in samples])).to(device)
                   for k in ("image", "target", "weight"))
        optimizer.zero_grad(set_to_none=True)
        with mixed:
            y = net(x)
        loss = loss_fn(y.float(), t, w)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        loss_value = float(loss.detach())
        entry: dict[str, Any] = {"step": step, "loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                                 "seconds": time.perf_counter() - began}
        extra = ""
        if val_part is not None and (step % options.validate_every == 0 or step == options.steps):
            with mixed:
                prediction = predict(net, probability(form), val_part.image, window)
            scores = score(options.target, prediction, val_part, window)
            entry.update(dict(scores.values))
            extra = "  ".join(f"{k} {v:.4f}" for k, v in scores.values)
        history.append(entry)
        progress.step(step, loss_value, extra)
        if step % options.checkpoint_every == 0 or step == options.steps:
            checkpoint.save(folder / "checkpoints", step, _tensors(net, optimizer), {
                "param_groups": optimizer.state_dict()["param_groups"], "schedule": schedule.state_dict(),
                "rng": torch.get_rng_state().tolist(), "choices": _choices_json(choice), "history": history,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "seconds": time.perf_counter() - began, "options": _options_json(options)})
    return _finish(folder, net, graph, window, scale, history, choice, loss_value, scores,
                   time.perf_counter() - began)


def _regions(volumes: Volumes, window: Window, fraction: float) -> tuple[Volumes, Volumes | None]:
    depth = volumes.image.shape[1]
    if fraction == 0:
        return volumes, None
    held = max(math.ceil(depth * fraction), window.input[0])
    if depth - held < window.input[0]:
        raise InputError(f"train: {depth} sections cannot hold both a training and a validation region of the "
                         f"net's input depth {window.input[0]}; use validation=0 (--validation 0) or more data")
    return volumes.region(slice(0, depth - held)), volumes.region(slice(depth - held, depth))


def _options_json(options: TrainOptions) -> dict[str, Any]:
    data = dataclasses.asdict(options)
    return json.loads(json.dumps(data, default=str))


def _finish(folder: Path, net: TrainableNet, graph: Graph, window: Window, scale: float,
            history: list[dict[str, Any]], choice: TrainChoice, loss: float, scores: Scores | None,
            seconds: float) -> TrainSummary:
    from znnx.training.export import export_network, export_onnx

    folder.mkdir(parents=True, exist_ok=True)
    trained = net.exported(graph)
    network = export_network(trained, window.input, scale, folder / "net.znnx")
    onnx_file = export_onnx(trained, folder / "net.onnx")
    history_path = folder / "history.json"
    history_path.write_text(json.dumps(history, indent=1))
    curves = plot(history, folder / "curves.png")
    return TrainSummary(len(history) and history[-1]["step"], seconds, loss, scores, network, onnx_file, history_path,
                        curves, choice.table())


def plot(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Loss (log scale) and the validation metric against the step, as a PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [h["step"] for h in history]
    figure, left = plt.subplots(figsize=(7, 4))
    left.plot(steps, [h["loss"] for h in history], color="tab:blue", linewidth=0.8, label="training loss")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.set_yscale("log")
    metrics = [k for k in ("boundary_f1", "pixel_error", "adapted_rand_error") if any(k in h for h in history)]
    if metrics:
        right = left.twinx()
        for name, colour in zip(metrics, ("tab:red", "tab:green", "tab:purple")):
            points = [(h["step"], h[name]) for h in history if name in h]
            right.plot(*zip(*points), marker="o", color=colour, label=name)
        right.set_ylabel("validation")
        right.legend(loc="upper right")
    left.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

