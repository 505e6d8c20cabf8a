"""The four arms on the REAL CPU stack, at the two ends of the working-set curve: a working set half
the engine's KV pool (vLLM's own prefix cache holds it: the store adds nothing) and four times the
pool (cyclic revisits evict every document from the pool before it comes back: only the store still
hits). Asserted on the engine's own hit counters first, then on TTFT and on what the report says.
Both arms on one stack each (--isolation reset: the second ratio after a verified reset), one repeat
(the reset isolation's default of three spans the stacks' noise; these assertions need no interval
over stacks, and the two extra repeats cost 2.5 minutes)."""

from __future__ import annotations

import json
import sys
import time

import pandas as pd
import pytest

from harness.analysis import arms as A
from harness.report.analysis import analyse

from .conftest import REPO, only_run, pinned, run_interruptibly

pytestmark = [pytest.mark.docker, pytest.mark.stack]
ARMS = REPO / "tests" / "configs" / "arms.yaml"
KVBENCH = [sys.executable, "-m", "harness"]


@pytest.fixture(scope="module")
def arms_run(tmp_path_factory, stack_images):
    work = tmp_path_factory.mktemp("arms")
    t = time.perf_counter()
    proc = run_interruptibly(
        [*KVBENCH, "bench-all", "--config", str(pinned(ARMS, work)), "--isolation", "reset", "--repeats", "1",
         "--results", str(work / "results")],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    print(proc.stderr[-3000:], f"\nwall time {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return proc, only_run(work / "results")


def _warm(run_dir, key: str) -> pd.Series:
    r = pd.read_csv(run_dir / key / "rounds.csv")
    return r[r["round"] == 2].iloc[0]


def test_hit_counters_follow_the_pool(arms_run):
    proc, run_dir = arms_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {e["status"] for e in manifest["scenarios"].values()} == {"ok"}, manifest["scenarios"]
    for key in ("local/reset/ws-x0p5", "local+store/reset/ws-x0p5", "local/reset/ws-x4", "local+store/reset/ws-x4"):
        entry = manifest["scenarios"][key]
        assert entry["engine_pool_blocks"] == 128 and entry["engine_prefix_caching"] is True, entry
    # Half the pool: every revisit hits the engine's own pool, in both arms; nothing is left for the store.
    for key in ("local/reset/ws-x0p5", "local+store/reset/ws-x0p5"):
        w = _warm(run_dir, key)
        assert w["local_hits"] >= 0.95 * w["expected_reuse_tokens"] > 0, (key, w["local_hits"])
        assert w["lru_local_reuse_tokens"] == w["expected_reuse_tokens"]
    assert _warm(run_dir, "local+store/reset/ws-x0p5")["external_hits"] == 0
    # Four times the pool, cyclic: the pool hits nothing (as the LRU simulation predicts); the store nearly all.
    local, both = _warm(run_dir, "local/reset/ws-x4"), _warm(run_dir, "local+store/reset/ws-x4")
    assert local["local_hits"] == 0 == local["lru_local_reuse_tokens"]
    assert local["external_hits"] == 0 or pd.isna(local["external_hits"])
    assert both["external_hits"] >= 0.95 * both["expected_reuse_tokens"] > 0, both["external_hits"]


def test_the_store_pays_only_past_the_pool(arms_run):
    proc, run_dir = arms_run
    a = analyse(run_dir)
    changes = a.arm_changes.set_index("scenario")
    print(
        A.verdict_line(a.crossover), changes[["ratio", "change", "lo", "hi", "n"]].round(1), sep="\n", file=sys.stderr
    )
    small, big = changes.loc["ws-x0p5"], changes.loc["ws-x4"]
    # Below the pool the store serves nothing, so whatever the TTFTs of the two arms' stacks do there
    # (seen: +25 to +34 %, and -37.3 % [-53.7, -12.0] on a busy host) is never counted as its gain.
    assert small["store_pct"] == 0, small.to_dict()
    assert big["hi"] < 0 and big["change"] < -20 and big["store_pct"] > 90, big.to_dict()  # past it: clearly faster
    assert a.crossover is not None and a.crossover.r0 == 4.0
    assert "R0 = 4" in A.verdict_line(a.crossover) and not a.misconfigured
    assert "R0 = 4" in (run_dir / "report.md").read_text() and (run_dir / "plots" / "arms.png").exists()


def test_a_local_arm_without_its_prefix_cache_is_misconfigured_and_fails_the_run(tmp_path, stack_images):
    """A real misconfiguration: the local arm with vLLM's prefix cache switched off again by an extra
    engine flag (the last flag wins). The engine says so itself (cache_config_info) before round 1:
    misconfigured, loudly, exit 1, and no round is run to confirm it (a local arm whose counters show
    no local hit is judged after its rounds: tests/test_arms.py)."""
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(
        f"extends: {pinned(ARMS, tmp_path)}\nmode: local\nrounds: 2\n"
        "stack: {extra_vllm_args: ['--no-enable-prefix-caching']}\n"
        "scenarios: {ws: {kind: working_set, document_tokens: 4096, ratios: [0.5], visits: 8}}\n"
    )
    proc = run_interruptibly([*KVBENCH, "bench-all", "--config", str(cfg), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    run_dir = only_run(tmp_path / "r")
    entry = json.loads((run_dir / "manifest.json").read_text())["scenarios"]["local/ws-x0p5"]
    assert entry["status"] == "misconfigured", entry
    assert entry["reason"] == "the engine reports prefix caching off, the arm wants it on", entry
    assert not (run_dir / "local" / "ws-x0p5" / "requests.csv").exists()  # no round was run
    assert "MISCONFIGURED (no round run): the engine reports" in proc.stderr  # the line wraps after that
    assert f"MISCONFIGURED local/ws-x0p5: {entry['reason']}." in (run_dir / "report.md").read_text()


def test_an_engine_that_exits_during_bring_up_is_quoted_by_its_own_error_line(tmp_path, stack_images):
    """An engine asked for a context longer than its model's refuses to start (the config check is bypassed
    by an extra engine flag, the last one wins): the cell's reason quotes vLLM's own error, what failed
    included, not only 'did not become healthy'. vLLM refuses this flag before its engine process starts
    (18 s here, where a pool too small to hold one request is found after the engine's start: 32 s)."""
    cfg = tmp_path / "long-context.yaml"
    cfg.write_text(
        f"extends: {pinned(ARMS, tmp_path)}\nmode: local\n"
        "stack: {extra_vllm_args: ['--max-model-len', '65536']}\n"
        "scenarios: {ws: {kind: working_set, document_tokens: 4096, ratios: [0.5]}}\n"
    )
    proc = run_interruptibly([*KVBENCH, "bench-all", "--config", str(cfg), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    entry = json.loads((only_run(tmp_path / "r") / "manifest.json").read_text())["scenarios"]["local/ws-x0p5"]
    assert entry["status"] == "failed" and "did not become healthy" in entry["reason"], entry
    assert "vllm said:" in entry["reason"] and "max_model_len (65536) is greater than" in entry["reason"], entry
