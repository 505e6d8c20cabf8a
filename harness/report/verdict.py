"""What reuse buys: the same prompts with the KV connector and without it (baseline), and whether
the reused KV gave the same output.

Round-over-round figures compare round 2 with a round 1 that is itself mostly warm whenever a
scenario's requests share a prefix; the honest comparison is with-cache vs baseline, round by
round, on the same prompts, each on its own fresh stack. Intervals (harness.intervals):

* one repeat: per-prompt paired TTFT change (baseline -> with cache), BCa over prompts; no
  interval for throughput (one value per stack);
* several repeats: Student-t over the repeats' values of each figure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..intervals import Interval, paired_change_pct_bca, t_interval
from ..metrics import HEADLINE
from .data import RunData, col, ok_requests


def _change(base: float, cache: float) -> float:
    return (cache / base - 1) * 100 if base and not math.isnan(base) and not math.isnan(cache) else math.nan


def _paired(req: pd.DataFrame, base: pd.DataFrame, cache: pd.DataFrame, rnd: int) -> pd.DataFrame:
    """TTFT of the same prompt in the same round and repeat, baseline vs with cache."""

    def side(rounds: pd.DataFrame) -> pd.DataFrame:
        rep = dict(zip(rounds["dir"], rounds["repeat"]))
        rows = req[req["dir"].isin(list(rep)) & (req["round"] == rnd)].drop_duplicates(["dir", "pid"])
        return rows.assign(repeat=rows["dir"].map(rep))[["repeat", "pid", "ttft_ms"]]

    return side(base).merge(side(cache), on=["repeat", "pid"], suffixes=("_base", "_cache"))


def _paired_change(pairs: pd.DataFrame) -> Interval:
    """One repeat: BCa over its prompts. Several: each repeat's paired estimate, Student-t over them."""
    if pairs.empty:
        return Interval(math.nan, math.nan, math.nan, 0, "n/a (no pairs)")
    per_rep = [paired_change_pct_bca(g["ttft_ms_base"], g["ttft_ms_cache"]) for _, g in pairs.groupby("repeat")]
    if len(per_rep) == 1:
        return per_rep[0]
    est = [iv.estimate for iv in per_rep]
    return Interval(float(np.mean(est)), *t_interval(est), len(pairs), f"t over {len(est)} repeats")


def _per_repeat(rounds: pd.DataFrame, metric: str) -> dict[int, float]:
    return col(rounds, metric).groupby(rounds["repeat"]).mean().to_dict()


def reuse_buys(data: RunData) -> pd.DataFrame:
    """Per scenario (fresh stacks) and round: each headline metric with vs without the cache, its
    change in %, the interval of that change, and the typical per-prompt TTFT change."""
    r = data.rounds
    if r.empty or not {"with-cache", "baseline"} <= set(r["mode"]):
        return pd.DataFrame()
    req = ok_requests(data)
    r = r[(r["isolation"] == "fresh") & ~col(r, "partial").fillna(0).astype(bool)]
    rows = []
    r = r.assign(point=r["point"] if "point" in r else "")
    for (scen, point, rnd), g in r.groupby(["scenario", "point", "round"], sort=False):
        base, cache = g[g["mode"] == "baseline"], g[g["mode"] == "with-cache"]
        if base.empty or cache.empty:
            continue
        reps = sorted(set(base["repeat"]) & set(cache["repeat"]))
        row: dict = {
            "scenario": scen,
            "point": point,  # a sweep point: with and without the cache at the same settings
            "label": f"{scen} [{point}]" if point else scen,
            "round": int(rnd),
            "repeats": len(reps),
            "phase with cache": "/".join(sorted(set(cache["phase"].astype(str)))) if "phase" in cache else "?",
        }
        for metric in HEADLINE:
            b, c = _per_repeat(base, metric), _per_repeat(cache, metric)
            changes = [_change(b[k], c[k]) for k in reps]
            row[f"{metric}_base"], row[f"{metric}_cache"] = np.mean(list(b.values())), np.mean(list(c.values()))
            row[f"{metric}_change"] = float(np.mean(changes)) if changes else math.nan
            row[f"{metric}_lo"], row[f"{metric}_hi"] = t_interval(changes)  # (nan, nan) at one repeat
        iv = _paired_change(_paired(req, base, cache, int(rnd)) if len(req) else pd.DataFrame())
        row.update(paired_change=iv.estimate, paired_lo=iv.lo, paired_hi=iv.hi, pairs=iv.n, paired_method=iv.method)
        rows.append(row)
    return pd.DataFrame(rows)


def targets_vs_baseline(table: pd.DataFrame, ttft_reduction: float, tput_increase: float) -> pd.DataFrame:
    """The seed's targets checked against the with-cache vs baseline comparison."""
    if table.empty:
        return table

    def verdict(v: float, ok: bool) -> str:
        return "n/a" if math.isnan(v) else ("pass" if ok else "FAIL")

    return table.assign(
        ttft_target=[verdict(v, -v >= ttft_reduction) for v in table["ttft_mean_ms_change"]],
        tput_target=[verdict(v, v >= tput_increase) for v in table["req_per_s_change"]],
    )


def headline_round(table: pd.DataFrame) -> pd.DataFrame:
    """The row per scenario the console leads with: its last round (the warmest with the cache)."""
    if table.empty:
        return table
    return table.sort_values("round").groupby("label", sort=False).tail(1)


def fidelity(data: RunData) -> pd.DataFrame:
    """Per scenario: share of prompts whose generated tokens are identical cold (round 1) vs warm
    (rounds 2+) with the cache, and with the cache vs baseline in the same round. At temperature 0
    a reused KV that is right gives the same tokens; a mismatch is numerical noise or wrong KV. The
    check only means something when different prompts give different outputs: `distinct prompts`
    vs `distinct outputs` says whether it could have failed."""
    req = ok_requests(data)
    if req.empty or (req["out"] < 0).all():
        return pd.DataFrame()
    req = req[req["out"] >= 0]
    d = req["dir"].to_numpy(dtype=int)
    req = req.assign(
        mode=data.dirs["mode"].to_numpy()[d],
        scenario=data.dirs["scenario"].to_numpy()[d],
        iso=data.dirs["isolation"].to_numpy()[d],
    )
    req = req[req["iso"] == "fresh"]
    rows = []
    for scen, g in req.groupby("scenario", sort=False):
        cache = g[g["mode"] == "with-cache"]
        # A check that cannot fail is no evidence: when different prompts all produce the same
        # tokens (a degenerate model at temperature 0), identical outputs say nothing about the KV.
        row = {
            "scenario": scen,
            "distinct prompts": int(g["pid"].nunique()),
            "distinct outputs": int(g["out"].nunique()),
        }
        row.update(_same(cache[cache["round"] == 1], cache[cache["round"] > 1], ["dir", "pid"], "warm vs cold"))
        row.update(_same(g[g["mode"] == "baseline"], cache, ["round", "pid"], "with cache vs baseline"))
        rows.append(row)
    return pd.DataFrame(rows)


def _same(a: pd.DataFrame, b: pd.DataFrame, on: list[str], name: str) -> dict:
    pairs = a[[*on, "out"]].merge(b[[*on, "out"]], on=on, suffixes=("_a", "_b"))
    n = len(pairs)
    same = int((pairs["out_a"] == pairs["out_b"]).sum())
    return {f"{name} identical": same, f"{name} pairs": n, f"{name} %": 100 * same / n if n else math.nan}
