"""The package's shape: no import cycles between harness modules, and the report stage reads only
files (nothing from the stack, runner or suite), so `kvbench report` works on any machine."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def _module(path: Path) -> str:
    rel = path.relative_to(HARNESS.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


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
            out |= {n for n in names if (HARNESS.parent / n.replace(".", "/")).with_suffix(".py").exists()} or {target}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("harness") and m != "harness"}


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in HARNESS.rglob("*.py")}


def test_harness_modules_import_each_other_without_cycles():
    graph = _graph()
    assert "harness.report.data" in graph and "harness.records" in graph["harness.runner"]
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_the_report_stage_only_reads_results():
    graph = _graph()
    allowed = {
        "harness.config",
        "harness.fit",  # console text fitted to the terminal: pure formatting
        "harness.intervals",
        "harness.metrics",
        "harness.records",
        "harness.results",
        "harness.stats",
        "harness.probes",
        "harness.client",
        "harness.client.wire",
    }
    for mod, deps in graph.items():
        if mod.startswith("harness.report"):
            outside = {d for d in deps if not d.startswith("harness.report")} - allowed
            assert not outside, f"{mod} imports {sorted(outside)}"
