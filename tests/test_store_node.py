"""The store node (`stack.store: store-node`): a Mooncake client of its own owns the KV pool, the
engines run in standalone-store mode and contribute none. Here: what is rendered for it (compose
and Kubernetes), the watch's view of it, and the report's sizing table. The real-stack proofs
(restart survival, replicas, the store node killed mid-round, wrong KV) are in
tests/test_store_node_e2e.py."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import kubernetes_validate
import pytest

from harness.config import load_config
from harness.observe.probes import Snapshot, parse, store_node_state
from harness.observe.watch import StackWatch
from harness.report import write_report
from harness.report.analysis import analyse
from harness.report.data import store_sizing
from harness.stack import kube
from harness.stack.spec import STORE, prepare

from .report_synth import Scen, make_run

REPO = Path(__file__).resolve().parent.parent
IMAGES = {"engine": "kvbench/engine-cpu:x", "master": "kvbench/master-cpu:x"}


def _stack(topology: str = "single", **kw):
    cfg = load_config(REPO / "configs" / "store-node.yaml")
    cpusets = ["0", "1"] if topology == "cross-instance" else []
    return cfg.stack.model_copy(update={"topology": topology, "engine_cpusets": cpusets, **kw})


def _prepare(tmp_path: Path, topology: str = "single", with_connector: bool = True, **kw):
    workdir = tmp_path / "cell"
    spec = prepare(_stack(topology, **kw), "20261207t000000z-abcdef", "doc_qa_8k", workdir, IMAGES,
                   with_connector=with_connector)  # fmt: skip
    return spec, workdir


def test_engines_of_a_store_node_stack_contribute_no_memory_and_the_store_node_owns_the_pool(tmp_path):
    spec, workdir = _prepare(tmp_path, global_segment_size="2GB")
    mc = json.loads((workdir / "mooncake.json").read_text())
    assert mc["mode"] == "standalone-store" and mc["global_segment_size"] == 0  # what vLLM's config requires
    assert mc["local_buffer_size"] == "256MB"  # the engines still stage their transfers
    assert spec.files[-2].name == "store-node.yaml"  # after the overlays, before the generated overlay
    assert spec.env["KVB_STORE_SEGMENT_SIZE"] == "2GB" and spec.env["KVB_STORE_IMAGE"] == IMAGES["master"]
    assert spec.env["KVB_EVICTION_WATERMARK"] == "0.9"
    assert spec.store_url == f"http://127.0.0.1:{spec.env['KVB_STORE_METRICS_PORT']}"
    assert spec.services == ["vllm", STORE, "mooncake-master"]


def test_an_embedded_store_and_a_baseline_stack_have_no_store_node(tmp_path):
    spec, workdir = _prepare(tmp_path, store="embedded")
    mc = json.loads((workdir / "mooncake.json").read_text())
    assert (mc["mode"], mc["global_segment_size"]) == ("embedded", "1GB")
    assert spec.store_url is None and all(f.name != "store-node.yaml" for f in spec.files)
    spec, _ = _prepare(tmp_path / "b", with_connector=False)  # no connector: nothing would use the store
    assert spec.store_url is None and "KVB_STORE_IMAGE" not in spec.env


def _model(spec, workdir: Path) -> dict:
    argv = ["docker", "compose", "-p", spec.project, "--env-file", str(workdir / "stack.env"),
            "--project-directory", str(spec.files[0].parent)]  # fmt: skip
    for f in spec.files:
        argv += ["-f", str(f)]
    out = subprocess.run([*argv, "config", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.docker  # `docker compose config`
@pytest.mark.parametrize("topology", ["single", "cross-instance", "engine-restart"])
def test_compose_renders_the_store_node_beside_the_master_and_every_engine_waits_for_it(tmp_path, topology):
    spec, workdir = _prepare(tmp_path, topology)
    services = _model(spec, workdir)["services"]
    engines = ["vllm", "vllm-b"] if topology == "cross-instance" else ["vllm"]
    assert set(services) == {"mooncake-master", STORE, *engines}
    store = services[STORE]
    assert store["image"] == IMAGES["master"] and store["entrypoint"] == ["mooncake_client"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in store["command"])
    assert flags["global_segment_size"] == "1GB" and flags["master_server_address"] == "mooncake-master:50051"
    assert flags["host"] == STORE and flags["port"] == "50052" and flags["enable_http_server"] == "true"
    assert store["depends_on"]["mooncake-master"]["condition"] == "service_healthy"
    assert store["labels"]["io.kvbench.managed"] == "true" and store["init"] is True
    (port,) = store["ports"]
    assert port["host_ip"] == "127.0.0.1" and int(port["published"]) == spec.store_metrics_port
    check = " ".join(store["healthcheck"]["test"])
    assert "/dev/tcp/127.0.0.1/9300" in check and "GET /health " in check and "$" not in check
    for e in engines:
        assert services[e]["depends_on"][STORE]["condition"] == "service_started"
        assert services[e]["depends_on"]["mooncake-master"]["condition"] == "service_started"
    master = services["mooncake-master"]["command"]
    assert "--eviction_high_watermark_ratio=0.9" in master


@pytest.mark.docker  # the manifests are translated from `docker compose config`
def test_kubernetes_renders_the_store_node_as_its_own_workload(tmp_path):
    spec, workdir = _prepare(tmp_path, "cross-instance")
    objs = kube.manifests(spec, workdir)
    for o in objs:
        kubernetes_validate.validate(o, "1.33.0", strict=True)
    deps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    svcs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    store = deps[STORE]["spec"]["template"]
    assert "io.kvbench.role" not in store["metadata"]["labels"]  # not an engine: no anti-affinity, not restarted
    assert "affinity" not in store["spec"]
    assert [c["name"] for c in store["spec"]["initContainers"]] == ["wait-for-master"]
    assert svcs[STORE]["spec"]["clusterIP"] == "None"  # headless: the transfer engine's own ports reach the pod
    assert {p["port"] for p in svcs[STORE]["spec"]["ports"]} >= {9300, 50052}
    for e in ("vllm", "vllm-b"):
        pod = deps[e]["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["initContainers"]] == ["wait-for-master", "wait-for-store"]
        assert "'status') == 'healthy'" in pod["initContainers"][1]["command"][-1]
    cms = [c for c in objs if c["kind"] == "ConfigMap" and "mooncake.json" in c["data"]]
    assert {json.loads(c["data"]["mooncake.json"])["mode"] for c in cms} == {"standalone-store"}


class _StoreStandIn:
    """STAND-IN for mooncake_client's HTTP server (`GET /health`: {"status": "healthy", "code": 0})."""

    def __init__(self, status: str = "healthy") -> None:
        outer = self
        self.status = status

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = json.dumps({"status": outer.status, "code": 0}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_watch_finds_a_store_node_whose_container_exited_and_names_it():
    store = _StoreStandIn()
    states = {"vllm": "healthy", "mooncake-master": "healthy", STORE: "healthy"}
    watch = StackWatch.for_stack([], "http://127.0.0.1:9", lambda: dict(states), 0.05, 60, [], store.url)
    assert [t.component for t in watch.targets] == ["master", "store"]
    watch.targets = watch.targets[1:]  # the master stand-in is not the point here
    with httpx.Client(timeout=1) as c:
        assert watch.check(c) is None  # healthy: never reported
        store.close()
        states[STORE] = "exited"
        gone = watch.check(c)
    assert gone is not None and gone.component == "store"
    assert gone.reason.startswith("Mooncake store node unreachable: mooncake-store is exited (GET ")


def test_a_store_node_that_answers_unhealthy_is_gone_after_the_grace():
    store = _StoreStandIn(status="unhealthy")
    try:
        watch = StackWatch.for_stack([], "http://x", None, 0.05, 0.0, [], store.url)
        watch.targets = watch.targets[1:]
        with httpx.Client(timeout=1) as c:
            gone = watch.check(c)
        assert gone is not None and "status unhealthy" in gone.reason
    finally:
        store.close()


def test_a_baseline_cell_does_not_watch_the_store_node():
    watch = StackWatch.for_stack(["http://e"], None, None, 1, 10, ["vllm"], "http://s")
    assert [t.component for t in watch.targets] == ["engine"]


def test_the_report_shows_the_store_per_round_with_its_watermark_evictions_and_failures(tmp_path):
    extra = {
        "master_capacity_bytes_start": 1 << 30,
        "master_key_count_start": [0, 194],
        "master_key_count_end": [194, 194],
        "master_allocated_bytes_end": [25427968, 25427968],
        "master_evicted_keys": [0, 3],
        "master_alloc_failures": [0, 1],
    }
    run = make_run(tmp_path, [Scen("doc", point=1, point_values={"stack.store": "store-node"}, extra=extra)])
    s = store_sizing(analyse(run).data)
    assert s["store"].tolist() == ["store-node", "store-node"]
    assert s["keys_end"].tolist() == [194, 194] and s["watermark_pct"].tolist() == [90.0, 90.0]
    _, md = write_report(run)
    section = md.split("## Store sizing")[1].split("\n## ")[0]
    assert "| store-node |" in section and "1,024.0" in section and "0 -> 194" in section
    assert "| 90 " in section and "| 3 " in section and "| 1 " in section


def _master_text(capacity: int, segs: dict[str, int]) -> str:
    lines = ["master_key_count 0", "master_allocated_bytes 0", f"master_total_capacity_bytes {capacity}"]
    lines += [f'segment_total_capacity_bytes{{segment="{k}"}} {v}' for k, v in segs.items()]
    return "\n".join(lines) + "\n"


def test_the_cold_proof_requires_the_store_node_to_own_the_whole_pool():
    """Measured names (master /metrics on the real stack): segment "mooncake-store:14043" of 1 GiB."""
    gib = 1 << 30
    store = _StoreStandIn()
    try:
        snap = Snapshot(None, parse(_master_text(gib, {"mooncake-store:14043": gib})))
        assert store_node_state(snap, store.url, gib) == (
            True,
            "store node serving, its 1,024 MiB segment the whole store",
        )
        # An engine still in embedded mode contributes a segment of its own: refused, and named.
        snap = Snapshot(None, parse(_master_text(2 * gib, {"mooncake-store:14043": gib, "172.18.0.4:15000": gib})))
        ok, why = store_node_state(snap, store.url, gib)
        assert not ok and "other processes contribute segments (172.18.0.4:15000 1,024 MiB)" in why
        # Without per-segment metrics, the total must be the store node's segment.
        ok, why = store_node_state(Snapshot(None, parse(_master_text(2 * gib, {}))), store.url, gib)
        assert not ok and "capacity is 2,048 MiB" in why
    finally:
        store.close()
    ok, why = store_node_state(Snapshot(None, parse(_master_text(gib, {}))), store.url, gib)
    assert not ok and why.startswith("store node not serving: GET ")


@pytest.mark.docker  # `docker compose config`
def test_an_extra_overlay_may_address_engine_b(tmp_path):
    """Engine B is engine A as compose merges it; an extra overlay (`--compose-file`) that changes B
    itself - the wrong-KV test's other weights - applies to B only."""
    extra = REPO / "tests" / "compose" / "wrong-weights.yaml"
    spec = prepare(_stack("cross-instance"), "20261207t000000z-abcdef", "doc_qa_8k", tmp_path / "cell", IMAGES,
                   extra_files=[extra])  # fmt: skip
    services = _model(spec, tmp_path / "cell")["services"]
    a, b = services["vllm"], services["vllm-b"]
    assert b["entrypoint"] == ["python3", "/opt/kvbench/other_weights.py"] and a["entrypoint"] == ["vllm", "serve"]
    assert b["command"] == a["command"] and b["image"] == a["image"] and b["cpuset"] == "1"
    assert {v["target"] for v in a["volumes"]} < {v["target"] for v in b["volumes"]}
    assert set(b["depends_on"]) == {"mooncake-master", STORE, "vllm"}  # after A: one copy into the shared volume
    assert b["depends_on"]["vllm"]["condition"] == "service_started"
