"""Network files (PZnet's compiled networks): a `Plan` (the optimized graph, its memory plan, each
conv's algorithm with its measured times, the machine they were measured on) and its weights in one
safetensors file.

Layout: the tensors are the node parameters, keyed `node/param`; the safetensors header's string
metadata holds `format`, `version`, `graph` (JSON: values, types (channels, spatial sizes, and the
fragment count where above 1), nodes with attributes, the
compiled patch, the rewrite counts, the plan, with the input normalization a trained net
records) and `sha256`, a digest of the graph JSON and every
tensor's bytes. Nothing in the file is code: the header is JSON, the tensors raw numbers, and every
op and attribute passes the IR verifier on load. A truncated file fails in the safetensors reader,
an edited one on the digest; `net.load_net` refuses a memory plan that does not match what the
planner computes for the graph. Version 1 files (a memory plan, no algorithms) still load; their
convolutions are measured again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from znnx.errors import GraphError, ModelError
from znnx.ir.graph import Graph, Node, TensorType
from znnx.ir.verify import verify
from znnx.plan.autotune import LayerChoice
from znnx.plan.plan import DenseChoice, Plan, choices_from_json, dense_from_json, plan_json
from znnx.version import __version__

FORMAT = "znnx-network"
VERSION = 2
READS = ("1", "2")
COMPONENT = "network file"


@dataclass(frozen=True)
class Saved:
    """A network file's contents: the graph with its weights and the plan that was saved with it
    (`choices` None for a version 1 file, which saved none)."""

    graph: Graph
    rewrites: tuple[tuple[str, int], ...]
    device: str
    precision: str
    memory: dict[str, Any]
    choices: tuple[LayerChoice, ...] | None
    machine: str
    dense: DenseChoice | None = None
    normalize: tuple[float, float, float] | None = None


def _key(node: str, param: str) -> str:
    return f"{node}/{param}"


def _graph_json(graph: Graph) -> dict[str, Any]:
    return {
        "name": graph.name,
        "spatial_rank": graph.spatial_rank,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
        "types": {name: [t.channels, *t.spatial, *([t.fragments] if t.fragments > 1 else [])]
                  for name, t in graph.types.items()},
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


def save(plan: Plan, path: str | Path) -> Path:
    """Write `plan` (its optimized graph with weights, memory plan and algorithms) to `path`."""
    from safetensors.numpy import save_file

    graph = plan.graph
    tensors = {_key(n.name, k): np.ascontiguousarray(v) for n in graph.nodes for k, v in n.params.items()}
    header = json.dumps({
        "graph": _graph_json(graph),
        "rewrites": [list(r) for r in plan.rewrites],
        "plan": plan_json(plan),
        "znnx": __version__,
    }, sort_keys=True)
    metadata = {"format": FORMAT, "version": str(VERSION), "graph": header, "sha256": _digest(header, tensors)}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    partial.chmod(0o666 & ~_umask())  # safetensors creates files 0600; a network file is shared like any other
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
    types = {name: TensorType(int(t[0]), (int(t[1]), int(t[2]), int(t[3])), int(t[4]) if len(t) > 4 else 1)
             for name, t in data["types"].items()}
    return Graph(tuple(nodes), tuple(data["inputs"]), tuple(data["outputs"]), types, int(data["spatial_rank"]),
                 str(data["name"]))


def _plan_fields(data: Mapping[str, Any], version: str) -> tuple[str, str, dict[str, Any],
                                                                  tuple[LayerChoice, ...] | None, str]:
    """(device, precision, memory plan JSON, choices, machine) of a header."""
    if version == "1":
        return str(data["plan_device"]), str(data.get("plan_precision", "fp32")), dict(data["plan"]), None, ""
    plan = data["plan"]
    return (str(plan["device"]), str(plan["precision"]), dict(plan["memory"]), choices_from_json(plan["choices"]),
            str(plan["machine"]))


def load(path: str | Path) -> Saved:
    """The graph and plan in network file `path`, checked (format, version, checksum, IR rules)."""
    source = Path(path)
    metadata, tensors = _read(source)
    if metadata.get("format") != FORMAT:
        raise ModelError(f"{COMPONENT}: {str(source)!r} is not a znnx network file (format "
                         f"{metadata.get('format')!r}); write one with `znnx compile`")
    version = metadata.get("version")
    if version not in READS:
        raise ModelError(f"{COMPONENT}: {str(source)!r} has format version {version!r}; this znnx "
                         f"reads versions {', '.join(READS)}. Recompile the model with this znnx")
    header = metadata.get("graph", "")
    if metadata.get("sha256") != _digest(header, tensors):
        raise ModelError(f"{COMPONENT}: {str(source)!r} fails its checksum: the file was modified or damaged "
                         f"after `znnx compile` wrote it; recompile it")
    try:
        data = json.loads(header)
        graph = verify(_graph(data["graph"], tensors))
        rewrites = tuple((str(name), int(count)) for name, count in data["rewrites"])
        device, precision, memory, choices, machine = _plan_fields(data, version)
        dense = dense_from_json(data["plan"].get("dense")) if version != "1" else None
        spelled = data["plan"].get("normalize") if version != "1" else None
        normalize = None if spelled is None else (float(spelled[0]), float(spelled[1]), float(spelled[2]))
    except GraphError as error:
        raise ModelError(f"{COMPONENT}: {str(source)!r} holds an invalid graph: {error}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise ModelError(f"{COMPONENT}: {str(source)!r} has a malformed header: {type(error).__name__}: {error}"
                         ) from None
    if choices is not None:
        convs = {n.name for n in graph.nodes if n.op == "conv"}
        if {c.node for c in choices} != convs:
            raise ModelError(f"{COMPONENT}: {str(source)!r} saves algorithms for {sorted(c.node for c in choices)}, "
                             f"but its convolutions are {sorted(convs)}; recompile it")
    return Saved(graph, rewrites, device, precision, memory, choices, machine, dense, normalize)


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
