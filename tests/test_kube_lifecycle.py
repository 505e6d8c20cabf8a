"""The Kubernetes backend's lifecycle (harness/stack/kubestack.py) against a STAND-IN API server.

No Kubernetes control plane runs on these machines, so the API server is `tests/kube_standin.py`,
named as such: the official `kubernetes` client talks REST and the port-forward websocket to it
through a kubeconfig with a named context. The manifests are the real rendered ones of the CPU
and GPU stacks; port-forwards are relayed to real local TCP servers. What this cannot show (real
scheduling, a kubelet's readiness probes, RBAC, finalizers of real controllers) is in docs/kubernetes.md.
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
import pandas as pd
import pytest
import yaml

from harness.config import KubernetesConfig, load_config
from harness.stack import kube
from harness.stack.compose import ComposeStack
from harness.stack.kubestack import KubeStack, StackError, api_client, find, stale_namespaces
from harness.stack.spec import prepare

from .conftest import pinned, run_interruptibly
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


def _request_verb(method: str, path: str) -> tuple[str, str, str]:
    """(verb, resource[/subresource], namespace) of an API request, as RBAC authorises it."""
    parts = path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    ns = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    verb = {"POST": "create", "DELETE": "delete"}.get(method, "get" if named else "list")
    return verb, resource, ns


def test_the_shipped_rbac_grants_every_call_the_lifecycle_makes_and_no_cluster_wide_secret_read(
    tmp_path, monkeypatch, standin
):
    docs = list(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "rbac.yaml").read_text()))
    import kubernetes_validate

    for d in docs:
        kubernetes_validate.validate(d, "1.33.0", strict=True)
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    granted = {(v, r) for rule in cluster_role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert ("get", "secrets") not in granted and ("list", "secrets") not in granted

    standin.put({"metadata": {"name": "default"}}, "namespaces")
    standin.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token", "namespace": "default"},
                 "data": {"hf_token": "eA=="}}, "secrets")  # fmt: skip
    stack = _stack(tmp_path, monkeypatch, config="gpu", topology="cross-instance")
    stack.up()
    httpx.get(f"{stack.engine_urls[0]}/health")
    stack.save_logs()
    assert stack.down().verified
    calls = {_request_verb(m, p) for m, p in standin.log}
    assert ("get", "pods/portforward", stack.namespace) in calls  # the websocket upgrade of a GET
    for verb, resource, ns in calls:
        if resource == "secrets" and verb == "get":
            assert ns == role["metadata"]["namespace"] and role["rules"][0]["resourceNames"] == ["hf-token"]
        else:
            assert (verb, resource) in granted, f"{verb} {resource} is not in deploy/kubernetes/rbac.yaml"


@pytest.mark.stack
def test_kvbench_bench_on_the_kubernetes_backend_measures_through_the_port_forward(
    tmp_path, monkeypatch, standin, stack_images, no_harness_leftovers
):
    """The whole pipeline on `stack.backend: kubernetes`: the namespace lives in the stand-in API
    server, its pods' ports are a real vLLM + Mooncake CPU stack (compose), reached through the
    official client's port-forward. Cold gate, Mooncake reuse in round 2 and the teardown evidence
    must come through as on the compose backend."""
    cfg = load_config(pinned(REPO / "tests" / "configs" / "e2e.yaml", tmp_path))
    spec = prepare(cfg.stack, "20261201t000000z-kube", "pods", tmp_path / "pods", stack_images)
    with ComposeStack(spec, tmp_path / "pods", cfg.stack.ready_timeout, 5) as pods:
        pods.up()
        standin.backends.update(
            {
                "vllm": ("127.0.0.1", spec.engine_ports["vllm"]),
                "mooncake-master": ("127.0.0.1", spec.master_metrics_port),
            }
        )
        data = yaml.safe_load((REPO / "tests" / "configs" / "e2e.yaml").read_text())
        data["stack"] |= {"backend": "kubernetes",
                          "kubernetes": {"kubeconfig": str(tmp_path / "kubeconfig"), "context": "standin"}}  # fmt: skip
        config = tmp_path / "kube.yaml"
        config.write_text(yaml.safe_dump(data))
        argv = [sys.executable, "-m", "harness", "bench", "--config", str(config), "--scenario", "cold_start",
                "--mode", "with-cache", "--results", str(tmp_path / "results")]  # fmt: skip
        done = run_interruptibly(argv, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "delete namespace, verify" in done.stderr
    (run,) = (tmp_path / "results").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    entry = manifest["scenarios"]["cold_start"]
    assert entry["status"] == "ok" and entry["cold_verified"] is True and entry["teardown_verified"] is True
    assert manifest["versions"]["engine"]["vllm"]  # the images are on this host: the preflight ran
    rounds = pd.read_csv(run / "cold_start" / "rounds.csv").set_index("round")
    assert rounds.loc[1, "external_hits"] == 0
    assert rounds.loc[2, "external_hits"] == rounds.loc[2, "expected_reuse_tokens"] > 0  # warm, from Mooncake
    requests = pd.read_csv(run / "cold_start" / "requests.csv")
    assert requests["ok"].all() and (requests["ttft_ms"] > 0).all()
    assert standin.forwards >= 2  # engine and master metrics went through the tunnel
    assert [n for n in standin.names("namespaces") if n.startswith("kvb-")] == []
