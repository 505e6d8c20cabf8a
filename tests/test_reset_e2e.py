"""The verified reset on the REAL stack: vLLM 0.32's `POST /reset_prefix_cache?reset_external=true`
with the MooncakeStoreConnector and a real mooncake_master.

rag_a and rag_b start with the same ~4k-token document: on one stack without a reset rag_b's
"cold" round is served from rag_a's blocks (tests/test_isolation.py shows that pollution). With
`--isolation reset` both run on one stack, and rag_b must be proven cold before it starts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from harness.stack.compose import find_resources

from .conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.stack]
CONFIG = REPO / "tests" / "configs" / "isolation.yaml"


@pytest.fixture(scope="module")
def reset_run(tmp_path_factory, stack_images):
    results = tmp_path_factory.mktemp("results")
    out = subprocess.run(
        [sys.executable, "-m", "harness", "bench-all", "--config", str(CONFIG), "--isolation", "reset",
         "--results", str(results)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )  # fmt: skip
    (run_dir,) = list(results.iterdir())
    print(out.stdout[-4000:], file=sys.stderr)
    return out, run_dir, json.loads((run_dir / "manifest.json").read_text())


def test_two_scenarios_share_one_stack_and_the_second_is_proven_cold(reset_run):
    out, run_dir, manifest = reset_run
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = manifest["scenarios"]["reset/rag_a"], manifest["scenarios"]["reset/rag_b"]
    assert a["project"] == b["project"]  # one stack, one engine start
    assert a["engine_container_ids"] == b["engine_container_ids"]
    assert a["reset"] is None  # first on its stack: fresh
    ev = b["reset"]
    assert ev["verified"] is True and ev["reset_ok"] is True and ev["warm"] is None, ev
    assert ev["keys_after_reset"] == 0 and ev["keys_at_start"] == 0 and ev["bytes_at_start"] == 0
    assert ev["canary_prompt"] == "rag_a-0000"  # rag_a's first prompt, sent again after the reset...
    assert ev["canary_cached_tokens"] == 0 and ev["canary_external_hits"] == 0  # ...found nothing
    assert b["cold_verified"] is True and b["status"] == "ok"
    assert b["foreign_hit_tokens_round1"] == 0  # none of rag_a's shared document was served to rag_b
    rounds = pd.read_csv(run_dir / "reset" / "rag_b" / "rounds.csv").set_index("round")
    assert rounds.loc[1, "master_key_count_start"] == 0
    assert rounds.loc[2, "external_hits"] > 0  # the store still serves after the reset
    assert "proven: store 0 keys, canary 0 cached" in (run_dir / "report.md").read_text()
    assert not find_resources(f"io.kvbench.run={manifest['run_id']}")


def test_reset_audit_shows_the_peers_reset_leaving_the_store_warm_and_kvbench_proving_its_own():
    """benchmarks/reset_audit.py at its smallest (one scenario, one pair, one stack): `vllm bench
    sweep`'s reset (no reset_external) answers success but leaves the store's keys, and the canary
    gets external hits: the proof catches it. kvbench's reset is proven; round 1 after it is
    paired with round 1 on the fresh stack, with an interval."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "reset_audit.py"), "--config", str(CONFIG),
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
