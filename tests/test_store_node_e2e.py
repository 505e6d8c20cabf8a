"""The store node on the REAL CPU stack: vLLM (CPU, MooncakeStoreConnector in standalone-store
mode) + mooncake_master + a mooncake_client that owns the pool.

- the store node `docker kill`ed mid-round: the cell fails within seconds naming it, the run exits
  non-zero, nothing of the stack is left;
- an engine restart between rounds: the store keeps its keys and the new engine (cold itself) loads
  round 2 from it;
- wrong KV: engine B has other weights but the same tokenizer, config and model name, so its keys
  are engine A's; served A's KV, its outputs differ from recomputing the same prompts on B, and the
  fidelity check says so, naming the prompts.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from python_on_whales import docker

from harness.report.analysis import analyse
from harness.stack.compose import find_resources

from .conftest import REPO, bench_acting_mid_round, pinned

pytestmark = [pytest.mark.docker, pytest.mark.stack]
CONFIG = REPO / "tests" / "configs" / "store-node.yaml"
KVBENCH = [sys.executable, "-m", "harness"]


def _config(tmp: Path, **stack: object) -> Path:
    """The store-node config with `stack` over it, its engines on this worker's core (conftest.pinned)."""
    engines = 2 if stack.get("topology") == "cross-instance" else 1
    out = tmp / "store-node-test.yaml"
    out.write_text(yaml.safe_dump({"extends": str(pinned(CONFIG, tmp, engines)), "stack": stack}))
    return out


def _container(run_dir: Path, key: str, service: str):
    project = json.loads((run_dir / "manifest.json").read_text())["scenarios"][key]["project"]
    labels = [("label", f"com.docker.compose.project={project}"), ("label", f"com.docker.compose.service={service}")]
    (container,) = docker.container.list(filters=labels)
    return container


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def _bench(tmp: Path, config: Path, scenario: str, *extra: str, acts=(), timeout: float = 900):
    cmd = [*KVBENCH, "bench", "--config", str(config), "--scenario", scenario, *extra]
    t = time.perf_counter()
    code, err, run_dir = bench_acting_mid_round(cmd, tmp / "results", list(acts), timeout=timeout)
    print(err[-3000:], f"\nwall time {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return code, err, run_dir


def test_a_store_node_killed_mid_round_fails_the_cell_within_seconds_and_leaves_nothing(
    tmp_path, stack_images, no_harness_leftovers
):
    """vLLM keeps serving when its store goes (every request pays the connector's timeouts): only
    the stack watch can tell. The cell fails within seconds, naming the store node, with every
    container's logs; the run exits non-zero; `down -v` leaves no container, volume or network."""
    failed_after: list[float] = []

    def kill_store(proc, run_dir: Path) -> None:
        docker.container.kill(_container(run_dir, "short_batch", "mooncake-store"))
        t = time.monotonic()
        while _manifest(run_dir)["scenarios"]["short_batch"]["status"] == "running":
            assert time.monotonic() - t < 120, "the cell still runs 2 minutes after its store node died"
            time.sleep(0.2)  # polling the manifest, bounded above
        failed_after.append(time.monotonic() - t)

    code, err, run_dir = _bench(tmp_path, _config(tmp_path), "short_batch", acts=[("short_batch", 3, kill_store)])
    assert code != 0, err[-2000:]
    cell = _manifest(run_dir)["scenarios"]["short_batch"]
    assert cell["status"] == "failed" and "StoreDown" in cell["reason"], cell
    assert "Mooncake store node unreachable: mooncake-store is exited" in cell["reason"], cell
    print(f"store node killed -> cell failed in {failed_after[0]:.1f} s", file=sys.stderr)
    assert failed_after[0] < 30
    ps = json.loads((Path(cell["logs"]) / "ps.json").read_text())
    assert any("mooncake-store" in c["name"] and c["status"] == "exited" for c in ps)
    rows = pd.read_csv(run_dir / "short_batch" / "requests.csv")
    assert set(rows["round"]) == {1} and len(rows) < 100 and rows["ok"].sum() >= 3
    assert cell["teardown_verified"] is True
    assert not find_resources(f"com.docker.compose.project={cell['project']}")


def test_hits_survive_an_engine_restart_on_a_store_node(tmp_path, stack_images, no_harness_leftovers):
    """The engine restarts before round 2; master and store node keep running. cold_start's prompts
    share nothing, so round 2 can reuse only what round 1 stored before the restart (an embedded
    store loses all of it). The new engine starts cold (its own counters 0) and loads round 2 from
    the store: >= 90 % of what round 2 could reuse came back as external hits."""
    cfg = _config(tmp_path, topology="engine-restart")
    code, err, run_dir = _bench(tmp_path, cfg, "cold_start")
    assert code == 0, err[-3000:]
    cell = _manifest(run_dir)["scenarios"]["cold_start"]
    assert cell["status"] == "ok" and cell["cold_verified"] is True, cell
    assert "store node serving, its 512 MiB segment the whole store" in cell["cold_detail"]
    (restart,) = cell["engine_restarts"]
    assert restart["engine_cold"] is True and restart["master_keys_after"] == restart["master_keys_before"] > 0
    rounds = pd.read_csv(run_dir / "cold_start" / "rounds.csv").set_index("round")
    assert rounds.loc[1, "external_hits"] == 0  # nothing shared within a round: all reuse is round 1's
    r2 = rounds.loc[2]
    share = r2["external_hits"] / r2["expected_reuse_tokens"]
    print(f"store node: round 2 external hits {r2['external_hits']:.0f} of {r2['expected_reuse_tokens']:.0f} "
          f"expected ({100 * share:.1f} %)", file=sys.stderr)  # fmt: skip
    assert share >= 0.9 and r2["local_hits"] == 0


def test_wrong_kv_from_the_store_is_reported_by_the_fidelity_check(tmp_path, stack_images, no_harness_leftovers):
    """Engines A and B share one store node; B has other weights (tests/compose/wrong-weights.yaml)
    but the same keys. Round 1 on A fills the store, round 2 on B loads A's KV. With the cache vs
    without it (baseline: B recomputes), round 1 (both on A) agrees and round 2 differs: the
    fidelity check reports the mismatch and names the prompts instead of passing."""
    cfg = _config(tmp_path, topology="cross-instance")
    overlay = REPO / "tests" / "compose" / "wrong-weights.yaml"
    code, err, run_dir = _bench(tmp_path, cfg, "wrong_kv_qa", "--mode", "both", "--compose-file", str(overlay))
    assert code == 0, err[-3000:]
    r2 = pd.read_csv(run_dir / "wrong_kv_qa" / "rounds.csv").set_index("round").loc[2]
    assert r2["external_hits"] > 0  # B did load A's blocks
    f = analyse(run_dir).fidelity.set_index("scenario").loc["wrong_kv_qa"]
    print(f.to_dict(), file=sys.stderr)
    assert f["informative"] == "yes", f.to_dict()  # outputs depend on the prompt: the check can fail
    n = 8  # requests per round
    pairs, same = f["with cache vs baseline pairs"], f["with cache vs baseline identical"]
    assert pairs == 2 * n
    assert same <= n and f["with cache vs baseline differ"], f.to_dict()  # round 2 (B on A's KV) differs
    assert f["check"].startswith("FAIL: the output changed with reused KV for "), f["check"]
    # Per round: round 1 (A, its own KV) is the control and agrees; round 2 (B, A's KV) does not.
    cols = ["round", "prompt_id", "output_hash"]
    cache = pd.read_csv(run_dir / "wrong_kv_qa" / "requests.csv", usecols=cols)
    base = pd.read_csv(run_dir / "baseline" / "wrong_kv_qa" / "requests.csv", usecols=cols)
    both = cache.merge(base, on=["round", "prompt_id"], suffixes=("_cache", "_base"))
    agree = (both["output_hash_cache"] == both["output_hash_base"]).groupby(both["round"]).mean()
    print(f"identical outputs with the cache vs recomputed, by round: {agree.to_dict()}", file=sys.stderr)
    assert agree[1] == 1.0 and agree[2] <= 0.5
    section = (run_dir / "report.md").read_text().split("## Reuse fidelity")[1].split("\n## ")[0]
    assert "differs: wrong_kv_qa-" in section and "| FAIL: the output changed with reused KV" in section, section
