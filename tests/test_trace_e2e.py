"""Trace replay and a store-size sweep on the REAL CPU stack: token-id prompts of exact length,
arrivals and output lengths as recorded, the skipped count, expected vs achieved reuse, and the
cache cliff between a store too small for the working set and one large enough.

The trace is written by the test (the FAST'25 format): 20 requests of 8 blocks (4,096 tokens),
2 of them sharing their first 2 blocks with the one before, and one too long for the context:
a working set of ~80 MB of KV on the CPU reference model (1 KB per token), against a 32 MB store
(too small for it: round 2 finds little of round 1 left) and a 1 GB one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import REPO, pinned, run_interruptibly

pytestmark = [pytest.mark.docker, pytest.mark.stack]


N = 20  # the replayed requests; one more is too long and skipped


def _trace(path: Path) -> list[dict]:
    records, next_id = [], 0
    for i in range(N):
        ids = list(range(next_id, next_id + 8))
        next_id += 8
        if i % 10 == 9:  # shares its first two blocks with the request before
            ids[:2] = records[-1]["hash_ids"][:2]
        records.append({"timestamp": 100 * i, "input_length": 4096, "output_length": 4 + i % 3, "hash_ids": ids})
    too_long = {"timestamp": 100 * N, "input_length": 40000, "output_length": 4, "hash_ids": list(range(9000, 9079))}
    records.append(too_long)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_a_trace_replays_exactly_and_a_small_store_falls_off_the_cliff(tmp_path, stack_images, no_harness_leftovers):
    records = _trace(tmp_path / "trace.jsonl")
    config = yaml.safe_load(pinned(REPO / "tests" / "configs" / "e2e.yaml", tmp_path).read_text())
    config.update(
        default_scenarios=["tr"],
        concurrency=8,
        scenarios={"tr": {"kind": "trace", "path": "trace.jsonl", "speed": 4}},
        sweep={"stack.global_segment_size": ["32MB", "1GB"]},
    )
    (tmp_path / "trace.yaml").write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    out = run_interruptibly(
        [sys.executable, "-m", "harness", "bench-all", "--config", str(tmp_path / "trace.yaml")]
        + ["--mode", "with-cache", "--results", str(results)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    print(out.stdout[-3000:], file=sys.stderr)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = list(results.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    small, large = manifest["scenarios"]["point-01/tr"], manifest["scenarios"]["point-02/tr"]
    assert small["skipped_requests"] == large["skipped_requests"] == 1
    assert "1 trace requests skipped" in out.stderr.replace("\n", " ")  # progress goes to stderr

    req = pd.read_csv(run_dir / "point-02" / "tr" / "requests.csv").sort_values(["round", "index"])
    assert (req["prompt_tokens"] == 4096).all()  # exact, as the server counted it
    assert req["completion_tokens"].tolist() == [r["output_length"] for r in records[:N]] * 2
    rounds = {p: pd.read_csv(run_dir / p / "tr" / "rounds.csv").set_index("round") for p in ("point-01", "point-02")}
    r1 = rounds["point-02"].loc[1]
    assert 0 < r1["expected_reuse_tokens"] <= N // 10 * 1024  # round 1: only the shared 2-block prefixes
    assert r1["foreign_hit_tokens"] == 0
    big, tiny = rounds["point-02"].loc[2], rounds["point-01"].loc[2]
    assert big["reuse_achieved_ratio"] >= 0.9  # everything fits: round 2 reuses what round 1 stored
    assert tiny["reuse_achieved_ratio"] <= 0.5 and tiny["master_evicted_keys"] > 0  # the cliff
    assert tiny["lru_reuse_tokens"] < big["lru_reuse_tokens"]  # the simulation sees it too
    report = (run_dir / "report.md").read_text()
    assert "## Cache cliff" in report and (run_dir / "plots" / "cache_cliff.png").is_file()
