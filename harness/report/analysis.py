"""One analysis of a run, computed once: every figure, interval, verdict and sentence that the
report (Markdown, HTML, figures), summary.csv and the console show.

`analyse(run_dir or RunData) -> Analysis` loads the run (when given a directory) and computes
each frame exactly once; the renderers (tables, plots, write) only format what is here. The
bootstraps behind the intervals are the expensive part, so computing a frame twice would cost
seconds on a large run - and two computations of one fact could disagree.

Sign convention, everywhere: change % = 100 * (new / old - 1), negative = lower (a faster
TTFT), positive = higher (more throughput). Every interval is for the figure it is printed
beside and contains it (`Analysis.intervals` lists them all; tests/test_report_properties.py
checks that on random synthetic runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from harness.analysis import arms as A
from harness.analysis.frames import num
from harness.analysis.intervals import Interval, change_pct, repeats_change_pct, target_verdict
from harness.analysis.shortfall import shortfall_notes
from harness.config import Targets
from harness.records.metrics import HEADLINE, METRICS
from harness.report import breakeven as BE
from harness.report.data import (
    RunData,
    cache_cliff,
    evidence,
    kv_block,
    load_run,
    ok_requests,
    per_prompt_ratios,
    token_sources,
    working_sets,
)
from harness.report.tables import cliff_notes, cliff_table, round_phases, short_why, warm_round1_notes, why_lines
from harness.report.verdict import (
    fidelity,
    headline_round,
    mean_change,
    pair_up,
    per_prompt_change,
    reuse_buys,
    side,
    spans,
    targets_vs_baseline,
)


@dataclass(frozen=True)
class Reported:
    """One interval the analysis reports, with the figure it belongs to."""

    where: str  # table, scenario, round and figure
    estimate: float
    lo: float
    hi: float
    better: Literal["lower", "higher"]


@dataclass(frozen=True)
class Analysis:
    data: RunData
    requests: pd.DataFrame  # successful requests with a TTFT, labelled (data.ok_requests)
    vs_baseline: pd.DataFrame  # with cache vs without, per scenario and round, with target verdicts
    headline: pd.DataFrame  # the verdict's rows: vs_baseline at round 2 per scenario, with a short `why`
    round_over_round: pd.DataFrame  # the seed's figures: warm rounds vs round 1 of the same stack
    per_prompt: pd.DataFrame  # per warm request: TTFT ratio to the same prompt's round 1
    evidence: pd.DataFrame
    fidelity: pd.DataFrame
    token_sources: pd.DataFrame
    cliff: pd.DataFrame  # numeric (data.cache_cliff), for the figure
    cliff_table: pd.DataFrame
    cliff_notes: list[str]
    breakeven: BE.BreakEven | None
    phases: dict[tuple[str, int], str]
    warm_round1: list[str]
    why: list[str]
    shortfalls: list[str]  # with-cache rounds that reused < 90 % of what they could, and why (shortfall.py)
    # The four arms on working-set scenarios (analysis/arms.py): per ratio and arm, local+store vs
    # local per ratio, the crossover R0, and the cells whose arm measured something else than it claims.
    arms: pd.DataFrame = field(default_factory=pd.DataFrame)
    arm_changes: pd.DataFrame = field(default_factory=pd.DataFrame)
    crossover: A.Crossover | None = None
    misconfigured: dict[str, str] = field(default_factory=dict)  # cell dir -> why

    @property
    def targets(self) -> Targets:
        return self.data.targets

    @property
    def name(self) -> str:
        return self.data.name

    def intervals(self) -> list[Reported]:
        """Every interval the outputs show, next to its figure and the direction that is better."""
        out: list[Reported] = []
        for x in self.vs_baseline.to_dict("records"):
            where = f"vs baseline {x['label']} r{x['round']}"
            for m in HEADLINE:
                better = METRICS[m].better or "lower"
                out.append(Reported(f"{where} {m}", x[f"{m}_change"], x[f"{m}_lo"], x[f"{m}_hi"], better))
            paired = (x["paired_change"], x["paired_lo"], x["paired_hi"])
            out.append(Reported(f"{where} per-prompt TTFT", *paired, "lower"))
        for x in self.round_over_round.to_dict("records"):
            where = f"round over round {x['label']} r{x['round']}"
            for key, better in (("ttft", "lower"), ("tput", "higher"), ("prompt", "lower")):
                if f"{key}_change" in x:
                    out.append(Reported(f"{where} {key}", x[f"{key}_change"], x[f"{key}_lo"], x[f"{key}_hi"], better))
        for x in self.arms.to_dict("records"):
            where = f"arm {x['arm']} {x['scenario']} TTFT mean"
            out.append(Reported(where, x["ttft_mean_ms"], x["ttft_lo"], x["ttft_hi"], "lower"))
        for x in self.arm_changes.to_dict("records"):
            out.append(Reported(f"local+store vs local {x['scenario']}", x["change"], x["lo"], x["hi"], "lower"))
        if self.breakeven is not None:
            be = self.breakeven
            out.append(Reported("break-even tokens", be.crossover, be.lo, be.hi, "lower"))
        return out


def analyse(run: Path | str | RunData) -> Analysis:
    """The run's analysis: load it (unless already loaded), then compute every frame once."""
    data = run if isinstance(run, RunData) else load_run(Path(run))
    req = ok_requests(data)
    t = data.targets
    vs_base = targets_vs_baseline(reuse_buys(data, req), t.ttft_reduction_percent, t.throughput_increase_percent)
    return Analysis(
        data=data,
        requests=req,
        vs_baseline=vs_base,
        headline=_headline(data, vs_base),
        round_over_round=round_over_round(data, req),
        per_prompt=per_prompt_ratios(req),
        evidence=evidence(data),
        fidelity=fidelity(data, req),
        token_sources=token_sources(data),
        cliff=cache_cliff(data),
        cliff_table=cliff_table(data),
        cliff_notes=cliff_notes(data),
        breakeven=BE.break_even(data),
        phases=round_phases(data),
        warm_round1=warm_round1_notes(data),
        why=why_lines(data, vs_base),
        shortfalls=shortfall_notes(data.rounds),
        **_arms(data, req),
    )


def _arms(data: RunData, req: pd.DataFrame) -> dict:
    """The four arms' frames (empty without working-set scenarios) and the controls of every arm cell."""
    block = kv_block(data)
    table = A.arm_table(data.rounds, req, working_sets(data), block)
    changes = A.changes_by_ratio(table, data.rounds, req)
    bad = {}
    r = data.rounds
    if not r.empty:
        for d, g in r[(r["round"] > 1) & (r["isolation"] != "external")].groupby("dir"):  # our stacks' arms
            if d in data.dirs.index and data.dirs.loc[d, "status"] in ("failed", "degraded", "interrupted"):
                continue  # said as such; its counters do not judge the arm
            rel = str(data.dirs.loc[d, "dir"]) if d in data.dirs.index else str(d)
            why = A.control_problem(str(g["mode"].iloc[0]), g, block)
            if why:
                bad[rel] = why
    for rel, reason in data.dirs.loc[data.dirs["status"] == "misconfigured", ["dir", "reason"]].values:
        bad.setdefault(str(rel), str(reason))  # found before its rounds (the engine's own flags): none ran
    if not table.empty:
        cells = {str(data.dirs.loc[d, "dir"]): (s, m) for d, s, m in zip(r["dir"], r["scenario"], r["mode"])}
        flagged = {cells[k] for k in bad if k in cells}
        table = table.assign(
            control=["MISCONFIGURED" if (s, m) in flagged else "ok" for s, m in zip(table["scenario"], table["mode"])]
        )
    return {"arms": table, "arm_changes": changes, "crossover": A.crossover(changes), "misconfigured": bad}


def _headline(data: RunData, vs_base: pd.DataFrame) -> pd.DataFrame:
    """The verdict's rows (verdict.headline_round), each with why the cache missed a target, if it did."""
    head = headline_round(vs_base)
    if head.empty:
        return head
    return head.assign(why=[short_why(data, x) for x in head.to_dict("records")])


# ------------------------------------------------------------------ round over round


def _partial(g: pd.DataFrame) -> bool:
    return bool(num(g, "partial").fillna(0).astype(bool).any())


def _per_repeat_change(first: pd.DataFrame, warm: pd.DataFrame, metric: str) -> list[float]:
    """Each repeat's change of `metric` from its round 1 to this warm round (rounds.csv)."""
    before = num(first, metric).groupby(first["dir"]).mean()
    after = num(warm, metric).groupby(warm["dir"]).mean()
    return [change_pct(before.get(d, math.nan), v) for d, v in after.items()]


def _figure(iv: Interval, key: str) -> dict:
    return {f"{key}_change": iv.estimate, f"{key}_lo": iv.lo, f"{key}_hi": iv.hi, f"{key}_method": iv.method}


def _warm_round(req: pd.DataFrame, first: pd.DataFrame, warm: pd.DataFrame, rnd: int, t: Targets) -> dict:
    """A warm round against round 1 of the same stacks: TTFT mean change (paired by prompt with one
    repeat), throughput change, the typical per-prompt TTFT change, and the seed's targets read
    from the intervals (met / not met / inconclusive, intervals.target_verdict)."""
    pairs = pair_up(side(req, first, 1), side(req, warm, rnd))
    ttft = mean_change(pairs, _per_repeat_change(first, warm, "ttft_mean_ms"))
    tput = repeats_change_pct(_per_repeat_change(first, warm, "req_per_s"))
    return {
        **_figure(ttft, "ttft"),
        "ttft_verdict": target_verdict(ttft.estimate, ttft.lo, ttft.hi, -t.ttft_reduction_percent, "lower"),
        **_figure(tput, "tput"),
        "tput_verdict": target_verdict(tput.estimate, tput.lo, tput.hi, t.throughput_increase_percent, "higher"),
        **_figure(per_prompt_change(pairs), "prompt"),
        "prompts": len(pairs),
        "note": "",
    }


def round_over_round(data: RunData, req: pd.DataFrame) -> pd.DataFrame:
    """Per scenario cell (label) and warm round: the change vs round 1 of the same stack, with
    intervals and the seed's targets. A cell without a warm round, or with a round cut short,
    gets a row that says so and no verdict."""
    rounds = data.rounds
    if rounds.empty:
        return pd.DataFrame()
    rows = []
    for (label, scen, mode, iso), g in rounds.groupby(["label", "scenario", "mode", "isolation"], sort=False):
        ident = {"label": label, "scenario": scen, "mode": mode, "isolation": iso}
        first, warm = g[g["round"] == 1], g[g["round"] > 1]
        if warm.empty:
            note = "round 2 missing: no warm round"
            rows.append({**ident, "round": math.nan, "repeats": g["repeat"].nunique(), "note": note})
            continue
        for rnd, w in warm.groupby("round"):
            row = {**ident, "round": int(rnd), "repeats": len(w)}
            if _partial(w) or _partial(first):  # cut short: counts, never a verdict
                row["note"] = (
                    f"partial: {int(num(w, 'requests').sum())} of {int(num(w, 'planned').sum())} requests sent, "
                    f"{int(num(w, 'failures').sum())} failed; no verdict"
                )
            else:
                row.update(_warm_round(req, first, w, int(rnd), data.targets))
                row["spans"] = spans(len(w), int(w["dir"].nunique()), iso)
            rows.append(row)
    return pd.DataFrame(rows)


def changes_by_round(a: Analysis) -> pd.DataFrame:
    """The round-over-round figures as summary.csv columns (`vs_round1_*`), keyed by label and round."""
    rr = a.round_over_round
    if rr.empty or "ttft_change" not in rr.columns:
        return pd.DataFrame()
    keep = [c for c in rr.columns if c.split("_")[0] in ("ttft", "tput", "prompt") and not c.endswith("_verdict")]
    out = rr[["label", "round", *keep]].dropna(subset=["round"]).astype({"round": int})
    prefix = {"ttft": "vs_round1_ttft_mean_ms", "tput": "vs_round1_req_per_s", "prompt": "vs_round1_paired"}
    return out.rename(columns={c: prefix[c.split("_")[0]] + c[c.index("_") :] for c in keep})
