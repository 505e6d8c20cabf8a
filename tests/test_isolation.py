"""Isolation on the REAL stack, in one run of two isolations side by side (`--isolation shared,reset`).

rag_a and rag_b start with the same ~4k-token document (same prefix_seed). On one shared stack,
as an unisolated script would run them, rag_b's "cold" round is served from rag_a's blocks: the
harness must catch that. With `reset` both run on one stack too, but between them vLLM 0.32's
`POST /reset_prefix_cache?reset_external=true` (MooncakeStoreConnector, real mooncake_master)
must be proven: store empty, rag_a's first prompt finds nothing. Fresh stacks per scenario are
covered by tests/test_stack_e2e.py's bench-all run.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from harness.stack.compose import find_resources

from .conftest import REPO, pinned, run_interruptibly
from .report_synth import md_number, md_table

pytestmark = [pytest.mark.docker, pytest.mark.stack]
CONFIG = REPO / "tests" / "configs" / "isolation.yaml"


@pytest.fixture(scope="module")
def shared_and_reset(tmp_path_factory, stack_images):
    work = tmp_path_factory.mktemp("isolation")
    results = work / "results"
    out = run_interruptibly(
        [sys.executable, "-m", "harness", "bench-all", "--config", str(pinned(CONFIG, work)),
         "--isolation", "shared,reset", "--results", str(results)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )  # fmt: skip
    (run_dir,) = list(results.iterdir())
    print(out.stdout[-4000:], file=sys.stderr)
    return out, run_dir, json.loads((run_dir / "manifest.json").read_text())


def _first_prefilled(scenario_dir) -> pd.Series:
    """Round 1's first request to get its first token: requests sent together are not
    prefilled in send order, and the first one prefilled cannot reuse anything of its own scenario."""
    req = pd.read_csv(scenario_dir / "requests.csv")
    r1 = req[req["round"] == 1]
    return r1.loc[(r1["send_s"] + r1["ttft_ms"] / 1e3).idxmin()]


def _rounds(run_dir, rel: str) -> pd.DataFrame:
    return pd.read_csv(run_dir / rel / "rounds.csv").set_index("round")


def test_two_scenarios_share_one_stack_and_the_second_is_proven_cold(shared_and_reset):
    out, run_dir, manifest = shared_and_reset
    assert out.returncode == 0, out.stderr[-3000:]  # contamination on the shared stack is shown, not a failure
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
    # rag_b's first prefilled request finds nothing although rag_a sent the same document before it
    assert _first_prefilled(run_dir / "reset" / "rag_b")["cached_tokens"] == 0
    rounds = _rounds(run_dir, "reset/rag_b")
    assert rounds.loc[1, "master_key_count_start"] == 0
    assert rounds.loc[2, "external_hits"] > 0  # the store still serves after the reset
    assert "proven: store 0 keys, canary 0 cached" in (run_dir / "report.md").read_text()
    assert not find_resources(f"io.kvbench.run={manifest['run_id']}")


def test_shared_stack_pollution_is_detected_and_flagged(shared_and_reset):
    _, run_dir, manifest = shared_and_reset
    a, b = manifest["scenarios"]["shared/rag_a"], manifest["scenarios"]["shared/rag_b"]
    assert a["project"] == b["project"]  # one stack for both
    assert a["project"] != manifest["scenarios"]["reset/rag_a"]["project"]
    assert a["cold_verified"] is True and a["status"] == "ok"
    assert b["cold_verified"] is False and b["status"] == "contaminated"
    assert "master_key_count" in b["cold_detail"]
    r1 = _rounds(run_dir, "shared/rag_b").loc[1]
    assert r1["external_hits"] > 0 and r1["master_key_count_start"] > 0
    assert r1["foreign_hit_tokens"] > 0 and b["foreign_hit_tokens_round1"] > 0
    # the very first request of the "cold" round was served from rag_a's blocks
    assert _first_prefilled(run_dir / "shared" / "rag_b")["cached_tokens"] >= 3968


def test_cold_start_has_no_reuse_in_its_cold_round(shared_and_reset):
    """Unique prompts after a verified reset: round 1 reuses nothing, every request a full
    prefill; round 2 loads them from Mooncake."""
    _, run_dir, manifest = shared_and_reset
    assert manifest["scenarios"]["reset/cold_start"]["reset"]["verified"] is True
    rounds = _rounds(run_dir, "reset/cold_start")
    assert rounds.loc[1, "external_hits"] == 0 and rounds.loc[1, "cached_tokens"] == 0
    assert rounds.loc[1, "misses"] == rounds.loc[1, "successes"] > 0  # every cold request a full prefill
    assert rounds.loc[2, "external_hits"] > 0


@pytest.mark.parametrize("rel", ["reset/rag_a", "reset/rag_b", "shared/rag_a", "shared/rag_b"])
def test_counter_deltas_agree_with_per_request_cached_tokens(shared_and_reset, rel):
    _, run_dir, _ = shared_and_reset
    rounds = _rounds(run_dir, rel)
    req = pd.read_csv(run_dir / rel / "requests.csv")
    for rnd, row in rounds.iterrows():
        per_request = req[req["round"] == rnd]["cached_tokens"].sum()
        counted = row["prompt_tokens_cached"]
        assert abs(per_request - counted) <= 0.01 * max(counted, 1), (rel, rnd, per_request, counted)


def test_report_shows_both_isolations_side_by_side(shared_and_reset):
    _, run_dir, _ = shared_and_reset
    report = (run_dir / "report.md").read_text()
    table = md_table(report, "round 1 on a stack of its own").set_index("scenario")
    for iso in ("shared", "reset"):  # the figures printed are the cells' own round-1 counters
        for name in ("rag_a", "rag_b"):
            r1 = _rounds(run_dir, f"{iso}/{name}").loc[1]
            assert md_number(table.loc[name, f"keys before r1 ({iso})"]) == r1["master_key_count_start"]
            assert md_number(table.loc[name, f"r1 foreign hits ({iso})"]) == r1["foreign_hit_tokens"]
    assert md_number(table.loc["rag_b", "keys before r1 (shared)"]) > 0  # polluted, and the table shows it
    assert md_number(table.loc["rag_b", "keys before r1 (reset)"]) == 0
