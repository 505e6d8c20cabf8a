"""Client timing and fault handling against the STUB server (tests/stub_server.py).

A real vLLM will not stall, drop a connection or die mid-stream on demand; the
stub does. Everything else is tested against the real engine elsewhere. The stub
also records the Authorization header of every request: where an API key goes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from pydantic import BaseModel

from harness.client.client import Client, RequestResult, RequestSettings, auth_headers, open_client, send, set_api_key
from harness.client.tokenizer import ServerTokenizer, TokenizerError
from harness.config import Config
from harness.observe.watch import EngineWatch
from harness.results import RequestLog
from harness.runner import Endpoint, EngineDown, run_rounds
from harness.runner.round import run_round
from harness.workload import Prompt, Session, Workload

from .stub_server import StubServer


@pytest.fixture(scope="module")
def stub():
    with StubServer(tokens=4) as s:
        yield s


def _client(url: str, timeout: float, wire: bool) -> Client:
    """The harness's wire-stamped client, or plain httpx (what https endpoints get)."""
    return open_client(url, 4, timeout, {}) if wire else httpx.AsyncClient(base_url=url, timeout=timeout)


def _send(url: str, api: str = "completions", timeout: float = 5.0, prompt="hi", wire: bool = True, busy=None):
    """Send one request; `busy` is a coroutine run alongside it on the same event loop."""

    async def go():
        async with _client(url, timeout, wire) as c:
            body = [{"role": "user", "content": prompt}] if api == "chat" else prompt
            settings = RequestSettings(model="stub", api=api, max_tokens=4, timeout=timeout)
            if busy is None:
                return await send(c, body, settings)
            return (await asyncio.gather(send(c, body, settings), busy()))[0]

    return asyncio.run(go())


@pytest.mark.parametrize("wire", [True, False], ids=["wire-stamped", "plain-httpx"])
@pytest.mark.parametrize("api", ["chat", "completions"])
def test_empty_role_chunk_is_not_the_first_token(stub, api, wire):
    r = _send(stub.url("role200"), api, wire=wire)
    assert r.ok, r.error_message
    # The role chunk arrives at once; the first content 200 ms later.
    assert 195 <= r.ttft_ms <= 400, r.ttft_ms
    assert r.text.startswith("Hello")
    assert r.completion_tokens == 4 and r.prompt_tokens == 10 and r.cached_tokens == 0
    assert len(r.itl_ms) == 3  # 4 content chunks -> 3 gaps


def test_busy_client_does_not_inflate_ttft(stub):
    """The event loop is blocked from 100 to 400 ms while the first token arrives at
    ~200 ms: TTFT is still ~200 ms (kernel arrival stamp), and the 200 ms the token
    waited in the client shows up as first_token_lag_ms instead."""
    import time

    async def block_loop():
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # deliberately blocking: a saturated client

    r = _send(stub.url("role200"), busy=block_loop)
    assert r.ok, r.error_message
    assert 195 <= r.ttft_ms <= 280, r.ttft_ms
    assert 120 <= r.first_token_lag_ms <= 350, r.first_token_lag_ms
    assert r.read_delay_ms >= 120, r.read_delay_ms  # the blocked loop could not read the socket
    # The plain client, timing in user space, would have reported >= 400 ms.
    plain = _send(stub.url("role200"), wire=False, busy=block_loop)
    assert plain.ttft_ms >= 395, plain.ttft_ms


def test_ok_stream_timings_are_ordered(stub):
    r = _send(stub.url("ok"))
    assert r.ok and r.http_status == 200
    assert 0 < r.ttft_ms <= r.e2e_ms
    assert 0 <= r.read_delay_ms < 50  # an idle client reads what arrives at once
    assert r.completion_tokens == 4 and len(r.itl_ms) == 3
    assert r.tpot_ms == pytest.approx((r.e2e_ms - r.ttft_ms) / 3)  # time per token after the first


@pytest.mark.parametrize(
    "mode,error_class",
    [("http500", "HTTPStatusError"), ("error500", "StreamError"), ("drop", "RemoteProtocolError"), ("hang", "Timeout")],
)
def test_faults_become_failed_results(stub, mode, error_class):
    r = _send(stub.url(mode), timeout=1.0)
    assert not r.ok
    assert r.error_class == error_class, (r.error_class, r.error_message)
    assert r.error_message
    assert r.output_hash == ""  # a failed request has no output to compare
    if mode == "hang":  # the time until the client gave up
        assert 990 <= r.e2e_ms < 1500, r.e2e_ms
    else:  # failed fast, long before the timeout
        assert 0 < r.e2e_ms < 500, r.e2e_ms
    # a token came before the fault in error500 / drop: it was timed, the request still failed
    assert (r.ttft_ms is not None) == (mode in ("error500", "drop")), r.ttft_ms


def _workload(n: int) -> Workload:
    prompts = [Prompt(f"p{i}", f"prompt {i}", 3, 0) for i in range(n)]
    return Workload("stubbed", [Session(p.prompt_id, 1, lambda t, r, p=p: p) for p in prompts])


def _cfg(**kw) -> Config:
    return Config.model_validate(
        {
            "default_scenarios": ["x"],
            "request_timeout": 1.0,
            "concurrency": 3,
            "scenarios": {"x": {"kind": "cold_start", "num_requests": 1, "prompt_length": 5}},
            **kw,
        }
    )


@pytest.mark.parametrize("mode", ["http500", "error500", "drop", "hang"])
def test_round_completes_and_records_every_request(stub, tmp_path: Path, mode):
    log = RequestLog(tmp_path / "requests.csv")
    import time

    from harness.runner import RoundProgress

    asyncio.run(
        run_round(
            _workload(5),
            1,
            _cfg(),
            Endpoint(stub.url(mode), "stub"),
            log,
            time.perf_counter(),
            RoundProgress(),
            EngineWatch(stub.url(mode)),
        )
    )
    log.close()
    df = pd.read_csv(tmp_path / "requests.csv")
    assert len(df) == 5
    assert not df["ok"].any()
    assert df["error_class"].nunique() == 1
    assert sorted(df["prompt_id"]) == [f"p{i}" for i in range(5)]


def test_concurrency_is_a_semaphore_not_batches(stub, tmp_path: Path):
    """With 3 slots and 6 requests that each take ~200 ms, a 4th request starts as soon
    as one finishes (~200 ms), and the whole round takes ~2 x 200 ms."""
    import time

    from harness.runner import RoundProgress

    log = RequestLog(tmp_path / "requests.csv")
    t0 = time.perf_counter()
    asyncio.run(
        run_round(
            _workload(6),
            1,
            _cfg(),
            Endpoint(stub.url("role200"), "stub"),
            log,
            t0,
            RoundProgress(),
            EngineWatch(stub.url("role200")),
        )
    )
    log.close()
    df = pd.read_csv(tmp_path / "requests.csv").sort_values("send_s")
    assert df["ok"].all()
    starts = df["send_s"].to_numpy()
    assert starts[2] - starts[0] < 0.1  # first three together
    assert 0.18 < starts[3] - starts[0] < 0.4  # the fourth waits for a free slot


def test_connections_are_kept_alive_across_requests(tmp_path: Path):
    """12 requests through 3 slots reuse 3 connections: the stream is read to its
    end after [DONE], so a connection goes back to the pool instead of being
    closed and re-opened for every request."""
    import time

    from harness.runner import RoundProgress

    with StubServer(tokens=4) as fresh:
        log = RequestLog(tmp_path / "requests.csv")
        asyncio.run(
            run_round(
                _workload(12),
                1,
                _cfg(),
                Endpoint(fresh.url("ok"), "stub"),
                log,
                time.perf_counter(),
                RoundProgress(),
                EngineWatch(fresh.url("ok")),
            )
        )
        log.close()
        assert pd.read_csv(tmp_path / "requests.csv")["ok"].all()
        assert fresh.connections <= 3, fresh.connections


def test_failed_turn_fails_the_rest_of_its_conversation_without_sending(stub, tmp_path: Path):
    import time

    from harness.runner import RoundProgress

    def build(turn: int, replies: list[str]) -> Prompt:
        history = " ".join(replies[:turn])  # needs every earlier reply, as a real conversation does
        return Prompt(f"c0-t{turn}", f"{history} user {turn}", 3, 0)

    wl = Workload("stubbed", [Session("c0", 3, build)])
    log = RequestLog(tmp_path / "requests.csv")
    asyncio.run(
        run_round(
            wl,
            1,
            _cfg(),
            Endpoint(stub.url("http500"), "stub"),
            log,
            time.perf_counter(),
            RoundProgress(),
            EngineWatch(stub.url("http500")),
        )
    )
    log.close()
    df = pd.read_csv(tmp_path / "requests.csv").sort_values("turn")
    assert list(df["error_class"]) == ["HTTPStatusError", "PreviousTurnFailed", "PreviousTurnFailed"]
    assert list(df["index"]) == [0, 1, 2] and list(df["prompt_id"]) == ["c0-t0", "c0-t1", "c0-t2"]


def test_request_rate_paces_sends_as_poisson_arrivals(stub, tmp_path: Path):
    """20 requests at 40 req/s: sends spread over ~0.5 s with exponential gaps, not all at once."""
    import time

    import numpy as np

    from harness.runner import RoundProgress

    log = RequestLog(tmp_path / "requests.csv")
    cfg = _cfg(request_rate=40.0, concurrency=20)
    asyncio.run(
        run_round(
            _workload(20),
            1,
            cfg,
            Endpoint(stub.url("ok"), "stub"),
            log,
            time.perf_counter(),
            RoundProgress(),
            EngineWatch(stub.url("ok")),
        )
    )
    log.close()
    sends = np.sort(pd.read_csv(tmp_path / "requests.csv")["send_s"].to_numpy())
    gaps = np.diff(sends)
    assert 0.15 < sends[-1] - sends[0] < 2.0  # mean gap 25 ms: ~0.5 s for 19 gaps
    assert gaps.std() > 0.3 * gaps.mean()  # irregular, as exponential gaps are (std == mean), not a fixed tick


def test_a_dead_engine_stops_the_scenario_after_a_few_failures(stub, tmp_path: Path):
    """Every request fails and /health says the engine is gone: after 3 failures nothing more
    is sent (no row for what was never sent), round 2 is never started, and rounds.csv still
    records round 1 as partial - no reduction computed over requests that did not happen."""
    cfg = _cfg(rounds=2, concurrency=1)
    with pytest.raises(EngineDown, match="round 1: engine unreachable after 3 failed requests"):
        run_rounds(_workload(20), cfg, Endpoint(stub.url("dead"), "stub"), tmp_path)
    rows = pd.read_csv(tmp_path / "requests.csv")
    assert len(rows) == 3 and set(rows["round"]) == {1} and not rows["ok"].any()
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert list(rounds["round"]) == [1] and rounds["partial"].all() and rounds.loc[0, "planned"] == 20


def test_failures_of_a_live_engine_do_not_stop_the_round(stub, tmp_path: Path):
    """HTTP 500s while /health answers 200: the requests' own failures, every request is sent."""
    table = run_rounds(_workload(8), _cfg(rounds=1, concurrency=1), Endpoint(stub.url("http500"), "stub"), tmp_path)
    assert int(table.loc[0, "requests"]) == 8 and int(table.loc[0, "failures"]) == 8
    assert not table.loc[0, "partial"]


def test_rounds_are_exported_in_vllm_bench_serve_result_shape(stub, tmp_path: Path):
    """bench_serve.json: one record per round under `vllm bench serve`'s own keys, the values
    the same as rounds.csv's (one definition per metric: harness.metrics)."""
    import json

    from harness.records.metrics import METRICS

    table = run_rounds(_workload(6), _cfg(rounds=2, concurrency=2), Endpoint(stub.url("ok"), "stub"), tmp_path)
    records = json.loads((tmp_path / "bench_serve.json").read_text())
    assert [r["round"] for r in records] == [1, 2]
    for rec, (_, row) in zip(records, table.iterrows()):
        assert rec["completed"] == row["successes"] == 6 and rec["failed"] == 0
        assert rec["mean_ttft_ms"] == pytest.approx(row["ttft_mean_ms"])
        assert rec["request_throughput"] == pytest.approx(row["req_per_s"])
        assert rec["max_concurrency"] == 2 and rec["model_id"] == "stub" and rec["num_prompts"] == 6
        keyed = [m for m in METRICS.values() if m.bench_serve_key]
        assert {m.bench_serve_key: rec[m.bench_serve_key] for m in keyed} == pytest.approx(
            {m.bench_serve_key: float(row[m.column]) for m in keyed}, nan_ok=True
        )
        assert rec["mean_itl_ms"] is not None  # the newest metric made it through the registry


# --- the API key of `kvbench run` ------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-kvbench-test-9d8c7b6a5f4e3d2c1b0a"
DECOY = "sk-openai-decoy-0a1b2c3d4e5f6a7b"  # in $OPENAI_API_KEY, not the variable the run names
RUN_CONFIG = {
    "default_scenarios": ["docs", "turns"],
    "rounds": 2,
    "concurrency": 4,
    "wait_between_rounds": 0,
    "request_timeout": 5,
    "max_tokens": 4,
    "mode": "with-cache",
    "scenarios": {
        "docs": {
            "kind": "document_qa",
            "num_requests": 4,
            "context_length": 40,
            "num_questions": 2,
            "question_length": 6,
        },
        "turns": {"kind": "multi_turn", "num_conversations": 2, "turns": 2, "system_length": 10, "user_length": 5},
    },
}


def _leaks(data: bytes | str) -> list[str]:
    """Which secret (or a half of one: a truncated message) is in `data`."""
    data = data.encode() if isinstance(data, str) else data
    return [part for key in (KEY, DECOY) for part in (key, key[:12], key[-12:]) if part.encode() in data]


def test_kvbench_run_sends_the_key_to_its_endpoint_only_and_writes_it_nowhere(tmp_path):
    """`kvbench run --api-key-env KVB_TEST_KEY` (with `vllm bench serve`'s flag names): every request
    to the endpoint - completions, /tokenize, /metrics - carries `Authorization: Bearer <key>`, the
    Mooncake master's metrics none. No file of the run (manifest with its config and command line,
    CSVs, report) and no line of output holds the key, nor the unused $OPENAI_API_KEY."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(RUN_CONFIG))
    results = tmp_path / "results"
    with StubServer() as engine, StubServer() as master:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "run",
                "--base-url",
                engine.url("ok"),
                "--model",
                "stub",
                "--master-metrics",
                master.url("ok"),
                "--config",
                str(config),
                "--result-dir",
                str(results),
                "--api-key-env",
                "KVB_TEST_KEY",
                "--max-concurrency",
                "2",
                "--request-rate",
                "inf",
                "--seed",
                "42",
            ],
            env={**os.environ, "OPENAI_API_KEY": DECOY, "KVB_TEST_KEY": KEY},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    sent = {(method, path.removeprefix("/ok")) for method, path, _ in engine.requests}
    assert {("POST", "/v1/completions"), ("POST", "/tokenize"), ("GET", "/metrics")} <= sent, sent
    assert {auth for _, _, auth in engine.requests} == {f"Bearer {KEY}"}
    assert master.requests and {auth for _, _, auth in master.requests} == {None}

    files = [f for f in results.rglob("*") if f.is_file()]
    assert {"manifest.json", "requests.csv", "rounds.csv", "summary.csv", "report.md", "report.html"} <= {
        f.name for f in files
    }
    assert {str(f): _leaks(f.read_bytes()) for f in files if _leaks(f.read_bytes())} == {}
    assert _leaks(out.stdout) == [] and _leaks(out.stderr) == []
    (manifest_path,) = results.glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    command = manifest["command"]
    assert command[command.index("--api-key-env") + 1] == "KVB_TEST_KEY"  # the name is recorded
    assert manifest["endpoint_auth"] == "Authorization: Bearer from $KVB_TEST_KEY (the key is not recorded)"
    assert (manifest["config"]["concurrency"], manifest["config"]["request_rate"], manifest["config"]["seed"]) == (
        2,
        None,
        42,
    )
    rows = pd.concat(pd.read_csv(f) for f in files if f.name == "requests.csv")
    assert len(rows) == 2 * (4 + 2 * 2) and rows["ok"].all()


def test_the_key_reaches_the_health_check_and_the_tokenizer_and_stops_when_unset(tmp_path):
    with StubServer() as s:
        set_api_key(s.url("dead"), KEY)  # the whole server (origin), whatever the path
        try:
            with pytest.raises(EngineDown):  # 3 failed requests, then GET /health decides
                run_rounds(_workload(6), _cfg(rounds=1, concurrency=1), Endpoint(s.url("dead"), "stub"), tmp_path)
            with ServerTokenizer(s.url("ok"), "stub") as tok:
                assert tok.count("three words here") == 3
        finally:
            set_api_key(s.url("ok"), None)
        keyed = list(s.requests)
        assert _send(s.url("ok")).ok
    assert {(m, p) for m, p, _ in keyed} == {
        ("POST", "/dead/v1/completions"),
        ("GET", "/dead/health"),
        ("POST", "/ok/tokenize"),
    }
    assert {auth for _, _, auth in keyed} == {f"Bearer {KEY}"}
    assert s.requests[len(keyed) :] == [("POST", "/ok/v1/completions", None)]  # forgotten: no header


GATEWAY = "http://gateway:8000"


def _send_with_key(handler) -> RequestResult:
    """One request to `handler` (httpx.MockTransport) with KEY set for its server."""

    async def go() -> RequestResult:
        async with httpx.AsyncClient(
            base_url=GATEWAY, transport=httpx.MockTransport(handler), headers=auth_headers(GATEWAY)
        ) as c:
            return await send(c, "hi", RequestSettings(model="m", timeout=5))

    set_api_key(GATEWAY, KEY)
    try:
        return asyncio.run(go())
    finally:
        set_api_key(GATEWAY, None)


@pytest.mark.parametrize("pad", [0, 240], ids=["short", "cut-at-300"])
def test_a_key_the_server_echoes_back_is_redacted_from_every_message(pad):
    """A gateway that echoes the header in its error must not put the key into requests.csv, even
    where the message is cut to 300 characters inside the key (redacted first, then cut)."""

    def said(request: httpx.Request) -> str:
        return "x" * pad + f" invalid credentials: {request.headers['authorization']}"

    def rejected(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text=said(request))

    def error_event(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            text=f"data: {json.dumps({'error': {'message': said(request)}})}\n\n",
        )

    res = _send_with_key(rejected)
    assert res.http_status == 401 and res.error_class == "HTTPStatusError", res.error_message
    assert "invalid credentials" in res.error_message and _leaks(res.error_message) == [], res.error_message
    assert "invalid credentials: Bearer <redacted>" in res.error_message
    res = _send_with_key(error_event)
    assert res.error_class == "StreamError" and _leaks(res.error_message) == [], res.error_message
    assert "Bearer <redacted>" in res.error_message

    set_api_key(GATEWAY, KEY)
    try:
        with ServerTokenizer(GATEWAY, "m") as tok:
            tok._client = httpx.Client(
                base_url=GATEWAY, transport=httpx.MockTransport(rejected), headers=auth_headers(GATEWAY)
            )
            with pytest.raises(TokenizerError) as err:
                tok.count("hi")
    finally:
        set_api_key(GATEWAY, None)
    assert "401" in str(err.value) and _leaks(str(err.value)) == [], str(err.value)


@pytest.mark.docker  # the tokenizer files come out of the engine image
def test_kvbench_run_on_an_endpoint_without_tokenize_or_prometheus_metrics_uses_the_local_tokenizer(
    tmp_path, tiny_tokenizer
):
    """An OpenAI-compatible endpoint that is not vLLM (the stub's `gateway`: /tokenize is an HTML 404,
    /metrics a JSON page): without --tokenizer a one-line error and exit 2 before any request; with
    the tiny model's tokenizer the run completes, its prompts counted locally (exactly what vLLM's
    /tokenize counts for that model: tests/test_stack_e2e.py), the manifest says so, and the
    unparsable /metrics is "no metrics" with a warning, not a crash."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(RUN_CONFIG))
    with StubServer() as engine:
        argv = [sys.executable, "-m", "harness", "run", "--endpoint", engine.url("gateway"), "--model", "stub",
                "--config", str(config), "--results", str(tmp_path / "results")]  # fmt: skip
        refused = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2
        (line,) = refused.stderr.strip().splitlines()
        assert "HTTP 404" in line and "--tokenizer" in line
        assert not [p for _, p, _ in engine.requests if p.endswith("/completions")]
        done = subprocess.run([*argv, "--tokenizer", str(tiny_tokenizer)], cwd=REPO, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not Prometheus text" in done.stderr
    (manifest_path,) = (tmp_path / "results").glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["tokenizer"] == f"local Hugging Face tokenizer {tiny_tokenizer}"
    rows = pd.concat(pd.read_csv(f) for f in (tmp_path / "results").rglob("requests.csv"))
    assert len(rows) == 2 * (4 + 2 * 2) and rows["ok"].all() and (rows["expected_prompt_tokens"] > 0).all()


def _modules_that_receive(obj_ids: set[int], fn) -> list[str]:
    """The harness modules of the calls, in order, that get one of the objects as an argument
    (sys.setprofile: every Python call of this thread, the event loop's included)."""
    seen: list[str] = []

    def profile(frame, event, arg):
        if event != "call" or not frame.f_code.co_filename.startswith(str(Path(__file__).parent.parent / "harness")):
            return
        args = frame.f_code.co_varnames[: frame.f_code.co_argcount + frame.f_code.co_kwonlyargcount]
        if any(id(frame.f_locals.get(a)) in obj_ids for a in args):
            mod = frame.f_globals["__name__"]
            if not seen or seen[-1] != mod:
                seen.append(mod)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


def test_a_rounds_configuration_crosses_few_modules(stub, tmp_path: Path):
    """Following run_rounds' configuration (the Config and its parts) through a round: the modules
    that receive it, in call order, are few, and the flow climbs back into a module it left at most
    once (the cell's rounds, after the round itself). A newcomer reads them in that order."""
    cfg = _cfg(rounds=1, concurrency=2, client_workers=1)
    parts = {id(cfg), *(id(v) for f in type(cfg).model_fields if isinstance(v := getattr(cfg, f), BaseModel))}
    path = _modules_that_receive(
        parts, lambda: run_rounds(_workload(3), cfg, Endpoint(stub.url("ok"), "stub"), tmp_path)
    )
    climbs = sum(1 for i, m in enumerate(path) if m in path[:i])
    assert len(set(path)) <= 4 and climbs <= 1, path


def test_kvbench_run_reset_is_refused_in_one_line_where_it_cannot_be_proven(tmp_path):
    """`kvbench run --reset` needs the master's metrics (the store's key count is half the proof) and a
    server with vLLM's reset endpoint (dev mode; the stub has none: 404). Each is one line naming the
    flag, exit 2, before any request is measured or any run directory is written."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(RUN_CONFIG))
    with StubServer() as engine, StubServer() as master:
        argv = [sys.executable, "-m", "harness", "run", "--endpoint", engine.url("ok"), "--model", "stub",
                "--config", str(config), "--results", str(tmp_path / "results"), "--reset"]  # fmt: skip
        outs = [
            subprocess.run(a, cwd=REPO, capture_output=True, text=True, timeout=120)
            for a in (argv, [*argv, "--master-metrics", master.url("ok")])
        ]
        posted = [p for m, p, _ in engine.requests if m == "POST"]
    lines = [o.stderr.strip().splitlines() for o in outs]
    assert [o.returncode for o in outs] == [2, 2], [o.stderr[-2000:] for o in outs]
    error = "kvbench: config error: --reset: "
    assert lines[0] == [error + "needs --master-metrics (the proof counts the store's keys after the reset)"]
    (line,) = lines[1]
    assert line.startswith(error) and "/reset_prefix_cache: HTTP 404" in line and "VLLM_SERVER_DEV_MODE=1" in line
    assert not [p for p in posted if p.endswith(("/completions", "/reset_prefix_cache"))], posted
    assert not (tmp_path / "results").exists()
