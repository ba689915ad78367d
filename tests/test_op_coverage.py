"""Every IR op is covered everywhere an op needs handling: the reference executor, every registered
backend, the memory plan, the report (FLOPs and geometry) and at least one frontend. A new op
missing from a table fails here with the table's name. An op a table leaves out on purpose is listed
in UNSUPPORTED under the table's name, with the reason."""

from __future__ import annotations

import numpy as np
import pytest

import znnx
from tests.nets import rel_error
from tests.op_cases import OP_CASES, OpCase
from znnx import backends, reference, report
from znnx.errors import DeviceError
from znnx.frontends import from_caffe, from_onnx, from_torch, from_znn
from znnx.ir import OPS
from znnx.plan import memory

TABLES: dict[str, frozenset[str]] = {
    "reference.OPS": frozenset(reference.OPS),
    "plan.memory.BUFFERS": frozenset(memory.BUFFERS),
    "report.FLOPS": frozenset(report.FLOPS),
    "report.GEOMETRY": frozenset(report.GEOMETRY),
    "frontends (IR_OPS of from_onnx, from_torch, from_caffe, from_znn)": (
        from_onnx.IR_OPS | from_torch.IR_OPS | from_caffe.IR_OPS | from_znn.IR_OPS),
    **{f"backends.{kind}.OPS": backends.get(kind).OPS for kind in backends.REGISTRY},
}
UNSUPPORTED: dict[str, frozenset[str]] = {
    # the dense passes (passes/dense.py) make them; no model format has them
    "frontends (IR_OPS of from_onnx, from_torch, from_caffe, from_znn)": frozenset({"fragment", "defragment"}),
}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_ir_op_is_in_every_table(table: str) -> None:
    missing = set(OPS) - TABLES[table] - UNSUPPORTED.get(table, frozenset())
    assert not missing, f"{table} lacks {sorted(missing)}: add them there, or list them in UNSUPPORTED[{table!r}]"
    unknown = TABLES[table] - set(OPS)
    assert not unknown, f"{table} names {sorted(unknown)}, which are not IR ops (ir/ops.py OPS)"


def test_every_op_has_a_case() -> None:
    assert {case.op for case in OP_CASES} == set(OPS), "add the new op to tests/op_cases.py"


@pytest.mark.parametrize("kind", sorted(backends.REGISTRY))
@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_every_op_runs_plans_and_reports_on_every_backend(case: OpCase, kind: str) -> None:
    graph = case.graph()
    try:
        net = znnx.compile(graph, device=kind, optimize=False)
    except DeviceError as error:
        pytest.skip(f"{kind} is not available here: {error}")
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2 * graph.types[n].fragments, graph.types[n].channels,
                                   *graph.types[n].spatial)).astype(np.float32) for n in graph.inputs]
    want = reference.run(graph, dict(zip(graph.inputs, arrays)))["n"]
    got = net(*arrays)
    assert rel_error(got, want) < 1e-5
    assert net.memory_bytes() >= 0 and net.plan.memory.steps[0].node == "n"
    assert report.node_flops(graph, graph.nodes[0]) >= 0
    assert report.geometry(graph).output_spatial == graph.types["n"].spatial
