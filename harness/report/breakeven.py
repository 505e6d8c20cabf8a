"""The break-even prefix length: above which fetching a prefix's KV beats recomputing it.

From a run of cold_start scenarios of several prompt lengths (configs/breakeven.yaml), each with
and without the connector on fresh stacks: in the warm round every prompt is a repeat, so with the
cache its whole prompt (but the last partial block) is fetched, and without it recomputed. Per
mode, TTFT is fitted as a line in the prompt length (requests at concurrency 1: no queueing):
fixed cost + per-token cost. The crossover is where the two lines meet; its 95 % interval comes
from a bootstrap over requests (within each scenario and mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics import fmt
from .data import RunData, ok_requests

MIN_LENGTHS = 4  # distinct prompt lengths with both modes before a line is fitted
BOOTSTRAP = 1000


@dataclass
class BreakEven:
    points: pd.DataFrame  # per scenario: tokens, TTFT mean with / without, requests
    fixed_ms: dict[str, float]  # mode -> intercept
    per_1k_ms: dict[str, float]  # mode -> ms per 1,000 prompt tokens
    crossover: float  # tokens; nan when the lines do not cross at a positive length
    lo: float
    hi: float


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def _cross(w: tuple[float, float], b: tuple[float, float]) -> float:
    (aw, bw), (ab, bb) = w, b
    if bb <= bw:  # recomputing grows no faster than fetching: fetching never wins by length
        return float("nan")
    x = (aw - ab) / (bb - bw)
    return float(x) if x > 0 else float("nan")


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
    fits = {mode: _fit(g["prompt_tokens"].to_numpy(float), g["ttft_ms"].to_numpy(float))
            for mode, g in warm.groupby("mode")}  # fmt: skip
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
            f[mode] = _fit(np.concatenate([p[0] for p in picks]), np.concatenate([p[1] for p in picks]))
        boot.append(_cross(f["with-cache"], f["baseline"]))
    boot_arr = np.array(boot)
    finite = boot_arr[np.isfinite(boot_arr)]
    lo, hi = np.percentile(finite, [2.5, 97.5]) if len(finite) >= 0.95 * BOOTSTRAP else (np.nan, np.nan)
    pts = warm.pivot_table(index="scenario", columns="mode", values="ttft_ms", aggfunc="mean")
    pts["tokens"] = warm.groupby("scenario")["prompt_tokens"].mean()
    pts["requests"] = warm.groupby("scenario").size()
    pts = pts.reset_index().sort_values("tokens")
    return BreakEven(
        points=pts,
        fixed_ms={k: v[0] for k, v in fits.items()},
        per_1k_ms={k: v[1] * 1e3 for k, v in fits.items()},
        crossover=_cross(fits["with-cache"], fits["baseline"]),
        lo=float(lo),
        hi=float(hi),
    )


def table(be: BreakEven) -> pd.DataFrame:
    p = be.points
    change = 100 * (p["with-cache"] - p["baseline"]) / p["baseline"]
    return pd.DataFrame(
        {
            "scenario": p["scenario"],
            "prompt tokens": p["tokens"].map(lambda v: fmt(v, 0)),
            "requests": p["requests"].map(lambda v: fmt(v, 0)),
            "TTFT with cache ms": p["with-cache"].map(fmt),
            "TTFT without ms": p["baseline"].map(fmt),
            "change %": change.map(fmt),
            "faster": np.where(change < 0, "fetch", "recompute"),
        }
    )


def notes(be: BreakEven) -> list[str]:
    w, b = "with-cache", "baseline"
    fits = (
        f"TTFT with the connector = {fmt(be.fixed_ms[w])} ms + {fmt(be.per_1k_ms[w], 2)} ms per 1,000 prompt tokens "
        f"(fetch); without = {fmt(be.fixed_ms[b])} ms + {fmt(be.per_1k_ms[b], 2)} ms per 1,000 tokens (recompute); "
        "least squares over the warm round's requests"
    )
    if np.isnan(be.crossover):
        return [fits + ": the lines do not cross at a positive length on this stack."]
    ci = f"95 % interval {fmt(be.lo, 0)}-{fmt(be.hi, 0)}" if np.isfinite(be.lo) else "interval not determined"
    return [
        fits + ".",
        f"Break-even prefix length: {fmt(be.crossover, 0)} tokens ({ci}, bootstrap over requests): above it "
        "fetching the KV from Mooncake beats recomputing it on this stack, below it recomputing is faster.",
    ]
