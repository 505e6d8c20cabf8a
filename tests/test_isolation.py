"""Isolation evidence on the REAL stack: fresh stacks stay cold, a shared stack is caught polluting."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from .conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.stack]
CONFIG = REPO / "tests" / "configs" / "isolation.yaml"


@pytest.fixture(scope="module")
def both_modes(tmp_path_factory, stack_images):
    results = tmp_path_factory.mktemp("results")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "bench-all",
            "--config",
            str(CONFIG),
            "--isolation",
            "both",
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
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


def test_fresh_stacks_are_cold_and_uncontaminated(both_modes):
    out, run_dir, manifest = both_modes
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("rag_a", "rag_b"):
        entry = manifest["scenarios"][name]
        assert entry["isolation"] == "fresh" and entry["status"] == "ok"
        assert entry["cold_verified"] is True
        assert entry["foreign_hit_tokens_round1"] == 0
    # rag_b's first prefilled request finds nothing although rag_a sent the same document before it
    assert _first_prefilled(run_dir / "rag_b")["cached_tokens"] == 0
    assert _rounds(run_dir, "rag_a").loc[1, "master_key_count_start"] == 0
    assert _rounds(run_dir, "rag_b").loc[1, "master_key_count_start"] == 0
    assert manifest["scenarios"]["rag_a"]["project"] != manifest["scenarios"]["rag_b"]["project"]


def test_shared_stack_pollution_is_detected_and_flagged(both_modes):
    _, run_dir, manifest = both_modes
    a, b = manifest["scenarios"]["shared/rag_a"], manifest["scenarios"]["shared/rag_b"]
    assert a["project"] == b["project"]  # one stack for both
    assert a["cold_verified"] is True and a["status"] == "ok"
    assert b["cold_verified"] is False and b["status"] == "contaminated"
    assert "master_key_count" in b["cold_detail"]
    r1 = _rounds(run_dir, "shared/rag_b").loc[1]
    assert r1["external_hits"] > 0 and r1["master_key_count_start"] > 0
    assert r1["foreign_hit_tokens"] > 0 and b["foreign_hit_tokens_round1"] > 0
    # the very first request of the "cold" round was served from rag_a's blocks
    assert _first_prefilled(run_dir / "shared" / "rag_b")["cached_tokens"] >= 3968


@pytest.mark.parametrize("rel", ["rag_a", "rag_b", "shared/rag_a", "shared/rag_b"])
def test_counter_deltas_agree_with_per_request_cached_tokens(both_modes, rel):
    _, run_dir, _ = both_modes
    rounds = _rounds(run_dir, rel)
    req = pd.read_csv(run_dir / rel / "requests.csv")
    for rnd, row in rounds.iterrows():
        per_request = req[req["round"] == rnd]["cached_tokens"].sum()
        counted = row["prompt_tokens_cached"]
        assert abs(per_request - counted) <= 0.01 * max(counted, 1), (rel, rnd, per_request, counted)


def test_report_shows_both_modes_side_by_side(both_modes):
    _, run_dir, _ = both_modes
    report = (run_dir / "report.md").read_text()
    assert "fresh stack per scenario vs one shared stack" in report
    assert "(shared)" in report and "(fresh)" in report
