"""Cross-instance topology on the REAL CPU stack.

Baseline and with-cache in one report is asserted on test_stack_e2e's bench-all run (mode both),
which already brings up both stacks of long_context_high_reuse."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from .conftest import REPO, pinned, run_interruptibly, warm_beats_cold

pytestmark = [pytest.mark.docker, pytest.mark.stack]
KVBENCH = [sys.executable, "-m", "harness"]


def _bench(tmp_path, config: str, *extra: str):
    results = tmp_path / "results"
    out = run_interruptibly(
        [
            *KVBENCH,
            "bench-all",
            "--config",
            str(pinned(REPO / "tests" / "configs" / config, tmp_path, engines=2)),
            "--results",
            str(results),
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    (run_dir,) = list(results.iterdir())
    print(out.stdout[-3000:], file=sys.stderr)
    return out, run_dir, json.loads((run_dir / "manifest.json").read_text())


def test_cross_instance_round_two_on_engine_b_loads_from_mooncake(tmp_path, stack_images, no_harness_leftovers):
    out, run_dir, manifest = _bench(tmp_path, "cross.yaml")
    assert out.returncode == 0, out.stderr[-3000:]
    entry = manifest["scenarios"]["long_context_high_reuse"]
    assert entry["cold_verified"] is True and len(entry["engine_container_ids"]) == 2
    rounds = pd.read_csv(run_dir / "long_context_high_reuse" / "rounds.csv").set_index("round")
    req = pd.read_csv(run_dir / "long_context_high_reuse" / "requests.csv")
    a_url, b_url = rounds.loc[1, "engine_url"], rounds.loc[2, "engine_url"]
    assert a_url != b_url  # round 1 on engine A, round 2 on engine B
    bs = entry["block_size"]
    r2 = req[req["round"] == 2]
    reusable = sum(((int(n) - 1) // bs) * bs for n in r2["prompt_tokens"])
    assert rounds.loc[2, "external_hits"] >= 0.9 * reusable  # B got A's blocks through Mooncake
    assert rounds.loc[2, "mc_load_get_failed_keys"] == 0
    assert warm_beats_cold(req)
