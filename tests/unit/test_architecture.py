"""The package's import graph: no cycle (type-only imports included), and imports point down
the layers the README's architecture section describes."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "consumers"

# A module may import modules of its own layer or of lower ones (a lower number).
LAYERS = {
    "consumers": 0, "consumers.errors": 0, "consumers.contracts": 1, "consumers.platform": 2,
    "consumers.ingest": 3, "consumers.analytics": 4, "consumers.improvement": 4,
    "consumers.archive": 4,
    "consumers.topics": 5,
    "consumers.producer": 6, "consumers.demo": 7, "consumers.cli": 8, "consumers.__main__": 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):  # TYPE_CHECKING blocks included
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("consumers"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("consumers"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges[node]):
            assert state.get(target) != "open", " -> ".join([*path, node, target])
            if target not in state:
                visit(target, [*path, node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_imports_point_down_the_layers() -> None:
    upward = [f"{source} -> {target}" for source, targets in graph().items()
              for target in targets if source != "consumers" and layer(target) > layer(source)]
    assert upward == []
