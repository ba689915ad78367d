"""The `znnx` command: a thin layer over the library. Errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from znnx import status
from znnx.errors import ModelError, ZnnxError
from znnx.plan.precision import PRECISIONS


def _shape(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,64,64,64, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return values


def resolve_model(spec: str) -> Any:
    """A model file path as is; `file.py:factory` or `package.module:factory` called to build a module."""
    if spec.lower().endswith((".onnx", ".prototxt", ".znn")) or ":" not in spec:
        return spec
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelError(f"cli: python file {target!r} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"_znnx_model_{path.stem}", path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module  # dataclasses and pickling look the module up there
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise ModelError(f"cli: cannot import {target!r}: {error}") from None
    if not hasattr(module, attr):
        raise ModelError(f"cli: {target!r} has no attribute {attr!r}")
    factory = getattr(module, attr)
    return factory() if callable(factory) and not hasattr(factory, "forward") else factory


def _is_network_file(spec: str) -> bool:
    return spec.lower().endswith(".znnx")


def _load_graph(args: argparse.Namespace) -> Any:
    import znnx

    weights = args.weights
    if weights is None and args.model.lower().endswith(".prototxt"):
        weights = "random"  # the table depends on shapes only
    return znnx.load(resolve_model(args.model), args.input_shape, weights)


DENSE = ("auto", "dilated", "mpf", "off")


def _dense(args: argparse.Namespace) -> bool | str:
    """--dense as `compile` takes it; unset: auto for ZNN .znn nets (dense by definition), off otherwise."""
    choice = args.dense or ("auto" if args.model.lower().endswith(".znn") else "off")
    return False if choice == "off" else choice


def _dense_lines(net: Any) -> list[str]:
    return [] if net.plan.dense is None else [f"dense: {net.plan.dense.summary()}"]


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):,.1f} MiB"


def _memory_lines(net: Any) -> list[str]:
    plan = net.plan.memory
    loop = ([f"one fragment at a time: the {plan.loop.passes} offsets of {plan.loop.fragment!r} run their section "
             f"({len(plan.loop.body.nodes)} nodes) one after another"] if plan.loop else [])
    return [f"memory per patch: planned peak {_mib(plan.peak_bytes)} (arena {_mib(plan.arena_bytes)} in "
            f"{len(plan.slot_bytes)} slots), all tensors live {_mib(plan.naive_bytes)}, "
            f"weights {_mib(plan.weight_bytes)}", *loop]


def _algorithm(text: str) -> str | dict[str, str]:
    """`auto`, one algorithm for every conv, or per layer: `conv3d_1=winograd4,conv3d_2=direct`."""
    if "=" not in text:
        return text
    try:
        return dict(part.split("=", 1) for part in text.split(","))  # type: ignore[misc]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NODE=ALGORITHM[,NODE=ALGORITHM...], got {text!r}") from None


def _fragments(ttype: Any) -> str:
    return f"{ttype.fragments} x " if ttype.fragments > 1 else ""


def _plan_lines(net: Any) -> list[str]:
    """Each conv's algorithm and measured time (every candidate's time in brackets)."""
    lines = [f"{'conv':<22} {'op':<18} {'in -> out (C, D, H, W)':<34} {'algorithm':<10} {'ms':>8}  "
             f"{'source':<8} candidates (ms, error vs direct)"]
    for choice in net.algorithms:
        node = next(n for n in net.graph.nodes if n.name == choice.node)
        x, y = net.graph.types[node.inputs[0]], net.graph.types[node.output]
        shapes = f"{_fragments(x)}{(x.channels, *x.spatial)} -> {_fragments(y)}{(y.channels, *y.spatial)}"
        errors = dict(choice.errors)
        candidates = ", ".join(f"{a} {t * 1e3:.1f}" + (f" ({errors[a]:.0e})" if a in errors and a != "direct" else "")
                               for a, t in choice.seconds)
        time_ms = f"{choice.time * 1e3:.1f}" if choice.time is not None else "-"
        lines.append(f"{node.name:<22} {'+'.join((node.op, *node.attrs.get('epilogue', ()))):<18} {shapes:<34} "
                     f"{choice.algorithm.name:<10} {time_ms:>8}  {choice.source:<8} {candidates}")
    return lines


def _inspect(args: argparse.Namespace) -> int:
    import znnx

    algorithm = args.algorithm if args.plan else "direct"
    if _is_network_file(args.model):
        net = znnx.load_net(args.model, algorithm=algorithm)
        print("\n".join([f"network file {args.model}", net.summary(), *_memory_lines(net),
                         "rewrites: " + ", ".join(f"{n}: {c}" for n, c in net.rewrites)]))
    else:
        graph = _load_graph(args)
        dense = _dense(args)
        before = znnx.compile(graph, args.patch, optimize=False, algorithm="direct",
                              dense=dense if dense in (False, "dilated", "mpf") else "dilated")
        if not args.optimized and not args.plan:
            print(before.summary())
            return 0
        net = znnx.compile(graph, args.patch, algorithm=algorithm, retune=args.retune, dense=dense)
        if args.optimized:
            print("\n".join([
                f"before optimization ({len(before.graph.nodes)} nodes)", before.summary(), "",
                f"after optimization ({len(net.graph.nodes)} nodes)", net.summary(), *_memory_lines(net), "",
                "rewrites per pass:", *(f"  {name:<20} {count}" for name, count in net.rewrites),
            ]))
    if args.plan:
        import torch

        print("\n".join(["", *_dense_lines(net),
                         f"plan: convolution algorithms ({torch.get_num_threads()} threads; times of one patch)",
                         *_plan_lines(net)]))
    return 0


def _compile(args: argparse.Namespace) -> int:
    import znnx

    net = znnx.compile(_load_graph(args), args.patch, retune=args.retune, dense=_dense(args))
    path = net.save(args.output)
    print(f"wrote {path}: {net!r}, {len(net.graph.nodes)} nodes, {path.stat().st_size / (1 << 20):.1f} MiB")
    print("\n".join([*_memory_lines(net), *_dense_lines(net)]))
    return 0


def _run(args: argparse.Namespace) -> int:
    import znnx

    array = np.load(args.input, allow_pickle=False)
    shape = array.shape[1:] if args.batched else array.shape
    if _is_network_file(args.model):
        net = znnx.load_net(args.model, args.device, args.algorithm, args.precision)
    else:
        model = resolve_model(args.model)
        try:
            graph = znnx.load(model, shape, args.weights)
        except ModelError as error:
            try:  # a single-channel patch given without its channel axis
                graph = znnx.load(model, (1, *shape), args.weights)
            except ModelError:
                raise error from None
        net = znnx.compile(graph, shape[-graph.spatial_rank:] if _dense(args) else None, device=args.device,
                           algorithm=args.algorithm, precision=args.precision, dense=_dense(args))
    if net.input_shape[0] == 1 and tuple(shape) == tuple(net.input_shape[1:]):  # a 1-channel net, no channel axis
        array = np.expand_dims(array, 1 if args.batched else 0)
    start = time.perf_counter()
    result = net(array)
    seconds = time.perf_counter() - start
    np.save(args.output, result)
    voxels = np.prod(result.shape[-net.graph.spatial_rank:]) * (array.shape[0] if args.batched else 1)
    print(f"wrote {args.output}: shape {result.shape}, {seconds:.3f} s, {voxels / seconds:,.0f} output voxels/s")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _patch_or_auto(text: str) -> tuple[int, ...] | str:
    return "auto" if text == "auto" else _shape(text)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.25 or 0.5,0.25,0.25, "
                                         f"got {text!r}") from None


def _infer(args: argparse.Namespace) -> int:
    import json

    import torch

    import znnx
    from znnx.units import parse_bytes
    from znnx.volume import VolumeOptions, infer_volume
    from znnx.volume.runner import overlaps, parse_roi

    if args.threads:
        torch.set_num_threads(args.threads)
    first = args.device.split(",")[0]
    model = znnx.load_net(args.model, first, precision=args.precision) if _is_network_file(args.model) \
        else _load_graph(args)
    rank = model.graph.spatial_rank if isinstance(model, znnx.Net) else model.spatial_rank
    trained = model.plan.normalize if isinstance(model, znnx.Net) else None
    told = (args.scale, args.mean, args.std) != (None, None, None)
    scale, mean, std = (1.0, 0.0, 1.0) if told or trained is None else trained
    options = VolumeOptions(
        mode=args.mode, overlap=overlaps(args.overlap, rank), weighting=args.weighting,
        roi=parse_roi(args.roi, rank) if args.roi else None,
        scale=args.scale if args.scale is not None else scale, mean=args.mean if args.mean is not None else mean,
        std=args.std if args.std is not None else std,
        output_dtype=args.output_dtype, mask=args.mask, background=args.background, overwrite=args.overwrite,
        convert_input=args.convert_input, ome_zarr_levels=args.ome_zarr)
    memory = parse_bytes(args.memory) if args.memory else None
    if args.cluster or args.scheduler_file:
        import os

        from znnx.volume.dask_runner import connect, local_workers

        workers = local_workers(args.cluster)  # local:N shares the cores out
        threads = args.threads or (max(1, len(os.sched_getaffinity(0)) // workers) if workers else None)
        with connect(args.cluster, args.scheduler_file, memory) as client:
            summary = infer_volume(model, args.input, args.output, args.patch, options, memory, args.device,
                                   args.quiet, client=client, threads=threads, precision=args.precision,
                                   dense=_dense(args))
    else:
        summary = infer_volume(model, args.input, args.output, args.patch, options, memory, args.device, args.quiet,
                               precision=args.precision, dense=_dense(args))
    result = summary.to_json()
    if args.segment:
        from znnx.segment import segment
        from znnx.volume import storage

        chunks = storage.open_volume(args.output).chunks or (64, 64, 64)
        segmented = segment(args.output, args.segment, _segment_options(args), chunk=chunks[-3:],
                            hierarchy=args.hierarchy)
        result["segment"] = _segment_json(segmented, args.segment, args.hierarchy)
    report = json.dumps(result, indent=2, default=str)
    if args.json:
        Path(args.json).write_text(report + "\n")
    print(report)
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from znnx.training.data import Augment
    from znnx.training.run import TrainOptions, train

    augment = Augment(flips=not args.no_augment, transpose=not args.no_augment, jitter=0 if args.no_augment else
                      args.jitter, missing=args.missing_sections, misalign=args.misalign)
    options = TrainOptions(
        target=args.target, patch=args.patch, steps=args.steps, batch=args.batch, optimizer=args.optimizer,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule, loss=args.loss,
        rebalance=not args.no_rebalance, augment=augment, validation=args.validation,
        validate_every=args.validate_every, checkpoint_every=args.checkpoint_every, seed=args.seed,
        threads=args.threads, init=args.init, scale=args.scale, algorithm=args.algorithm, resume=args.resume,
        device=args.device, precision=args.precision)
    torch.manual_seed(args.seed)  # a module built by a factory draws its initial weights from it
    summary = train(resolve_model(args.model), args.image, args.labels, args.out, options, mask=args.mask,
                    input_shape=args.input_shape, weights=args.weights, stream=None if args.quiet else sys.stderr)
    scores = "" if summary.scores is None else ", " + ", ".join(f"{k} {v:.4f}" for k, v in summary.scores.values)
    print(f"trained {summary.steps} steps in {summary.seconds:.1f} s: loss {summary.loss:.4f}{scores}")
    print(summary.choices)
    print(f"wrote {summary.network_file}, {summary.onnx}, {summary.history}"
          + (f", {summary.curves}" if summary.curves else " (no curves.png: install matplotlib)"))
    return 0


def _synth(args: argparse.Namespace) -> int:
    import zarr

    from znnx.training.synthetic import em_volume

    image, labels = em_volume(args.shape, args.spacing, args.seed)
    out = Path(args.out)
    for name, data in (("raw", image), ("labels", labels)):
        zarr.create_array(store=str(out), name=name, data=np.asarray(data), chunks=(32, 32, 32), overwrite=True)
    print(f"wrote {out}/raw (uint8 image) and {out}/labels (uint64 segmentation), shape {image.shape}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from znnx.demo import run_demo

    print(run_demo(Path(args.out), args.size, args.device))
    return 0


def _segment_options(args: argparse.Namespace) -> Any:
    from znnx.segment import SegmentOptions

    return SegmentOptions(low=args.low, high=args.high, size=args.size, score=args.score, threshold=args.threshold)


def _segment_json(summary: Any, output: str, hierarchy: str | None) -> dict[str, Any]:
    return {"output": output, "hierarchy": hierarchy, "shape": summary.shape, "seconds": round(summary.seconds, 3),
            "voxels_per_s": round(summary.voxels_per_s), "merges": summary.merges,
            "peak_rss_mib": round(summary.peak_rss_bytes / 2**20),
            "step_seconds": {k: round(v, 3) for k, v in summary.steps.items()}}


def _segment(args: argparse.Namespace) -> int:
    from znnx.segment import segment

    summary = segment(args.affinities, args.output, _segment_options(args), chunk=args.chunk, cluster=args.cluster,
                      workers=args.workers, hierarchy=args.hierarchy, fragments=args.fragments)
    import json

    print(json.dumps(_segment_json(summary, args.output, args.hierarchy), indent=2))
    return 0


def _add_segment_options(command: argparse.ArgumentParser, prefix: str = "") -> None:
    from znnx.segment import SegmentOptions
    from znnx.segment.graph import SCORES

    default = SegmentOptions()
    command.add_argument("--low", type=float, default=default.low,
                         help=f"{prefix}watershed: affinities at or below are no edges (default {default.low})")
    command.add_argument("--high", type=float, default=default.high,
                         help=f"{prefix}watershed: affinities at or above always join (default {default.high})")
    command.add_argument("--size", type=int, default=default.size,
                         help=f"{prefix}watershed: single linkage merges basins smaller than this many voxels "
                              f"(default {default.size})")
    command.add_argument("--score", choices=SCORES, default=default.score,
                         help=f"{prefix}agglomeration: interface affinity statistic (default {default.score})")
    command.add_argument("--threshold", type=float, default=default.threshold,
                         help=f"{prefix}agglomeration: merge while the best score exceeds this (default "
                              f"{default.threshold})")
    command.add_argument("--hierarchy", metavar="PATH.npz", help=f"{prefix}write the merge hierarchy here")


def _bench(args: argparse.Namespace) -> int:
    import shlex

    from znnx.bench import machine, report, runner
    from znnx.bench.cost import load_prices
    from znnx.bench.models import NETS
    from znnx.bench.peers import PEERS

    if args.report_only:
        source = Path(args.report_only)
        path = report.rewrite(source, source.parent, load_prices(), args.budget_gib * 1024)
        print(f"rewrote {path} and plots beside it from {source}")
        return 0
    from znnx.bench.peers import default_peers

    nets, peers = args.nets.split(","), (args.peers or default_peers(args.device)).split(",")
    unknown = [n for n in nets if n not in NETS] + [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown net or runtime {unknown}; nets: {sorted(NETS)}, runtimes: {sorted(PEERS)}")
    settings = runner.Settings(args.threads, args.warmup, args.reps, args.tiny, rounds=args.rounds, device=args.device,
                               precision=args.precision)
    print(f"znnx bench: {len(nets)} net(s) x {len(peers)} runtime(s), {args.threads} threads, {args.device}, "
          f"{args.precision}")
    results = runner.measure(nets, peers, settings, profile=True)
    sweep = []
    if args.sweep:
        print("patch sweep: znnx and the fastest peer of each net")
        for net in nets:
            best = report.best_peer(results, net)
            sweep_peers = ["znnx", *([best.peer] if best else [])]
            sizes = NETS[net].tiny_sweep if args.tiny else NETS[net].sweep
            sweep += runner.sweep(net, sweep_peers, sizes, runner.Settings(
                args.threads, 1, max(1, min(args.reps, 2)), args.tiny, device=args.device, precision=args.precision))
    command = "znnx bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["bench"] else \
        "znnx bench"
    path = report.write(Path(args.out), results, sweep, settings, machine.describe(), command, load_prices(),
                        args.budget_gib * 1024)
    print(path.read_text().split("## Side by side", 1)[1].split("![", 1)[0])
    print(f"wrote {path} and plots beside it")
    return 0


RETUNE_HELP = "measure every convolution again and replace the cached choices (e.g. after tuning on a busy machine)"


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="znnx", description="Run trained 3D ConvNets over volumes, fast.")
    commands = main.add_subparsers(dest="command", required=True)
    model_help = ("an .onnx, Caffe .prototxt or ZNN .znn file, or file.py:factory / package.module:factory "
                  "returning a torch.nn.Module")
    net_help = model_help + ", or a .znnx network file from `znnx compile`"
    weights_help = ("Caffe weights (.caffemodel, .npz, .h5) for a .prototxt model, or 'random'; a .safetensors "
                    "file (or network file) for a .znn net (default: its init rules)")
    dense_help = ("output at every voxel for a net that pools or strides (as a sliding-window patch classifier): "
                  "auto measures ZNN's dilated form and ZNNi's max-pooling fragments (mpf) and keeps the faster; "
                  "dilated or mpf forces one; off runs the net as it pools (default: auto for .znn nets, else off)")
    precision_help = ("fp32 (default); bf16 (CPUs with AVX512-BF16 / AMX, and CUDA: ~2.8x faster direct convs on "
                      "such CPUs, ~1e-2 relative error); tf32, fp16 (CUDA)")
    algorithm_help = ("conv algorithm on the CPU: auto (measure each layer, cached; default), direct, winograd2, "
                      "winograd4, fft (wherever it applies), or per layer NODE=ALGO[,NODE=ALGO...]")

    inspect = commands.add_parser("inspect", help="show a model's layers, parameters, FLOPs and geometry",
                                  description="Show each layer (op, output shape, parameters, FLOPs) and the "
                                              "net's receptive field and output/input geometry.")
    inspect.add_argument("model", help=net_help)
    inspect.add_argument("--input-shape", type=_shape, metavar="C,D,H,W",
                         help="input channels and patch size (required for torch modules)")
    inspect.add_argument("--patch", type=_shape, metavar="D,H,W", help="show the geometry for this patch size")
    inspect.add_argument("--weights", help=weights_help + " (default for .prototxt: random; the table needs "
                                                           "shapes only)")
    inspect.add_argument("--optimized", action="store_true",
                         help="also show the graph after the optimization passes and what each pass rewrote")
    inspect.add_argument("--retune", action="store_true", help=RETUNE_HELP)
    inspect.add_argument("--plan", action="store_true",
                         help="also compile for the CPU and show each conv's algorithm and time (the autotuner "
                              "measures what is not in its cache)")
    inspect.add_argument("--algorithm", type=_algorithm, default="auto", help=algorithm_help)
    inspect.add_argument("--quiet", action="store_true", help="no status line while tuning or computing")
    inspect.add_argument("--dense", choices=DENSE, help=dense_help)
    inspect.set_defaults(handler=_inspect)

    compile_ = commands.add_parser("compile", help="optimize a model for one patch size and save a network file",
                                   description="Import MODEL, run the optimization passes, plan memory for the "
                                               "patch and write the result as a network file (safetensors with a "
                                               "JSON header; no code) that `znnx run` and znnx.load_net() read.")
    compile_.add_argument("model", help=model_help)
    compile_.add_argument("--patch", type=_shape, metavar="D,H,W", required=True, help="input patch size")
    compile_.add_argument("-o", "--output", required=True, help="network file to write (e.g. net.znnx)")
    compile_.add_argument("--input-shape", type=_shape, metavar="C,D,H,W",
                          help="input channels and a patch size the model accepts (required for torch modules)")
    compile_.add_argument("--weights", help=weights_help)
    compile_.add_argument("--quiet", action="store_true", help="no status line while tuning or computing")
    compile_.add_argument("--retune", action="store_true", help=RETUNE_HELP)
    compile_.add_argument("--dense", choices=DENSE, help=dense_help)
    compile_.set_defaults(handler=_compile)

    run = commands.add_parser("run", help="run a model on one .npy patch",
                              description="Run MODEL on INPUT.npy, shaped (C, *spatial), and save OUTPUT.npy.")
    run.add_argument("model", help=net_help)
    run.add_argument("input", help="input array (.npy), floating point, shaped (C, *spatial)")
    run.add_argument("output", help="where to write the output array (.npy)")
    run.add_argument("--batched", action="store_true", help="the input is (N, C, *spatial)")
    run.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    run.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help=precision_help)
    run.add_argument("--weights", help=weights_help)
    run.add_argument("--algorithm", type=_algorithm, default="auto", help=algorithm_help)
    run.add_argument("--quiet", action="store_true", help="no status line while tuning or computing")
    run.add_argument("--dense", choices=DENSE, help=dense_help)
    run.set_defaults(handler=_run)

    infer = commands.add_parser(
        "infer", help="run a model over a whole volume on disk and write the result (resumable)",
        description="Stream a volume (zarr vol.zarr/raw, HDF5 file.h5:/raw, TIFF, .npy, N5) through a model block "
                    "by block and write a (C, D, H, W) output. Rerunning the same command after a crash finishes "
                    "only the missing blocks. Progress goes to stderr, a JSON summary to stdout.")
    infer.add_argument("model", help=net_help)
    infer.add_argument("input", help="input volume, (D, H, W) or (C, D, H, W): vol.zarr/raw, file.h5:/raw, "
                                     "x.tif, x.npy")
    infer.add_argument("output", help="output volume (created): vol.zarr/pred (default format), file.h5:/pred, ...")
    infer.add_argument("--patch", type=_patch_or_auto, default="auto", metavar="auto|D,H,W",
                       help="input patch size; auto (default) measures candidates within --memory")
    infer.add_argument("--mode", choices=("exact", "blend"), default="exact",
                       help="exact: equals whole-volume inference (default); blend: overlapping weighted windows")
    infer.add_argument("--overlap", type=_floats, default=(0.25,), metavar="F[,F,F]",
                       help="blend mode: window overlap per axis (default 0.25)")
    infer.add_argument("--weighting", choices=("gaussian", "bump", "constant"), default="gaussian",
                       help="blend mode: window weights (default gaussian)")
    infer.add_argument("--memory", metavar="SIZE",
                       help="memory budget for --patch auto, e.g. 8GiB (default: 80%% of the free RAM, half the free "
                            "GPU memory); with --cluster local:N each worker's memory limit (default: RAM / N)")
    infer.add_argument("--device", default="cpu",
                       help="cpu (default), cuda[:N], or several, e.g. cuda,cpu: each device runs its own net (own "
                            "automatic patch, --memory applying to each) on blocks from one queue")
    infer.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help=precision_help)
    infer.add_argument("--threads", type=_positive_int,
                       help="compute threads (default: PyTorch's; on a cluster, per worker: the cores shared out "
                            "for local:N, the workers' own setting otherwise)")
    infer.add_argument("--cluster", metavar="local:N|tcp://HOST:PORT",
                       help="run the blocks on Dask: local:N starts N worker processes on this machine, an address "
                            "attaches to a running scheduler (needs the dask extra; workers must see the same paths)")
    infer.add_argument("--scheduler-file", help="attach to the Dask scheduler described by this file")
    infer.add_argument("--mask", help="volume of the input's spatial shape; blocks where it is all zero are skipped")
    infer.add_argument("--background", type=float, help="skip blocks whose input is entirely this value")
    infer.add_argument("--output-dtype", choices=("float32", "float16", "uint8"), default="float32",
                       help="uint8 maps [0, 1] to 0..255, clipped (default float32)")
    infer.add_argument("--roi", metavar="Z0:Z1,Y0:Y1,X0:X1", help="compute only this box (output keeps the "
                                                                  "volume's shape)")
    infer.add_argument("--scale", type=float, help="the net sees (x * scale - mean) / std; e.g. 0.00392156 for "
                                                   "uint8 -> [0, 1] (default 1, or what a network file from "
                                                   "`znnx train` records; giving any of the three overrides it)")
    infer.add_argument("--mean", type=float, help="subtracted after --scale (default 0)")
    infer.add_argument("--std", type=float, help="divides after --mean (default 1)")
    infer.add_argument("--overwrite", action="store_true", help="replace an existing output and its ledger")
    infer.add_argument("--ome-zarr", type=_positive_int, nargs="?", const=3, default=0, metavar="LEVELS",
                       help="write OUTPUT as an OME-Zarr group (e.g. pred.ome.zarr) that napari and neuroglancer "
                            "open, with LEVELS resolution levels (default 3)")
    infer.add_argument("--convert-input", action="store_true",
                       help="convert an input of another dtype (int32, bool, ...) to float32 instead of refusing it")
    infer.add_argument("--quiet", action="store_true", help="no progress line")
    infer.add_argument("--json", metavar="PATH", help="also write the JSON summary here")
    infer.add_argument("--input-shape", type=_shape, metavar="C,D,H,W", help="for torch factories: an example shape")
    infer.add_argument("--weights", help=weights_help)
    infer.add_argument("--segment", metavar="LABELS",
                       help="then segment the output (affinities (3, ...) or a boundary map) into this uint64 "
                            "label volume, chunk by chunk on the output's chunks")
    _add_segment_options(infer, "with --segment: ")
    infer.add_argument("--dense", choices=DENSE, help=dense_help)
    infer.set_defaults(handler=_infer)

    segment = commands.add_parser(
        "segment", help="segment an affinity volume (or boundary map) into labels: watershed + agglomeration",
        description="Watershed basins of the affinity graph, size-dependent single linkage, then agglomeration by "
                    "the interface affinity. Without --chunk in memory; with it chunk by chunk (resumable: rerun "
                    "the same command), with exactly the in-memory result.")
    segment.add_argument("affinities", help="(3, D, H, W) affinities or a (D, H, W) boundary map: vol.zarr/aff, "
                                            "file.h5:/aff, x.npy, ...")
    segment.add_argument("output", help="uint64 label volume (created): seg.zarr (default format), file.h5:/seg, ...")
    segment.add_argument("--chunk", type=_shape, metavar="D,H,W", help="segment chunk by chunk (memory bounded by "
                                                                      "the chunk, not the volume)")
    segment.add_argument("--cluster", metavar="local:N|tcp://HOST:PORT", help="run the chunks on Dask")
    segment.add_argument("--workers", type=_positive_int, default=1,
                         help="with --chunk and no --cluster: local worker processes (default 1)")
    segment.add_argument("--fragments", metavar="PATH", help="also write the watershed basins (uint64) here")
    _add_segment_options(segment)
    segment.add_argument("--quiet", action="store_true", help="no status line")
    segment.set_defaults(handler=_segment)

    train = commands.add_parser("train", help="train or fine-tune a net on a labelled volume",
                                description="Train MODEL on IMAGE with the segmentation LABELS (boundary or "
                                            "affinity targets), writing OUT/net.znnx (for `znnx infer`), "
                                            "OUT/net.onnx, OUT/history.json, OUT/curves.png and OUT/checkpoints/.")
    train.add_argument("model", help=model_help)
    train.add_argument("--image", required=True, help="image volume (any format `znnx infer` reads)")
    train.add_argument("--labels", required=True, help="integer segmentation of the same volume (0: background)")
    train.add_argument("--mask", help="volume whose non-zero voxels are trained on (default: all)")
    train.add_argument("--out", required=True, help="output folder")
    train.add_argument("--target", choices=("boundary", "affinity"), default="boundary",
                       help="boundary: 1 channel (or 2 with softmax); affinity: 3 channels (z, y, x)")
    train.add_argument("--patch", type=_shape, metavar="D,H,W", help="output patch per sample (default: the net's "
                                                                     "output at --input-shape)")
    train.add_argument("--input-shape", type=_shape, metavar="C,D,H,W", help="input shape to import the model at "
                                                                             "(required for torch modules)")
    train.add_argument("--weights", help=weights_help)
    train.add_argument("--init", choices=("zero", "constant", "uniform", "gaussian", "bernoulli", "xavier", "msra"),
                       help="draw fresh weights by this rule (ZNN's names) instead of the model's own")
    train.add_argument("--steps", type=_positive_int, default=1000, help="optimizer steps (default 1000)")
    train.add_argument("--batch", type=_positive_int, default=1, help="patches per step (default 1)")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--schedule", choices=("constant", "cosine", "step"), default="constant",
                       help="learning-rate schedule over the run (step: x0.1 at 1/3 and 2/3)")
    train.add_argument("--loss", choices=("bce", "mse"), default="bce")
    train.add_argument("--no-rebalance", action="store_true", help="do not weigh each class half (ZNN's rebalance)")
    train.add_argument("--no-augment", action="store_true", help="no flips, transpositions or intensity jitter")
    train.add_argument("--jitter", type=float, default=0.1, help="intensity jitter amplitude (default 0.1)")
    train.add_argument("--missing-sections", type=float, default=0.0, metavar="P",
                       help="probability of blanking one z section of a sample (EM; default 0)")
    train.add_argument("--misalign", type=int, default=0, metavar="VOXELS",
                       help="shift the sections above a random z by up to this many voxels in y/x (EM; default 0)")
    train.add_argument("--validation", type=float, default=0.2,
                       help="fraction of z sections (from the end) held out for validation; 0: none (default 0.2)")
    train.add_argument("--validate-every", type=_positive_int, default=100, help="steps between validations")
    train.add_argument("--checkpoint-every", type=_positive_int, default=100, help="steps between checkpoints")
    train.add_argument("--scale", type=float, help="input normalization x * scale (default: 1/255 for uint8, "
                                                   "1/65535 for uint16, 1 for floats); recorded in net.znnx")
    train.add_argument("--algorithm", type=_algorithm, default="auto", help=algorithm_help)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=_positive_int, help="CPU threads (default: PyTorch's)")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT")
    train.add_argument("--device", default="cpu", help="cpu (default; znnx's kernels) or cuda[:N] (cuDNN)")
    train.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                       help="fp32 (default); bf16 (CPU or GPU) or fp16 (GPU) mixed precision under autocast, "
                            "with PyTorch's kernels")
    train.add_argument("--quiet", action="store_true", help="no progress line")
    train.set_defaults(handler=_train)

    synth = commands.add_parser("synth", help="write a synthetic labelled EM-like volume (for training demos)",
                                description="Write OUT/raw (uint8 image) and OUT/labels (uint64 cells) as zarr.")
    synth.add_argument("out", help="zarr group to write, e.g. data.zarr")
    synth.add_argument("--shape", type=_shape, default=(96, 96, 96), metavar="D,H,W")
    synth.add_argument("--spacing", type=_positive_int, default=12, help="cell size in voxels (default 12)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_synth)

    demo = commands.add_parser("demo", help="run the bundled example net on a synthetic volume",
                               description="Generate a synthetic volume, run the bundled U-Net on it, check "
                                           "the result against the reference executor and save both arrays.")
    demo.add_argument("--out", default="znnx-demo", help="output folder (default: znnx-demo)")
    demo.add_argument("--size", type=int, default=64, help="edge of the cubic volume (default: 64)")
    demo.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    demo.add_argument("--quiet", action="store_true", help="no status line while tuning or computing")
    demo.set_defaults(handler=_demo)

    bench = commands.add_parser("bench", help="benchmark znnx against PyTorch, ONNX Runtime and OpenVINO",
                                description="Run the benchmark U-Nets through znnx and each available peer side by "
                                            "side (same input, same threads, each in its own process) and write a "
                                            "markdown table, JSON and plots.")
    bench.add_argument("--nets", default="original,symmetric,residual,pznet", help="comma-separated benchmark nets")
    bench.add_argument("--peers", help="comma-separated runtimes (default: pytorch-eager, pytorch-channels-last, "
                                       "torch.compile, znnx, and on the CPU onnxruntime and openvino; also "
                                       "openvino-bf16, znnx-bf16)")
    bench.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: where every runtime runs")
    bench.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                       help="every runtime's precision (default fp32; the -bf16 runtimes always run bf16)")
    bench.add_argument("--threads", type=_positive_int, default=2, help="threads for every runtime (default 2)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed runs after the first (default 1)")
    bench.add_argument("--reps", type=int, default=3, help="timed runs; the median is reported (default 3)")
    bench.add_argument("--rounds", type=int, default=1,
                       help="runtimes of a net take turns this many times, each in a fresh process; the median is "
                            "over every round's timed runs (default 1; use 2-3 on a shared, noisy machine)")
    bench.add_argument("--sweep", action="store_true", help="also measure throughput against patch size")
    bench.add_argument("--budget-gib", type=float, default=16.0, help="memory budget for the sweep (default 16)")
    bench.add_argument("--tiny", action="store_true",
                       help="narrow nets on small patches: a smoke test, not a benchmark")
    bench.add_argument("--out", default="benchmarks/results", help="results folder (default benchmarks/results)")
    bench.add_argument("--report-only", metavar="RESULTS_JSON",
                       help="measure nothing: render results.md and plots again from a results.json")
    bench.set_defaults(handler=_bench)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    status.set_quiet(getattr(args, "quiet", False))
    try:
        return int(args.handler(args))
    except ZnnxError as error:
        status.clear()
        print(f"znnx: error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"znnx: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
