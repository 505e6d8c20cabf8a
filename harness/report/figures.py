"""The report's figures: made from one Analysis (a figure that fails is left out with a note), saved as plots/*.png."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from harness.records import ISOLATED
from harness.report import breakeven as BE
from harness.report import plots as P
from harness.report.analysis import Analysis
from harness.report.tables import headline_name

# The figures, in the order the report shows them: the headline (with the cache vs without) first,
# then the seed's round-over-round figures, then the rest.
HEADLINE_PLOTS = ("headline_changes", "with_without_cdf")


SEED_PLOTS = ("ttft_cdf", "gains", "speedups")


ARMS_PLOTS = ("arms",)


PLOT_NAMES = (*HEADLINE_PLOTS, *SEED_PLOTS, "token_sources", "cache_cliff", "breakeven", *ARMS_PLOTS)


def _safe(name: str, title: str, make: Callable[[], P.Plot]) -> P.Plot:
    """A figure that cannot be drawn from odd data must not cost the report: it says why instead."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - any plotting fault becomes a note in the report
        return P.Plot(name, title, "", None, f"could not be drawn ({type(e).__name__}: {str(e)[:120]})")


def make_plots(a: Analysis) -> list[P.Plot]:
    t, be = a.targets, a.breakeven
    names = [headline_name(lab, n) for lab, n in zip(a.headline.get("label", []), a.headline.get("round", []))]
    return [
        _safe(
            "headline_changes",
            "With the cache vs without: change per scenario",
            lambda: P.headline_changes(a.headline, names, t.ttft_reduction_percent, t.throughput_increase_percent),
        ),
        _safe(
            "with_without_cdf",
            "TTFT with the cache vs without",
            lambda: P.with_without_cdf(with_without_requests(a), a.phases),
        ),
        _safe("ttft_cdf", "TTFT distribution", lambda: P.ttft_cdf(a.requests[["label", "round", "ttft_ms"]], a.phases)),
        _safe(
            "gains",
            "TTFT mean change and throughput change",
            lambda: P.gains(a.round_over_round, t.ttft_reduction_percent, t.throughput_increase_percent),
        ),
        _safe("speedups", "Per-request TTFT change", lambda: P.speedups(a.per_prompt)),
        _safe("token_sources", "Prompt tokens by source", lambda: P.token_sources(a.token_sources)),
        *([_safe("cache_cliff", "Cache cliff", lambda: P.cliff(a.cliff))] if not a.cliff.empty else []),
        *([_safe("breakeven", "Break-even prefix length", lambda: _breakeven_plot(be))] if be else []),
        *(
            [_safe("arms", "Four arms", lambda: P.arms(a.arms, a.crossover.r0 if a.crossover else None))]
            if not a.arms.empty
            else []
        ),
    ]


def with_without_requests(a: Analysis) -> pd.DataFrame:
    """The requests behind the headline (isolated cells of scenarios run both ways), labelled like
    its rows (scenario, or scenario [sweep point]) with their mode: label, mode, round, ttft_ms.
    The with-cache cell's phases are keyed by its cell label, which is the same string."""
    req, dirs = a.requests, a.data.dirs
    if req.empty or a.headline.empty:
        return pd.DataFrame(columns=["label", "mode", "round", "ttft_ms"])
    d = req["dir"].to_numpy(dtype=int)
    point = dirs["point"].fillna("").astype(str).to_numpy()[d] if "point" in dirs else np.full(len(d), "")
    scen = dirs["scenario"].astype(str).to_numpy()[d]
    out = pd.DataFrame(
        {
            "label": [f"{s} [{p}]" if p else s for s, p in zip(scen, point)],
            "mode": dirs["mode"].to_numpy()[d],
            "isolation": dirs["isolation"].to_numpy()[d],
            "round": req["round"].to_numpy(),
            "ttft_ms": req["ttft_ms"].to_numpy(dtype=float),
        }
    )
    keep = out["isolation"].isin(ISOLATED) & out["label"].isin(set(a.headline["label"]))
    return out[keep].drop(columns="isolation")


def _breakeven_plot(be: BE.BreakEven) -> P.Plot:
    xs = np.geomspace(float(be.points["tokens"].min()) / 1.5, be.longest * 1.5, 80)
    return P.breakeven(be.points, {m: (xs, BE.ttft(f, xs)) for m, f in be.fits.items()}, be.crossover)


def save_plots(plots: list[P.Plot], out_dir: Path, known: tuple[str, ...]) -> None:
    d = out_dir / "plots"
    for name in known:  # a figure that has no data this time must not survive from an earlier report
        (d / f"{name}.png").unlink(missing_ok=True)
    for p in plots:
        if p.png:
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{p.name}.png").write_bytes(p.png)
