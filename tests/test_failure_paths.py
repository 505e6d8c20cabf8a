"""The suite's failure-HANDLING paths, on the FAKE STACK (tests/fake_stack.py - a test double, not
vLLM/Mooncake): Ctrl-C mid-round, resuming an interrupted run, a stack that never becomes healthy.

What they check is the harness: rows kept intact, statuses, teardown, exit codes, which cells a
resume runs. What a real stack does (fresh lifecycle, cold proof, Mooncake reuse, teardown by
label, a killed engine or master) is tested on the real stack: docs/testing.md.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness import cli

from . import fake_stack
from .conftest import REPO, bench_acting_mid_round, only_run

E2E = REPO / "tests" / "configs" / "e2e.yaml"
FAKE_KVBENCH = [sys.executable, "-m", "tests.fake_stack_cli"]
# Each request waits 5 ms for its first token: long_batch's 400 requests take seconds, long
# enough to interrupt after a few rows, short enough to finish on resume.
FAKE_ENV = {**os.environ, "KVB_FAKE_FIRST_MS": "5", "PYTHONPATH": str(REPO)}


def _sigint(proc: subprocess.Popen, run_dir: Path) -> None:
    proc.send_signal(signal.SIGINT)


def _serving(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _nothing_left(manifest: dict) -> None:
    """The fake stack's 'nothing left': no port a cell's stack published still accepts connections."""
    ports = [p for e in manifest["scenarios"].values() for p in (e.get("ports") or {}).values()]
    assert ports and not [p for p in ports if _serving(p)]


@pytest.fixture
def signals_restored():
    """cli.main installs kvbench's SIGINT/SIGTERM handlers: give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_the_fake_stack_is_a_stack_fresh_cold_filled_and_torn_down(tmp_path, monkeypatch, signals_restored):
    """The double itself: each cell on its own fresh fake stack, its engine warmed up, cold before
    round 1, the store filled by the with-cache cell only, round 2 served from it, every stack down
    and verified."""
    fake_stack.install(monkeypatch.setattr)
    opened = len(fake_stack.OPENED)
    args = ["bench-all", "--config", str(E2E), "--scenarios", "cold_start", "--results", str(tmp_path)]
    assert cli.main(args) == 0
    run_dir = only_run(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cells = manifest["scenarios"]
    assert sorted(cells) == ["baseline/cold_start", "cold_start"]
    stacks = fake_stack.OPENED[opened:]
    assert len(stacks) == 2 and [s.with_connector for s in stacks] == [True, False]
    assert all(s.teardown and s.teardown.verified for s in stacks)
    assert len({tuple(e["engine_container_ids"]) for e in cells.values()}) == 2
    for key, entry in cells.items():
        assert entry["status"] == "ok" and entry["cold_verified"] is True and entry["teardown_verified"] is True, key
        # the engine was warmed before the cold proof, with requests that stored nothing (the proof still passed)
        warm = entry["warmup"]
        assert warm["requests"] == 4 and all(0 < n < warm["block_size"] for n in warm["prompt_tokens"]), key
    cache = pd.read_csv(run_dir / "cold_start" / "rounds.csv").set_index("round")
    base = pd.read_csv(run_dir / "baseline" / "cold_start" / "rounds.csv").set_index("round")
    assert cache.loc[1, "master_key_count_start"] == 0 and cache.loc[1, "master_key_count_end"] > 0
    assert cache.loc[1, "external_hits"] == 0 and cache.loc[2, "external_hits"] > 0
    assert base["master_key_count_end"].max() == 0 and base["cached_tokens"].sum() == 0
    req = pd.read_csv(run_dir / "cold_start" / "requests.csv")
    assert (req["prompt_tokens"] == req["expected_prompt_tokens"]).all()
    assert req.loc[req["round"] == 2, "cached_tokens"].sum() == cache.loc[2, "external_hits"]
    _nothing_left(manifest)


def test_sigint_during_a_round_tears_down_and_keeps_rows(tmp_path):
    code, err, run_dir = bench_acting_mid_round(
        [*FAKE_KVBENCH, "bench", "--config", str(E2E), "--scenario", "long_batch", "--concurrency", "1"],
        tmp_path / "results",
        [("long_batch", 5, _sigint)],
        timeout=60,
        env=FAKE_ENV,
    )
    csv = run_dir / "long_batch" / "requests.csv"
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and "Fatal error" not in err, err[-2000:]  # interrupted cleanly, not crashed
    manifest = json.loads((run_dir / "manifest.json").read_text())
    entry = manifest["scenarios"]["long_batch"]
    assert entry["status"] == "interrupted"
    assert entry["teardown_verified"] is True
    assert entry["timings"]["teardown_s"] < 10
    _nothing_left(manifest)
    rows = pd.read_csv(csv)
    assert 5 <= len(rows) < 800 and rows["ok"].all()  # every completed row is on disk and intact


def test_resume_finishes_an_interrupted_bench_all_without_rerunning_finished_cells(tmp_path):
    code, err, run_dir = bench_acting_mid_round(
        [
            *FAKE_KVBENCH,
            "bench-all",
            "--config",
            str(E2E),
            "--scenarios",
            "cold_start",
            "long_batch",
            "--mode",
            "with-cache",
            "--rounds",
            "1",
            "--concurrency",
            "1",
        ],
        tmp_path / "results",
        [("long_batch", 5, _sigint)],
        timeout=60,
        env=FAKE_ENV,
    )
    assert code == 130, err[-2000:]
    first = json.loads((run_dir / "manifest.json").read_text())
    assert first["scenarios"]["cold_start"]["status"] == "ok"
    assert first["scenarios"]["long_batch"]["status"] == "interrupted"
    assert len(pd.read_csv(run_dir / "long_batch" / "requests.csv")) < 400  # interrupted mid-round
    done_csv = run_dir / "cold_start" / "requests.csv"
    done_bytes = done_csv.read_bytes()

    out = subprocess.run(
        [*FAKE_KVBENCH, "bench-all", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=FAKE_ENV,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "cold_start: ok in an earlier attempt, not run again" in out.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cold, batch = manifest["scenarios"]["cold_start"], manifest["scenarios"]["long_batch"]
    assert cold["project"] == first["scenarios"]["cold_start"]["project"] and done_csv.read_bytes() == done_bytes
    assert batch["status"] == "ok" and batch["previous_attempts"][0]["status"] == "interrupted"
    old_engine = first["scenarios"]["long_batch"]["engine_container_ids"]
    assert batch["engine_container_ids"] != old_engine  # the new attempt on a fresh stack
    assert len(pd.read_csv(run_dir / "long_batch" / "requests.csv")) == 400  # the new attempt only
    assert (run_dir / ".attempts" / "long_batch-1" / "requests.csv").is_file()
    assert manifest["not_reached"] == [] and manifest["finished_at"]
    assert manifest["resumed"] and batch["teardown_verified"] is True
    report = (run_dir / "report.md").read_text()
    assert "| cold_start " in report and "| long_batch " in report and ".attempts" not in report
    _nothing_left(manifest)


def test_a_stack_that_never_becomes_healthy_fails_its_scenario_and_the_next_runs(
    tmp_path, monkeypatch, signals_restored
):
    """Bring-up fails (StackError): the cell fails with the reason and its logs, the stack is still
    torn down and verified, the next cell gets its own stack and fails alike, the run ends with its
    manifest and report, exit 1. (On Docker: test_lifecycle's unhealthy light stack.)"""
    fake_stack.install(monkeypatch.setattr, fail_up="unhealthy")
    opened = len(fake_stack.OPENED)
    args = ["bench-all", "--config", str(E2E), "--scenarios", "cold_start", "long_context_high_reuse"]
    assert cli.main([*args, "--mode", "with-cache", "--results", str(tmp_path)]) == 1
    run_dir = only_run(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(fake_stack.OPENED) - opened == 2  # the second cell got its own stack
    for name in ("cold_start", "long_context_high_reuse"):
        entry = manifest["scenarios"][name]
        assert entry["status"] == "failed" and "did not become healthy" in entry["reason"], entry
        assert "vllm is unhealthy" in entry["reason"]
        assert entry["teardown_verified"] is True
        assert (Path(entry["logs"]) / "fake-stack.log").is_file() and (Path(entry["logs"]) / "ps.json").is_file()
        assert not (run_dir / name / "requests.csv").exists()  # nothing was sent
    assert manifest["finished_at"] and (run_dir / "report.md").is_file()
    assert "cold_start: status failed" in (run_dir / "report.md").read_text()
