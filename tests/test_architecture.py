"""The layering of docs/architecture.md, checked from the imports themselves (issue 20): no
import circles, the shared results layer imports no target and no TensorFlow, the distributed
runner and the target registry import no target."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "classes_tool"
#: what the results layer and the runners may not import
TARGET_PACKAGES = ("classes_tool.campaign", "classes_tool.systolic", "classes_tool.snn",
                   "classes_tool.quant", "classes_tool.simulator", "classes_tool.graph",
                   "classes_tool.convert", "classes_tool.distributed", "classes_tool.patcher")
HEAVY = ("tensorflow", "keras", "tf_keras", "onnx", "onnxruntime", "ray")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (anywhere in it), as absolute names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _own(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph = defaultdict(set)
    for name, path in MODULES.items():
        for imported in _imports(path):
            target = _own(imported) if imported.startswith("classes_tool") else None
            # a package importing its own submodules is not an arrow back up
            if target and target != name and not target.startswith(name + "."):
                graph[name].add(target)
    return graph


def test_the_import_graph_has_no_circles():
    graph, circles = _graph(), []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(MODULES):
        if start not in state:
            visit(start, [start])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("layer, forbidden", [
    ("classes_tool.results", TARGET_PACKAGES + HEAVY),
    ("classes_tool.distributed", TARGET_PACKAGES[:-2] + ("classes_tool.patcher",)),
    ("classes_tool.targets", TARGET_PACKAGES),
    ("classes_tool.config_reader", TARGET_PACKAGES + HEAVY),
])
def test_a_layer_imports_nothing_above_it(layer, forbidden):
    bad = [f"{name} imports {imported}" for name, path in MODULES.items()
           if name == layer or name.startswith(layer + ".")
           for imported in sorted(_imports(path))
           if any(imported == f or imported.startswith(f + ".") for f in forbidden)
           and not imported.startswith(layer)]
    assert not bad, "\n".join(bad)


def test_the_report_runs_without_tensorflow():
    code = ("import sys, classes_tool.results.report, classes_tool.results.estimates, "
            "classes_tool.targets, classes_tool.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
