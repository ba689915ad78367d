"""Write benchmark results: a markdown report, the raw JSON, and PNG plots."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from znnx.bench.cost import PriceTable, cpu_throughput, gpu_throughput, usd_per_gigavoxel
from znnx.bench.peers import REFERENCE_PEER
from znnx.bench.runner import Measurement, Settings, error_flag

Shape = Sequence[int]


def _x(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _fmt(value: float, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def side_by_side_table(results: Sequence[Measurement], settings: Settings) -> list[str]:
    """One row per net and runtime; on a GPU a peak GPU memory column (PyTorch's allocator) too."""
    gpu = settings.device != "cpu"
    lines = [f"| net | patch in -> out | runtime | ms / patch (median of {settings.reps * settings.rounds}) | "
             f"output Mvox/s | vs eager | peak RSS MiB |{' peak GPU MiB |' if gpu else ''} max rel. error vs eager |",
             f"|---|---|---|---:|---:|---:|---:|{'---:|' if gpu else ''}---:|"]
    eager = {m.net: m for m in results if m.peer == REFERENCE_PEER and m.ok}
    for m in results:
        memory = f"{_fmt(m.peak_rss_mib, ',.0f')} |" + (f" {_fmt(m.peak_gpu_mib, ',.0f')} |" if gpu else "")
        if not m.ok:
            lines.append(f"| {m.net} | {_x(m.patch)} | {m.peer} | - | - | - | {memory} {m.error.replace('|', '/')} |")
            continue
        ratio = m.voxels_per_s / eager[m.net].voxels_per_s if m.net in eager else float("nan")
        limit = error_flag(m.peer, settings.precision)
        flag = f" **> {limit:g}, flagged**" if not m.max_rel_error <= limit else ""
        lines.append(f"| {m.net} | {_x(m.patch)} -> {_x(m.output_shape[2:])} | {m.peer} | {m.median_s * 1e3:,.0f} | "
                     f"{m.voxels_per_s / 1e6:.3f} | {_fmt(ratio, '.2f')}x | {memory} "
                     f"{_fmt(m.max_rel_error, '.1e')}{flag} |")
    return lines


def best_peer(results: Sequence[Measurement], net: str) -> Measurement | None:
    peers = [m for m in results if m.net == net and m.ok and m.peer != "znnx"]
    return max(peers, key=lambda m: m.voxels_per_s, default=None)


def layer_table(m: Measurement, top: int = 12) -> list[str]:
    total = sum(layer["seconds"] for layer in m.layers)
    rows = sorted(m.layers, key=lambda layer: -layer["seconds"])
    lines = [f"**{m.net}** ({_x(m.patch)}, {total * 1e3:,.0f} ms summed over {len(rows)} nodes)", "",
             "| node | op | algorithm | ms | GFLOP/s | share |", "|---|---|---|---:|---:|---:|"]
    for layer in rows[:top]:
        rate = layer["flops"] / layer["seconds"] / 1e9 if layer["seconds"] > 0 else float("nan")
        lines.append(f"| {layer['node']} | {layer['op']} | {layer['algorithm'] or '-'} | "
                     f"{layer['seconds'] * 1e3:,.1f} | {_fmt(rate, '.1f')} | {layer['seconds'] / total:.1%} |")
    rest = sum(layer["seconds"] for layer in rows[top:])
    if rest:
        lines.append(f"| {len(rows) - top} other nodes | | | {rest * 1e3:,.1f} | | {rest / total:.1%} |")
    by_op: dict[str, float] = defaultdict(float)
    for layer in rows:
        by_op[layer["op"]] += layer["seconds"]
    shares = sorted(by_op.items(), key=lambda kv: -kv[1])
    lines += ["", "By op: " + ", ".join(f"{op} {t / total:.0%}" for op, t in shares)]
    return lines


def cost_table(results: Sequence[Measurement], prices: PriceTable, threads: int,
               gpu_results: dict[str, float] | None = None) -> list[str]:
    lines = [f"Prices: {prices.read_on}. {prices.note}", "",
             "| net | runtime | instance | USD / h | assumed output Mvox/s | USD / gigavoxel |",
             "|---|---|---|---:|---:|---:|"]
    nets = dict.fromkeys(m.net for m in results)
    for net in nets:
        chosen = [m for m in (next((m for m in results if m.net == net and m.peer == "znnx" and m.ok), None),
                              best_peer(results, net)) if m is not None]
        for m in chosen:
            for instance in prices.instances:
                if instance.kind == "cpu":
                    rate: float | None = cpu_throughput(instance, m.voxels_per_s, threads)
                else:
                    rate = gpu_throughput(instance, gpu_results or {})
                price = "not measured" if rate is None else f"{usd_per_gigavoxel(instance.usd_per_hour, rate):,.2f}"
                lines.append(f"| {net} | {m.peer} | {instance.name} | {instance.usd_per_hour:.3f} | "
                             f"{'-' if rate is None else f'{rate / 1e6:.2f}'} | {price} |")
    return lines


def budget_limit(points: Sequence[Measurement], budget_mib: float) -> float | None:
    """Input voxels at which peak RSS reaches the budget: a least-squares line through the measured
    (input voxels, peak RSS) points, extended. None with fewer than two points or no growth."""
    ok = [m for m in points if m.ok]
    if len(ok) < 2:
        return None
    xs = [math.prod(m.patch) for m in ok]
    ys = [m.peak_rss_mib for m in ok]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0
    if slope <= 0:
        return None
    return (budget_mib - (mean_y - slope * mean_x)) / slope


def budget_table(results: Sequence[Measurement], budget_mib: float) -> list[str]:
    lines = [f"| net | runtime | input patch at the {budget_mib / 1024:.0f} GiB budget (extrapolated) | "
             "largest measured patch |", "|---|---|---:|---:|"]
    for net in dict.fromkeys(m.net for m in results):
        for peer in dict.fromkeys(m.peer for m in results if m.net == net):
            points = [m for m in results if m.net == net and m.peer == peer]
            limit = budget_limit(points, budget_mib)
            largest = max((math.prod(m.patch) for m in points if m.ok), default=0)
            lines.append(f"| {net} | {peer} | {'-' if limit is None else f'{limit / 1e6:,.1f} Mvoxel'} | "
                         f"{largest / 1e6:.2f} Mvoxel |")
    return lines


def sweep_table(results: Sequence[Measurement], budget_mib: float) -> list[str]:
    lines = ["| net | runtime | patch in -> out | output Mvox/s | peak RSS MiB | within budget |",
             "|---|---|---|---:|---:|---|"]
    for m in results:
        fits = m.ok and m.peak_rss_mib <= budget_mib
        shape = f"{_x(m.patch)} -> {_x(m.output_shape[2:])}" if m.ok else _x(m.patch)
        lines.append(f"| {m.net} | {m.peer} | {shape} | {_fmt(m.voxels_per_s / 1e6, '.3f') if m.ok else '-'} | "
                     f"{_fmt(m.peak_rss_mib, ',.0f')} | {'yes' if fits else 'no: ' + (m.error or 'over budget')} |")
    return lines


def plot_side_by_side(results: Sequence[Measurement], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(m.net for m in results))
    peers = list(dict.fromkeys(m.peer for m in results))
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(nets)), 4.5))
    width = 0.8 / len(peers)
    for i, peer in enumerate(peers):
        values = [next((m.voxels_per_s / 1e6 for m in results if m.net == n and m.peer == peer and m.ok), 0.0)
                  for n in nets]
        ax.bar([k + i * width for k in range(len(nets))], values, width, label=peer)
    ax.set_xticks([k + width * (len(peers) - 1) / 2 for k in range(len(nets))], nets)
    ax.set_ylabel("output throughput (Mvoxel/s)")
    ax.set_title("Whole-net throughput, fp32, same threads and input (higher is better)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(results: Sequence[Measurement], budget_mib: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(m.net for m in results))
    fig, axes = plt.subplots(2, len(nets), figsize=(4.5 * len(nets), 7), squeeze=False)
    for column, net in enumerate(nets):
        top, bottom = axes[0][column], axes[1][column]
        for peer in dict.fromkeys(m.peer for m in results if m.net == net):
            points = [m for m in results if m.net == net and m.peer == peer]
            fits = [m for m in points if m.ok and m.peak_rss_mib <= budget_mib]
            over = [m for m in points if m.ok and m.peak_rss_mib > budget_mib]
            line, = top.plot([math.prod(m.patch) / 1e6 for m in fits], [m.voxels_per_s / 1e6 for m in fits], "o-",
                             label=peer)
            top.plot([math.prod(m.patch) / 1e6 for m in over], [m.voxels_per_s / 1e6 for m in over], "x",
                     color=line.get_color(), markersize=9)
            bottom.plot([math.prod(m.patch) / 1e6 for m in points if m.ok],
                        [m.peak_rss_mib / 1024 for m in points if m.ok], "o-", color=line.get_color(), label=peer)
            limit = budget_limit(points, budget_mib)
            last = max((m for m in points if m.ok), key=lambda m: math.prod(m.patch), default=None)
            if limit is not None and last is not None:
                bottom.plot([math.prod(last.patch) / 1e6, limit / 1e6], [last.peak_rss_mib / 1024, budget_mib / 1024],
                            ":", color=line.get_color())
                bottom.annotate(f"{limit / 1e6:.0f} Mvox", (limit / 1e6, budget_mib / 1024), textcoords="offset points",
                                xytext=(0, 6), ha="center", fontsize=8, color=line.get_color())
        bottom.axhline(budget_mib / 1024, color="red", linestyle="--", label="memory budget")
        top.set_title(f"{net}: throughput vs patch size")
        top.set_ylabel("output throughput (Mvoxel/s)")
        bottom.set_title(f"{net}: peak RSS, dotted: extrapolated to budget")
        bottom.set_ylabel("peak RSS (GiB)")
        for ax in (top, bottom):
            ax.set_xlabel("input patch (Mvoxel)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rewrite(results_json: Path, folder: Path, prices: PriceTable, budget_mib: float) -> Path:
    """Render the report again from a results.json (after editing prices, say) without measuring."""
    raw = json.loads(results_json.read_text())
    results = [Measurement.from_dict(m) for m in raw["results"]]
    sweep = [Measurement.from_dict(m) for m in raw["sweep"]]
    return write(folder, results, sweep, Settings(**raw["settings"]), raw["machine"], raw["command"], prices,
                 budget_mib)


def write(folder: Path, results: Sequence[Measurement], sweep: Sequence[Measurement], settings: Settings,
          machine: dict[str, str], command: str, prices: PriceTable, budget_mib: float) -> Path:
    """Write results.md, results.json and the plots into `folder`; returns the markdown path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# znnx benchmark", "", f"Command: `{command}`", "",
             "| machine | |", "|---|---|", *(f"| {k} | {v} |" for k, v in machine.items()), "",
             f"Settings: {settings.threads} threads, {settings.warmup} warm-up run(s), {settings.reps} timed runs, "
             f"{settings.rounds} round(s) (the runtimes of a net take turns; the median over all rounds' timed runs "
             f"is reported); every runtime runs in its own process per round on the same input (uniform noise, "
             f"seed 0). "
             f"Peak RSS is the whole worker process (Python, libraries, model and buffers). Errors are "
             f"max |y - y_eager| / max |y_eager|; rows above {error_flag('', settings.precision):g} "
             f"({error_flag('-bf16'):g} for the bf16 runtimes) are flagged. Device {settings.device}, precision "
             f"{settings.precision} (-bf16 runtimes: bf16).", "",
             "## Side by side", "", *side_by_side_table(results, settings), "", "![throughput](throughput.png)", ""]
    if sweep:
        lines += ["## Throughput against patch size (ZNNi)", "",
                  f"Memory budget {budget_mib / 1024:.1f} GiB (peak RSS).", "", *sweep_table(sweep, budget_mib), "",
                  "Where the budget stops each runtime, from a straight line through its measured (input voxels, "
                  "peak RSS) points; an extrapolation, not a measurement:", "", *budget_table(sweep, budget_mib), "",
                  "![patch sweep](patch_sweep.png)", ""]
        plot_sweep(sweep, budget_mib, folder / "patch_sweep.png")
    profiled = [m for m in results if m.peer == "znnx" and m.layers]
    if profiled:
        lines += ["## znnx per-layer breakdown", ""]
        for m in profiled:
            lines += [*layer_table(m), ""]
    lines += ["## Cost (PZnet's price per patch)", "", *cost_table(results, prices, settings.threads), ""]
    plot_side_by_side(results, folder / "throughput.png")
    path = folder / "results.md"
    path.write_text("\n".join(lines))
    (folder / "results.json").write_text(json.dumps({
        "command": command, "machine": machine, "settings": dataclasses.asdict(settings),
        "results": [dataclasses.asdict(m) for m in results], "sweep": [dataclasses.asdict(m) for m in sweep]},
        indent=1, default=str))
    return path
