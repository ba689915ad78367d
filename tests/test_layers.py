"""The package's import structure: no module-level import cycle, and no import from a lower layer
into a higher one (ir below frontends and passes, then plan, kernels, backends, net, volume,
segment, and cli / bench / demo on top). Imports under `if TYPE_CHECKING:` are for type hints only and ignored."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "znnx"
LAYERS = (
    ("znnx.errors", "znnx.version", "znnx.cache", "znnx.units", "znnx.status", "znnx.preload", "znnx.heap"),
    ("znnx.ir",),
    ("znnx.frontends", "znnx.passes", "znnx.reference", "znnx.report"),
    ("znnx.plan",),
    ("znnx.kernels",),
    ("znnx.backends",),
    ("znnx.net",),
    ("znnx.volume",),
    ("znnx.segment",),
    ("znnx.training",),
    ("znnx.cli", "znnx.bench", "znnx.demo", "znnx.__main__", "znnx"),
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("znnx", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The znnx modules an import statement loads (a `from P import name` names submodule P.name
    where there is one, else P)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "znnx"]
    base = node.module or ""
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    if base.split(".")[0] != "znnx":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports(module: str, top_level_only: bool) -> set[str]:
    """The znnx modules `module` imports: all of them, or those it executes when imported (not
    inside function bodies)."""
    found: set[str] = set()

    def visit(nodes: list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                visit(list(node.orelse))
            elif isinstance(node, ast.Import | ast.ImportFrom):
                found.update(_targets(node, module))
            elif not (top_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)):
                visit(list(ast.iter_child_nodes(node)))

    visit(list(ast.parse(MODULES[module].read_text()).body))
    return {m for m in found if m in MODULES and m != module}


def _layer(module: str) -> int:
    best = max((prefix for group in LAYERS for prefix in group
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return next(i for i, group in enumerate(LAYERS) if best in group)


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_no_import_from_a_lower_layer_into_a_higher_one() -> None:
    wrong = sorted(f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
                   for module in MODULES for target in _imports(module, top_level_only=False)
                   if _layer(target) > _layer(module))
    assert not wrong, "\n".join(wrong)


def test_no_module_level_import_cycle() -> None:
    graph = {module: _imports(module, top_level_only=True) for module in MODULES}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)
