"""Network files (PZnet's compiled networks): the optimized graph, its memory plan and its weights
in one safetensors file.

Layout: the tensors are the node parameters, keyed `node/param`; the safetensors header's string
metadata holds `format`, `version`, `graph` (JSON: values, types, nodes with attributes, the
compiled patch, the rewrite counts, the memory plan) and `sha256`, a digest of the graph JSON and
every tensor's bytes. Nothing in the file is code: the header is JSON, the tensors raw numbers, and
every op and attribute passes the IR verifier on load. A truncated file fails in the safetensors
reader, an edited one on the digest, and a plan that does not match what the planner computes for
the graph is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from znnx.errors import GraphError, ModelError
from znnx.ir.graph import Graph, Node, TensorType
from znnx.ir.verify import verify
from znnx.plan.memory import MemoryPlan

if TYPE_CHECKING:
    from znnx.net import Net
    from znnx.plan.autotune import Algorithm

FORMAT = "znnx-network"
VERSION = 1
COMPONENT = "network file"


def _key(node: str, param: str) -> str:
    return f"{node}/{param}"


def _plan_json(plan: MemoryPlan) -> dict[str, Any]:
    return {
        "peak_bytes": plan.peak_bytes,
        "slot_bytes": list(plan.slot_bytes),
        "steps": [[s.node, s.inplace, s.view, s.slot] for s in plan.steps],
    }


def _graph_json(graph: Graph) -> dict[str, Any]:
    return {
        "name": graph.name,
        "spatial_rank": graph.spatial_rank,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
        "types": {name: [t.channels, *t.spatial] for name, t in graph.types.items()},
        "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "output": n.output,
                   "attrs": dict(n.attrs), "params": sorted(n.params)} for n in graph.nodes],
    }


def _digest(header: str, tensors: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256(header.encode())
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(tensors[key]).tobytes())
    return digest.hexdigest()


def fingerprint(graph: Graph) -> str:
    """SHA-256 of a graph's structure, shapes and weights: equal exactly for equal compiled nets."""
    tensors = {_key(n.name, k): v for n in graph.nodes for k, v in n.params.items()}
    return _digest(json.dumps(_graph_json(graph), sort_keys=True), tensors)


def save(net: Net, path: str | Path) -> Path:
    """Write `net` (its optimized graph, plan and weights) to `path`."""
    from safetensors.numpy import save_file

    import znnx

    graph = net.graph
    tensors = {_key(n.name, k): np.ascontiguousarray(v) for n in graph.nodes for k, v in n.params.items()}
    header = json.dumps({
        "graph": _graph_json(graph),
        "rewrites": [list(r) for r in net.rewrites],
        "plan": _plan_json(net.plan),
        "plan_device": net.device.type,
        "plan_precision": net.precision.name,
        "znnx": znnx.__version__,
    }, sort_keys=True)
    metadata = {"format": FORMAT, "version": str(VERSION), "graph": header, "sha256": _digest(header, tensors)}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    partial.replace(target)
    return target


def _read(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ModelError(f"{COMPONENT}: {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{COMPONENT}: {str(path)!r} is not a readable safetensors file (truncated or corrupt?): "
                         f"{error}") from None
    return metadata, tensors


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _graph(data: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> Graph:
    nodes = []
    for n in data["nodes"]:
        missing = [k for k in n["params"] if _key(n["name"], k) not in tensors]
        if missing:
            raise ModelError(f"{COMPONENT}: node {n['name']!r} lacks parameters {missing}")
        nodes.append(Node(str(n["name"]), str(n["op"]), tuple(n["inputs"]), str(n["output"]),
                          {str(k): _tuples(v) for k, v in n["attrs"].items()},
                          {k: tensors[_key(n["name"], k)] for k in n["params"]}))
    types = {name: TensorType(int(t[0]), (int(t[1]), int(t[2]), int(t[3]))) for name, t in data["types"].items()}
    return Graph(tuple(nodes), tuple(data["inputs"]), tuple(data["outputs"]), types, int(data["spatial_rank"]),
                 str(data["name"]))


def load(path: str | Path, device: str = "cpu", algorithm: Algorithm = None, precision: str = "fp32") -> Net:
    """The network in file `path`, compiled for its stored patch on `device` in `precision`."""
    from znnx.net import Net

    source = Path(path)
    metadata, tensors = _read(source)
    if metadata.get("format") != FORMAT:
        raise ModelError(f"{COMPONENT}: {str(source)!r} is not a znnx network file (format "
                         f"{metadata.get('format')!r}); write one with `znnx compile`")
    if metadata.get("version") != str(VERSION):
        raise ModelError(f"{COMPONENT}: {str(source)!r} has format version {metadata.get('version')!r}; this znnx "
                         f"reads version {VERSION}. Recompile the model with this znnx")
    header = metadata.get("graph", "")
    if metadata.get("sha256") != _digest(header, tensors):
        raise ModelError(f"{COMPONENT}: {str(source)!r} fails its checksum: the file was modified or damaged "
                         f"after `znnx compile` wrote it; recompile it")
    try:
        data = json.loads(header)
        graph = verify(_graph(data["graph"], tensors))
        rewrites = tuple((str(name), int(count)) for name, count in data["rewrites"])
        stored_plan, plan_device = data["plan"], str(data["plan_device"])
        plan_precision = str(data.get("plan_precision", "fp32"))
    except GraphError as error:
        raise ModelError(f"{COMPONENT}: {str(source)!r} holds an invalid graph: {error}") from None
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise ModelError(f"{COMPONENT}: {str(source)!r} has a malformed header: {type(error).__name__}: {error}"
                         ) from None
    net = Net(graph, device, rewrites, algorithm, precision)
    if (net.device.type, net.precision.name) == (plan_device, plan_precision) and _plan_json(net.plan) != stored_plan:
        raise ModelError(f"{COMPONENT}: {str(source)!r} stores a memory plan that differs from the one this znnx "
                         f"computes for its graph; recompile the model with this znnx")
    return net
