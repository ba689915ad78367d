"""The znnx graph IR: one node type, static tensor types, shape inference and a verifier."""

from znnx.ir.graph import Graph, Node, Shape3, TensorType
from znnx.ir.ops import OPS, infer_node
from znnx.ir.verify import infer_types, verify

__all__ = ["OPS", "Graph", "Node", "Shape3", "TensorType", "infer_node", "infer_types", "verify"]
