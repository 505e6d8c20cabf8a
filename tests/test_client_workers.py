"""Client worker processes (harness/client/workers.py) against the STUB server: a round shared over
forked workers keeps the round's semantics - every request sent and recorded once, the total
concurrency never exceeded and kept in flight, the request rate global, an engine found down by one
worker stops all of them, Ctrl-C keeps every completed row - and multi-turn sessions tokenize their
history from inside the workers on connections of their own."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pytest

from harness.client.tokenizer import ServerTokenizer
from harness.client.workers import auto_workers, run_workers, shares
from harness.config import Config
from harness.runner import Endpoint, EngineDown, RoundProgress, run_rounds
from harness.stack.interrupts import Interrupted
from harness.workload import Prompt, Session, Workload, build_workload

from . import stub_server
from .stub_server import StubServer


@pytest.fixture(scope="module")
def stub():
    with StubServer(tokens=4) as s:
        yield s


def _workload(n: int) -> Workload:
    prompts = [Prompt(f"p{i}", f"prompt {i}", 3, 0) for i in range(n)]
    return Workload("sharded", [Session(p.prompt_id, 1, lambda t, r, p=p: p, first_index=i)
                                for i, p in enumerate(prompts)])  # fmt: skip


def _cfg(**kw) -> Config:
    base = {
        "default_scenarios": ["x"],
        "request_timeout": 10.0,
        "concurrency": 4,
        "client_workers": 2,
        "wait_between_rounds": 0,
        "scenarios": {"x": {"kind": "cold_start", "num_requests": 1, "prompt_length": 5}},
    }
    return Config.model_validate({**base, **kw})  # fmt: skip


def test_two_workers_send_every_request_once_and_never_exceed_the_concurrency(stub, tmp_path: Path):
    ticks: list[bool] = []
    stub_server.INFLIGHT.reset()
    table = run_rounds(_workload(48), _cfg(rounds=2, concurrency=8), Endpoint(stub.url("stamp_40_5"), "stub"),
                       tmp_path, progress=RoundProgress(advance=ticks.append))  # fmt: skip
    rows = pd.read_csv(tmp_path / "requests.csv")
    assert len(rows) == 96 and rows["ok"].all() and len(ticks) == 96 and all(ticks)
    assert (rows.groupby("round")["prompt_id"].nunique() == 48).all()  # each prompt once per round
    assert sorted(rows.loc[rows["round"] == 1, "index"]) == list(range(48))
    assert not list(tmp_path.glob(".*worker*"))  # the parts were merged and removed
    assert stub_server.INFLIGHT.peak == 8  # the total concurrency, reached and never exceeded
    t = table.set_index("round")
    assert (t["concurrency"] == 8).all() and (t["inflight_mean"] > 0.75 * 8).all(), t["inflight_mean"]


def test_the_request_rate_stays_the_rounds_total(stub, tmp_path: Path):
    run_rounds(_workload(120), _cfg(rounds=1, concurrency=8, request_rate=120), Endpoint(stub.url("ok"), "stub"),
               tmp_path)  # fmt: skip
    rows = pd.read_csv(tmp_path / "requests.csv")
    rate = (len(rows) - 1) / (rows["send_s"].max() - rows["send_s"].min())
    assert 0.7 * 120 < rate < 1.4 * 120, rate  # Poisson at 60/s in each of 2 workers = 120/s


def test_an_engine_found_down_by_one_worker_stops_them_all(stub, tmp_path: Path):
    with pytest.raises(EngineDown):
        run_rounds(_workload(60), _cfg(rounds=2, concurrency=4), Endpoint(stub.url("dead"), "stub"), tmp_path)
    rows = pd.read_csv(tmp_path / "requests.csv")
    assert 0 < len(rows) < 60 and not rows["ok"].any() and set(rows["round"]) == {1}


def test_ctrl_c_stops_every_worker_and_keeps_the_completed_rows(stub, tmp_path: Path):
    seen: list[bool] = []

    def advance(ok: bool) -> None:
        seen.append(ok)
        if len(seen) == 6:
            raise Interrupted("SIGINT")

    with pytest.raises(KeyboardInterrupt):
        run_rounds(_workload(200), _cfg(rounds=1, concurrency=4), Endpoint(stub.url("stamp_30_10"), "stub"),
                   tmp_path, progress=RoundProgress(advance=advance))  # fmt: skip
    rows = pd.read_csv(tmp_path / "requests.csv")
    assert 6 <= len(rows) < 200 and rows["ok"].all()  # stopped early, nothing completed was lost
    assert not list(tmp_path.glob(".*worker*"))


def test_multi_turn_sessions_tokenize_their_history_inside_the_workers(stub, tmp_path: Path):
    cfg = _cfg(rounds=1, concurrency=4, api="chat")
    scenario = Config.model_validate({"default_scenarios": ["t"], "scenarios": {"t": {
        "kind": "multi_turn", "num_conversations": 6, "turns": 3, "system_length": 10, "user_length": 5}}}
    ).scenarios["t"]  # fmt: skip
    with ServerTokenizer(stub.url("ok"), "stub") as tok:
        wl = build_workload("t", scenario, tok, api="chat", seed=1)
        run_rounds(wl, cfg, Endpoint(stub.url("ok"), "stub"), tmp_path)
    rows = pd.read_csv(tmp_path / "requests.csv")
    assert len(rows) == 18 and rows["ok"].all() and set(rows["turn"]) == {0, 1, 2}


def test_worker_count_and_shares():
    assert shares(10, 3) == [4, 3, 3] and sum(shares(257, 4)) == 257
    assert auto_workers(1) == 1 and auto_workers(64) == 1
    assert 1 <= auto_workers(100_000)


def _big_result(i: int, shared) -> dict:
    return {"rows": "x" * 2_000_000, "worker": i}  # far more than a pipe's 64 KiB buffer


def test_a_result_larger_than_the_pipe_buffer_does_not_deadlock():
    """The child's put blocks until the parent reads: the parent reads while the children run."""
    out = run_workers(2, _big_result, lambda ok: None)
    assert [r["worker"] for r in out] == [0, 1] and all(len(r["rows"]) == 2_000_000 for r in out)


def test_threads_start_only_after_every_worker_is_forked():
    """`started` (the progress display, the stack watch: threads) runs once all workers exist: no
    thread is forked into a worker with a lock it holds."""
    seen: list[int] = []

    def linger(i: int, shared) -> dict:
        shared.stop.wait(1.0)  # alive long enough to be counted (the parent sets no stop here)
        return {}

    run_workers(3, linger, lambda ok: None, started=lambda: seen.append(len(mp.active_children())))
    assert seen == [3]


def test_a_fault_while_tabulating_a_cut_short_round_does_not_hide_why_it_stopped(stub, tmp_path, monkeypatch):
    def broken(*a, **kw):
        raise ValueError("tabulating failed")

    monkeypatch.setattr("harness.analysis.rounds.rounds_table", broken)
    with pytest.raises(EngineDown):
        run_rounds(_workload(10), _cfg(rounds=2, concurrency=1), Endpoint(stub.url("dead"), "stub"), tmp_path)
    assert len(pd.read_csv(tmp_path / "requests.csv")) == 3  # the rows stay
