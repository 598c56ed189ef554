"""The package's shape: its import graph has no circle, counting the imports written inside functions
(which would otherwise hide one), so every module can be read from the modules below it."""

import ast
from pathlib import Path

import ferkit

ROOT = Path(ferkit.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """For each module of ferkit, the ferkit modules it imports anywhere in its text."""
    modules = {".".join(("ferkit", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in ROOT.rglob("*.py")}

    def module_of(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ferkit"):
                imported |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                             else module_of(node.module) for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {module_of(a.name) for a in node.names if a.name.startswith("ferkit")}
        graph[name] = imported - {name, "ferkit"}  # ferkit/__init__ only names things lazily
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert "ferkit.views" in graph and "ferkit.views" in graph["ferkit.infer.predictor"]  # the graph is read
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # and a circle is seen


def test_the_views_sit_low():
    """Test-time views are a preprocessing step: they import no stage above them."""
    assert import_graph()["ferkit.views"] <= {"ferkit.defaults"}
