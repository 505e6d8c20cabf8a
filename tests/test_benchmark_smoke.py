"""The benchmarks in benchmarks/ still run: each at a tiny size, as a child process (no Docker)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

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
