"""Round statistics checked against numpy on generated rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.analysis.connector import COLUMNS as CONNECTOR_COLUMNS
from harness.analysis.connector import time_in_connector
from harness.analysis.stats import (
    WARM_PCT,
    client_limit_warning,
    gains,
    reused_text,
    round_summary,
    rounds_table,
    saturation_warning,
    warmth,
)
from harness.config import Targets


def _rows(n: int, rng: np.random.Generator, rnd: int = 1, fail: int = 0) -> pd.DataFrame:
    ttft = rng.lognormal(4, 0.5, n)
    e2e = ttft + rng.uniform(50, 200, n)
    send = np.sort(rng.uniform(0, 2, n))
    ok = np.array([True] * (n - fail) + [False] * fail)
    itl = [" ".join(f"{x:.3f}" for x in rng.uniform(1, 9, 5)) for _ in range(n)]
    return pd.DataFrame(
        {
            "round": rnd,
            "ok": ok,
            "ttft_ms": ttft,
            "e2e_ms": e2e,
            "send_s": send,
            "tpot_ms": (e2e - ttft) / 15,
            "itl_ms": itl,
            "prompt_tokens": 1000,
            "completion_tokens": 16,
            "cached_tokens": rng.integers(0, 1000, n),
        }
    )


def test_round_summary_matches_numpy():
    rng = np.random.default_rng(7)
    df = _rows(200, rng, fail=10)
    s = round_summary(df)
    ok = df[df["ok"]]
    assert s["requests"] == 200 and s["successes"] == 190 and s["failures"] == 10
    for q in (50, 90, 99):
        assert s[f"ttft_p{q}_ms"] == pytest.approx(np.percentile(ok["ttft_ms"], q))
    assert s["ttft_mean_ms"] == pytest.approx(ok["ttft_ms"].mean())
    assert s["tpot_p50_ms"] == pytest.approx(np.median(ok["tpot_ms"]))
    assert s["e2e_p90_ms"] == pytest.approx(np.percentile(ok["e2e_ms"], 90))
    itl = np.concatenate([np.array(c.split(), dtype=float) for c in ok["itl_ms"]])
    assert s["itl_p99_ms"] == pytest.approx(np.percentile(itl, 99))
    duration = (df["send_s"] + df["e2e_ms"] / 1e3).max() - df["send_s"].min()
    assert s["duration_s"] == pytest.approx(duration)
    assert s["req_per_s"] == pytest.approx(190 / duration)
    assert s["output_tok_per_s"] == pytest.approx(190 * 16 / duration)
    assert s["cached_token_ratio"] == pytest.approx(ok["cached_tokens"].sum() / (190 * 1000))


def test_ttft_is_split_into_full_prefills_and_hits():
    rng = np.random.default_rng(3)
    df = _rows(60, rng, fail=6)
    df["cached_tokens"] = np.where(np.arange(60) % 4 == 0, 0, 512)  # failed rows have no usage
    df.loc[~df["ok"], "cached_tokens"] = np.nan
    ok = df[df["ok"]]
    s = round_summary(df)
    assert s["misses"] == int((ok["cached_tokens"] == 0).sum()) > 0
    assert s["ttft_miss_mean_ms"] == pytest.approx(ok.loc[ok["cached_tokens"] == 0, "ttft_ms"].mean())
    assert s["ttft_hit_mean_ms"] == pytest.approx(ok.loc[ok["cached_tokens"] > 0, "ttft_ms"].mean())
    unknown = round_summary(df.drop(columns="cached_tokens"))  # a server without cached-token usage
    assert (
        math.isnan(unknown["misses"])
        and math.isnan(unknown["ttft_miss_mean_ms"])
        and math.isnan(unknown["ttft_hit_mean_ms"])
    )


def test_all_failed_round_gives_nan_not_zero():
    rng = np.random.default_rng(1)
    s = round_summary(_rows(5, rng, fail=5))
    assert s["successes"] == 0 and math.isnan(s["ttft_p50_ms"]) and math.isnan(s["cached_token_ratio"])


def test_gains_and_targets():
    first = {"ttft_mean_ms": 100.0, "ttft_p50_ms": 90.0, "req_per_s": 2.0}
    warm = {"ttft_mean_ms": 30.0, "ttft_p50_ms": 45.0, "req_per_s": 6.0}
    g = gains(first, warm, Targets(ttft_reduction_percent=60, throughput_increase_percent=150))
    assert g["ttft_reduction_pct"] == pytest.approx(70.0)
    assert g["ttft_p50_reduction_pct"] == pytest.approx(50.0)
    assert g["throughput_improvement_pct"] == pytest.approx(200.0)
    assert g["ttft_target_met"] and g["throughput_target_met"]
    g = gains(first, {**warm, "ttft_mean_ms": 50.0}, Targets())
    assert not g["ttft_target_met"]


def test_rounds_table_has_one_row_per_round_and_gains_from_round_two():
    rng = np.random.default_rng(3)
    df = pd.concat(
        [_rows(20, rng, 1).assign(cached_tokens=0), _rows(20, rng, 2).assign(cached_tokens=1000), _rows(20, rng, 3)]
    )
    t = rounds_table(df, Targets(), planned=20)
    # the label is what was measured: nothing reused, all reused, some reused
    assert list(t["round"]) == [1, 2, 3] and list(t["phase"]) == ["cold", "warm", "partly warm"]
    assert list(t["reused_token_pct"]) == [0, 100, pytest.approx(100 * t.loc[2, "cached_token_ratio"])]
    assert not t["partial"].any()
    assert math.isnan(t.loc[0, "ttft_reduction_pct"])
    r1, r3 = t.loc[0], t.loc[2]
    assert t.loc[2, "ttft_reduction_pct"] == pytest.approx((1 - r3["ttft_mean_ms"] / r1["ttft_mean_ms"]) * 100)


def test_a_round_cut_short_is_partial_and_gets_no_gains():
    rng = np.random.default_rng(4)
    df = pd.concat([_rows(20, rng, 1), _rows(12, rng, 2)])
    t = rounds_table(df, Targets(), planned=20).set_index("round")
    assert not t.loc[1, "partial"] and t.loc[2, "partial"]
    assert math.isnan(t.loc[2, "ttft_reduction_pct"]) and math.isnan(t.loc[2, "throughput_improvement_pct"])


def test_tokens_read_together_are_counted_and_warned_about_only_when_reads_were_late():
    """Two tokens read in one go share a stamp: an ITL of exactly 0. A round where
    more than 5 % of ITLs are 0 and reads came late had a saturated client and says
    so; tokens that arrived together but were read at once (a server burst) do not."""

    def rows(itls: list[str], read_delay_ms: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "ok": True,
                "send_s": 0.0,
                "ttft_ms": 10.0,
                "tpot_ms": 1.0,
                "e2e_ms": 20.0,
                "prompt_tokens": 5,
                "completion_tokens": 4,
                "cached_tokens": 0,
                "first_token_lag_ms": 0.5,
                "read_delay_ms": read_delay_ms,
                "itl_ms": itls,
            }
        )

    fine = round_summary(rows(["20.1 19.9 20.3"] * 50, 0.2))
    assert fine["shared_stamp_pct"] == 0 and fine["read_delay_p99_ms"] == pytest.approx(0.2)
    assert saturation_warning(fine) is None
    merged = ["0.000 19.9 20.3"] * 49 + ["20.1 19.9 20.3"]
    busy = round_summary(rows(merged, 15.0))
    assert busy["shared_stamp_pct"] == pytest.approx(100 * 49 / 150)
    assert "keep up" in saturation_warning(busy) and "concurrency" in saturation_warning(busy)
    assert saturation_warning(round_summary(rows(merged, 0.3))) is None  # a server burst, read promptly
    assert saturation_warning({"itl_p50_ms": 20.0}) is None  # older rounds.csv without the columns


def test_a_failed_scrape_before_a_round_gives_unknown_deltas_not_lifetime_totals():
    """The server's counters already stand at 5000 hits: a scrape that failed before the round
    must not turn into a delta of 5000 (the snapshot of nothing is not a snapshot of zeros)."""
    from harness.observe.probes import Snapshot, deltas, parse

    text = '# TYPE vllm:external_prefix_cache_hits counter\nvllm:external_prefix_cache_hits_total{engine="0"} 5000\n'
    after = Snapshot(parse(text), None)
    assert deltas(Snapshot(None, None), after)["external_hits"] is None
    assert deltas(Snapshot(parse(text.replace("5000", "4000")), None), after)["external_hits"] == 1000


def _row(i: int, **changes):
    from harness.records import RequestRow

    fields = dict(
        scenario="s",
        round=1,
        index=i,
        prompt_id=f"p{i}",
        prompt_hash="h",
        session_id=f"p{i}",
        turn=0,
        api="completions",
        ok=True,
        http_status=200,
        error_class="",
        error_message="",
        send_s=0.1 * i,
        ttft_ms=5.0,
        first_token_lag_ms=0.01,
        read_delay_ms=0.02,
        tpot_ms=1.0,
        e2e_ms=20.0,
        itl_ms="1.000 1.000",
        n_itl=2,
        prompt_tokens=100,
        completion_tokens=3,
        cached_tokens=0,
        expected_prompt_tokens=100,
        shared_prefix_tokens=0,
        prefix_key="",
        provides_prefix_key="",
        output_chars=9,
        output_hash="ab",
        prefix_blocks="",
    )
    return RequestRow(**{**fields, **changes})


def test_request_rows_are_on_disk_at_once_without_an_fsync_per_row(tmp_path, monkeypatch):
    """Each row is flushed to the kernel as it is appended (a killed harness keeps it), but the
    fsync waits for close(), outside the timed round."""
    import os

    from harness.results import RequestLog

    syncs = []
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd))
    log = RequestLog(tmp_path / "requests.csv")
    for i in range(3):
        log.append(_row(i))
        assert len(pd.read_csv(tmp_path / "requests.csv")) == i + 1  # another reader sees it now
    assert syncs == []
    log.close()
    assert len(syncs) == 1


def test_request_rows_are_written_and_read_back_by_their_type(tmp_path):
    """The CSV columns are RequestRow's fields; a field nobody declared is an error, not a silent drop;
    text columns read back as text even when every cell is empty."""
    from pydantic import ValidationError

    from harness.records import REQUEST_COLUMNS, RequestRow
    from harness.results import RequestLog, read_requests

    with pytest.raises(ValidationError, match="no_such_column"):
        _row(0, no_such_column=1)
    with pytest.raises(ValidationError, match="api"):
        _row(0, api="embeddings")
    log = RequestLog(tmp_path / "requests.csv")
    rows = [_row(i, output_hash="", prefix_key="") for i in range(3)]
    for r in rows:
        log.append(r)
    log.close()
    df = read_requests(tmp_path / "requests.csv")
    assert tuple(df.columns) == REQUEST_COLUMNS
    back = [
        RequestRow.model_validate(
            {k: (None if pd.isna(v) else v) for k, v in rec.items()}
            | {
                c: ""
                for c in (
                    "output_hash",
                    "prefix_key",
                    "provides_prefix_key",
                    "prefix_blocks",
                    "error_class",
                    "error_message",
                )
            }
        )
        for rec in df.to_dict("records")
    ]
    assert back == rows
    assert pd.api.types.is_string_dtype(df["output_hash"])  # all empty, still text (not a float column)


def test_round_summaries_are_checked_both_ways(tmp_path):
    """rounds.csv is written and read through RoundSummary: an undeclared column fails the write and
    the read; declared server counters (metrics.COUNTER_COLUMNS) pass; whole numbers stay integers."""
    from pydantic import ValidationError

    from harness.records.metrics import COUNTER_COLUMNS
    from harness.results import read_rounds, write_rounds

    table = pd.DataFrame(
        {
            "round": [1, 2],
            "requests": [4, 4],
            "ttft_mean_ms": [10.5, 2.25],
            "external_hits": [0.0, 512.0],
            "phase": ["cold", "warm"],
            "partial": [False, False],
        }
    )
    write_rounds(tmp_path / "rounds.csv", table)
    back = read_rounds(tmp_path / "rounds.csv")
    pd.testing.assert_frame_equal(back, table, check_dtype=False, check_like=True)
    assert (tmp_path / "rounds.csv").read_text().splitlines()[2] == "2,4,2.2500,warm,False,512"
    with pytest.raises(ValidationError, match="ttft_mean_msec"):
        write_rounds(tmp_path / "bad.csv", table.rename(columns={"ttft_mean_ms": "ttft_mean_msec"}))
    table.rename(columns={"ttft_mean_ms": "ttft_mean_msec"}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValidationError):
        read_rounds(tmp_path / "bad.csv")
    assert "external_hits" in COUNTER_COLUMNS


def test_in_flight_is_the_time_weighted_mean_and_the_client_limit_is_warned_only_with_late_reads():
    # 4 requests of 1 s each, two at a time over 2 s: 2 in flight on average
    rows = pd.DataFrame({"round": 1, "ok": True, "ttft_ms": 10.0, "e2e_ms": 1000.0, "send_s": [0.0, 0.0, 1.0, 1.0],
                         "tpot_ms": 1.0, "itl_ms": "", "prompt_tokens": 10, "completion_tokens": 2,
                         "cached_tokens": 0, "first_token_lag_ms": 0.1, "read_delay_ms": 0.1})  # fmt: skip
    t = rounds_table(rows, Targets(), concurrency=4).iloc[0]
    assert t["inflight_mean"] == pytest.approx(2.0) and t["concurrency"] == 4
    assert client_limit_warning(t) is None  # half the concurrency, but the client read on time: not its fault
    late = {**t.to_dict(), "read_delay_p99_ms": 40.0}
    assert "2.0 of 4 requests in flight" in client_limit_warning(late)
    assert client_limit_warning({**late, "inflight_mean": 3.8}) is None


def test_time_in_the_connector_comes_from_its_rpc_timers_and_is_empty_without_it():
    table = pd.DataFrame({"round": [1, 2, 1], "requests": [10, 10, 10], "ttft_mean_ms": [100.0, 40.0, 90.0],
        "mc_lookup_exists_time_s": [0.02, 0.05, None], "mc_load_get_time_s": [0.0, 0.2, None],
        "mc_load_get_bytes": [0, 4e8, None], "mc_save_exists_time_s": [0.01, 0.01, None],
        "mc_save_put_time_s": [0.19, 0.0, None], "mc_save_put_bytes": [3.8e8, 0, None]})  # fmt: skip
    t = time_in_connector(table)
    cold, warm, baseline = t.iloc[0], t.iloc[1], t.iloc[2]
    assert warm["mc_load_ms_per_req"] == pytest.approx(20.0) and warm["mc_lookup_ms_per_req"] == pytest.approx(5.0)
    assert warm["mc_load_gbps"] == pytest.approx(2.0) and warm["mc_loaded_mb"] == pytest.approx(400)
    assert warm["fetch_share_pct"] == pytest.approx(100 * 25 / 40)
    assert cold["mc_save_ms_per_req"] == pytest.approx(20.0) and cold["mc_save_gbps"] == pytest.approx(2.0)
    assert math.isnan(cold["mc_load_gbps"])  # nothing loaded: no throughput, not 0 GB/s
    assert all(math.isnan(baseline[c]) for c in CONNECTOR_COLUMNS)


@pytest.mark.parametrize("pct", [0.0, 0.3, 0.99, 1.0, 19.6, 94.6, 94.99, 95.0, 95.43, 99.5, 99.79, 99.999, 100.0])
def test_the_printed_reuse_share_never_contradicts_its_label(pct):
    """Round 2 of the real long-context run reused 99.79 % (the last partial block of each prompt is
    computed): printed as "100 % reused" it claimed a complete hit; 94.6 printed as "95 %" would
    sit beside "partly warm", and 0.3 as "0 %" beside a label that is not "cold"."""
    text, label = reused_text(pct), warmth(pct)
    shown = 0.0 if text == "<1" else float(text)
    assert shown <= pct, (pct, text)  # never claims more reuse than measured
    assert (text == "100") == (pct == 100.0)
    assert (text == "0") == (label == "cold")
    assert (shown >= WARM_PCT) == (label == "warm")
    assert reused_text(math.nan) == reused_text(None) == "n/a"
