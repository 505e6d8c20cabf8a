"""The stack watch: a master (or engine) that stops serving mid-round ends the round within seconds.

The real-stack proof (the Mooncake master `docker kill`ed mid-round) is
tests/test_stack_e2e.py::test_killed_master_fails_its_with_cache_scenario_within_seconds. Here the
master is a STAND-IN (a few lines of http.server answering the master's `/health` JSON): what is
tested is the watch's decision and the runner's reaction, which a real master cannot be made to
drive on demand (stop answering while its container still runs, answer `service_ready: false`).
The engine is the stub server (tests/stub_server.py), also a test double.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd
import pytest

from harness.analysis.connector import store_health
from harness.config import Config
from harness.observe.watch import StackWatch, Target
from harness.runner import Endpoint, StoreDown, run_rounds
from harness.workload import Prompt, Session, Workload

from .stub_server import StubServer


class MasterStandIn:
    """STAND-IN for the Mooncake master's `GET /health` (always 200; JSON `service_ready`)."""

    def __init__(self) -> None:
        self.ready = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = json.dumps({"status": "ok", "service_ready": outer.ready}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def kill(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def master():
    m = MasterStandIn()
    yield m
    m.kill()


@pytest.fixture(scope="module")
def stub():
    with StubServer(tokens=4) as s:
        yield s


def _master_watch(master: MasterStandIn, states: dict[str, str] | None, down_after_s: float = 5.0) -> StackWatch:
    services = (lambda: dict(states)) if states is not None else None
    return StackWatch([Target("master", "mooncake-master", f"{master.url}/health")], services, 0.05, down_after_s)


def test_a_master_whose_container_exited_is_gone_at_the_first_unanswered_poll(master):
    states = {"mooncake-master": "healthy", "vllm": "healthy"}
    watch = _master_watch(master, states, down_after_s=60)
    with httpx.Client(timeout=1) as c:
        assert watch.check(c) is None
        master.kill()
        states["mooncake-master"] = "exited"
        gone = watch.check(c)
    assert gone is not None and gone.component == "master"
    assert gone.reason.startswith("Mooncake master unreachable: mooncake-master is exited (GET ")
    assert watch.stopped.is_set()


def test_a_master_that_stops_answering_while_its_container_runs_is_gone_after_the_grace(master):
    watch = _master_watch(master, {"mooncake-master": "healthy"}, down_after_s=0.5)
    master.kill()
    watch.start()
    try:
        assert not watch.stopped.wait(0.3)  # within the grace: a slow master is not a dead one
        assert watch.stopped.wait(5)
    finally:
        watch.stop()
    assert (
        watch.down is not None
        and "Mooncake master unreachable" in watch.down.reason
        and "for 0 s" not in watch.down.reason
    )


def test_a_master_that_answers_not_ready_is_gone_after_the_grace(master):
    master.ready = False
    watch = _master_watch(master, None, down_after_s=0.2)
    watch.start()
    try:
        assert watch.stopped.wait(5)
    finally:
        watch.stop()
    assert watch.down is not None and "service_ready false" in watch.down.reason


def test_a_healthy_stack_is_never_reported(master):
    watch = _master_watch(master, {"mooncake-master": "healthy"}, down_after_s=0.1)
    watch.start()
    assert not watch.stopped.wait(0.5)
    watch.stop()
    assert watch.down is None


def _workload(n: int) -> Workload:
    prompts = [Prompt(f"p{i}", f"prompt {i}", 3, 0) for i in range(n)]
    return Workload("stubbed", [Session(p.prompt_id, 1, lambda t, r, p=p: p) for p in prompts])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_master_killed_mid_round_ends_the_round_and_keeps_the_rows(stub, master, tmp_path: Path, workers):
    """Requests take ~50 ms each (the stub waits before its first chunk); the master is killed after
    a few: the round stops within a second, StoreDown names the master, no round 2 is sent,
    rounds.csv marks round 1 partial. Over client worker processes too (they are told to stop)."""
    cfg = Config.model_validate(
        {
            "default_scenarios": ["x"],
            "request_timeout": 5.0,
            "concurrency": 2,
            "client_workers": workers,
            "rounds": 2,
            "scenarios": {"x": {"kind": "cold_start", "num_requests": 1, "prompt_length": 5}},
        }
    )
    states = {"mooncake-master": "healthy"}
    watch = _master_watch(master, states)

    def kill_soon() -> None:
        time.sleep(0.5)
        states["mooncake-master"] = "exited"
        master.kill()

    killer = threading.Thread(target=kill_soon)
    killer.start()
    t = time.monotonic()
    with pytest.raises(StoreDown, match="round 1: Mooncake master unreachable: mooncake-master is exited"):
        run_rounds(_workload(400), cfg, Endpoint(stub.url("stamp_50_1"), "stub"), tmp_path, stack_watch=watch)
    killer.join()
    assert time.monotonic() - t < 5  # 400 requests x 50 ms / 2 in flight would take 10 s
    rows = pd.read_csv(tmp_path / "requests.csv")
    assert 0 < len(rows) < 400 and set(rows["round"]) == {1} and rows["ok"].all()
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert list(rounds["round"]) == [1] and rounds["partial"].all()


def test_store_health_marks_rounds_whose_reads_failed():
    table = pd.DataFrame(
        {
            "round": [1, 2, 3],
            "mc_lookup_exists_keys": [100.0, 100.0, 100.0],
            "mc_lookup_exists_failed_keys": [0.0, 40.0, 0.0],
            "mc_load_get_keys": [0.0, 60.0, 100.0],
            "mc_load_get_failed_keys": [0.0, 60.0, 1.0],
            "mc_save_put_failed_keys": [50.0, 0.0, 0.0],  # a full store refusing puts: not a broken read path
        }
    )
    t = store_health(table, max_failed_pct=1.0)
    assert list(t["degraded"]) == [False, True, False]  # 1 of 200 keys = 0.5 % <= 1 %
    assert list(t["store_read_failed_keys"]) == [0, 100, 1]
    assert t.loc[1, "store_read_failed_pct"] == pytest.approx(62.5)


def test_store_health_is_unknown_without_the_connectors_counters():
    t = store_health(pd.DataFrame({"round": [1, 2]}), max_failed_pct=1.0)
    assert list(t["degraded"]) == [None, None] and t["store_read_failed_keys"].isna().all()


def test_before_round_runs_between_rounds_only(stub, tmp_path: Path):
    """topology engine-restart's hook: called before round 2 and 3, never before round 1."""
    cfg = Config.model_validate(
        {
            "default_scenarios": ["x"],
            "rounds": 3,
            "wait_between_rounds": 0,
            "scenarios": {"x": {"kind": "cold_start", "num_requests": 1, "prompt_length": 5}},
        }
    )
    calls: list[tuple[int, int]] = []

    def hook(rnd: int) -> None:
        calls.append((rnd, len(pd.read_csv(tmp_path / "requests.csv"))))  # rows already on disk

    run_rounds(_workload(3), cfg, Endpoint(stub.url("ok"), "stub"), tmp_path, before_round=hook)
    assert calls == [(2, 3), (3, 6)]


def test_a_store_node_killed_mid_round_is_store_down_not_engine_down(stub, tmp_path: Path):
    """The store node (stack.store: store-node) is watched like the master: its death ends the round
    as StoreDown, naming it (vLLM itself still answers)."""
    cfg = Config.model_validate(
        {
            "default_scenarios": ["x"],
            "request_timeout": 5.0,
            "concurrency": 2,
            "rounds": 2,
            "scenarios": {"x": {"kind": "cold_start", "num_requests": 1, "prompt_length": 5}},
        }
    )
    store = MasterStandIn()  # answers 200 with JSON: as good as mooncake_client's /health for the watch
    states = {"mooncake-store": "healthy"}
    watch = StackWatch([Target("store", "mooncake-store", f"{store.url}/health")], lambda: dict(states), 0.05, 5.0)

    def kill_soon() -> None:
        time.sleep(0.5)
        states["mooncake-store"] = "exited"
        store.kill()

    killer = threading.Thread(target=kill_soon)
    killer.start()
    with pytest.raises(StoreDown, match="round 1: Mooncake store node unreachable: mooncake-store is exited"):
        run_rounds(_workload(400), cfg, Endpoint(stub.url("stamp_50_1"), "stub"), tmp_path, stack_watch=watch)
    killer.join()
