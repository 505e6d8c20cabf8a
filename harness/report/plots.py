"""Report figures as PNG bytes (matplotlib, Agg canvas, no pyplot state).

Each function takes an already aggregated frame and returns a `Plot`: PNG bytes, or
no bytes and the reason why (so the report says what is missing). Large inputs are
reduced before drawing: a CDF is drawn through 400 quantiles, a box from its
percentiles, so a million requests plot as fast as a hundred.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from harness.analysis.intervals import INCONCLUSIVE, MET, NOT_MET, target_verdict  # noqa: E402

CDF_POINTS = 400
ROUND_COLORS = ["#1f4e79", "#d9822b", "#2e8540", "#8e44ad", "#7f7f7f"]
RUN_COLORS = ["#1f4e79", "#d9822b", "#2e8540", "#8e44ad", "#c0392b", "#7f7f7f"]
SOURCE_COLORS = {
    "tokens_local_compute": "#9e9e9e",
    "tokens_local_cache_hit": "#4a90d9",
    "tokens_external_kv_transfer": "#2e8540",
}
SOURCE_NAMES = {
    "tokens_local_compute": "computed (prefill)",
    "tokens_local_cache_hit": "local prefix-cache hit",
    "tokens_external_kv_transfer": "external KV transfer (Mooncake)",
}


@dataclass
class Plot:
    name: str  # file stem: plots/<name>.png
    title: str
    caption: str
    png: bytes | None = None
    missing: str = ""  # why there is no figure


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # constrained layout fits it; bbox_inches="tight" drew every figure twice
    return buf.getvalue()


def _grid(fig: Figure, n: int, cols: int = 3) -> list:
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    return [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def _cdf(ax, values: np.ndarray, **kw: object) -> None:
    q = np.linspace(0, 1, min(CDF_POINTS, len(values)))
    ax.plot(np.quantile(values, q), q, drawstyle="steps-post" if len(values) < CDF_POINTS else "default", **kw)


def _log_if_wide(ax, values: np.ndarray) -> None:
    pos = values[values > 0]
    if len(pos) and pos.max() / pos.min() > 30:
        ax.set_xscale("log")
        # plain milliseconds at 1-2-5 steps: matplotlib's default labels minor ticks "2 x 10^1", which
        # collide on a range of a decade or two
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())


def ttft_cdf(req: pd.DataFrame, phases: dict[tuple[str, int], str] | None = None) -> Plot:
    """TTFT CDF per scenario, one line per round, labelled with the round's measured warmth
    (`phases`: (label, round) -> cold / partly warm / warm). `req`: label, round, ttft_ms."""
    phases = phases or {}
    plot = Plot(
        "ttft_cdf",
        "Round over round: TTFT distribution per round, each cell on its own",
        "Cumulative share of successful requests by time to first token, per scenario (repeats pooled); "
        "each round with its measured warmth (share of prompt tokens served from cache). "
        "Further left is faster.",
    )
    if req.empty:
        plot.missing = "no successful requests with a TTFT (requests.csv missing or every request failed)"
        return plot
    labels = list(dict.fromkeys(req["label"]))
    fig = _figure(min(15, 5 * len(labels)), 3.6 * math.ceil(len(labels) / 3))
    groups = dict(tuple(req.groupby(["label", "round"])))
    for ax, label in zip(_grid(fig, len(labels)), labels):
        allv = []
        for rnd in sorted(r for lab, r in groups if lab == label):
            v = groups[(label, rnd)]["ttft_ms"].to_numpy(dtype=float)
            allv.append(v)
            _cdf(
                ax,
                v,
                color=ROUND_COLORS[min(int(rnd) - 1, len(ROUND_COLORS) - 1)],
                lw=2,
                label=f"round {rnd} ({phases.get((label, int(rnd)), 'warmth unknown')}, n={len(v):,})",
            )
        _log_if_wide(ax, np.concatenate(allv))
        ax.set_title(label, fontsize=11)
        ax.set_xlabel("TTFT (ms)")
        ax.set_ylabel("share of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    plot.png = _png(fig)
    return plot


ROUND_OVER_ROUND_X = "change % vs round 1 (100 x (round 2 / round 1 - 1))"
WITH_WITHOUT_X = "change %: 100 x (with cache / without - 1)"
MODE_COLORS = {"with-cache": "#1f77b4", "baseline": "#d62728"}
MODE_NAMES = {"with-cache": "with cache", "baseline": "without"}


VERDICT_COLOURS = {MET: "#2e8540", NOT_MET: "#d9822b", INCONCLUSIVE: "#999999"}


def _bars_with_ci(
    ax,
    labels: list[str],
    vals: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    target: float,
    title: str,
    xlabel: str = ROUND_OVER_ROUND_X,
) -> None:
    """Horizontal bars of changes in % with their intervals as whiskers, coloured by the target read
    from the interval (intervals.target_verdict): green met, orange not met, grey inconclusive. `target`
    is signed: a negative one (TTFT) is met at or below it, a positive one (throughput) at or above it."""
    y = np.arange(len(labels))
    better = "lower" if target < 0 else "higher"
    verdicts = [target_verdict(v, lo_, hi_, target, better) for v, lo_, hi_ in zip(vals, lo, hi)]
    colors = [VERDICT_COLOURS.get(v, "#999999") for v in verdicts]
    ax.barh(y, np.nan_to_num(vals), color=colors, height=0.6)
    has = np.isfinite(lo) & np.isfinite(hi)
    if has.any():  # lo <= value <= hi: the analysis reports only intervals that hold their figure
        err = np.vstack([vals - lo, hi - vals])[:, has]
        ax.errorbar(vals[has], y[has], xerr=err, fmt="none", ecolor="black", capsize=4, lw=1.2)
    ends = np.where(np.isfinite(hi), np.fmax(vals, hi), vals)
    starts = np.where(np.isfinite(lo), np.fmin(vals, lo), vals)
    for yi, v, e, s in zip(y, vals, ends, starts):
        neg = not math.isnan(v) and v < 0
        ax.annotate(
            "n/a" if math.isnan(v) else f"{v:+.1f} %",
            (0 if math.isnan(v) else (s if neg else e), yi),
            xytext=(-5 if neg else 5, 0),
            textcoords="offset points",
            fontsize=8,
            va="center",
            ha="right" if neg else "left",
        )
    ax.axvline(target, color="#c0392b", ls="--", lw=1.2)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.margins(x=0.18)
    ax.set_title(f"{title}, target {target:+g} %", fontsize=11)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def gains(rr: pd.DataFrame, ttft_target: float, tput_target: float) -> Plot:
    """Round 2 vs round 1 per scenario (analysis.round_over_round): TTFT mean change and throughput
    change, each with the 95 % interval of that same figure. `ttft_target` is the seed's reduction
    target (60: a change of -60 % or lower), `tput_target` its increase target."""
    plot = Plot(
        "gains",
        "Round over round: TTFT mean change and throughput change (round 2 vs round 1 of the same stack)",
        "Change % = 100 x (round 2 / round 1 - 1): negative TTFT = faster, positive throughput = more. "
        "Whiskers: 95 % CI of the figure itself (Student-t over repeats when there are several; with one "
        "repeat, TTFT: the change of the mean over the same prompts, BCa bootstrap over prompts; "
        "throughput has no CI with one repeat). Green: the seed's target met (the whole interval beyond it), "
        "orange: not met, grey: inconclusive.",
    )
    r2 = rr[rr["round"] == 2] if not rr.empty and "ttft_change" in rr.columns else pd.DataFrame()
    if r2.empty or (r2["ttft_change"].isna().all() and r2["tput_change"].isna().all()):
        plot.missing = "no scenario has both a round 1 and a round 2"
        return plot
    labels = r2["label"].tolist()
    fig = _figure(13, 1.9 + 0.5 * len(labels))
    a, b = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    f = lambda c: r2[c].to_numpy(dtype=float)  # noqa: E731
    _bars_with_ci(a, labels, f("ttft_change"), f("ttft_lo"), f("ttft_hi"), -ttft_target, "TTFT mean change")
    _bars_with_ci(b, labels, f("tput_change"), f("tput_lo"), f("tput_hi"), tput_target, "Throughput change (req/s)")
    b.set_yticks(np.arange(len(labels)), [""] * len(labels))
    _target_legend(fig)
    plot.png = _png(fig)
    return plot


def _target_legend(fig: Figure) -> None:
    fig.legend(
        handles=[
            Patch(color="#2e8540", label="target met"),
            Patch(color="#d9822b", label="target missed"),
            Line2D([], [], color="#c0392b", ls="--", label="target"),
            Line2D([], [], color="black", marker="|", markersize=10, label="95 % CI"),
        ],
        loc="outside lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )


def headline_changes(head: pd.DataFrame, names: list[str], ttft_target: float, tput_target: float) -> Plot:
    """The verdict as a chart (analysis headline rows, round 2 per scenario): the change of mean TTFT
    and of throughput with the cache vs without, each with the 95 % interval of that same figure.
    Sized to sit on the report's first screen under the verdict."""
    plot = Plot(
        "headline_changes",
        "With the cache vs without: change per scenario (round 2, same prompts)",
        "Change % = 100 x (with / without - 1): negative TTFT = faster, positive throughput = more. Whiskers: "
        "95 % CI of the figure itself (TTFT with one repeat: the change of the mean over the same prompts, "
        "BCa bootstrap over prompts; with several, Student-t over repeats; throughput has no CI with one "
        "repeat). Green: the target met (the whole interval beyond it), orange: not met, grey: inconclusive. "
        "Each scenario's with-cache and baseline cells ran on stacks of their own.",
    )
    if head.empty:
        plot.missing = "no scenario ran both with the cache and without it (run with --mode both)"
        return plot
    fig = _figure(10, 1.15 + 0.33 * len(names))
    a, b = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    f = lambda c: head[c].to_numpy(dtype=float)  # noqa: E731
    _bars_with_ci(a, names, f("ttft_mean_ms_change"), f("ttft_mean_ms_lo"), f("ttft_mean_ms_hi"), -ttft_target,
                  "TTFT mean change", WITH_WITHOUT_X)  # fmt: skip
    _bars_with_ci(b, names, f("req_per_s_change"), f("req_per_s_lo"), f("req_per_s_hi"), tput_target,
                  "Throughput change (req/s)", WITH_WITHOUT_X)  # fmt: skip
    b.set_yticks(np.arange(len(names)), [""] * len(names))
    _target_legend(fig)
    plot.png = _png(fig)
    return plot


def with_without_cdf(req: pd.DataFrame, phases: dict[tuple[str, int], str] | None = None) -> Plot:
    """Per scenario, TTFT CDFs with the cache and without on the same axes, per round (solid: the
    warm round 2, dotted: round 1). `req`: label (the scenario, or scenario [sweep point]), mode
    (with-cache / baseline), round, ttft_ms; `phases`: (label, round) -> warmth of the with-cache round."""
    phases = phases or {}
    plot = Plot(
        "with_without_cdf",
        "TTFT with the cache vs without, per scenario and round (same prompts)",
        "Cumulative share of successful requests by time to first token; blue with the cache, red without "
        "(baseline), each on its own fresh stack; solid the warm round 2, dotted round 1 (repeats pooled). "
        "Further left is faster.",
    )
    if req.empty:
        plot.missing = "no scenario ran both with the cache and without it (run with --mode both)"
        return plot
    labels = list(dict.fromkeys(req["label"]))
    fig = _figure(min(15, 5 * len(labels)), 3.4 * math.ceil(len(labels) / 3))
    groups = dict(tuple(req.groupby(["label", "mode", "round"])))
    for ax, label in zip(_grid(fig, len(labels)), labels):
        allv = []
        for (lab, mode, rnd), g in groups.items():
            if lab != label or mode not in MODE_COLORS or rnd > 2:
                continue
            v = g["ttft_ms"].to_numpy(dtype=float)
            allv.append(v)
            warm = f", {phases[(label, int(rnd))]}" if mode == "with-cache" and (label, int(rnd)) in phases else ""
            _cdf(ax, v, color=MODE_COLORS[mode], lw=2 if rnd == 2 else 1.3, ls="-" if rnd == 2 else ":",
                 label=f"{MODE_NAMES[mode]} r{rnd}{warm} (n={len(v):,})")  # fmt: skip
        _log_if_wide(ax, np.concatenate(allv))
        ax.set_title(label, fontsize=11)
        ax.set_xlabel("TTFT (ms)")
        ax.set_ylabel("share of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        order = sorted(range(len(names)), key=lambda i: (" r2" not in names[i], names[i]))  # round 2 first
        ax.legend([handles[i] for i in order], [names[i] for i in order], fontsize=7.5, loc="lower right")
    plot.png = _png(fig)
    return plot


def token_sources(src: pd.DataFrame) -> Plot:
    """Stacked bars: prompt tokens by source per scenario and round."""
    plot = Plot(
        "token_sources",
        "Prompt tokens by source, per round",
        "Where each round's prompt tokens came from, from the engine's counters (mean over repeats): "
        "computed, local prefix-cache hits, or transferred from the external KV store.",
    )
    if src.empty:
        plot.missing = "the server exposed no prompt_tokens_by_source counters (columns absent or empty)"
        return plot
    names = [f"{lab}  r{int(r)}" for lab, r in zip(src["label"], src["round"])]
    fig = _figure(11, 1.9 + 0.38 * len(names))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    left = np.zeros(len(src))
    for c, color in SOURCE_COLORS.items():
        v = np.nan_to_num(src[c].to_numpy(dtype=float)) if c in src.columns else np.zeros(len(src))
        ax.barh(y, v, left=left, color=color, label=SOURCE_NAMES[c], height=0.7)
        left += v
    ax.set_yticks(y, names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("prompt tokens")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    plot.png = _png(fig)
    return plot


def _pct_of_ratio(v: float, _: object = None) -> str:
    return f"{(v - 1) * 100:+.0f} %"


def speedups(pairs: pd.DataFrame) -> Plot:
    """Per-request TTFT change (the same prompt's later-round TTFT vs its round-1 TTFT), one box per
    scenario and round (`pairs`: data.per_prompt_ratios). The axis is the ratio on a log scale
    (a halving and a doubling are equally far from 0), labelled as change %."""
    plot = Plot(
        "speedups",
        "Round over round: per-request TTFT change (same prompt, later round vs round 1)",
        "Each request's TTFT in a later round against the same prompt's round-1 TTFT, as change % "
        "(negative = faster; round 1 is itself partly warm where requests share a prefix: see its measured "
        "warmth). Box: 25-75 % of requests, line: median, whiskers: 5-95 % of requests (the spread, not a "
        "confidence interval). Log scale of the ratio.",
    )
    if pairs.empty:
        plot.missing = "no prompt answered successfully in both round 1 and a warm round"
        return plot
    multi = pairs["round"].nunique() > 1
    stats, names = [], []
    for (label, rnd), g in pairs.groupby(["label", "round"], sort=False):
        p = np.percentile(g["ratio"].to_numpy(dtype=float), [5, 25, 50, 75, 95])
        stats.append({"whislo": p[0], "q1": p[1], "med": p[2], "q3": p[3], "whishi": p[4], "fliers": []})
        names.append(f"{label} r{rnd} (n={len(g):,})" if multi else f"{label} (n={len(g):,})")
    fig = _figure(11, 1.6 + 0.5 * len(stats))
    ax = fig.add_subplot(1, 1, 1)
    ax.bxp(
        stats,
        showfliers=False,
        patch_artist=True,
        orientation="horizontal",
        boxprops={"facecolor": "#cfe2f3"},
        medianprops={"color": "#c0392b", "lw": 2},
    )
    ax.set_yticks(np.arange(1, len(names) + 1), names, fontsize=9)
    ax.invert_yaxis()
    for i, s in enumerate(stats, start=1):
        ax.annotate(
            f"median {_pct_of_ratio(s['med'])}",
            (s["whishi"], i),
            xytext=(6, 0),
            textcoords="offset points",
            fontsize=8,
            va="center",
        )
    ax.axvline(1, color="black", ls="--", lw=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_pct_of_ratio))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.15)
    ax.set_xlabel("TTFT change per request vs round 1 (%), log scale of later / round-1 TTFT")
    ax.grid(axis="x", alpha=0.3, which="both")
    plot.png = _png(fig)
    return plot


# ------------------------------------------------------------------ comparison of runs


def compare_bars(wide: pd.DataFrame, runs: list[str], metric: str, title: str, ylabel: str, name: str) -> Plot:
    """Grouped horizontal bars: one group per row of `wide` (its index), one bar per run (`wide` columns)."""
    plot = Plot(name, title, f"{ylabel}, one bar per run (mean over repeats); runs as named above.")
    if wide.empty or wide.isna().all().all():
        plot.missing = f"no {metric} values in any run"
        return plot
    groups = [str(i).replace("\n", "  ") for i in wide.index]
    y = np.arange(len(groups))
    h = 0.8 / len(runs)
    fig = _figure(11, 1.6 + 0.3 * len(groups) * max(1.5, len(runs)))
    ax = fig.add_subplot(1, 1, 1)
    for k, run in enumerate(runs):
        v = wide[run].to_numpy(dtype=float) if run in wide.columns else np.full(len(groups), np.nan)
        pos = y - 0.4 + h * (k + 0.5)
        ax.barh(pos, np.nan_to_num(v), height=h, color=RUN_COLORS[k % len(RUN_COLORS)], label=run)
        for p, x in zip(pos, v):
            ax.annotate(
                "n/a" if math.isnan(x) else f"{x:,.1f}",
                (0 if math.isnan(x) else x, p),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=7,
                va="center",
                ha="left" if x >= 0 else "right",
            )
    ax.set_yticks(y, groups, fontsize=9)
    ax.invert_yaxis()
    ax.margins(x=0.12)
    ax.set_xlabel(ylabel)
    ax.axvline(0, color="black", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=len(runs), fontsize=8, frameon=False)
    plot.png = _png(fig)
    return plot


def compare_cdf(req: pd.DataFrame, runs: list[str]) -> Plot:
    """TTFT CDFs of every run per scenario: colour = run, solid = round 1, dashed = round 2. `req`: run, label,
    round, ttft_ms."""
    plot = Plot(
        "compare_ttft_cdf",
        "TTFT distributions side by side",
        "Per scenario: solid lines round 1, dashed round 2; one colour per run.",
    )
    req = req[req["round"] <= 2] if not req.empty else req
    if req.empty:
        plot.missing = "no successful requests in any run"
        return plot
    labels = list(dict.fromkeys(req["label"]))
    fig = _figure(min(15, 5 * len(labels)), 3.6 * math.ceil(len(labels) / 3))
    groups = dict(tuple(req.groupby(["label", "run", "round"])))
    for ax, label in zip(_grid(fig, len(labels)), labels):
        allv = []
        for k, run in enumerate(runs):
            for rnd in (1, 2):
                g = groups.get((label, run, rnd))
                if g is None:
                    continue
                v = g["ttft_ms"].to_numpy(dtype=float)
                allv.append(v)
                _cdf(
                    ax,
                    v,
                    color=RUN_COLORS[k % len(RUN_COLORS)],
                    lw=2,
                    ls="-" if rnd == 1 else "--",
                    label=f"{run} r{rnd}",
                )
        if allv:
            _log_if_wide(ax, np.concatenate(allv))
        ax.set_title(label, fontsize=11)
        ax.set_xlabel("TTFT (ms)")
        ax.set_ylabel("share of requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    plot.png = _png(fig)
    return plot


def cliff(c: pd.DataFrame) -> Plot:
    """Hit rate by store size per scenario (a store-size sweep), with both reference lines."""
    plot = Plot(
        "cache_cliff",
        "Cache cliff: hits by store size",
        "Warm round, with cache. Hits as a share of what an infinite cache gives the same requests "
        "(expected reuse, the 100 % line); dashed: an LRU store of the same size simulated on the "
        "same request sequence (block size from the connector's own puts).",
    )
    c = c.dropna(subset=["store_mib", "hit_pct"]) if not c.empty else c
    if c.empty:
        plot.missing = "no sweep point has a store size and a measured hit rate"
        return plot
    scenarios = list(dict.fromkeys(c["scenario"]))
    fig = _figure(5.2 * min(3, len(scenarios)), 3.6 * math.ceil(len(scenarios) / 3))
    for ax, scen in zip(_grid(fig, len(scenarios)), scenarios, strict=True):
        g = c[c["scenario"] == scen]
        ax.axhline(100, color="gray", ls=":", label="infinite cache")
        ax.plot(g["store_mib"], g["lru_pct"], ls="--", marker=".", color="#7f8c8d", label="simulated LRU")
        ax.plot(g["store_mib"], g["hit_pct"], marker="o", color="#1f77b4", label="measured")
        ax.set_xscale("log", base=2)
        ax.set_xticks(g["store_mib"].to_numpy())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("store size (MiB)")
        ax.set_ylabel("hits, % of infinite cache")
        ax.set_ylim(0, 105)
        ax.set_title(scen, fontsize=10)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    plot.png = _png(fig)
    return plot


def breakeven(points: pd.DataFrame, curves: dict[str, tuple[np.ndarray, np.ndarray]], crossover: float) -> Plot:
    """Warm-round TTFT by prompt length with and without the connector, the fitted lines, the crossover."""
    plot = Plot(
        "breakeven",
        "Break-even prefix length",
        "Warm round, concurrency 1: each prompt a repeat. With the connector its KV is fetched from "
        "Mooncake, without it recomputed. Dots: means per prompt length; lines: least-squares fits (fetch "
        "linear, recompute quadratic in the prompt length). Log scales.",
    )
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for mode, color, name in (("with-cache", "#1f77b4", "fetch (with cache)"), ("baseline", "#d62728", "recompute")):
        ax.plot(points["tokens"], points[mode], "o", color=color, label=name)
        ax.plot(*curves[mode], "-", color=color, alpha=0.6)
    if np.isfinite(crossover):
        ax.axvline(crossover, color="gray", ls="--", label=f"break-even {crossover:,.0f} tokens")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prompt (= reused prefix) tokens")
    ax.set_ylabel("TTFT mean ms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plot.png = _png(fig)
    return plot


ARM_COLORS = {"none": "#d62728", "local": "#4a90d9", "store": "#2e8540", "local+store": "#8e44ad"}


def arms(t: pd.DataFrame, r0: float | None) -> Plot:
    """The four arms against working set / pool: TTFT (mean with its interval, p50) and the hit
    rate by tier (local pool, store), all arms on the same axes; the LRU prediction of the local
    pool's hit rate beside the measured one; R0 where the data name it."""
    plot = Plot(
        "arms",
        "Four arms: TTFT and hit rate by tier against working set / pool",
        "Measured rounds (2+: every document revisited), per working set / engine KV pool (x, log). Top: "
        "TTFT mean per arm (solid, bars: its 95 % interval; within-run with one repeat) and p50 (dashed). "
        "Middle: share of the measured rounds' prompt tokens served from the engine's own pool (vLLM's local "
        "prefix-cache hits) in the arms that have it, with the hit rate an LRU pool of the engine's size "
        "predicts for the same requests (dotted grey). Bottom: share served from the store (external hits) in "
        "the arms with the connector. Dotted black: the reusable share (an unbounded cache). The other arms "
        "are controls (their hits on a tier they lack are checked: misconfigured if any). Vertical line: R0, "
        "from which on local+store is faster than local at every measured ratio (interval below 0).",
    )
    t = t.dropna(subset=["ratio"]) if not t.empty else t
    if t.empty:
        plot.missing = "no working-set scenario with a measured ratio (engine pool read back) and a warm round"
        return plot
    fig = _figure(7.5, 9.0)
    top, mid, bottom = (fig.add_subplot(3, 1, i) for i in (1, 2, 3))
    for arm, g in t.groupby("arm", sort=False):
        g = g.sort_values("ratio")
        color = ARM_COLORS.get(str(arm), "#7f7f7f")
        err = np.vstack([g["ttft_mean_ms"] - g["ttft_lo"], g["ttft_hi"] - g["ttft_mean_ms"]])
        top.errorbar(g["ratio"], g["ttft_mean_ms"], yerr=np.nan_to_num(err), marker="o", color=color,
                     capsize=3, label=f"{arm} mean")  # fmt: skip
        top.plot(g["ratio"], g["ttft_p50_ms"], ls="--", marker=".", color=color, alpha=0.7, label=f"{arm} p50")
        if arm in ("local", "local+store"):
            mid.plot(g["ratio"], g["local_pct"], marker="o", color=color, label=f"{arm} (measured)")
        if arm in ("store", "local+store"):
            bottom.plot(g["ratio"], g["store_pct"], marker="s", color=color, label=str(arm))
    lru = t[t["arm"].isin(["local", "local+store"])].groupby("ratio")["lru_local_pct"].mean().dropna()
    if len(lru):
        mid.plot(lru.index, lru.to_numpy(), ls=":", color="#7f7f7f", lw=2.5, label="LRU prediction")
    reusable = t.groupby("ratio")["reusable_pct"].mean().dropna()
    for ax in (mid, bottom) if len(reusable) else ():
        ax.plot(reusable.index, reusable.to_numpy(), ls=":", color="black", lw=1, label="reusable (unbounded)")
    ratios = sorted(t["ratio"].unique())
    for ax in (top, mid, bottom):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ratios)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        if r0 is not None:
            ax.axvline(r0, color="gray", ls="-.", lw=1, label=f"R0 = {r0:g}" if ax is top else None)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    top.set_ylabel("TTFT ms (measured rounds)")
    top.set_ylim(bottom=0)
    mid.set_ylabel("% from the engine's pool")
    bottom.set_ylabel("% from the store")
    for ax in (mid, bottom):
        ax.set_ylim(-2, 105)
    bottom.set_xlabel("working set / engine KV pool (documents x tokens / pool tokens)")
    plot.png = _png(fig)
    return plot
