"""What reuse a scenario can expect from itself, and what it actually got.

A request can reuse KV blocks only for a prefix that an *earlier* request of
the same scenario already computed: the same prompt (`prompt_id`) or the shared
part (`prefix_key`: document, instruction, conversation history). Only whole
blocks count, and the block holding the last prompt token is always recomputed.
"Earlier" means sent earlier: the engine looks the cache up when it schedules a
request, which may be after an earlier request's prefill even if both were sent
together, so the expectation is an upper bound - and the scenario's very first
request can never expect anything.

Hits beyond that are foreign: they came from outside the scenario, i.e. from a
cache that was not cold. That is the contamination a shared stack causes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _full_blocks(tokens: float, block: int) -> int:
    return int(tokens // block) * block


def expected_reuse(requests: pd.DataFrame, block: int) -> pd.Series:
    """Reusable tokens per request (index aligned with `requests`), from the scenario's own history."""
    df = requests
    ready_prompt: dict[str, float] = {}  # prompt_id -> earliest send time
    ready_prefix: dict[str, float] = {}
    out = pd.Series(0, index=df.index, dtype=int)
    for idx, r in df.sort_values("send_s").iterrows():
        whole = _full_blocks(max(int(r["prompt_tokens"] or r["expected_prompt_tokens"]) - 1, 0), block)
        shared = _full_blocks(r.get("shared_prefix_tokens") or 0, block)
        key = r.get("prefix_key")
        if ready_prompt.get(r["prompt_id"], math.inf) < r["send_s"]:
            out[idx] = whole
        elif isinstance(key, str) and key and ready_prefix.get(key, math.inf) < r["send_s"]:
            out[idx] = min(shared, whole)
        t = r["send_s"]
        ready_prompt[r["prompt_id"]] = min(ready_prompt.get(r["prompt_id"], math.inf), t)
        own_key = r.get("provides_prefix_key")
        if isinstance(own_key, str) and own_key:
            ready_prefix[own_key] = min(ready_prefix.get(own_key, math.inf), t)
    return out


def reuse_by_round(requests: pd.DataFrame, block: int | None) -> pd.DataFrame:
    """Per round: expected reusable tokens, achieved (cached_tokens), ratio, and foreign hits."""
    if not block or requests.empty:
        return pd.DataFrame({"round": sorted(requests["round"].unique())})
    df = requests.copy()
    df["expected_reuse"] = expected_reuse(df, block)
    df["cached"] = pd.to_numeric(df["cached_tokens"], errors="coerce").fillna(0)
    df["foreign"] = (df["cached"] - df["expected_reuse"]).clip(lower=0)
    rows = []
    for rnd, g in df.groupby("round"):
        exp, got = int(g["expected_reuse"].sum()), int(g["cached"].sum())
        rows.append({
            "round": int(rnd),
            "expected_reuse_tokens": exp,
            "achieved_reuse_tokens": got,
            "reuse_achieved_ratio": got / exp if exp else (math.nan if got == 0 else math.inf),
            "foreign_hit_tokens": int(g["foreign"].sum()),
        })
    return pd.DataFrame(rows)


def ttft_speedups(requests: pd.DataFrame) -> pd.DataFrame:
    """Pair each warm request with the same prompt's cold request: TTFT speed-up (cold / warm)."""
    ok = requests[requests["ok"].astype(str).str.lower() == "true"]
    cold = ok[ok["round"] == 1].groupby("prompt_id")["ttft_ms"].first()
    rows = []
    for rnd, g in ok[ok["round"] > 1].groupby("round"):
        warm = g.groupby("prompt_id")["ttft_ms"].first()
        s = (cold / warm).dropna()
        s = s[np.isfinite(s)]
        row = {"round": int(rnd), "paired_requests": int(len(s))}
        for q in (10, 50, 90):
            row[f"ttft_speedup_p{q}"] = float(np.percentile(s, q)) if len(s) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
