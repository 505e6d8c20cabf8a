"""Four arms against the working set: what the store adds over vLLM's own prefix cache, and from which
working set on. Pure: frames in, frames and sentences out.

The arms (config.ARMS) by their cell names (rows' `mode`): baseline = none (no prefix cache, no
connector), local (vLLM's prefix cache in the engine's own KV pool), with-cache = store (the KV
connector to Mooncake, no local prefix cache), local+store (both). Every figure is over a cell's
measured rounds: the warm rounds (2+), which revisit exactly the prompts of round 1.

- Hit rates by tier, as shares of the measured rounds' prompt tokens (the server's own
  `vllm:prompt_tokens` delta): `local_pct` = vllm:prefix_cache_hits (the engine's own pool),
  `store_pct` = vllm:external_prefix_cache_hits (through the connector), `reusable_pct` = what an
  unbounded cache could give the same requests (reuse.expected_reuse), and `lru_local_pct` = what an
  LRU pool of the engine's allocated blocks gives them (reuse.lru_local_by_round): the local hit
  rate the pool's size predicts, beside the measured one.
- TTFT per arm (mean, p50) with its interval: with one repeat the Student-t interval over the
  measured requests (within-run: it says nothing of run-to-run spread); with several, Student-t
  over the repeats' means.
- local+store vs local per ratio: the change of the mean TTFT, paired by prompt (one repeat:
  intervals.paired_mean_change_pct, within-run) or over the repeats' changes
  (intervals.repeats_change_pct: t on the log scale).
- The crossover R0: the smallest measured ratio from which on local+store is faster than local at
  every measured ratio with its whole interval below 0 and tokens from the store. A ratio where
  local+store served nothing from the store is not a gain of the store, whatever its interval says:
  the two arms differ there only in their stacks (a within-run interval does not span that).
  Named from the data, never extrapolated.
- Controls (`control_problem`): an arm that measured something else than it claims is misconfigured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.analysis.frames import num
from harness.analysis.intervals import (
    Interval,
    change_pct,
    paired_mean_change_pct,
    repeats_change_pct,
    t_interval,
    t_mean,
)
from harness.config import ARM_OF_MODE

ARM_ORDER = ("none", "local", "store", "local+store")
LOCAL_ARMS = ("local", "local+store")
CONNECTOR_ARMS = ("store", "local+store")


@dataclass(frozen=True)
class Crossover:
    """R0 and the figures of the verdict line (ratios as measured)."""

    r0: float | None  # None: local+store never clearly paid over the measured ratios
    at: float  # the ratio the headline figure is for (the largest measured)
    change: Interval  # local+store vs local TTFT mean change at `at`
    below: list[tuple[float, Interval]]  # the ratios under R0 and their changes
    ratios: list[float]
    no_store: list[float] = field(default_factory=list)  # ratios where local+store got 0 store hits


def _sum(g: pd.DataFrame, col: str) -> float:
    v = num(g, col)
    return float(v.sum()) if v.notna().any() else math.nan


def _pct(part: float, whole: float) -> float:
    return 100 * part / whole if whole and not math.isnan(whole) and not math.isnan(part) else math.nan


def _within(values: np.ndarray) -> Interval:
    """Mean and Student-t interval over one run's requests: within-run only."""
    v = values[np.isfinite(values)]
    if len(v) < 2:
        return Interval(float(v.mean()) if len(v) else math.nan, math.nan, math.nan, len(v), "n/a (< 2 requests)")
    lo, hi = t_interval(v)
    return Interval(float(v.mean()), lo, hi, len(v), f"t over {len(v)} requests (within-run: 1 repeat)")


def ratio_of(scenario: str, workloads: Mapping[str, tuple[int, int]], pool_tokens: float) -> float:
    """Working set / pool of a working-set scenario: D x L tokens over the pool in tokens."""
    d, length = workloads.get(scenario, (0, 0))
    return d * length / pool_tokens if d and pool_tokens and not math.isnan(pool_tokens) else math.nan


def arm_table(
    rounds: pd.DataFrame, requests: pd.DataFrame, workloads: Mapping[str, tuple[int, int]], block: int
) -> pd.DataFrame:
    """One row per working-set scenario (ratio) and arm, over the measured rounds (2+).

    `rounds`: rounds.csv rows with dir, scenario, mode, repeat, round; `requests`: successful
    requests (dir, round, pid, ttft_ms); `workloads`: scenario -> (documents, document tokens);
    `block`: tokens per KV block (the pool in tokens = engine_pool_blocks x block)."""
    if rounds.empty or not workloads:
        return pd.DataFrame()
    r = rounds[rounds["scenario"].isin(list(workloads)) & (rounds["round"] > 1) & rounds["mode"].isin(ARM_OF_MODE)]
    rows = []
    for (scen, mode), g in r.groupby(["scenario", "mode"], sort=False):
        pool = num(g, "engine_pool_blocks").dropna()
        pool_tokens = float(pool.iloc[0]) * block if len(pool) else math.nan
        prompt = _sum(g, "vllm_prompt_tokens")
        prompt = prompt if not math.isnan(prompt) and prompt > 0 else _sum(g, "prompt_tokens")
        req = requests[requests["dir"].isin(g["dir"].unique()) & (requests["round"] > 1)]
        ttft = req["ttft_ms"].to_numpy(dtype=float)
        repeats = g["repeat"].nunique()
        if repeats >= 2:
            per_rep = req.groupby(req["dir"])["ttft_ms"].mean().to_numpy(dtype=float)
            mean_iv = t_mean(per_rep)
        else:
            mean_iv = _within(ttft)
        d, length = workloads[scen]
        rows.append(
            {
                "scenario": scen,
                "arm": ARM_OF_MODE[mode],
                "mode": mode,
                "documents": d,
                "document_tokens": length,
                "pool_blocks": float(pool.iloc[0]) if len(pool) else math.nan,
                "pool_tokens": pool_tokens,
                "ratio": ratio_of(scen, workloads, pool_tokens),
                "repeats": repeats,
                "requests": len(ttft),
                "prompt_tokens": prompt,
                "local_pct": _pct(_sum(g, "local_hits"), prompt),
                "store_pct": _pct(_sum(g, "external_hits"), prompt),
                "reusable_pct": _pct(_sum(g, "expected_reuse_tokens"), prompt),
                "lru_local_pct": _pct(_sum(g, "lru_local_reuse_tokens"), prompt),
                "evicted_keys": _sum(g, "master_evicted_keys"),
                "ttft_mean_ms": mean_iv.estimate,
                "ttft_lo": mean_iv.lo,
                "ttft_hi": mean_iv.hi,
                "ttft_method": mean_iv.method,
                "ttft_p50_ms": float(np.nanmedian(ttft)) if len(ttft) else math.nan,
            }
        )
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows)
    out["arm_rank"] = out["arm"].map(ARM_ORDER.index)
    return out.sort_values(["ratio", "scenario", "arm_rank"], ignore_index=True).drop(columns="arm_rank")


def arm_change(rounds: pd.DataFrame, requests: pd.DataFrame, scenario: str, new: str, old: str) -> Interval:
    """The change of the measured rounds' mean TTFT from arm `old` to arm `new` (cell modes) on one
    scenario, in %: one repeat, paired by prompt and round (within-run); several, over the repeats'
    changes (repeat k of one arm against repeat k of the other; intervals.repeats_change_pct)."""
    r = rounds[(rounds["scenario"] == scenario) & (rounds["round"] > 1)]
    dirs = {m: r.loc[r["mode"] == m, ["dir", "repeat"]].drop_duplicates() for m in (new, old)}
    if dirs[new].empty or dirs[old].empty:
        return Interval(math.nan, math.nan, math.nan, 0, "n/a (an arm is missing)")
    req = requests[requests["round"] > 1]

    def side(mode: str, rep: int | None = None) -> pd.Series:
        d = dirs[mode] if rep is None else dirs[mode][dirs[mode]["repeat"] == rep]
        x = req[req["dir"].isin(d["dir"])]
        return x.groupby(["round", "pid"])["ttft_ms"].mean()

    reps = sorted(set(dirs[new]["repeat"]) & set(dirs[old]["repeat"]))
    if len(reps) >= 2:
        changes = []
        for k in reps:
            a, b = side(old, k), side(new, k)
            changes.append(change_pct(float(a.mean()), float(b.mean())))
        return repeats_change_pct(changes)  # on the log scale: every bound a possible change
    a, b = side(old), side(new)
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
    iv = paired_mean_change_pct(both["a"].to_numpy(), both["b"].to_numpy())
    return Interval(iv.estimate, iv.lo, iv.hi, iv.n, f"{iv.method}; within-run (1 repeat), paired by prompt")


def changes_by_ratio(
    table: pd.DataFrame, rounds: pd.DataFrame, requests: pd.DataFrame, new: str = "local+store", old: str = "local"
) -> pd.DataFrame:
    """Per ratio (scenario), arm `new` vs arm `old` (arm names): TTFT mean change with its interval."""
    if table.empty:
        return pd.DataFrame()
    mode = {a: m for m, a in ARM_OF_MODE.items()}
    rows = []
    for scen, g in table.groupby("scenario", sort=False):
        if not {new, old} <= set(g["arm"]):
            continue
        iv = arm_change(rounds, requests, str(scen), mode[new], mode[old])
        store = g.loc[g["arm"] == new, "store_pct"] if "store_pct" in g else pd.Series(dtype=float)
        rows.append(
            {
                "scenario": scen,
                "ratio": float(g["ratio"].iloc[0]),
                "new": new,
                "old": old,
                "change": iv.estimate,
                "lo": iv.lo,
                "hi": iv.hi,
                "n": iv.n,
                "method": iv.method,
                "store_pct": float(store.iloc[0]) if len(store) else math.nan,  # the new arm's
            }
        )
    return pd.DataFrame(rows).sort_values("ratio", ignore_index=True) if rows else pd.DataFrame()


def crossover(changes: pd.DataFrame) -> Crossover | None:
    """R0 from the measured ratios: the smallest ratio from which on every measured ratio has
    local+store faster than local with its whole interval below 0 and hits from the store (a ratio
    with 0 % from the store is never a win). None without two arms' data."""
    if changes.empty:
        return None
    c = changes.dropna(subset=["ratio"]).sort_values("ratio")
    if c.empty:
        return None
    store = c["store_pct"] if "store_pct" in c else pd.Series(math.nan, index=c.index)
    no_store = [float(r) for r, pct in zip(c["ratio"], store) if pct == 0]
    wins = [bool(hi < 0) and float(r) not in no_store for r, hi in zip(c["ratio"], c["hi"])]  # NaN < 0 is False
    r0 = None
    for i in range(len(c)):
        if all(wins[i:]):
            r0 = float(c["ratio"].iloc[i])
            break
    last = c.iloc[-1]
    below = [
        (float(x["ratio"]), Interval(x["change"], x["lo"], x["hi"], int(x["n"]), x["method"]))
        for x in c.to_dict("records")
        if r0 is None or x["ratio"] < r0
    ]
    head = Interval(last["change"], last["lo"], last["hi"], int(last["n"]), last["method"])
    return Crossover(r0, float(last["ratio"]), head, below, [float(x) for x in c["ratio"]], no_store)


def _ci(iv: Interval) -> str:
    return "no interval" if math.isnan(iv.lo) else f"[{iv.lo:+.1f}, {iv.hi:+.1f}]"


def verdict_line(x: Crossover | None) -> str:
    """The store against vLLM's own prefix cache, in one sentence from the measured ratios."""
    if x is None:
        return (
            "No verdict on the store over vLLM's own prefix cache: this run lacks a local and a local+store "
            "arm on the same working-set scenarios (run --mode none,local,store,local+store)."
        )
    within = "within-run" in x.change.method
    head = (
        f"At working set / pool = {x.at:g}, local+store's TTFT mean is {x.change.estimate:+.1f} % "
        f"{_ci(x.change)} vs vLLM's own prefix cache alone (local)"
        + (" (interval within-run: 1 repeat)" if within else "")
    )
    costs = [(r, iv) for r, iv in x.below if not math.isnan(iv.lo) and iv.lo > 0]
    faster = [(r, iv) for r, iv in x.below if iv.hi < 0]  # NaN < 0 is False: no interval, no claim
    wins = [(r, iv) for r, iv in faster if r not in x.no_store]
    unearned = [(r, iv) for r, iv in faster if r in x.no_store]
    nothing = [r for r, iv in x.below if all(r != c[0] for c in costs + wins + unearned)]
    parts = []
    if unearned:
        parts.append(
            "is faster at "
            + ", ".join(f"{r:g} ({iv.estimate:+.1f} % {_ci(iv)})" for r, iv in unearned)
            + " without a token from the store: not the store's gain, the two arms' stacks differ"
            + (" (a within-run interval does not span that)" if within else "")
        )
    if nothing:
        parts.append(f"adds nothing within its interval at {', '.join(f'{r:g}' for r in nothing)}")
    if costs:
        worst = max(costs, key=lambda c: c[1].estimate)
        parts.append(f"costs up to {worst[1].estimate:+.1f} % {_ci(worst[1])} (at {worst[0]:g})")
    if wins:
        best = min(wins, key=lambda c: c[1].estimate)
        parts.append(
            f"is faster at {', '.join(f'{r:g}' for r, _ in wins)} (up to {best[1].estimate:+.1f} % {_ci(best[1])} "
            f"at {best[0]:g}) but not at every larger ratio"
        )
    if x.r0 is None:
        tail = "; no R0 (no measured ratio from which on it is faster at every larger one): it " + ", ".join(parts)
    elif parts:
        tail = f"; from R0 = {x.r0:g} on it is faster at every measured ratio; below R0 it " + ", ".join(parts)
    else:
        tail = f"; it is faster at every measured ratio (R0 = {x.r0:g}, the smallest measured)"
    return head + tail + "."


# ------------------------------------------------------------------ controls


def control_problem(mode: str, warm: pd.DataFrame, block: int | None) -> str | None:
    """Why a cell's arm measured something else than it claims (None: it did what it says), from its
    measured rounds' counters (rounds.csv rows, round > 1). Missing counters judge nothing.

    - a connector arm (store, local+store) with 0 external hits where the workload expected reuse
      beyond the local pool (store: any reusable prefix; local+store: reuse an LRU pool of the
      engine's size would miss);
    - a local arm (local, local+store) with 0 local hits where an LRU pool of the engine's size
      should hold reusable prefixes;
    - an arm without the connector with external hits, or without the local cache with local hits."""
    arm = ARM_OF_MODE.get(mode)
    if arm is None or warm.empty:
        return None
    one = block or 1
    local, external = _sum(warm, "local_hits"), _sum(warm, "external_hits")
    expected, lru = _sum(warm, "expected_reuse_tokens"), _sum(warm, "lru_local_reuse_tokens")
    problems = []
    if arm in CONNECTOR_ARMS and not math.isnan(external) and external == 0 and not math.isnan(expected):
        beyond = expected - (lru if arm == "local+store" and not math.isnan(lru) else 0)
        if beyond >= one:
            problems.append(
                f"the connector arm {arm} got 0 external hits in its measured rounds where the workload expected "
                f"{beyond:,.0f} reusable tokens beyond the local pool"
            )
    if arm in LOCAL_ARMS and not math.isnan(local) and local == 0 and not math.isnan(lru) and lru >= one:
        problems.append(
            f"the {arm} arm got 0 local prefix-cache hits where an LRU pool of the engine's size should hold "
            f"{lru:,.0f} reusable tokens"
        )
    if arm not in CONNECTOR_ARMS and not math.isnan(external) and external > 0:
        problems.append(f"the {arm} arm has no connector but counted {external:,.0f} external hits")
    if arm not in LOCAL_ARMS and not math.isnan(local) and local > 0:
        problems.append(f"the {arm} arm runs without vLLM's prefix cache but counted {local:,.0f} local hits")
    return "; ".join(problems) or None
