"""The verified reset on the REAL stack: vLLM 0.32's `POST /reset_prefix_cache?reset_external=true`
with the MooncakeStoreConnector and a real mooncake_master.

rag_a and rag_b start with the same ~4k-token document: on one stack without a reset rag_b's
"cold" round is served from rag_a's blocks (tests/test_isolation.py shows that pollution). With
`--isolation reset` both run on one stack, and rag_b must be proven cold before it starts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from harness.config import load_config
from harness.probes import Probe
from harness.reset import ResetSettings, verified_reset
from harness.stack import Stack, find_resources
from harness.stackspec import prepare
from harness.workload import Prompt

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


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory, stack_images):
    cfg = load_config(CONFIG)
    workdir = tmp_path_factory.mktemp("dev-stack")
    spec = prepare(cfg.stack, "20261204t000000z-reset", "audit", workdir, stack_images, dev_mode=True)
    with Stack(spec, workdir, cfg.stack.ready_timeout, 5) as stack:
        stack.up()
        yield stack
    assert stack.teardown is not None and stack.teardown.verified


def _prompt(text: str) -> Prompt:
    return Prompt("audit-0000", text, 0, 0)


def test_the_peers_local_only_reset_leaves_the_store_warm_and_the_proof_catches_it(dev_stack):
    """`vllm bench sweep` resets without reset_external: the engine's prefix cache is cleared, the
    store is not. kvbench's proof names the store, with its keys, and the canary's external hits."""
    url = dev_stack.engine_urls[0]
    canary = _prompt(" ".join(f"w{i}" for i in range(3000)))  # ~3k tokens: many whole blocks
    body = {"model": "tiny", "prompt": canary.body, "max_tokens": 1, "temperature": 0}
    assert httpx.post(f"{url}/v1/completions", json=body, timeout=120).status_code == 200
    probe = Probe(url, dev_stack.master_metrics_url)
    try:
        local_only, _ = verified_reset(probe, "tiny", "completions", canary, ResetSettings(external=False))
        assert local_only.reset_ok is True  # the endpoint says success...
        assert local_only.verified is False  # ...but the store kept the blocks
        assert local_only.keys_after_reset > 0 and "store: " in local_only.warm
        assert local_only.canary_external_hits > 0 and "external hit tokens" in local_only.warm

        full, after = verified_reset(probe, "tiny", "completions", canary)
        assert full.verified is True, full.warm
        assert full.canary_cached_tokens == 0 and full.keys_at_start == 0
    finally:
        probe.close()
