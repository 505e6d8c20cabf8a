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

# Import order, first to last: each stage is a package of harness/ (README's drawing, docs/layout.md).
STAGES = ("config", "records", "workload", "stack", "client", "observe", "analysis", "results", "runner",
          "report", "suite", "cli")  # fmt: skip
LAYERS: list[tuple[str, tuple[str, ...]]] = [(s, (f"harness.{s}",)) for s in STAGES]
LAYERS[-1] = ("cli", ("harness.cli", "harness.__main__"))
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
    assert "harness.results" in graph["harness.runner.rounds"]  # from harness.results import (a package's names)
    assert "harness.stack.kubestack" in graph["harness.stack"]  # lazy, inside a function
    assert "harness.suite.cell" in graph["harness.suite.steps"]  # from harness.suite import cell (a module)
    assert "harness.suite.run" in graph["harness.suite.cell"]  # under TYPE_CHECKING or not: every import counts


def test_harness_holds_only_the_stage_packages():
    """`ls harness` reads as the pipeline: the stage packages, __init__.py and __main__.py."""
    entries = {p.name for p in HARNESS.iterdir() if p.name != "__pycache__"}
    assert entries == {*STAGES, "__init__.py", "__main__.py"}
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((HARNESS / stage / "__init__.py").read_text()))
        assert doc and doc.startswith(f"Stage {STAGES.index(stage) + 1}, {stage}:"), f"{stage}/__init__.py: purpose"


IMPURE = {"httpx", "subprocess", "python_on_whales", "rich", "socket", "harness.config.console"}


def test_the_analysis_stage_is_pure():
    """analysis/ computes figures from frames: no network, no processes, no console; no open() or
    print() and no pandas file reading or writing."""
    for path in (HARNESS / "analysis").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not [n for n in names if n.split(".")[0] in IMPURE or n in IMPURE], (
                    f"{path.name} imports {names}"
                )
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                assert name not in {"open", "print", "say", "read_csv", "to_csv", "write_text", "read_text"}, (
                    f"{path.name}:{node.lineno} calls {name}"
                )


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
    graph["harness.stack.compose"] = graph["harness.stack.compose"] | {"harness.runner.rounds"}
    assert reverse_imports(graph) == ["harness.stack.compose (stack) imports harness.runner.rounds (runner)"]


def test_the_report_stage_only_reads_results():
    """Everything the report imports, directly or not, is config, records, analysis or results."""
    graph = _graph()
    readable = {"config", "records", "analysis", "results"}
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
