"""The reset audit's smoke run on the REAL stack (benchmarks/reset_audit.py at its smallest). The
suite's verified reset between scenarios is tested in tests/test_isolation.py."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import REPO, pinned

pytestmark = [pytest.mark.docker, pytest.mark.stack]
CONFIG = REPO / "tests" / "configs" / "isolation.yaml"


def test_reset_audit_shows_the_peers_reset_leaving_the_store_warm_and_kvbench_proving_its_own(tmp_path):
    """benchmarks/reset_audit.py at its smallest (one scenario, one pair, one stack): `vllm bench
    sweep`'s reset (no reset_external) answers success but leaves the store's keys, and the canary
    gets external hits: the proof catches it. kvbench's reset is proven; round 1 after it is
    paired with round 1 on the fresh stack, with an interval."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "reset_audit.py"), "--config", str(pinned(CONFIG, tmp_path)),
         "--scenarios", "rag_a", "--pairs", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )  # fmt: skip
    print(out.stdout[-3000:], file=sys.stderr)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = out.stdout.split("What each reset left")[1]
    row = next(line for line in table.splitlines() if line.startswith("rag_a"))
    assert "success=True; store " in row and " keys left" in row and "store 0 keys left" not in row
    assert " yes " in row and "proven cold" in row and "master_key_count=0" in row
    head = out.stdout.split("Round-1 TTFT after kvbench's verified reset")[1].split("What each")[0]
    assert re.search(r"rag_a\s+6\s+[\d,.]+\s+[\d,.]+\s+[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]", head), head
