"""The Kubernetes backend's lifecycle (harness/kubestack.py) against a STAND-IN API server.

No Kubernetes control plane runs on these machines, so the API server is `tests/kube_standin.py`,
named as such: the official `kubernetes` client talks REST and the port-forward websocket to it
through a kubeconfig with a named context. The manifests are the real rendered ones of the CPU
and GPU stacks; port-forwards are relayed to real local TCP servers. What this cannot show (real
scheduling, a kubelet's readiness probes, RBAC, finalizers of real controllers) is in the README.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from harness import kube
from harness.config import KubernetesConfig
from harness.kubestack import KubeStack, StackError, api_client, find, stale_namespaces

from .kube_standin import StandInApiServer
from .test_compose_render import REPO, SECRET, prepared

pytestmark = [pytest.mark.docker]  # `docker compose config` renders the model the manifests come from


class _Named(BaseHTTPRequestHandler):
    """A pod's port: answers GET /health with the service it stands for."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"service": self.server.service, "path": self.path}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backends():
    servers = {}
    for service in ("vllm", "vllm-b", "mooncake-master"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Named)
        srv.service = service  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers[service] = srv
    yield {s: srv.server_address for s, srv in servers.items()}
    for srv in servers.values():
        srv.shutdown()


@pytest.fixture
def standin(tmp_path, backends):
    with StandInApiServer(ready_after=1.0, terminate_after=1.0) as api:
        api.backends.update(backends)
        api.kubeconfig(tmp_path / "kubeconfig", context="standin")
        yield api


def _stack(tmp_path, monkeypatch, config="cpu", topology="single", kubeconfig=None, **kcfg) -> KubeStack:
    spec, workdir = prepared(tmp_path, config, topology, "with-cache", monkeypatch)
    kubeconfig = kubeconfig or tmp_path / "kubeconfig"
    cfg = KubernetesConfig(kubeconfig=kubeconfig, context="standin", delete_timeout=10, **kcfg)
    return KubeStack(spec, workdir, cfg, ready_timeout=30)


def test_a_namespace_per_stack_comes_up_is_reached_and_is_gone_after_teardown(tmp_path, monkeypatch, standin):
    stack = _stack(tmp_path, monkeypatch, topology="cross-instance")
    ns = stack.namespace
    t0 = time.monotonic()
    stack.up()
    # up() returned only once every Deployment was ready (the stand-in flips them after 1 s)
    assert time.monotonic() - t0 >= 1.0
    deployments = standin.names("deployments", ns)
    assert deployments == ["mooncake-master", "vllm", "vllm-b"]
    assert all(standin.get("deployments", ns, d)["status"]["readyReplicas"] == 1 for d in deployments)
    labels = standin.get("namespaces", "", ns)["metadata"]["labels"]
    assert labels["io.kvbench.run"] == "20261124t000000z-abcdef" and labels[kube.STACK_LABEL] == ns
    assert labels[kube.OWNER_LABEL] == kube.label_value(f"{socket.gethostname()}:{os.getpid()}")
    assert standin.names("configmaps", ns) and standin.names("services", ns)

    # every engine and the master's metrics are reached through a port-forward to their own pod
    seen = {u: httpx.get(f"{u}/health").json()["service"] for u in [*stack.engine_urls, stack.master_metrics_url]}
    assert list(seen.values()) == ["vllm", "vllm-b", "mooncake-master"]
    assert all(u.startswith("http://127.0.0.1:") for u in seen)
    assert standin.forwards == 3
    assert len(stack.engine_container_ids()) == 2
    assert stack.service_start_seconds() is not None

    td = stack.down()
    assert td.verified and td.leftovers == ""
    assert td.seconds >= 1.0  # it waited for the namespace to finish terminating
    assert ns not in standin.names("namespaces")
    assert standin.deletes[0]["propagationPolicy"] == "Foreground"
    with pytest.raises(httpx.TransportError):  # the forwards are closed with the stack
        httpx.get(f"{stack.engine_urls[0]}/health", timeout=2)


def test_a_pull_error_fails_the_bring_up_at_once_with_its_reason_and_still_deletes(tmp_path, monkeypatch, standin):
    stack = _stack(tmp_path, monkeypatch)
    engine_image = next(o for o in stack.objects if o["metadata"]["name"] == "vllm" and o["kind"] == "Deployment")
    image = engine_image["spec"]["template"]["spec"]["containers"][0]["image"]
    standin.waiting[image] = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
    t0 = time.monotonic()
    with pytest.raises(StackError) as e:
        stack.up()
    assert time.monotonic() - t0 < 10  # not the 30 s readiness deadline
    assert "ImagePullBackOff" in str(e.value) and image in str(e.value) and stack.namespace in str(e.value)
    logs = stack.workdir / "logs"
    assert "ImagePullBackOff" in (logs / "pods.json").read_text()
    assert "Back-off pulling image" in (logs / "events.txt").read_text()
    td = stack.down()
    assert td.verified and stack.namespace not in standin.names("namespaces")


def test_the_hf_token_secret_is_copied_by_reference_and_a_missing_one_stops_before_anything_exists(
    tmp_path, monkeypatch, standin
):
    stack = _stack(tmp_path, monkeypatch, config="gpu", secret_namespace="serving")
    with pytest.raises(StackError) as e:
        stack.up()
    assert "secret_namespace" in str(e.value) and "'serving'" in str(e.value)
    assert standin.names("namespaces") == []  # nothing was created
    stack.down()

    standin.put({"metadata": {"name": "serving"}}, "namespaces")
    standin.put({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "hf-token",
                 "namespace": "serving"}, "data": {"hf_token": "aGZfU1VQRVJTRUNSRVQ="}}, "secrets")  # fmt: skip
    again = tmp_path / "again"
    stack = _stack(again, monkeypatch, config="gpu", secret_namespace="serving", kubeconfig=tmp_path / "kubeconfig")
    stack.up()
    copied = standin.get("secrets", stack.namespace, "hf-token")
    assert copied["data"] == {"hf_token": "aGZfU1VQRVJTRUNSRVQ="}
    assert copied["metadata"]["labels"][kube.STACK_LABEL] == stack.namespace  # deleted with the stack
    assert SECRET not in json.dumps(stack.objects)
    assert stack.down().verified
    assert standin.get("secrets", "serving", "hf-token") is not None  # the operator's Secret stays


def test_a_namespace_that_never_finishes_terminating_is_reported_not_hidden(tmp_path, monkeypatch, standin):
    stack = _stack(tmp_path, monkeypatch)
    standin.stuck_namespaces.add(stack.namespace)
    stack.cfg = stack.cfg.model_copy(update={"delete_timeout": 2})
    stack.up()
    td = stack.down()
    assert not td.verified
    assert f"namespace/{stack.namespace}" in td.leftovers and f"pod/{stack.namespace}/vllm-" in td.leftovers


def _orphan(standin: StandInApiServer, name: str, owner: str) -> None:
    labels = {**kube.MANAGED_BY, kube.OWNER_LABEL: kube.label_value(owner), kube.STACK_LABEL: name}
    standin.put({"metadata": {"name": name, "labels": labels}}, "namespaces")
    standin.put({"metadata": {"name": "vllm-x", "namespace": name, "labels": labels}}, "pods")


def test_clean_deletes_namespaces_of_dead_runs_and_keeps_live_ones(tmp_path, standin):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    _orphan(standin, "kvb-crashed", f"{host}:{dead.stdout.strip()}")
    _orphan(standin, "kvb-elsewhere", "another-host:1")
    _orphan(standin, "kvb-live", f"{host}:{os.getpid()}")
    standin.put({"metadata": {"name": "someone-else"}}, "namespaces")  # not ours: never touched
    cfg = KubernetesConfig(kubeconfig=tmp_path / "kubeconfig", context="standin")
    assert stale_namespaces(api_client(cfg)) == ["kvb-crashed", "kvb-elsewhere"]

    argv = [sys.executable, "-m", "harness", "clean", "--kubeconfig", str(tmp_path / "kubeconfig"),
            "--context", "standin"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "kvb-crashed" in done.stderr and "kvb-live" not in done.stderr
    assert standin.names("namespaces") == ["kvb-live", "someone-else"]
    assert find(api_client(cfg), f"{kube.STACK_LABEL}=kvb-crashed") == []


def test_an_unknown_context_is_a_one_line_config_error_before_anything_starts(tmp_path, standin):
    config = tmp_path / "k.yaml"
    data = yaml.safe_load((REPO / "configs" / "test_config.yaml").read_text())
    kcfg = {"kubeconfig": str(tmp_path / "kubeconfig"), "context": "no-such-context"}
    data["stack"] |= {"backend": "kubernetes", "kubernetes": kcfg}
    config.write_text(yaml.safe_dump(data))
    argv = [sys.executable, "-m", "harness", "bench", "--config", str(config), "--scenario", "cold_start",
            "--results", str(tmp_path / "results")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "no-such-context" in line and str(config) in line
    assert standin.names("namespaces") == [] and not (tmp_path / "results").exists()
