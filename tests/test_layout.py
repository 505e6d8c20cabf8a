"""The package's shape: harness/ is rooms by stage, and imports run one way, down the layers below.

A module may import its own layer and the layers before it, never a later one; there is no list of
exceptions. Every import counts: module level, inside a function (lazy) or under TYPE_CHECKING. A
new module must be given a layer here, or the test fails. The report stage reads only files
(nothing of the workload, stack, client, probes, runner or suite, even indirectly), so
`kvbench report` works on any machine. docs/layout.md draws the same layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "harness"

# Import order, first to last: (layer, its modules; a package stands for all of its modules).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # small shared modules every stage may use; they import no other layer
    (
        "shared",
        (
            "harness.console",
            "harness.fit",
            "harness.frames",
            "harness.intervals",
            "harness.interrupts",
            "harness.metrics",
        ),
    ),  # fmt: skip
    ("config", ("harness.config", "harness.trace")),
    ("records", ("harness.records",)),  # the typed rows and manifest every later stage writes or reads
    ("workload", ("harness.workload",)),
    ("stack", ("harness.stack",)),
    ("client", ("harness.client",)),
    ("probes", ("harness.probes", "harness.watch")),
    # the run's files and the figures computed from its rows: the runner writes them, the report reads them
    ("results", ("harness.results", "harness.stats", "harness.reuse", "harness.connector")),
    ("runner", ("harness.runner", "harness.reset")),
    ("report", ("harness.report",)),
    ("suite", ("harness.suite", "harness.progress")),
    ("cli", ("harness.cli", "harness.__main__")),
]
ROOT = "harness"  # the package's __init__: its version only


def _module(path: Path) -> str:
    rel = path.relative_to(HARNESS.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_module(name: str) -> bool:
    p = HARNESS.parent / name.replace(".", "/")
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """harness modules imported by the file (relative or absolute), at any depth of the file."""
    me = _module(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names = [f"{target}.{a.name}" for a in node.names]
            out |= {n for n in names if _is_module(n)}
            if not all(_is_module(n) for n in names):  # names defined in `target` itself
                out.add(target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith(ROOT) and m != ROOT}


def _graph(root: Path = HARNESS) -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in root.rglob("*.py")}


def _layer(module: str) -> int:
    """The index of the module's layer (its longest listed prefix)."""
    found = [
        (len(p), i) for i, (_, mods) in enumerate(LAYERS) for p in mods if module == p or module.startswith(p + ".")
    ]
    if not found:
        pytest.fail(f"{module} has no layer: give it one in tests/test_layout.py LAYERS (and docs/layout.md's drawing)")
    return max(found)[1]


def reverse_imports(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, deps in sorted(graph.items()):
        if mod == ROOT:
            continue
        for dep in sorted(deps):
            if _layer(dep) > _layer(mod):
                out.append(f"{mod} ({LAYERS[_layer(mod)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})")
    return out


def test_the_import_graph_sees_every_kind_of_import():
    graph = _graph()
    assert "harness.results" in graph["harness.runner"]  # from .results import ...
    assert "harness.config" in graph["harness.stack.spec"]  # from ..config import ...
    assert "harness.stack.kubestack" in graph["harness.stack"]  # lazy, inside a function
    assert "harness.stack.preflight" in graph["harness.suite"]  # from .stack import preflight (a module)
    assert "harness.stack" in graph["harness.suite"]  # from .stack import Stack (a name of the package)


def test_harness_modules_import_each_other_without_cycles():
    try:
        list(TopologicalSorter(_graph()).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_imports_run_one_way_between_the_stages():
    graph = _graph()
    for mod in graph:
        if mod != ROOT:
            _layer(mod)  # every module has a layer
    bad = reverse_imports(graph)
    assert not bad, "reverse imports (a stage imports a later one):\n" + "\n".join(bad)


def test_a_reverse_import_fails():
    """The check itself: the stack stage importing the runner is reported."""
    graph = _graph()
    graph["harness.stack.compose"] = graph["harness.stack.compose"] | {"harness.runner"}
    assert reverse_imports(graph) == ["harness.stack.compose (stack) imports harness.runner (runner)"]


def test_the_report_stage_only_reads_results():
    """Everything the report imports, directly or not, is shared, config, records or results."""
    graph = _graph()
    readable = {"shared", "config", "records", "results"}
    seen: set[str] = set()
    todo = [m for m in graph if m.startswith("harness.report")]
    while todo:
        mod = todo.pop()
        for dep in graph[mod] - seen:
            seen.add(dep)
            todo.append(dep)
            if not dep.startswith("harness.report"):
                assert LAYERS[_layer(dep)][0] in readable, f"the report reaches {dep} (via {mod})"


def test_the_kubernetes_client_is_imported_only_by_its_backend():
    code = (
        "import sys, harness.cli, harness.suite, harness.stack, harness.stack.compose;"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'kubernetes'], 'kubernetes imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HARNESS.parent)
    assert r.returncode == 0, r.stderr
