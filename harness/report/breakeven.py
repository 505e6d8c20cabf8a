"""The break-even prefix length: above which fetching a prefix's KV beats recomputing it.

From a run of cold_start scenarios of several prompt lengths (configs/breakeven.yaml), each with
and without the connector on fresh stacks: in the warm round every prompt is a repeat, so with the
cache its whole prompt (but the last partial block) is fetched, and without it recomputed
(requests at concurrency 1: no queueing). Fits, least squares over the requests: fetching as
fixed cost + per-token cost (bytes moved grow linearly); recomputing as fixed + per-token +
per-token-squared cost (attention over the prefix grows with its square: a line alone puts a
negative fixed cost under an 8k-token curve). The crossover is where the fitted curves last cross
inside the measured lengths (the shortest length from which fetching stays faster, up to the
longest measured); where they do not cross inside the data, one path is faster at every measured
length, and that is what is said. Its 95 % interval comes from a bootstrap over requests (within
each scenario and mode); a replicate without a crossing in the data counts as beyond it, so a bound
can be open-ended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.polynomial import polynomial as P

from harness.records import ISOLATED
from harness.records.metrics import fmt
from harness.report.data import RunData, ok_requests

MIN_LENGTHS = 4  # distinct prompt lengths with both modes before a curve is fitted
BOOTSTRAP = 1000


DEGREE = {"with-cache": 1, "baseline": 2}  # fetch: linear in bytes; recompute: attention is quadratic
PATHS = {True: "fetch", False: "recompute"}  # fetch faster?


@dataclass
class BreakEven:
    points: pd.DataFrame  # per scenario: tokens, TTFT mean with / without, requests per mode
    fits: dict[str, tuple[float, ...]]  # mode -> (fixed ms, ms per 1k tokens[, ms per (1k tokens)^2])
    crossover: float  # tokens: where the fitted curves last cross inside the measured lengths; nan: no crossing there
    lo: float  # 95 % bootstrap interval; -inf / +inf: open below the shortest / above the longest length
    hi: float
    longest: float
    shortest: float = math.nan
    faster_above: str = "fetch"  # the path faster above the crossover, or at every measured length without one
    replicates: int = BOOTSTRAP

    @property
    def crosses(self) -> bool:
        return bool(np.isfinite(self.crossover))


def _fit(x: np.ndarray, y: np.ndarray, degree: int) -> tuple[float, ...]:
    """Coefficients, lowest power first, in ms per (1,000 tokens)^k."""
    return tuple(float(c) for c in np.polyfit(x / 1e3, y, degree)[::-1])


def ttft(fit: tuple[float, ...], tokens: np.ndarray | float) -> np.ndarray:
    """The fitted TTFT (ms) at these prompt lengths."""
    return np.polynomial.polynomial.polyval(np.asarray(tokens, dtype=float) / 1e3, fit)


def _cross(w: tuple[float, ...], b: tuple[float, ...], shortest: float, longest: float) -> tuple[float, str]:
    """Where the fitted curves last cross inside [shortest, longest] (tokens) and the path faster
    above that point; (nan, the path faster at every measured length) when they do not cross there.
    Solved exactly (the difference is a polynomial), never looked for outside the data: a fit says
    nothing about lengths nobody measured."""
    diff = P.polysub(w, b)  # fetch minus recompute, ms, in 1k tokens
    roots = P.polyroots(diff) if np.any(np.abs(diff[1:]) > 0) else np.empty(0)
    at = np.sort(roots[np.abs(roots.imag) < 1e-9].real * 1e3)
    inside = at[(at >= shortest) & (at <= longest)]
    above = PATHS[bool(ttft(w, longest) < ttft(b, longest))]
    return (float(inside[-1]), above) if len(inside) else (math.nan, above)


def _placed(crossing: float, above: str, faster_above: str) -> float:
    """A bootstrap replicate's crossover on the point estimate's axis: one without a crossing in the
    data is beyond it (-inf: its faster-above path already wins at the shortest length; +inf: not
    yet at the longest), so it still counts in the percentiles instead of being dropped."""
    if np.isfinite(crossing):
        return crossing
    return -math.inf if above == faster_above else math.inf


def _interval(values: np.ndarray) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of every replicate, infinite ones included: inverted-CDF picks
    a replicate's own value, so an infinite bound stays infinite (the interval is open there)."""
    lo, hi = np.quantile(values, [0.025, 0.975], method="inverted_cdf")
    return float(lo), float(hi)


def _warm_cold_start(data: RunData) -> pd.DataFrame:
    """The warm round's successful requests of fresh cold_start scenarios measured in both modes."""
    config = data.manifest.config if data.manifest else {}
    kinds = {name: sc.get("kind") for name, sc in (config.get("scenarios") or {}).items()}
    req = ok_requests(data)
    dirs = data.dirs
    idx = req["dir"].to_numpy(dtype=int)
    req = req.assign(scenario=dirs["scenario"].to_numpy()[idx], mode=dirs["mode"].to_numpy()[idx],
                     isolation=dirs["isolation"].to_numpy()[idx])  # fmt: skip
    last = req.groupby("dir")["round"].transform("max")
    warm = req[(req["round"] == last) & (req["round"] > 1) & req["isolation"].isin(ISOLATED)]
    warm = warm[warm["scenario"].map(kinds) == "cold_start"].dropna(subset=["prompt_tokens", "ttft_ms"])
    both = warm.groupby("scenario")["mode"].nunique()
    return warm[warm["scenario"].isin(both[both == 2].index)]


def _distinct_lengths(warm: pd.DataFrame) -> int:
    """Prompt lengths measured, not scenarios: two scenarios at one length add no point to a fit."""
    return int(warm.groupby("scenario")["prompt_tokens"].median().round().nunique())


def _bootstrap(warm: pd.DataFrame, shortest: float, longest: float, faster_above: str) -> np.ndarray:
    """The crossover of BOOTSTRAP refits, requests resampled within each scenario and mode."""
    rng = np.random.default_rng(0)
    groups = {key: (g["prompt_tokens"].to_numpy(float), g["ttft_ms"].to_numpy(float))
              for key, g in warm.groupby(["scenario", "mode"])}  # fmt: skip
    out = np.empty(BOOTSTRAP)
    for i in range(BOOTSTRAP):
        f = {}
        for mode in ("with-cache", "baseline"):
            picks = [(x[j], y[j]) for (_, m), (x, y) in groups.items() if m == mode
                     for j in [rng.integers(0, len(x), len(x))]]  # fmt: skip
            f[mode] = _fit(np.concatenate([p[0] for p in picks]), np.concatenate([p[1] for p in picks]), DEGREE[mode])
        out[i] = _placed(*_cross(f["with-cache"], f["baseline"], shortest, longest), faster_above)
    return out


def break_even(data: RunData) -> BreakEven | None:
    """None unless the run holds cold_start scenarios at >= MIN_LENGTHS distinct prompt lengths in both modes."""
    if data.manifest is None or data.requests.empty:
        return None
    warm = _warm_cold_start(data)
    if warm.empty or _distinct_lengths(warm) < MIN_LENGTHS:
        return None
    fits = {mode: _fit(g["prompt_tokens"].to_numpy(float), g["ttft_ms"].to_numpy(float), DEGREE[mode])
            for mode, g in warm.groupby("mode")}  # fmt: skip
    shortest, longest = float(warm["prompt_tokens"].min()), float(warm["prompt_tokens"].max())
    crossover, above = _cross(fits["with-cache"], fits["baseline"], shortest, longest)
    lo, hi = _interval(_bootstrap(warm, shortest, longest, above))
    pts = warm.pivot_table(index="scenario", columns="mode", values="ttft_ms", aggfunc="mean")
    pts["tokens"] = warm.groupby("scenario")["prompt_tokens"].mean()
    pts["requests"] = warm[warm["mode"] == "with-cache"].groupby("scenario").size()
    pts = pts.reset_index().sort_values("tokens")
    return BreakEven(pts, fits, crossover, lo, hi, longest, shortest, above)


def _faster(p: pd.DataFrame) -> np.ndarray:
    return np.where(p["with-cache"] < p["baseline"], "fetch faster", "recompute faster")


def table(be: BreakEven) -> pd.DataFrame:
    p = be.points
    change = 100 * (p["with-cache"] - p["baseline"]) / p["baseline"]
    return pd.DataFrame(
        {
            "scenario": p["scenario"],
            "prompt tokens": p["tokens"].map(lambda v: fmt(v, 0)),
            "requests per mode": p["requests"].map(lambda v: fmt(v, 0)),
            "TTFT with cache ms": p["with-cache"].map(fmt),
            "TTFT without ms": p["baseline"].map(fmt),
            "change %": change.map(fmt),
            "faster": np.where(change < 0, "fetch", "recompute"),
            "fit with ms": [fmt(v) for v in ttft(be.fits["with-cache"], p["tokens"].to_numpy(float))],
            "fit without ms": [fmt(v) for v in ttft(be.fits["baseline"], p["tokens"].to_numpy(float))],
        }
    )


def _bound(v: float, be: BreakEven) -> str:
    if v == -math.inf:
        return f"below {fmt(be.shortest, 0)}"
    return f"above {fmt(be.longest, 0)}" if v == math.inf else fmt(v, 0)


def _ci(be: BreakEven) -> str:
    """The 95 % interval in words; an infinite bound is open: replicates beyond the measured lengths."""
    if np.isfinite(be.lo) and np.isfinite(be.hi):
        return f"95 % interval {fmt(be.lo, 0)}-{fmt(be.hi, 0)}"
    return (
        f"95 % interval {_bound(be.lo, be)} to {_bound(be.hi, be)} tokens, open-ended: over 2.5 % of bootstrap "
        "replicates do not cross inside the measured lengths"
    )


def _everywhere(be: BreakEven) -> str:
    """The sentence for curves that do not cross inside the data: which path wins at every measured
    length, where the break-even must then lie, and how sure the bootstrap is of that."""
    span = f"{fmt(be.shortest, 0)}-{fmt(be.longest, 0)} tokens"
    if be.faster_above == "fetch":
        where, bound, share = f"below {fmt(be.shortest, 0)} tokens", be.hi, "upper"
    else:
        where, bound, share = f"above {fmt(be.longest, 0)} tokens, if anywhere", be.lo, "lower"
    sure = (
        f"95 % {share} bound {fmt(bound, 0)} tokens, bootstrap over requests"
        if np.isfinite(bound)
        else "as in over 97.5 % of bootstrap replicates over requests"
    )
    return (
        f"No break-even inside the data: {be.faster_above} faster at every measured length ({span}); the "
        f"fitted curves do not cross there, so the break-even lies {where} ({sure}); a fit says nothing about "
        "lengths that were not measured."
    )


def notes(be: BreakEven) -> list[str]:
    (aw, bw), (ab, bb, cb) = be.fits["with-cache"], be.fits["baseline"]
    fits = (
        f"Fetch (with the connector): TTFT = {fmt(aw)} ms fixed + {fmt(bw, 2)} ms per 1,000 prompt tokens. "
        f"Recompute (without): {fmt(ab)} ms + {fmt(bb, 2)} ms per 1,000 tokens + {fmt(cb, 2)} ms per (1,000 "
        "tokens)^2 (attention). Least squares over the warm round's requests."
    )
    measured = "Measured: " + "; ".join(
        f"{fmt(t, 0)} tokens {f}" for t, f in zip(be.points["tokens"], _faster(be.points))
    )
    if not be.crosses:
        return [fits, f"{_everywhere(be)} {measured}."]
    other = "recomputing" if be.faster_above == "fetch" else "fetching the KV"
    above = (
        "fetching the KV from Mooncake beats recomputing it"
        if be.faster_above == "fetch"
        else ("recomputing beats fetching the KV from Mooncake")
    )
    return [
        fits,
        f"Break-even prefix length: {fmt(be.crossover, 0)} tokens ({_ci(be)}, bootstrap over requests): above it "
        f"(up to the longest measured, {fmt(be.longest, 0)}) {above} on this stack, below it {other} is faster. "
        f"{measured}.",
    ]
