"""The benchmarks in benchmarks/ still run: each at a tiny size, as a child process (no Docker)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_report_scale_runs_at_tiny_size():
    """Synthetic rows with every REQUEST_COLUMNS column -> `kvbench report`; the targets (10 s, 1 GB)
    must hold easily at 2,000 rows."""
    out = _run("report_scale.py", "--rows", "2000", "--scenarios", "2", "--repeats", "2", timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "generated 2,000 request rows in 4 requests.csv files" in out.stdout
    assert "report wall time" in out.stdout and "peak RSS" in out.stdout and ": OK" in out.stdout
    assert "long_context_high_reuse" in out.stdout  # the report's table was printed


def test_report_scale_rejects_too_few_rows():
    out = _run("report_scale.py", "--rows", "3", timeout=60)
    assert out.returncode == 2 and "--rows must be at least" in out.stderr


def test_client_overhead_runs_at_tiny_size():
    """Loopback stub server, a handful of requests at concurrency 1 and 2, both server profiles."""
    out = _run("client_overhead.py", "--requests", "6", "--concurrency", "1", "2", "--tokens", "4", timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "overhead p50 ms" in lines[0]
    rows = [line.split() for line in lines if line.split()[:1] in (["instant"], ["paced"])]
    assert [r[:3] for r in rows] == [
        ["instant", "1", "6"],
        ["instant", "2", "6"],
        ["paced", "1", "6"],
        ["paced", "2", "6"],
    ]
    assert all(len(r) == 10 and math.isfinite(sum(map(float, r[3:]))) for r in rows)  # every figure a number
    assert "targets at 64" in out.stdout


def _capacity_rows(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("client "))
    return [line.split("  ") for line in lines[start + 2 :] if line and not line.startswith("vllm bench serve skipped")]


def test_capacity_runs_at_tiny_size_with_one_and_two_client_workers():
    """kvbench alone (no Docker): both server profiles, concurrency 1 and 4, 1 and 2 workers; every
    request completes, and the paced server sees the concurrency in flight."""
    out = _run("capacity.py", "--smoke", "--tools", "kvbench", "--workers", "2", timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [[c.strip() for c in r if c.strip()] for r in _capacity_rows(out.stdout)]
    labels = [(r[0], r[1], r[2]) for r in rows]
    assert labels == [
        ("kvbench (1 worker)", "instant", "1"), ("kvbench (1 worker)", "instant", "4"),
        ("kvbench (2 workers)", "instant", "4"), ("kvbench (1 worker)", "paced", "1"),
        ("kvbench (1 worker)", "paced", "4"), ("kvbench (2 workers)", "paced", "4"),
    ]  # fmt: skip
    for r in rows:
        c = int(r[2])
        assert int(r[3]) == (max(4 * c, min(20, 16 * c)) if r[1] == "paced" else 20)  # requests sent
        assert all(math.isfinite(float(x)) for x in r[4:])
        if r[1] == "paced":
            assert float(r[5]) > 0.8 * int(r[2])  # in flight at the server, time-weighted


@pytest.mark.docker  # `vllm bench serve` runs from the engine image
def test_capacity_runs_vllm_bench_serve_side_by_side(stack_images):
    out = _run("capacity.py", "--smoke", "--profile", "paced", "--concurrency", "2", "--workers", "1",
               timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [[c.strip() for c in r if c.strip()] for r in _capacity_rows(out.stdout)]
    assert [r[0] for r in rows] == ["kvbench (1 worker)", "vllm bench serve"]
    assert all(float(r[4]) > 0 for r in rows)
