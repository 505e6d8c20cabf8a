"""Per-round statistics from request rows, and round-over-round gains.

Percentiles are numpy's default (linear interpolation). Durations are measured
from the round's first send to its last response end, on the monotonic clock.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .config import Targets

# Warn when more than 1 token in 20 shared a read with the one before (a few do on a
# 2-core host where the CPU engine competes with the client) and reads came late.
SHARED_STAMP_WARN_PCT = 5.0
READ_DELAY_WARN_MS = 2.0  # p99 over requests of the longest wait of response bytes in the kernel


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _nums(df: pd.DataFrame, col: str) -> np.ndarray:
    """The column's numbers; none when the column is absent (CSVs of older runs)."""
    if col not in df:
        return np.empty(0)
    return pd.to_numeric(df[col], errors="coerce").dropna().to_numpy(dtype=float)


def _itls(df: pd.DataFrame) -> np.ndarray:
    """Every inter-token latency of the rows: the space-separated cells parsed in one C-level pass."""
    cells = df["itl_ms"].dropna().astype(str)
    if cells.empty:
        return np.empty(0)
    return np.fromstring(" ".join(cells), sep=" ")


def shared_stamp_pct(itl_ms: np.ndarray) -> float:
    """Share of tokens read together with the one before (same arrival stamp: ITL exactly 0)."""
    return float(100 * np.mean(itl_ms == 0)) if len(itl_ms) else math.nan


def _split_by_hit(ok: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Requests that reused some cached tokens, and those that reused none (full prefill).
    A request whose server reported no cached_tokens is in neither."""
    if "cached_tokens" not in ok.columns:
        return ok.iloc[:0], ok.iloc[:0]
    cached = pd.to_numeric(ok["cached_tokens"], errors="coerce")
    return ok[cached > 0], ok[cached == 0]


def round_summary(rows: pd.DataFrame) -> dict:
    """Summary of one round's rows (all requests, failed ones included)."""
    ok = rows[rows["ok"].astype(str).str.lower() == "true"]
    ttft, tpot, e2e = _nums(ok, "ttft_ms"), _nums(ok, "tpot_ms"), _nums(ok, "e2e_ms")
    itl = _itls(ok)
    send = pd.to_numeric(rows["send_s"], errors="coerce")
    start = send.min() if len(rows) else math.nan  # rows aligned: a row without e2e (torn line) has no end
    end = (send + pd.to_numeric(rows["e2e_ms"], errors="coerce") / 1e3).max() if len(rows) else math.nan
    duration = float(end - start) if len(rows) else math.nan
    prompt = _nums(ok, "prompt_tokens").sum()
    completion = _nums(ok, "completion_tokens").sum()
    cached = _nums(ok, "cached_tokens").sum()
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
        "itl_p50_ms": _pct(itl, 50),
        "itl_p99_ms": _pct(itl, 99),
        # How long first tokens waited in the client before it parsed them (TTFT
        # excludes it), and how many tokens shared a read with the previous one.
        "client_lag_p99_ms": _pct(_nums(ok, "first_token_lag_ms"), 99),
        "shared_stamp_pct": shared_stamp_pct(itl),
        "read_delay_p99_ms": _pct(_nums(ok, "read_delay_ms"), 99),
        # Round 1 reuses shared prefixes within the round, so its mean mixes full prefills
        # with hits: this split shows what a hit saves even inside one round.
        "misses": int(len(miss)) if len(hit) + len(miss) else math.nan,  # unknown, not 0, without usage
        "ttft_miss_mean_ms": _mean(_nums(miss, "ttft_ms")),
        "ttft_hit_mean_ms": _mean(_nums(hit, "ttft_ms")),
        "e2e_mean_ms": _mean(e2e),
        "e2e_p90_ms": _pct(e2e, 90),
        "duration_s": duration,
        "req_per_s": per_s(len(ok)),
        "output_tok_per_s": per_s(completion),
        "total_tok_per_s": per_s(prompt + completion),
        "prompt_tokens": int(prompt),
        "completion_tokens": int(completion),
        "cached_tokens": int(cached),
        "cached_token_ratio": float(cached / prompt) if prompt else math.nan,
    }


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
    return (f"{shared:.1f} % of tokens shared a read with the one before, and reads came up to "
            f"{delay:.1f} ms (p99) after the data arrived: the client could not keep up (too many streams, or "
            f"too little CPU left for it); lower the concurrency")


def gains(first: dict, later: dict, targets: Targets) -> dict:
    """Round-over-round change of a warm round against the cold round 1."""
    ttft_red = _reduction(first["ttft_mean_ms"], later["ttft_mean_ms"])
    tput_inc = _increase(first["req_per_s"], later["req_per_s"])
    return {
        "ttft_reduction_pct": ttft_red,
        "ttft_p50_reduction_pct": _reduction(first["ttft_p50_ms"], later["ttft_p50_ms"]),
        "throughput_improvement_pct": tput_inc,
        "ttft_target_met": bool(ttft_red >= targets.ttft_reduction_percent) if not math.isnan(ttft_red) else False,
        "throughput_target_met": bool(tput_inc >= targets.throughput_increase_percent)
        if not math.isnan(tput_inc) else False,
    }


def _reduction(before: float, after: float) -> float:
    if not before or math.isnan(before) or math.isnan(after):
        return math.nan
    return (1.0 - after / before) * 100.0


def _increase(before: float, after: float) -> float:
    if not before or math.isnan(before) or math.isnan(after):
        return math.nan
    return (after / before - 1.0) * 100.0


def rounds_table(requests: pd.DataFrame, targets: Targets) -> pd.DataFrame:
    """One row per round of one scenario; rounds 2+ carry their gains over round 1."""
    out: list[dict] = []
    first: dict | None = None
    for rnd, rows in sorted(requests.groupby("round"), key=lambda kv: int(kv[0])):
        s = {"round": int(rnd), "phase": "cold" if int(rnd) == 1 else "warm", **round_summary(rows)}
        if first is None:
            first = s
        else:
            s.update(gains(first, s, targets))
        out.append(s)
    return pd.DataFrame(out)


# Resampling n requests 2000 times costs n * 2000 draws: past this many requests per round the
# bootstrap distribution of a mean is drawn from its normal limit (mean, sd / sqrt(n)) instead.
EXACT_BOOTSTRAP_MAX = 20_000
_CHUNK = 4_000_000  # resampled values held in memory at once


def _boot_means(v: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` bootstrap means of `v` (exact resampling in bounded memory, or the normal limit for large v)."""
    if len(v) > EXACT_BOOTSTRAP_MAX:
        return rng.normal(v.mean(), v.std(ddof=1) / math.sqrt(len(v)), n)
    per = max(1, _CHUNK // len(v))
    return np.concatenate([rng.choice(v, (min(per, n - i), len(v))).mean(axis=1) for i in range(0, n, per)])


def bootstrap_ci(cold: Sequence[float], warm: Sequence[float], n: int = 2000, seed: int = 0,
                 level: float = 95.0) -> tuple[float, float]:
    """CI of the mean-TTFT reduction % (warm vs cold), resampling requests within each round."""
    c, w = np.asarray(cold, dtype=float), np.asarray(warm, dtype=float)
    c, w = c[np.isfinite(c)], w[np.isfinite(w)]
    if len(c) < 2 or len(w) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    cm = _boot_means(c, n, rng)
    wm = _boot_means(w, n, rng)
    red = (1.0 - wm / cm) * 100.0
    lo = (100.0 - level) / 2
    return float(np.percentile(red, lo)), float(np.percentile(red, 100.0 - lo))


def bootstrap_mean_ci(values: Sequence[float], n: int = 2000, seed: int = 0,
                      level: float = 95.0) -> tuple[float, float]:
    """CI of a mean over independent repeats (e.g. per-repeat throughput gain)."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    means = _boot_means(v, n, np.random.default_rng(seed))
    lo = (100.0 - level) / 2
    return float(np.percentile(means, lo)), float(np.percentile(means, 100.0 - lo))
