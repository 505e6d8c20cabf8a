"""Issue 21, item 4: figures that said something other than what was measured. Each test fails on the
code before the fix: unknown warmness, unverified vs contaminated, an endpoint refusing its
credentials, counters that went down, the client-server TTFT gap over different requests, and the
connector's per-request divisor."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from harness.analysis.connector import time_in_connector
from harness.analysis.stats import rounds_table
from harness.analysis.status import judge
from harness.cli import main
from harness.client.client import RequestSettings, send
from harness.config import Targets
from harness.observe.probes import Snapshot, deltas, parse

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "test_config.yaml"

# --- b) a server that sends no cached_tokens: warmth unknown, not "cold, 0 % reused" ----------------


def _stream_without_cached_tokens(request: httpx.Request) -> httpx.Response:
    """A server whose usage has no prompt_tokens_details (an OpenAI-compatible gateway, or vLLM
    without --enable-prompt-tokens-details)."""
    events = [
        {"choices": [{"index": 0, "text": "Hello"}]},
        {"choices": [{"index": 0, "text": " world"}]},
        {"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 2, "total_tokens": 1002}},
    ]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)


def _served_rows(rounds: int = 2, n: int = 4) -> pd.DataFrame:
    async def one() -> dict:
        async with httpx.AsyncClient(
            base_url="http://gateway:8000", transport=httpx.MockTransport(_stream_without_cached_tokens)
        ) as c:
            res = await send(c, "hi", RequestSettings(model="m", timeout=5))
        return {"ok": res.ok, "prompt_tokens": res.prompt_tokens, "cached_tokens": res.cached_tokens}

    rows = []
    for rnd in range(1, rounds + 1):
        for i in range(n):
            usage = asyncio.run(one())
            rows.append(
                {
                    "round": rnd,
                    "send_s": 0.1 * i,
                    "ttft_ms": 20.0,
                    "tpot_ms": 1.0,
                    "e2e_ms": 30.0,
                    "itl_ms": "1.0",
                    "completion_tokens": 2,
                    **usage,
                }  # fmt: skip
            )
    return pd.DataFrame(rows)


def test_rounds_of_a_server_without_cached_tokens_are_of_unknown_warmth_not_cold():
    rows = _served_rows()
    assert rows["ok"].all() and rows["cached_tokens"].isna().all()  # the client kept "not sent" as missing
    table = rounds_table(rows, Targets())
    assert table["phase"].tolist() == ["unknown", "unknown"]
    assert table["reused_token_pct"].isna().all() and table["cached_tokens"].isna().all()
    assert table["prompt_tokens"].tolist() == [4000, 4000]  # what the server did report stays


def test_a_server_that_reports_cached_tokens_is_still_labelled_from_them():
    rows = _served_rows().assign(cached_tokens=lambda d: np.where(d["round"] > 1, 992, 0))
    table = rounds_table(rows, Targets())
    assert table["phase"].tolist() == ["cold", "warm"] and table["cached_tokens"].tolist() == [0, 4 * 992]


# --- c) unverified vs contaminated ----------------------------------------------------------------


def _table(foreign_r1: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {"round": [1, 2], "requests": [10, 10], "failures": [0, 0], "foreign_hit_tokens": [foreign_r1, 0.0]}
    )


def test_an_endpoint_whose_cold_state_cannot_be_checked_is_unverified_not_contaminated():
    """`kvbench run` against a server without the master's metrics: the gate could not look, and
    round 1 hit nothing foreign. Nothing shows contamination: the cell is unverified."""
    out = judge(_table(), False, 2.0, "cannot verify: missing master_key_count")
    assert out["status"] == "unverified" and "missing master_key_count" in out["reason"]


@pytest.mark.parametrize(
    "cold, detail, foreign",
    [
        (False, "not cold: master_key_count=12", 0.0),  # the gate saw keys
        (False, "engine 1: cannot verify: missing local_hits; engine 2: not cold: external_hits=64", 0.0),
        (False, "cannot verify: missing master_key_count", 4096.0),  # round 1 hit tokens it never computed
        (True, "master_key_count=0, local_hits=0, external_hits=0", 4096.0),
    ],
    ids=["keys-before", "one-engine-hit", "foreign-unverified", "foreign-cold"],
)
def test_contaminated_needs_evidence_keys_hits_or_foreign_tokens(cold, detail, foreign):
    assert judge(_table(foreign), cold, 2.0, detail)["status"] == "contaminated"


def test_a_verified_cold_cell_without_foreign_hits_is_ok_and_too_many_failures_still_fail():
    assert judge(_table(), True, 2.0, "master_key_count=0, local_hits=0, external_hits=0")["status"] == "ok"
    failing = _table().assign(failures=[5, 0])
    assert judge(failing, False, 2.0, "cannot verify: missing master_key_count")["status"] == "failed"


def test_the_manifest_accepts_the_unverified_status():
    from harness.records import CellEntry

    assert CellEntry(scenario="s", status="unverified").status == "unverified"


# --- d) an endpoint that refuses the credentials: a key is missing, not a tokenizer ----------------


@contextmanager
def _endpoint(refuse: tuple[str, ...], status: int) -> Iterator[str]:
    """An HTTP server answering `status` on paths starting with any of `refuse`, /tokenize with a
    count (as vLLM: its --api-key guards /v1, not /tokenize), 404 elsewhere."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path.startswith(refuse):
                code, body = status, {"error": "invalid api key"}
            elif self.path == "/tokenize":
                code, body = 200, {"count": 1, "tokens": [1]}
            else:
                code, body = 404, {"detail": "Not Found"}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _run(url: str, tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    argv = ["run", "--endpoint", url, "--model", "m", "--config", str(CONFIG), "--results", str(tmp_path / "r")]
    code = main([*argv, *extra])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    "refuse, status",
    [(("/v1/",), 401), (("/v1/", "/tokenize"), 403)],
    ids=["v1-401-like-vllm-api-key", "everything-403"],
)
def test_an_endpoint_refusing_us_is_named_an_authentication_failure_with_the_variable(
    tmp_path, capsys, monkeypatch, refuse, status
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with _endpoint(refuse, status) as url:
        code, err = _run(url, tmp_path, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"HTTP {status}" in err and "authentication failed" in err and "$OPENAI_API_KEY" in err, err
    assert "--tokenizer" not in err
    assert not list((tmp_path / "r").glob("*/*/requests.csv"))  # stopped before any request


def test_a_refused_key_names_the_variable_it_came_from_never_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KVB_GATEWAY_KEY", "sk-wrong-0123456789abcdef")
    with _endpoint(("/v1/",), 401) as url:
        code, err = _run(url, tmp_path, capsys, "--api-key-env", "KVB_GATEWAY_KEY")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "refused the key in $KVB_GATEWAY_KEY" in err and "sk-wrong" not in err, err


# --- f) a counter that went down (engine restarted) gives no delta, not a negative one -------------

HITS = '# TYPE vllm:external_prefix_cache_hits counter\nvllm:external_prefix_cache_hits_total{engine="0"} {}\n'
TTFT = (
    "# TYPE vllm:time_to_first_token_seconds histogram\n"
    'vllm:time_to_first_token_seconds_sum{{engine="0"}} {s}\n'
    'vllm:time_to_first_token_seconds_count{{engine="0"}} {n}\n'
)


def test_a_counter_reset_between_snapshots_is_unknown_with_its_reason_never_negative():
    before = Snapshot(parse(HITS.replace("{}", "5000") + TTFT.format(s=40.0, n=400)), None)
    after = Snapshot(parse(HITS.replace("{}", "120") + TTFT.format(s=1.0, n=10)), None)  # restarted meanwhile
    d = deltas(before, after)
    assert d["external_hits"] is None and d["server_ttft_mean_ms"] is None and d["server_requests"] is None
    assert "external_hits" in d["counter_resets"] and "went down" in d["counter_resets"]
    grew = Snapshot(parse(HITS.replace("{}", "5600") + TTFT.format(s=42.0, n=420)), None)
    ok = deltas(before, grew)
    assert ok["external_hits"] == 600 and ok["server_ttft_mean_ms"] == pytest.approx(100.0)
    assert ok["server_requests"] == 20 and not ok["counter_resets"]


# --- g) the client-server TTFT gap compares the same requests ------------------------------------


def test_the_ttft_gap_is_computed_only_over_the_same_requests():
    """The server's histogram mean covers every request it recorded in the round (failed ones too);
    the client's mean only its successes. With a failure the two means are over different requests:
    no gap, and the reason is recorded."""
    from harness.analysis.stats import ttft_gap

    t = pd.DataFrame(
        {
            "round": [1, 2, 3],
            "requests": [10, 10, 10],
            "successes": [10, 9, 10],
            "ttft_mean_ms": [50.0, 30.0, 40.0],
            "server_ttft_mean_ms": [45.0, 60.0, 38.0],
            "server_requests": [10.0, 10.0, 11.0],
        }
    )
    gap, why = ttft_gap(t)
    assert gap.iloc[0] == pytest.approx(5.0)
    assert math.isnan(gap.iloc[1]) and "1 of 10 requests failed" in why.iloc[1]
    assert math.isnan(gap.iloc[2]) and "11 requests" in why.iloc[2]
    assert why.iloc[0] == ""


# --- h) the connector's per-request figures divide by the requests served -------------------------


def test_connector_figures_per_request_divide_by_requests_served_not_rows():
    """40 rows, of which 10 were never sent (their turn's previous request failed): the connector's
    2 s of load RPCs were spent on the 30 the server served - 66.7 ms each, not 50."""
    t = pd.DataFrame(
        {
            "round": [2, 2],
            "requests": [40, 40],
            "successes": [30, 30],
            "server_requests": [30.0, math.nan],
            "mc_load_get_time_s": [2.0, 2.0],
            "mc_lookup_exists_time_s": [0.4, 0.4],
            "ttft_mean_ms": [100.0, 100.0],
        }
    )
    out = time_in_connector(t)
    assert out["mc_load_ms_per_req"].tolist() == pytest.approx([2000 / 30] * 2)
    assert out["mc_lookup_ms_per_req"].tolist() == pytest.approx([400 / 30] * 2)


# --- e) the cache-cliff note judges "explains" against a stated tolerance --------------------------


def _cliff_notes(tmp_path: Path, hits: list[float], lru: list[float]) -> str:
    from harness.report.data import load_run
    from harness.report.tables import cliff_notes
    from tests.report_synth import cliff_sweep, make_run

    return " ".join(cliff_notes(load_run(make_run(tmp_path, cliff_sweep(hits, lru)))))


def test_hits_16_points_off_the_simulated_lru_are_not_explained_by_the_store_size(tmp_path):
    """Measured hits 15.9 points above the simulated LRU store at 512 MiB: Mooncake is not an exact
    LRU, and the simulation explains only part of the curve - not "the store's size explains the loss"."""
    note = _cliff_notes(tmp_path, [0.10, 0.509, 0.95, 1.0], [0.10, 0.35, 0.95, 1.0])
    assert "explains the loss" not in note, note
    assert "measured hits at 512 MiB are 15.9 points above the simulated LRU store" in note
    assert "explains only part" in note and "5-point tolerance" in note


def test_hits_within_the_tolerance_are_explained_by_the_store_size(tmp_path):
    note = _cliff_notes(tmp_path, [0.07, 0.32, 0.97, 1.0], [0.10, 0.35, 1.0, 1.0])
    assert "within 3.0 points of the simulated LRU store at every size (tolerance 5 points)" in note, note
    assert "the store's size explains the loss" in note and "not explained" not in note
