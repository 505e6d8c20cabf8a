"""Per-round statistics from request rows, and round-over-round gains.

Percentiles are numpy's default (linear interpolation). Durations are measured
from the round's first send to its last response end, on the monotonic clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.analysis.frames import num, nums, truthy
from harness.analysis.intervals import change_pct, min_samples_for_quantile
from harness.config import Targets

# Warn when more than 1 token in 20 shared a read with the one before (a few do on a
# 2-core host where the CPU engine competes with the client) and reads came late.
SHARED_STAMP_WARN_PCT = 5.0
READ_DELAY_WARN_MS = 2.0  # p99 over requests of the longest wait of response bytes in the kernel


def _pct(values: Sequence[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def _mean(values: Sequence[float] | np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _itls(df: pd.DataFrame) -> np.ndarray:
    """Every inter-token latency of the rows: the space-separated cells parsed in one C-level pass."""
    cells = df["itl_ms"].dropna().astype(str)
    if cells.empty:
        return np.empty(0)
    return np.fromstring(" ".join(cells), sep=" ")


def _send_lag_ms(rows: pd.DataFrame) -> np.ndarray:
    if "scheduled_s" not in rows:
        return np.empty(0)
    lag = num(rows, "send_s") - num(rows, "scheduled_s")
    return (lag.dropna() * 1e3).to_numpy(dtype=float)


def shared_stamp_pct(itl_ms: np.ndarray) -> float:
    """Share of tokens read together with the one before (same arrival stamp: ITL exactly 0)."""
    return float(100 * np.mean(itl_ms == 0)) if len(itl_ms) else math.nan


def _split_by_hit(ok: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Requests that reused some cached tokens, and those that reused none (full prefill).
    A request whose server reported no cached_tokens is in neither."""
    if "cached_tokens" not in ok.columns:
        return ok.iloc[:0], ok.iloc[:0]
    cached = num(ok, "cached_tokens")
    return ok[cached > 0], ok[cached == 0]


def round_summary(rows: pd.DataFrame) -> dict:
    """Summary of one round's rows (all requests, failed ones included)."""
    ok = rows[truthy(rows["ok"])]
    ttft, tpot, e2e = nums(ok, "ttft_ms"), nums(ok, "tpot_ms"), nums(ok, "e2e_ms")
    itl = _itls(ok)
    send = num(rows, "send_s")
    start = send.min() if len(rows) else math.nan  # rows aligned: a row without e2e (torn line) has no end
    end = (send + num(rows, "e2e_ms") / 1e3).max() if len(rows) else math.nan
    duration = float(end - start) if len(rows) else math.nan
    prompt = nums(ok, "prompt_tokens").sum()
    completion = nums(ok, "completion_tokens").sum()
    cached, cached_ratio = _cached(ok)
    hit, miss = _split_by_hit(ok)
    per_s = (lambda x: x / duration) if duration and duration > 0 else (lambda x: math.nan)
    return {
        "requests": int(len(rows)),
        "successes": int(len(ok)),
        "failures": int(len(rows) - len(ok)),
        "ttft_mean_ms": _mean(ttft),
        "ttft_p50_ms": _pct(ttft, 50),
        "ttft_p90_ms": _pct(ttft, 90),
        "ttft_p99_ms": _pct(ttft, 99),
        "tpot_mean_ms": _mean(tpot),
        "tpot_p50_ms": _pct(tpot, 50),
        "itl_mean_ms": _mean(itl),
        "itl_p50_ms": _pct(itl, 50),
        "itl_p99_ms": _pct(itl, 99),
        # How long first tokens waited in the client before it parsed them (TTFT
        # excludes it), and how many tokens shared a read with the previous one.
        "client_lag_p99_ms": _pct(nums(ok, "first_token_lag_ms"), 99),
        "shared_stamp_pct": shared_stamp_pct(itl),
        "read_delay_p99_ms": _pct(nums(ok, "read_delay_ms"), 99),
        # Trace replay: how late requests left against their (scaled) timestamps.
        "send_lag_p99_ms": _pct(_send_lag_ms(rows), 99),
        # Requests in flight, time-weighted over the round (failed ones until they failed).
        "inflight_mean": float(num(rows, "e2e_ms").sum() / 1e3 / duration) if duration and duration > 0 else math.nan,
        # Round 1 reuses shared prefixes within the round, so its mean mixes full prefills
        # with hits: this split shows what a hit saves even inside one round.
        "misses": int(len(miss)) if len(hit) + len(miss) else math.nan,  # unknown, not 0, without usage
        "ttft_miss_mean_ms": _mean(nums(miss, "ttft_ms")),
        "ttft_hit_mean_ms": _mean(nums(hit, "ttft_ms")),
        "e2e_mean_ms": _mean(e2e),
        "e2e_p90_ms": _pct(e2e, 90),
        "duration_s": duration,
        "req_per_s": per_s(len(ok)),
        "output_tok_per_s": per_s(completion),
        "total_tok_per_s": per_s(prompt + completion),
        "prompt_tokens": int(prompt),
        "completion_tokens": int(completion),
        "cached_tokens": cached,
        "cached_token_ratio": cached_ratio,
    }


def _cached(ok: pd.DataFrame) -> tuple[float, float]:
    """The round's cached prompt tokens and their share of the prompt tokens, from the servers' usage
    (`prompt_tokens_details.cached_tokens`). A server that does not send it leaves both unknown (NaN):
    summing nothing gives 0, which would label the round "cold, 0 % reused". The count needs every
    successful request's figure (a partial sum is not the round's); the share is over the requests
    that reported one."""
    if ok.empty:
        return 0, math.nan
    cached = num(ok, "cached_tokens") if "cached_tokens" in ok else None
    if cached is None or cached.isna().all():
        return math.nan, math.nan
    prompt = num(ok, "prompt_tokens")
    known = cached.notna() & prompt.notna()
    share = float(cached[known].sum() / prompt[known].sum()) if prompt[known].sum() else math.nan
    return (int(cached.sum()) if cached.notna().all() else math.nan), share


SEND_LAG_WARN_MS = 100.0  # a trace replay more late than this no longer follows its timestamps


def schedule_warning(r: dict | pd.Series) -> str | None:
    """A one-line warning when a trace replay's requests left well after their timestamps."""
    lag = r.get("send_lag_p99_ms", math.nan)
    if not lag > SEND_LAG_WARN_MS:  # NaN-safe
        return None
    return (
        f"requests left up to {lag:,.0f} ms (p99) after their trace timestamps: `concurrency` capped the "
        f"replay, so arrivals no longer follow the trace; raise it or lower `speed`"
    )


INFLIGHT_WARN_RATIO = 0.9  # kept less than this share of the requested concurrency in flight


def client_limit_warning(r: dict | pd.Series) -> str | None:
    """A one-line warning when the client, not the server, kept the round below its concurrency:
    fewer requests in flight than asked for, while the client's own reads came late."""
    inflight, asked = r.get("inflight_mean", math.nan), r.get("concurrency", math.nan)
    lag = max(r.get("read_delay_p99_ms", math.nan), r.get("client_lag_p99_ms", math.nan))
    if not (inflight < INFLIGHT_WARN_RATIO * asked and lag > READ_DELAY_WARN_MS):  # NaN-safe
        return None
    return (
        f"{inflight:.1f} of {asked:.0f} requests in flight on average while the client read responses up to "
        f"{lag:.1f} ms (p99) late: the client, not the server, limited this round; give it more cores "
        f"(client_workers / --client-workers) or lower the concurrency"
    )


def saturation_warning(r: dict | pd.Series) -> str | None:
    """A one-line warning when the client itself spoiled some of a round's times.

    Chunks are timed by their kernel arrival stamps when they are read, and the
    client reads every socket as soon as it is readable. Two chunks of a stream
    read together share one stamp (an ITL of exactly 0, the earlier token timed
    late). That is harmless when they also arrived together (the server sent a
    burst, and the reads were prompt); it is the client's fault when its reads
    came late. Both must show for the warning."""
    shared = r.get("shared_stamp_pct", math.nan)
    delay = r.get("read_delay_p99_ms", math.nan)
    if not (shared > SHARED_STAMP_WARN_PCT and delay > READ_DELAY_WARN_MS):  # NaN-safe
        return None
    return (
        f"{shared:.1f} % of tokens shared a read with the one before, and reads came up to "
        f"{delay:.1f} ms (p99) after the data arrived: the client could not keep up (too many streams, or "
        f"too little CPU left for it); lower the concurrency"
    )


GAIN_COLUMNS = (
    "ttft_reduction_pct",
    "ttft_p50_reduction_pct",
    "throughput_improvement_pct",
    "ttft_target_met",
    "throughput_target_met",
)


def gains(first: dict, later: dict, targets: Targets) -> dict:
    """Round-over-round change of a warm round against the cold round 1, in the seed's rounds.csv
    columns (kept for readers of older runs): a reduction (positive = faster) and an increase.
    The report shows them as changes (intervals.change_pct: negative = faster); a target is met
    alike either way (reduction >= 60 is change <= -60)."""
    ttft_red = _reduction(first["ttft_mean_ms"], later["ttft_mean_ms"])
    tput_inc = _increase(first["req_per_s"], later["req_per_s"])
    return {
        "ttft_reduction_pct": ttft_red,
        "ttft_p50_reduction_pct": _reduction(first["ttft_p50_ms"], later["ttft_p50_ms"]),
        "throughput_improvement_pct": tput_inc,
        "ttft_target_met": bool(ttft_red >= targets.ttft_reduction_percent) if not math.isnan(ttft_red) else False,
        "throughput_target_met": bool(tput_inc >= targets.throughput_increase_percent)
        if not math.isnan(tput_inc)
        else False,
    }


def _reduction(before: float, after: float) -> float:
    return -change_pct(before, after)


def _increase(before: float, after: float) -> float:
    return change_pct(before, after)


# A round that reused more than this share of its prompt tokens is not a cold baseline: its
# round-over-round reduction understates what reuse buys.
WARM_ROUND1_PCT = 20.0
WARM_PCT = 95.0  # at least this much reused: "warm"


def warmth(reused_pct: float) -> str:
    """The measured label of a round: cold (nothing reused), partly warm, warm, or unknown (no usage)."""
    if math.isnan(reused_pct):
        return "unknown"
    if reused_pct == 0:
        return "cold"
    return "warm" if reused_pct >= WARM_PCT else "partly warm"


def reused_text(reused_pct: object) -> str:
    """A reused share as printed beside its label: whole percent rounded down, and "<1" above 0, so
    the figure never crosses the label's bounds (99.8 is not "100 % reused", 94.6 not a "95 %" that
    reads as warm, 0.3 not a "0 %" beside "partly warm")."""
    try:
        v = float(reused_pct)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(v):
        return "n/a"
    return "<1" if 0 < v < 1 else f"{math.floor(v):.0f}"


def round1_caveat(reused_pct: float) -> str | None:
    """The sentence a reader of round-over-round figures needs when round 1 was not cold."""
    if not reused_pct > WARM_ROUND1_PCT:  # NaN-safe
        return None
    return (
        f"round 1 already reused {reused_text(reused_pct)} % of its prompt tokens (a prefix shared within the round): "
        f"round over round understates reuse"
    )


def rounds_table(
    requests: pd.DataFrame, targets: Targets, planned: int | None = None, concurrency: int | None = None
) -> pd.DataFrame:
    """One row per round of one scenario; complete rounds 2+ carry their gains over a complete round 1.

    `planned` is the number of requests a round should send: a round with fewer rows was cut
    short (engine down, Ctrl-C) and is marked partial; it gets no gains or target verdict."""
    out: list[dict] = []
    first: dict | None = None
    for rnd, rows in sorted(requests.groupby("round"), key=lambda kv: int(kv[0])):
        s = {"round": int(rnd), **round_summary(rows)}
        reused = 100 * s["cached_token_ratio"]
        s.update(
            phase=warmth(reused),
            reused_token_pct=reused,
            planned=planned if planned else math.nan,
            concurrency=concurrency if concurrency else math.nan,
            partial=bool(planned and s["requests"] < planned),
        )
        if first is None:
            first = s
        elif not first["partial"] and not s["partial"]:
            s.update(gains(first, s, targets))
        else:  # no verdict over requests that did not happen
            s.update(dict.fromkeys(GAIN_COLUMNS, math.nan))
        out.append(s)
    return pd.DataFrame(out)


def ttft_gap(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per round, the client's mean TTFT minus vLLM's own, and why it is empty where it is. The
    server's histogram counts every request it recorded (failed ones too), the client's mean only
    its successes: the two means are over the same requests only when every row of the round
    succeeded and the server recorded exactly that many."""
    server_n = num(table, "server_requests")
    notes = [_gap_note(int(n), int(ok), sn) for n, ok, sn in zip(table["requests"], table["successes"], server_n)]
    gap = (table["ttft_mean_ms"] - table["server_ttft_mean_ms"]).where([not note for note in notes])
    return gap, pd.Series(notes, index=table.index)


def _gap_note(requests: int, successes: int, server_requests: float) -> str:
    """Why a round's client and server TTFT means are not over the same requests ("" when they are)."""
    if successes != requests:
        return (
            f"{requests - successes} of {requests} requests failed: the server's mean includes requests the "
            "client's does not"
        )
    if pd.isna(server_requests):
        return "the server recorded no request count"
    if server_requests != successes:
        return f"the server recorded {server_requests:,.0f} requests, the client {successes:,}: not the same requests"
    return ""


# Per-request tail percentiles and their quantile: a round of n requests supports one only when a
# distribution-free 95 % interval of it has an upper bound (intervals.min_samples_for_quantile: p90
# 36 requests, p99 368). Below that the figure is about the round's maximum.
TAIL_QUANTILE = {"ttft_p90_ms": 0.90, "ttft_p99_ms": 0.99, "e2e_p90_ms": 0.90}


def tail_support(metric: str, n: float) -> str:
    """ "" when `n` requests support this percentile (or it is no tail percentile); else why not, in
    a few words: "n=30<36" (36: the fewest samples with a distribution-free 95 % upper bound)."""
    q = TAIL_QUANTILE.get(metric)
    if q is None:
        return ""
    need = min_samples_for_quantile(q)
    if n >= need:  # NaN-safe: an unknown count supports nothing
        return ""
    return f"n={n:,.0f}<{need}" if not math.isnan(n) else f"n unknown, needs {need}"
