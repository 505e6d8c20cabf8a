"""The CPU stack's rendered Kubernetes manifests, run for real by `podman kube play` with the local
images (no cluster can run here): vLLM + Mooncake come up, `kvbench run` against them shows a cold
round 1 and Mooncake reuse in round 2, and `podman kube down` (plus the ConfigMap volumes podman
4.3 keeps) leaves no pod, container or volume. Manifests rendered with `host_network` (podman gives
Services no cluster IP or DNS). scripts/ensure_podman.sh installs and configures podman."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from harness.config import load_config
from harness.stack import kube
from harness.stack.spec import prepare

from .conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.stack]


def _podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def _present() -> dict[str, set[str]]:
    """Every pod, container (infra ones included) and volume podman has, by id or name."""
    return {
        "pods": set(_podman("pod", "ps", "-q").stdout.split()),
        "containers": set(_podman("ps", "-a", "-q").stdout.split()),
        "volumes": set(_podman("volume", "ls", "-q").stdout.split()),
    }


def test_the_rendered_cpu_manifests_run_under_podman_kube_play(tmp_path: Path, stack_images):
    setup = subprocess.run(
        ["bash", str(REPO / "scripts" / "ensure_podman.sh"), *stack_images.values()],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert setup.returncode == 0, setup.stderr[-2000:]
    cfg = load_config(REPO / "tests" / "configs" / "e2e.yaml")
    spec = prepare(cfg.stack, "20261125t000000z-podman", "podman", tmp_path / "stack", stack_images)
    objs = kube.manifests(spec, tmp_path / "stack", host_network=True)
    (tmp_path / "kubernetes.yaml").write_text(kube.dump(objs))
    before = _present()
    volumes = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    played = _podman("kube", "play", str(tmp_path / "kubernetes.yaml"))
    try:
        assert played.returncode == 0, played.stderr[-2000:]
        deadline = time.monotonic() + 300
        while True:  # readiness: vLLM's own /health on the node's network
            try:
                if httpx.get("http://127.0.0.1:8000/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, _podman("logs", "--tail", "30", "vllm-pod-0-vllm").stderr
            time.sleep(1)
        out = subprocess.run(
            [sys.executable, "-m", "harness", "run", "--config", str(REPO / "tests" / "configs" / "e2e.yaml"),
             "--endpoint", "http://127.0.0.1:8000", "--model", cfg.stack.served_model_name,
             "--master-metrics", "http://127.0.0.1:9003", "--scenarios", "cold_start",
             "--results", str(tmp_path / "results")],
            capture_output=True, text=True, cwd=REPO, timeout=600,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        (run,) = (tmp_path / "results").iterdir()
        entry = json.loads((run / "manifest.json").read_text())["scenarios"]["cold_start"]
        assert entry["cold_verified"] is True  # a fresh store: nothing in Mooncake before round 1
        rounds = pd.read_csv(run / "cold_start" / "rounds.csv").set_index("round")
        assert rounds.loc[1, "external_hits"] == 0 and rounds.loc[1, "master_key_count_end"] > 0
        assert rounds.loc[2, "external_hits"] == rounds.loc[2, "expected_reuse_tokens"] > 0  # warm, from Mooncake
    finally:
        _podman("kube", "down", str(tmp_path / "kubernetes.yaml"))
        _podman("volume", "rm", "-f", *volumes)  # podman 4.3 keeps ConfigMap volumes after kube down
    after = _present()
    assert all(after[k] <= before[k] for k in after), {k: after[k] - before[k] for k in after}
