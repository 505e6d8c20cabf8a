"""The break-even prefix length: above which fetching a prefix's KV beats recomputing it.

From a run of cold_start scenarios of several prompt lengths (configs/breakeven.yaml), each with
and without the connector on fresh stacks: in the warm round every prompt is a repeat, so with the
cache its whole prompt (but the last partial block) is fetched, and without it recomputed
(requests at concurrency 1: no queueing). Fits, least squares over the requests: fetching as
fixed cost + per-token cost (bytes moved grow linearly); recomputing as fixed + per-token +
per-token-squared cost (attention over the prefix grows with its square: a line alone puts a
negative fixed cost under an 8k-token curve). The crossover is the shortest length from which
fetching is faster; its 95 % interval comes from a bootstrap over requests (within each scenario
and mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics import fmt
from .data import RunData, ok_requests

MIN_LENGTHS = 4  # distinct prompt lengths with both modes before a line is fitted
BOOTSTRAP = 1000


DEGREE = {"with-cache": 1, "baseline": 2}  # fetch: linear in bytes; recompute: attention is quadratic


@dataclass
class BreakEven:
    points: pd.DataFrame  # per scenario: tokens, TTFT mean with / without, requests per mode
    fits: dict[str, tuple[float, ...]]  # mode -> (fixed ms, ms per 1k tokens[, ms per (1k tokens)^2])
    crossover: float  # tokens; nan when fetching is never faster within twice the longest prompt
    lo: float
    hi: float
    longest: float


def _fit(x: np.ndarray, y: np.ndarray, degree: int) -> tuple[float, ...]:
    """Coefficients, lowest power first, in ms per (1,000 tokens)^k."""
    return tuple(float(c) for c in np.polyfit(x / 1e3, y, degree)[::-1])


def ttft(fit: tuple[float, ...], tokens: np.ndarray | float) -> np.ndarray:
    """The fitted TTFT (ms) at these prompt lengths."""
    return np.polynomial.polynomial.polyval(np.asarray(tokens, dtype=float) / 1e3, fit)


def _cross(w: tuple[float, ...], b: tuple[float, ...], longest: float) -> float:
    """The shortest length (tokens, up to 2 x the longest measured) from which fetching stays faster."""
    xs = np.linspace(1.0, 2 * longest, 4000)
    faster = ttft(w, xs) < ttft(b, xs)
    if not faster[-1]:
        return float("nan")
    slower = np.nonzero(~faster)[0]
    return float(xs[slower[-1] + 1]) if len(slower) else float(xs[0])


def break_even(data: RunData) -> BreakEven | None:
    """None unless the run holds cold_start scenarios at >= MIN_LENGTHS prompt lengths in both modes."""
    m = data.manifest
    if m is None or data.requests.empty:
        return None
    kinds = {name: sc.get("kind") for name, sc in (m.config.get("scenarios") or {}).items()}
    req = ok_requests(data)
    dirs = data.dirs
    idx = req["dir"].to_numpy(dtype=int)
    req = req.assign(scenario=dirs["scenario"].to_numpy()[idx], mode=dirs["mode"].to_numpy()[idx],
                     isolation=dirs["isolation"].to_numpy()[idx])  # fmt: skip
    last = req.groupby("dir")["round"].transform("max")
    warm = req[(req["round"] == last) & (req["round"] > 1) & (req["isolation"] == "fresh")]
    warm = warm[warm["scenario"].map(kinds) == "cold_start"].dropna(subset=["prompt_tokens", "ttft_ms"])
    both = warm.groupby("scenario")["mode"].nunique()
    warm = warm[warm["scenario"].isin(both[both == 2].index)]
    if warm["scenario"].nunique() < MIN_LENGTHS:
        return None
    fits = {mode: _fit(g["prompt_tokens"].to_numpy(float), g["ttft_ms"].to_numpy(float), DEGREE[mode])
            for mode, g in warm.groupby("mode")}  # fmt: skip
    longest = float(warm["prompt_tokens"].max())
    rng = np.random.default_rng(0)
    groups = {  # (x, y) arrays per scenario and mode: requests are resampled within each
        key: (g["prompt_tokens"].to_numpy(float), g["ttft_ms"].to_numpy(float))
        for key, g in warm.groupby(["scenario", "mode"])
    }
    boot = []
    for _ in range(BOOTSTRAP):
        f = {}
        for mode in ("with-cache", "baseline"):
            picks = [(x[i], y[i]) for (_, m), (x, y) in groups.items() if m == mode
                     for i in [rng.integers(0, len(x), len(x))]]  # fmt: skip
            f[mode] = _fit(np.concatenate([p[0] for p in picks]), np.concatenate([p[1] for p in picks]), DEGREE[mode])
        boot.append(_cross(f["with-cache"], f["baseline"], longest))
    boot_arr = np.array(boot)
    finite = boot_arr[np.isfinite(boot_arr)]
    lo, hi = np.percentile(finite, [2.5, 97.5]) if len(finite) >= 0.95 * BOOTSTRAP else (np.nan, np.nan)
    pts = warm.pivot_table(index="scenario", columns="mode", values="ttft_ms", aggfunc="mean")
    pts["tokens"] = warm.groupby("scenario")["prompt_tokens"].mean()
    pts["requests"] = warm[warm["mode"] == "with-cache"].groupby("scenario").size()
    pts = pts.reset_index().sort_values("tokens")
    return BreakEven(pts, fits, _cross(fits["with-cache"], fits["baseline"], longest), float(lo), float(hi), longest)


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


def notes(be: BreakEven) -> list[str]:
    (aw, bw), (ab, bb, cb) = be.fits["with-cache"], be.fits["baseline"]
    fits = (
        f"Fetch (with the connector): TTFT = {fmt(aw)} ms fixed + {fmt(bw, 2)} ms per 1,000 prompt tokens. "
        f"Recompute (without): {fmt(ab)} ms + {fmt(bb, 2)} ms per 1,000 tokens + {fmt(cb, 2)} ms per (1,000 "
        "tokens)^2 (attention). Least squares over the warm round's requests"
    )
    if np.isnan(be.crossover):
        return [fits + f": fetching is not faster at any length up to {fmt(2 * be.longest, 0)} tokens on this stack."]
    ci = f"95 % interval {fmt(be.lo, 0)}-{fmt(be.hi, 0)}" if np.isfinite(be.lo) else "interval not determined"
    return [
        fits + ".",
        f"Break-even prefix length: {fmt(be.crossover, 0)} tokens ({ci}, bootstrap over requests): above it "
        "fetching the KV from Mooncake beats recomputing it on this stack, below it recomputing is faster. "
        "Measured: "
        + "; ".join(f"{fmt(t, 0)} tokens {f}" for t, f in zip(be.points["tokens"], _faster(be.points)))
        + ".",
    ]
