"""Run a volume job's blocks as dask.distributed tasks: the same blocks, ledger and output as the
local runner, on a cluster.

The client plans the run, creates the output and the ledger, and saves the compiled net as a network
file beside the output (workers read and write the same storage, so they see it too). Each block is
one task that reads its input, computes, writes its output chunks and returns a few numbers; no
voxel data goes through the scheduler. A worker process loads the network file once and keeps it,
with the opened volumes, for every block that follows; its task threads overlap one block's reading
and writing with another's compute, and compute runs one block at a time. Only the client writes
the ledger, after a task has returned, so a recorded block is always flushed; a task rerun after its
worker died rewrites exactly its own chunks (blocks write whole, disjoint chunks), so retries and
reruns after a lost client are harmless.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from znnx.errors import ClusterError, InputError, StorageError
from znnx.volume import storage
from znnx.volume.block import Block
from znnx.volume.lock import writing
from znnx.volume.progress import peak_rss_bytes
from znnx.volume.runner import BlockJob, Run, Summary, VolumeOptions, new_progress, open_output, plan_run, summarize

if TYPE_CHECKING:
    from distributed import Client

    from znnx.ir.graph import Graph
    from znnx.net import Net
    from znnx.volume.autopatch import Choice

TOPIC = "znnx-block-start"
IN_FLIGHT_PER_THREAD = 2


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to run the blocks of one run; small, sent with every task."""

    network_file: str
    model: str
    threads: int | None
    input: str
    output: str
    spatial: tuple[int, ...]
    options: VolumeOptions


class _Loaded:
    """A worker process's state: the net (loaded once per network file and model) and the current
    run's job (opened once per run, so a rerun never writes through volumes opened for an output that
    --overwrite has since replaced); `compute` keeps the net's buffers to one block at a time."""

    lock = threading.Lock()
    compute = threading.Lock()
    net_key: tuple[str, str, int | None] | None = None
    net: Net | None = None
    run_id: str | None = None
    job: BlockJob | None = None


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _job(setup: WorkerSetup, run_id: str) -> BlockJob:
    from znnx.net import load_net

    with _Loaded.lock:
        key = (setup.network_file, setup.model, setup.threads)
        if _Loaded.net_key != key or _Loaded.net is None:
            _set_threads(setup.threads)
            _Loaded.net, _Loaded.net_key, _Loaded.run_id = load_net(setup.network_file), key, None
        if _Loaded.run_id != run_id or _Loaded.job is None:
            _Loaded.job = BlockJob(_Loaded.net, setup.input, setup.output, setup.spatial, setup.options)
            _Loaded.run_id = run_id
        return _Loaded.job


def run_block(setup: WorkerSetup, block: Block, run_id: str) -> dict[str, Any]:
    """One block as a Dask task: read, compute, write and flush; returns what the summary counts."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(TOPIC, {"run": run_id, "block": block.index})
    job = _job(setup, run_id)
    patches = job.load(block)
    result, seconds, nonfinite = None, 0.0, 0
    if patches is not None:
        nonfinite = job.count_nonfinite(block, patches)
        with _Loaded.compute:
            began = time.perf_counter()
            result = job.compute(block, patches)
            seconds = time.perf_counter() - began
    job.store(block, result)
    return {"block": block.index, "skipped": patches is None, "patches": len(patches or ()),
            "compute_s": seconds, "nonfinite": nonfinite, "worker": worker.address}


def local_workers(cluster: str | None) -> int | None:
    """N of a `local:N` cluster spec (N >= 1), else None."""
    count = cluster.removeprefix("local:") if cluster and cluster.startswith("local:") else ""
    return int(count) if count.isdigit() and int(count) > 0 else None


def _save_for_workers(net: Net, output: storage.Location) -> Path:
    """Save `net` as the network file the workers load, beside the output."""
    network_file = storage.network_path(output)
    network_file.parent.mkdir(parents=True, exist_ok=True)
    net.save(network_file)
    return network_file


@contextmanager
def connect(cluster: str | None = None, scheduler_file: str | None = None,
            memory_bytes: int | None = None) -> Iterator[Client]:
    """A client for `local:N` (a LocalCluster of N worker processes listening on the loopback
    address only, each with two task threads and `memory_bytes` of memory (default: an equal share),
    stopped on exit), for a scheduler address `tcp://host:port`, or for a `scheduler_file`."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("dask: running on a cluster needs dask.distributed; pip install 'znnx[dask]'") from None
    if scheduler_file is not None or (cluster is not None and "://" in cluster):
        try:
            client = Client(cluster, scheduler_file=scheduler_file, timeout=30)
        except OSError as error:
            raise ClusterError(f"dask: cannot reach the scheduler {cluster or scheduler_file}: {error}; start it or "
                               f"check the address") from None
        with client:
            yield client
        return
    count = local_workers(cluster)
    if count is None:
        raise ClusterError(f"dask: cluster {cluster!r} must be local:N (N worker processes on this machine, N >= 1) "
                           f"or a scheduler address like tcp://host:8786")
    with LocalCluster(n_workers=count, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit=memory_bytes or "auto",
                      silence_logs=logging.ERROR) as local, Client(local) as client:
        yield client


def _memory_limit(dask_worker: Any) -> int | None:
    limit = dask_worker.memory_manager.memory_limit
    return int(limit) if limit else None


def worker_budget(client: Client) -> int | None:
    """The smallest memory limit among the cluster's workers (bytes), or None if one has none."""
    limits = list(client.run(_memory_limit).values())
    return min(limits) if limits and all(limits) else None


def _choose_on_worker(network_file: str, volume: tuple[int, ...], options: VolumeOptions, budget: int | None,
                      threads: int | None) -> Choice:
    from znnx.net import load_net
    from znnx.volume.autopatch import choose_patch

    _set_threads(threads)
    return choose_patch(load_net(network_file).graph, volume, options, budget)


def choose_patch_on_worker(client: Client, graph: Graph, volume: tuple[int, ...], output: str,
                           options: VolumeOptions, memory_bytes: int | None, threads: int | None) -> Choice:
    """Auto patch size measured on a worker, with its threads, within its memory budget (the
    smallest memory limit among the workers unless `memory_bytes` is given). One patch serves the
    whole run: the block layout, and so the output and the ledger, depend on it."""
    from znnx.net import compile  # noqa: A004

    network_file = _save_for_workers(compile(graph), storage.parse(output))
    budget = memory_bytes if memory_bytes is not None else worker_budget(client)
    return client.submit(_choose_on_worker, str(network_file), volume, options, budget and int(budget * 0.8),
                         threads, pure=False).result()


def run_volume_dask(net: Net, input: str, output: str, client: Client,  # noqa: A002
                    options: VolumeOptions | None = None, threads: int | None = None, quiet: bool = False,
                    stream: TextIO | None = None, on_block: Callable[[Block], None] | None = None) -> Summary:
    """`run_volume` on the Dask cluster behind `client`: the same output, ledger and resume.

    `threads` sets the compute threads of each worker process (default: the worker's own setting).
    Workers must see `input` and `output` at the same paths as this process."""
    options = options or VolumeOptions()
    start = time.perf_counter()
    run = plan_run(net, input, output, options)
    if run.input.kind == "array":
        raise InputError("volume: a Dask run's workers read the input themselves, so it must be a path they see "
                         "(e.g. raw.zarr/em), not an array in this process")
    if not storage.format_of(run.output).multiprocess_writes:
        writable = [f.spelling for f in storage.FORMATS if f.multiprocess_writes and f.create is not None]
        raise StorageError(f"volume: a Dask run writes from several processes at once, which {run.output.kind} "
                           f"files do not support ({run.output}); write {', '.join(writable)}")
    workers = client.nthreads()
    if not workers:
        raise ClusterError(f"dask: the cluster at {client.scheduler.address} has no workers; start some or wait "
                           f"for them to connect")
    with writing(run.output) as notes:
        summary = _run_on_cluster(net, run, client, options, threads, quiet, stream, on_block, start, workers)
    summary.notes.extend(notes)
    return summary


def _run_on_cluster(net: Net, run: Run, client: Client, options: VolumeOptions, threads: int | None, quiet: bool,
                    stream: TextIO | None, on_block: Callable[[Block], None] | None, start: float,
                    workers: dict[str, int]) -> Summary:
    """`run_volume_dask`'s work once the output is locked."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    network_file = _save_for_workers(net, run.output)
    _, ledger = open_output(run, options)
    setup = WorkerSetup(str(network_file), run.description["model"], threads, str(run.input), str(run.output),
                        run.spatial, options)
    todo = [b for b in run.blocks if b.index not in ledger.done]
    progress = new_progress(run, todo, options, quiet, stream)
    run_id = uuid.uuid4().hex
    starts: Counter[int] = Counter()

    def started(event: tuple[float, dict[str, Any]]) -> None:
        if event[1].get("run") == run_id:
            starts[event[1]["block"]] += 1

    client.subscribe_topic(TOPIC, started)
    totals = {"skipped": 0, "patches": 0, "compute_s": 0.0, "nonfinite": 0}
    used: set[str] = set()
    window = IN_FLIGHT_PER_THREAD * sum(workers.values())
    queue = iter(todo)

    def submit(block: Block) -> Any:
        return client.submit(run_block, setup, block, run_id, key=f"znnx-block-{block.index}-{run_id}", pure=False)

    progress.show()
    futures = as_completed([submit(b) for _, b in zip(range(window), queue)])
    try:
        for future in futures:
            try:
                done = future.result()
            except KilledWorker as error:
                raise ClusterError(f"dask: {error}; a block's task lost its worker repeatedly (a crash or the "
                                   f"memory limit); check the workers' memory limit against the patch size "
                                   f"(--memory), then rerun the same command to resume") from None
            ledger.finish(done["block"])
            progress.advance(run.blocks[done["block"]].write.size)
            for name in totals:
                totals[name] += done[name]
            used.add(done["worker"])
            if on_block is not None:
                on_block(run.blocks[done["block"]])
            block = next(queue, None)
            if block is not None:
                futures.add(submit(block))
    finally:
        client.cancel(list(futures.futures))
        client.unsubscribe_topic(TOPIC)
        ledger.close()
        progress.close()
    network_file.unlink(missing_ok=True)
    peak = max([peak_rss_bytes(), *client.run(peak_rss_bytes).values()])
    summary = summarize(run, todo, time.perf_counter() - start, len(todo) - int(totals["skipped"]),
                        int(totals["skipped"]), int(totals["patches"]), totals["compute_s"], (0.0, 0.0), options,
                        retried=sum(1 for n in starts.values() if n > 1), workers=len(used))
    summary.peak_rss_mib = peak / 2**20
    summary.nonfinite_input_voxels = int(totals["nonfinite"])
    return summary
