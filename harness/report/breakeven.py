"""The break-even prefix length: above which fetching a prefix's KV beats recomputing it.

From a run of cold_start scenarios of several prompt lengths (configs/breakeven.yaml), each with
and without the connector on fresh stacks: in the warm round every prompt is a repeat, so with the
cache its whole prompt (but the last partial block) is fetched, and without it recomputed
(requests at concurrency 1: no queueing). Each length and mode runs on a stack of its own, so the
unit of evidence is a stack's mean TTFT, not a request: a per-stack offset (the engine process, the
machine's load at that minute) moves every request of a stack together, and a bootstrap over
requests cannot see it (a 3 % per-stack offset cut that interval's coverage of the true crossing
from 92.5 % to 20 % in simulation). So the curves are fitted, least squares, to the per-length
means (mean over the stacks of that length and mode): fetching as fixed cost + per-token cost
(bytes moved grow linearly); recomputing as fixed + per-token + per-token-squared cost (attention
over the prefix grows with its square: a line alone puts a negative fixed cost under an 8k-token
curve). The crossover is where the fitted curves last cross inside the measured lengths (the
shortest length from which fetching stays faster, up to the longest measured); where they do not
cross inside the data, one path is faster at every measured length, and that is what is said.

Its 95 % interval: a parametric bootstrap of the per-length means, each redrawn around its fitted
curve with a Student-t relative error of its standard error: with 2 or more stacks per length and
mode, from the stacks' pooled spread (divided by sqrt(stacks)); with one stack per length, from the
means' scatter about their curve with the fit's residual degrees of freedom (one stack per length
shows the per-stack offsets only as scatter between lengths). In simulation with a 3 % per-stack
offset it covered the true crossing 98.7 % (one stack per length) and 94.7 % (three) of the time
(tests/test_uncertainty.py). A replicate without a crossing in the data counts as beyond it, so a bound can be
open-ended. Printed to two significant figures: the data do not support more.
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
    lo: float  # 95 % bootstrap interval; -inf / +inf: open below the shortest / above the longest length; nan: none
    hi: float
    longest: float
    shortest: float = math.nan
    faster_above: str = "fetch"  # the path faster above the crossover, or at every measured length without one
    replicates: int = BOOTSTRAP
    method: str = ""  # how the interval was made: over stacks, or parametric over the per-length means

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
                     isolation=dirs["isolation"].to_numpy()[idx], repeat=dirs["repeat"].to_numpy()[idx])  # fmt: skip
    last = req.groupby("dir")["round"].transform("max")
    warm = req[(req["round"] == last) & (req["round"] > 1) & req["isolation"].isin(ISOLATED)]
    warm = warm[warm["scenario"].map(kinds) == "cold_start"].dropna(subset=["prompt_tokens", "ttft_ms"])
    both = warm.groupby("scenario")["mode"].nunique()
    return warm[warm["scenario"].isin(both[both == 2].index)]


def _distinct_lengths(warm: pd.DataFrame) -> int:
    """Prompt lengths measured, not scenarios: two scenarios at one length add no point to a fit."""
    return int(warm.groupby("scenario")["prompt_tokens"].median().round().nunique())


def stack_means(warm: pd.DataFrame) -> pd.DataFrame:
    """One row per stack (scenario, mode, isolation, repeat): its mean prompt tokens and warm TTFT."""
    keys = [k for k in ("scenario", "mode", "isolation", "repeat") if k in warm]
    return warm.groupby(keys, sort=False).agg(tokens=("prompt_tokens", "mean"), ttft=("ttft_ms", "mean")).reset_index()


def _point_means(stacks: pd.DataFrame) -> pd.DataFrame:
    """Per mode and length (scenario): mean tokens, mean TTFT over its stacks, how many stacks, and their
    relative spread (sd / mean; NaN with one stack)."""
    g = stacks.groupby(["mode", "scenario"], sort=False)
    out = g.agg(tokens=("tokens", "mean"), ttft=("ttft", "mean"), n=("ttft", "size"), sd=("ttft", "std"))
    return out.assign(rel=out["sd"] / out["ttft"]).reset_index()


def _fits(stacks: pd.DataFrame) -> dict[str, tuple[float, ...]]:
    """Each mode's curve, fitted to its per-length means (the mean over that length's stacks)."""
    return {mode: _fit(g["tokens"].to_numpy(float), g["ttft"].to_numpy(float), DEGREE[mode])
            for mode, g in _point_means(stacks).groupby("mode")}  # fmt: skip


def _errors(g: pd.DataFrame, curve: np.ndarray, degree: int) -> tuple[np.ndarray, int, str]:
    """Relative standard errors of one mode's per-length means and their degrees of freedom: from the
    stacks of each length when every length has 2 or more (pooled spread / sqrt(stacks)); else from
    the means' scatter about their fitted curve (one stack per length: that scatter holds the
    per-stack offsets)."""
    n = g["n"].to_numpy(float)
    if (n >= 2).all():
        dof = int((n - 1).sum())
        pooled = math.sqrt(float(np.sum((n - 1) * g["rel"].to_numpy(float) ** 2)) / dof)
        return pooled / np.sqrt(n), dof, f"t over {int(n.min())}+ stacks per length and mode"
    y = g["ttft"].to_numpy(float)
    dof = len(y) - (degree + 1)
    scale = math.sqrt(float(np.sum((y / curve - 1) ** 2)) / dof) if dof >= 1 else math.nan
    return np.full(len(y), scale), dof, "one stack per length: the means' scatter about the fit"


def _replicates(stacks: pd.DataFrame, fits: dict[str, tuple[float, ...]], rng: np.random.Generator,
                shortest: float, longest: float, faster: str) -> tuple[np.ndarray, str]:  # fmt: skip
    """Crossovers of BOOTSTRAP refits of the per-length means redrawn around their fitted curves, with
    t-distributed relative errors of their standard errors (_errors), and how. All NaN when a mode has
    no degree of freedom to estimate them."""
    coefs, how = {}, ""
    for mode, g in _point_means(stacks).groupby("mode"):
        x = g["tokens"].to_numpy(float)
        curve = ttft(fits[mode], x)
        se, dof, how = _errors(g, curve, DEGREE[mode])
        if dof < 1:
            return np.full(BOOTSTRAP, math.nan), how
        ys = curve * (1 + se * rng.standard_t(dof, (BOOTSTRAP, len(x))))
        coefs[mode] = np.polyfit(x / 1e3, ys.T, DEGREE[mode])[::-1].T  # (BOOTSTRAP, degree + 1), lowest first
    out = np.array([_placed(*_cross(tuple(w), tuple(b), shortest, longest), faster)
                    for w, b in zip(coefs["with-cache"], coefs["baseline"])])  # fmt: skip
    return out, how


def break_even(data: RunData) -> BreakEven | None:
    """None unless the run holds cold_start scenarios at >= MIN_LENGTHS distinct prompt lengths in both modes."""
    if data.manifest is None or data.requests.empty:
        return None
    warm = _warm_cold_start(data)
    if warm.empty or _distinct_lengths(warm) < MIN_LENGTHS:
        return None
    return fit_stacks(stack_means(warm), requests=warm[warm["mode"] == "with-cache"].groupby("scenario").size())


def fit_stacks(stacks: pd.DataFrame, requests: pd.Series | None = None, seed: int = 0) -> BreakEven:
    """The break-even from per-stack means (stack_means' columns: scenario, mode, repeat, tokens, ttft)."""
    fits = _fits(stacks)
    shortest, longest = float(stacks["tokens"].min()), float(stacks["tokens"].max())
    crossover, above = _cross(fits["with-cache"], fits["baseline"], shortest, longest)
    reps, how = _replicates(stacks, fits, np.random.default_rng(seed), shortest, longest, above)
    lo, hi = _interval(reps) if not np.isnan(reps).any() else (math.nan, math.nan)
    method = f"parametric bootstrap of the per-length means ({how})"
    pts = stacks.groupby(["scenario", "mode"], sort=False)["ttft"].mean().unstack("mode")
    pts["tokens"] = stacks.groupby("scenario")["tokens"].mean()
    pts["stacks"] = stacks[stacks["mode"] == "with-cache"].groupby("scenario").size()
    pts["requests"] = requests if requests is not None else math.nan
    pts = pts.reset_index().sort_values("tokens")
    return BreakEven(pts, fits, crossover, lo, hi, longest, shortest, above, method=method)


def _faster(p: pd.DataFrame) -> np.ndarray:
    return np.where(p["with-cache"] < p["baseline"], "fetch faster", "recompute faster")


def table(be: BreakEven) -> pd.DataFrame:
    p = be.points
    change = 100 * (p["with-cache"] - p["baseline"]) / p["baseline"]
    return pd.DataFrame(
        {
            "scenario": p["scenario"],
            "prompt tokens": p["tokens"].map(lambda v: fmt(v, 0)),
            "stacks per mode": p["stacks"].map(lambda v: fmt(v, 0)),
            "requests per mode": p["requests"].map(lambda v: fmt(v, 0)),
            "TTFT with cache ms": p["with-cache"].map(fmt),
            "TTFT without ms": p["baseline"].map(fmt),
            "change %": change.map(fmt),
            "faster": np.where(change < 0, "fetch", "recompute"),
            "fit with ms": [fmt(v) for v in ttft(be.fits["with-cache"], p["tokens"].to_numpy(float))],
            "fit without ms": [fmt(v) for v in ttft(be.fits["baseline"], p["tokens"].to_numpy(float))],
        }
    )


def sig2(v: float) -> str:
    """A token count to two significant figures, with thousands separators: 1,562 -> "1,600"."""
    return f"{float(f'{v:.2g}'):,.0f}" if np.isfinite(v) else fmt(v, 0)


def _bound(v: float, be: BreakEven) -> str:
    if v == -math.inf:
        return f"below {fmt(be.shortest, 0)}"
    return f"above {fmt(be.longest, 0)}" if v == math.inf else sig2(v)


def _ci(be: BreakEven) -> str:
    """The 95 % interval in words; an infinite bound is open: replicates beyond the measured lengths."""
    if math.isnan(be.lo) or math.isnan(be.hi):
        return "no interval: as many lengths as fitted parameters"
    if np.isfinite(be.lo) and np.isfinite(be.hi):
        return f"95 % interval {sig2(be.lo)}-{sig2(be.hi)}, {be.method}"
    return (
        f"95 % interval {_bound(be.lo, be)} to {_bound(be.hi, be)} tokens, open-ended: over 2.5 % of bootstrap "
        f"replicates do not cross inside the measured lengths; {be.method}"
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
        f"95 % {share} bound {sig2(bound)} tokens, {be.method}"
        if np.isfinite(bound)
        else f"as in over 97.5 % of bootstrap replicates, {be.method}"
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
        "tokens)^2 (attention). Least squares over the per-length means of the warm round's stacks."
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
        f"Break-even prefix length: ~{sig2(be.crossover)} tokens ({_ci(be)}): above it "
        f"(up to the longest measured, {fmt(be.longest, 0)}) {above} on this stack, below it {other} is faster. "
        f"{measured}.",
    ]
