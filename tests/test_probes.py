"""Cache counters from canned Prometheus text: what a round's deltas, server-side means and the
cold-state gate make of vLLM's and the Mooncake master's `/metrics`. No server needed."""

from __future__ import annotations

import httpx
import pytest

from harness.client.client import set_api_key
from harness.observe.probes import Probe, Snapshot, cold_state, deltas, parse, settled


def vllm_text(
    *, prompt=1000.0, hits=0.0, ext_hits=0.0, ext_kv=None, ttft=(0.0, 0), e2e_count=None, engines=("0",)
) -> str:
    """vLLM-like exposition: counters with `_total` (and `_created`), labels engine/model_name,
    `prompt_tokens_by_source{source=external_kv_transfer}` only once it was used (`ext_kv`), the
    request histograms as `_bucket`/`_sum`/`_count`, the cache config as an info gauge."""
    out = []

    def counter(name: str, value: float, extra: str = "") -> None:
        out.append(f"# HELP {name}_total {name}\n# TYPE {name}_total counter")
        for e in engines:
            labels = f'engine="{e}",model_name="tiny"{extra}'
            out.append(f"{name}_total{{{labels}}} {value}\n{name}_created{{{labels}}} 1.7e9")

    counter("vllm:prompt_tokens", prompt)
    counter("vllm:prefix_cache_queries", prompt)
    counter("vllm:prefix_cache_hits", hits)
    counter("vllm:external_prefix_cache_queries", prompt)
    counter("vllm:external_prefix_cache_hits", ext_hits)
    out.append("# TYPE vllm:prompt_tokens_by_source_total counter")
    for e in engines:
        out.append(
            f'vllm:prompt_tokens_by_source_total{{engine="{e}",model_name="tiny",source="local_compute"}} '
            f"{prompt - ext_hits}"
        )
        if ext_kv is not None:
            out.append(
                f'vllm:prompt_tokens_by_source_total{{engine="{e}",model_name="tiny",'
                f'source="external_kv_transfer"}} {ext_kv}'
            )
    total_s, count = ttft
    for hist, n in (("time_to_first_token", count), ("e2e_request_latency", count if e2e_count is None else e2e_count)):
        name = f"vllm:{hist}_seconds"
        out.append(f"# TYPE {name} histogram")
        for e in engines:
            labels = f'engine="{e}",model_name="tiny"'
            out.append(
                f'{name}_bucket{{{labels},le="0.1"}} {n}\n{name}_bucket{{{labels},le="+Inf"}} {n}\n'
                f"{name}_count{{{labels}}} {n}\n{name}_sum{{{labels}}} {total_s}"
            )
    out.append('# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{block_size="16",cache_dtype="auto"} 1.0')
    return "\n".join(out) + "\n"


def master_text(keys: int = 0, allocated: int = 0, puts: int = 0) -> str:
    """The Mooncake master's own exposition: gauges, and counters without `_total`."""
    return (
        f"# TYPE master_key_count gauge\nmaster_key_count {keys}\n"
        f"# TYPE master_allocated_bytes gauge\nmaster_allocated_bytes {allocated}\n"
        f"# TYPE master_put_start_requests counter\nmaster_put_start_requests {puts}\n"
        f"# TYPE master_get_replica_list_requests counter\nmaster_get_replica_list_requests {puts * 2}\n"
    )


def snap(vllm: str | None, master: str | None = None) -> Snapshot:
    return Snapshot(parse(vllm) if vllm is not None else None, parse(master) if master is not None else None)


def test_counters_read_vllm_and_master_text():
    c = snap(
        vllm_text(prompt=1000, hits=0, ext_hits=256, ext_kv=256, ttft=(0.8, 4)), master_text(12, 4096, 3)
    ).counters()
    assert c["vllm_prompt_tokens"] == 1000 and c["prefix_cache_queries"] == 1000
    assert c["local_hits"] == 0 and c["external_hits"] == 256
    assert c["tokens_local_compute"] == 744 and c["tokens_external_kv_transfer"] == 256
    assert c["server_ttft_sum"] == pytest.approx(0.8) and c["server_ttft_count"] == 4
    assert c["master_key_count"] == 12 and c["master_allocated_bytes"] == 4096
    assert c["master_put_start_requests"] == 3 and c["master_get_replica_list_requests"] == 6  # no `_total`
    # What the server does not expose is unknown, not zero.
    assert c["prompt_tokens_cached"] is None and c["tokens_local_cache_hit"] is None
    assert c["mc_save_put_ops"] is None and c["server_queue_sum"] is None


def test_counters_sum_over_engines_and_skip_created_samples():
    one, two = snap(vllm_text(prompt=500)).counters(), snap(vllm_text(prompt=500, engines=("0", "1"))).counters()
    assert one["vllm_prompt_tokens"] == 500 and two["vllm_prompt_tokens"] == 1000  # 1.7e9 `_created` never added
    assert not any(name.endswith("_created") for name, _ in parse(vllm_text()))


def test_block_size_comes_from_the_cache_config_info():
    assert snap(vllm_text()).block_size == 16
    assert snap("# TYPE x counter\nx_total 1\n").block_size is None
    assert Snapshot(None, None).block_size is None


def test_a_scrape_that_failed_leaves_every_counter_of_that_server_unknown():
    c = Snapshot(None, None).counters()
    assert all(v is None for v in c.values()), {k: v for k, v in c.items() if v is not None}


def test_round_deltas_and_server_side_means():
    before = snap(vllm_text(prompt=1000, ttft=(0.5, 5)), master_text(0, 0, 0))
    after = snap(
        vllm_text(prompt=3000, ext_hits=1536, ext_kv=1536, ttft=(0.5 + 4 * 0.125, 9)), master_text(40, 1 << 20, 4)
    )
    d = deltas(before, after)
    assert d["vllm_prompt_tokens"] == 2000 and d["external_hits"] == 1536
    # external_kv_transfer appeared during the round: absent before means 0 then, not unknown
    assert d["tokens_external_kv_transfer"] == 1536
    assert d["local_hits"] == 0  # exposed and unchanged: a real zero ...
    assert d["prompt_tokens_cached"] is None  # ... never exposed: unknown
    assert d["server_ttft_mean_ms"] == pytest.approx(125.0) and d["server_requests"] == 4
    assert d["server_prefill_mean_ms"] is None and d["server_queue_mean_ms"] is None  # histograms not exposed
    assert d["master_key_count_start"] == 0 and d["master_key_count_end"] == 40
    assert d["master_allocated_bytes_end"] == 1 << 20 and d["master_put_start_requests"] == 4
    assert "master_key_count" not in d and "server_ttft_sum" not in d and "server_ttft_count" not in d


def test_a_round_without_requests_has_no_server_mean():
    text = vllm_text(ttft=(0.5, 5))
    d = deltas(snap(text), snap(text))
    assert d["server_requests"] == 0 and d["server_ttft_mean_ms"] is None and d["vllm_prompt_tokens"] == 0


@pytest.mark.parametrize("failed", ["before", "after"])
def test_a_failed_scrape_gives_unknown_deltas_not_lifetime_totals(failed):
    ok_before, ok_after = vllm_text(prompt=5000, ext_hits=4000), vllm_text(prompt=6000, ext_hits=4500)
    before = snap(None if failed == "before" else ok_before, master_text(3))
    after = snap(None if failed == "after" else ok_after, master_text(7))
    d = deltas(before, after)
    vllm_keys = [k for k in d if not k.startswith("master_")]
    assert all(d[k] is None for k in vllm_keys), {k: d[k] for k in vllm_keys if d[k] is not None}
    assert d["master_key_count_start"] == 3 and d["master_key_count_end"] == 7  # the master answered both times


def test_a_master_that_did_not_answer_before_the_round_leaves_its_counters_unknown():
    d = deltas(snap(vllm_text(), None), snap(vllm_text(), master_text(9, puts=5)))
    assert d["master_key_count_start"] is None and d["master_key_count_end"] == 9
    assert d["master_put_start_requests"] is None  # not 5: that would be a lifetime total


def test_cold_state_verified():
    assert cold_state(snap(vllm_text(), master_text())) == (True, "master_key_count=0, local_hits=0, external_hits=0")


def test_cold_state_not_cold_names_what_is_warm():
    ok, detail = cold_state(snap(vllm_text(ext_hits=64), master_text(12)))
    assert not ok and detail == "not cold: master_key_count=12, external_hits=64"


@pytest.mark.parametrize(
    "vllm,master,missing",
    [
        (vllm_text(), None, "master_key_count"),
        (None, master_text(), "local_hits, external_hits"),
        (
            "# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total 3\n",
            master_text(),
            "local_hits, external_hits",
        ),
    ],
    ids=["no master", "vllm scrape failed", "vllm without hit counters"],
)
def test_cold_state_cannot_be_verified_without_its_metrics(vllm, master, missing):
    assert cold_state(snap(vllm, master)) == (False, f"cannot verify: missing {missing}")


def _probe(handler) -> Probe:
    """A Probe whose HTTP goes to `handler` (httpx.MockTransport) instead of the network."""
    p = Probe("http://engine:8000", "http://master:9003")
    p._c.close()
    p._c = httpx.Client(transport=httpx.MockTransport(handler))
    return p


@pytest.mark.parametrize(
    "status,body",
    [
        (200, "<html><body>Welcome to nginx</body></html>"),
        (200, 'data: {"choices": []}\n\ndata: [DONE]\n\n'),
        (200, '{"detail": "Not Found"}'),
        (404, "# TYPE x counter\nx_total 1\n"),
        (503, ""),
    ],
    ids=["html", "sse", "json", "404", "503"],
)
def test_a_metrics_answer_that_is_not_prometheus_text_is_no_metrics(status, body):
    p = _probe(lambda request: httpx.Response(status, text=body))
    s = p.snapshot()
    assert s.vllm is None and s.master is None
    assert cold_state(s)[0] is False


def test_an_unreachable_server_is_no_metrics_and_not_healthy():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    p = _probe(refuse)
    assert p.snapshot() == Snapshot(None, None) and p.healthy() is False


def test_the_endpoint_key_goes_to_the_engine_and_not_to_the_master():
    seen: list[tuple[str, str | None]] = []

    def serve(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization")))
        text = master_text(2) if request.url.host == "master" else vllm_text()
        return httpx.Response(200, text=text)

    p = _probe(serve)
    set_api_key("http://engine:8000", "sk-probe-secret-123")
    try:
        s = p.snapshot()
        assert p.healthy()
    finally:
        set_api_key("http://engine:8000", None)
    assert s.counters()["master_key_count"] == 2 and s.block_size == 16
    assert sorted(seen) == [
        ("http://engine:8000/health", "Bearer sk-probe-secret-123"),
        ("http://engine:8000/metrics", "Bearer sk-probe-secret-123"),
        ("http://master:9003/metrics", None),
    ]
    seen.clear()
    p.snapshot()
    assert {auth for _, auth in seen} == {None}  # forgotten: nothing sent any more


class _Counting:
    """A probe whose engine has recorded `e2e` more requests at each scrape."""

    def __init__(self, e2e: list[int | None]) -> None:
        self.e2e, self.calls = e2e, 0

    def snapshot(self) -> Snapshot:
        n = self.e2e[min(self.calls, len(self.e2e) - 1)]
        self.calls += 1
        return snap(vllm_text(e2e_count=n) if n is not None else "# TYPE vllm:prompt_tokens_total counter\n")


def test_settled_waits_until_the_engine_recorded_the_rounds_requests():
    probe = _Counting([5, 7, 9, 10])
    after = settled(probe, snap(vllm_text(e2e_count=5)), finished=4, timeout=5)
    assert probe.calls == 3 and after.counters()["server_e2e_count"] == 9


def test_settled_does_not_wait_for_a_histogram_the_server_lacks():
    probe = _Counting([None])
    settled(probe, snap(vllm_text(e2e_count=0)), finished=4, timeout=5)
    assert probe.calls == 1


def test_settled_gives_up_at_its_timeout():
    probe = _Counting([5])  # requests that failed are never recorded
    after = settled(probe, snap(vllm_text(e2e_count=5)), finished=4, timeout=0.12)
    assert probe.calls > 1 and after.counters()["server_e2e_count"] == 5
