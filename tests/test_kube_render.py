"""Kubernetes manifests translated from the compose model, for every stack kind: strictly valid
(kubernetes-validate, offline schemas of a pinned Kubernetes), with GPU requests, anti-affinity for
cross-instance engines, the harness's labels on every object, HF_TOKEN by Secret reference only,
and the same connector config as the compose run. No cluster runs here; this is the render half."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from harness.stack import kube

from .test_compose_render import COMBOS, REPO, SECRET, prepared

pytestmark = [pytest.mark.docker]  # `docker compose config` renders the model that is translated
K8S_VERSION = "1.33.0"


def _objects(tmp_path: Path, config: str, topology: str, mode: str, monkeypatch) -> tuple[list[dict], Path]:
    spec, workdir = prepared(tmp_path, config, topology, mode, monkeypatch)
    return kube.manifests(spec, workdir), workdir


@pytest.mark.parametrize("config,topology,mode", COMBOS)
def test_every_stack_renders_to_valid_labelled_manifests(tmp_path, monkeypatch, config, topology, mode):
    objs, workdir = _objects(tmp_path, config, topology, mode, monkeypatch)
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)  # raises on any unknown or wrong field
    text = kube.dump(objs)
    assert SECRET not in text  # the token is referenced, never rendered
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
        assert o["metadata"]["labels"]["io.kvbench.managed"] == "true"
        assert o["metadata"]["labels"]["io.kvbench.run"] == "20261124t000000z-abcdef"
    (ns,) = by_kind["Namespace"]
    assert all(o["metadata"].get("namespace", ns["metadata"]["name"]) == ns["metadata"]["name"] for o in objs)
    engines = [d for d in by_kind["Deployment"] if d["metadata"]["name"] != "mooncake-master"]
    assert len(engines) == (2 if topology == "cross-instance" else 1)
    assert {s["metadata"]["name"] for s in by_kind["Service"]} == {d["metadata"]["name"] for d in by_kind["Deployment"]}
    master_ports = {p["port"] for s in by_kind["Service"] if s["metadata"]["name"] == "mooncake-master"
                    for p in s["spec"]["ports"]}  # fmt: skip
    assert {50051, 8080, 9003} <= master_ports  # what the engines and the probes reach
    cms = [c for c in by_kind["ConfigMap"] if "mooncake.json" in c["data"]]
    assert len(cms) == len(engines)  # each engine's own files, mounted as /etc/kvbench (no subPath)
    for cm in cms:
        assert json.loads(cm["data"]["mooncake.json"]) == json.loads((workdir / "mooncake.json").read_text())
    for d in engines:
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        kv = [json.loads(c["args"][i + 1]) for i, a in enumerate(c["args"]) if a == "--kv-transfer-config"]
        assert (kv != []) == (mode == "with-cache")
        assert pod["initContainers"][0]["name"] == "wait-for-master" and "readinessProbe" in c
        if config.startswith("gpu"):
            assert c["resources"]["limits"]["nvidia.com/gpu"] == "2" and pod["hostIPC"] is True
            assert {"name": "hf-token", "secret": {"secretName": kube.HF_SECRET}} in pod["volumes"]
            assert any(v.get("hostPath", {}).get("path") == "/data/hf-cache" for v in pod["volumes"])  # kept
        else:
            assert "resources" not in c and any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
        if topology == "cross-instance":
            (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert term["topologyKey"] == "kubernetes.io/hostname"
    assert kube.secret_names(objs) == ({kube.HF_SECRET} if config.startswith("gpu") else set())


def test_kvbench_render_writes_the_manifests_and_refuses_a_non_empty_directory(tmp_path):
    out = tmp_path / "k8s"
    argv = [sys.executable, "-m", "harness", "render", "--config", str(REPO / "configs" / "cross-instance.yaml")]
    done = subprocess.run([*argv, "--scenario", "lc", "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all((out / "kubernetes.yaml").read_text()))
    assert [d["kind"] for d in docs].count("Deployment") == 3 and (out / "compose.generated.yaml").is_file()
    again = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 2 and "--out" in again.stderr and "not empty" in again.stderr


def test_the_shipped_cluster_config_renders_valid_manifests_with_a_pvc_and_two_gpu_engines(tmp_path):
    out = tmp_path / "k8s"
    argv = [sys.executable, "-m", "harness", "render", "--config", str(REPO / "configs" / "gpu-kubernetes.yaml"),
            "--scenario", "lc", "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all((out / "kubernetes.yaml").read_text()))
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    engines = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] != "mooncake-master"]
    assert len(engines) == 2
    for d in engines:
        pod = d["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
        assert {"persistentVolumeClaim": {"claimName": "hf-cache"}} in [
            {k: v for k, v in vol.items() if k != "name"} for vol in pod["volumes"]
        ]
