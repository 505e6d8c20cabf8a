"""A run's report written: report.md, report.html (self-contained), plots/*.png and summary.csv.

Everything rendered here comes from one `analysis.Analysis` (the run loaded and analysed once):
`report_and_summary(run_dir)` writes the report and returns the console summary from the same
analysis (the end of every bench run); `write_report(run_dir)` writes the report only;
`console_summary(run_dir)` is the text printed after a run; `report_main(run_dirs, out)` is
`kvbench report` itself (several run directories -> one side-by-side comparison). The tables
come from `tables`, figures from `plots`, HTML blocks from `html_page`, the comparison from
`compare`, console fitting from `harness.fit`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness.analysis.arms import verdict_line
from harness.analysis.intervals import INCONCLUSIVE, MET, NOT_MET
from harness.records import ISOLATED
from harness.report import breakeven as BE
from harness.report import compare
from harness.report import html_page as H
from harness.report import plots as P
from harness.report.analysis import Analysis, analyse, changes_by_round
from harness.report.data import RunData, load_run
from harness.report.fit import fit_table, terminal_width, wrap
from harness.report.tables import (
    arms_table,
    by_question,
    connector_table,
    drop_default_mode,
    evidence_tables,
    fidelity_table,
    headline_name,
    isolation_table,
    reuse_tables,
    round_over_round_table,
    run_info,
    server_table,
    short_change_ci,
    sizing_table,
    stats_tables,
    status_rows,
    summary_csv,
    timings_table,
    turns_table,
    verdict_table,
)
from harness.report.verdict import WITHIN_RUN
from harness.results import write_table

# The figures, in the order the report shows them: the headline (with the cache vs without) first,
# then the seed's round-over-round figures, then the rest.
HEADLINE_PLOTS = ("headline_changes", "with_without_cdf")
SEED_PLOTS = ("ttft_cdf", "gains", "speedups")
ARMS_PLOTS = ("arms",)
PLOT_NAMES = (*HEADLINE_PLOTS, *SEED_PLOTS, "token_sources", "cache_cliff", "breakeven", *ARMS_PLOTS)


TEXT_COLS = (
    "scenario",
    "mode",
    "isolation",
    "status",
    "stack project",
    "engine container",
    "contamination",
    "reuse achieved/expected tokens",
    "reason",
    "phase",
    "note",
    "run",
    "metric",
    "key",
    "value",
    "run id",
    "path",
    "scenarios",
    "arm",
    "documents x tokens",
    "95 % CI",
    "vs local 95 % CI",
    "control",
)


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


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no rows)"
    return tabulate(df, headers="keys", tablefmt="github", showindex=False, disable_numparse=True)


def md_notes(notes: list[str]) -> list[str]:
    if not notes:
        return ["Complete: every scenario has its manifest entry, request rows and rounds.", ""]
    return [f"- {n}" for n in notes] + [""]


def md_plots(plots: list[P.Plot]) -> list[str]:
    out = []
    for p in plots:
        out += [
            f"### {p.title}",
            "",
            f"![{p.title}](plots/{p.name}.png)" if p.png else f"_No figure: {p.missing}._",
            "",
        ]
    return out


Tables = list[tuple[str, str, pd.DataFrame]]  # (HTML table id, title, display strings)


# The seed's round-over-round table, one table per question.
SEED_QUESTIONS = (
    ("reductions", "TTFT", ("TTFT", "per-prompt", "note")),
    ("reductions-throughput", "Throughput", ("throughput",)),
)


def _sections(a: Analysis) -> dict[str, pd.DataFrame]:
    data = a.data
    return {
        "verdict": verdict_table(a.headline, a.targets),
        "evidence": drop_default_mode(a.evidence),
        "reductions": round_over_round_table(a.round_over_round, a.targets),
        "timings": timings_table(data),
        "isolation": isolation_table(data),
        "fidelity": fidelity_table(a.fidelity),
        "server": server_table(data),
        "connector": connector_table(data),
        "turns": turns_table(data),
        "cliff": a.cliff_table,
        "sizing": sizing_table(data),
        "breakeven": BE.table(a.breakeven) if a.breakeven else pd.DataFrame(),
        "arms": arms_table(a.arms, a.arm_changes),
    }


def _split(a: Analysis, tabs: dict[str, pd.DataFrame]) -> dict[str, Tables]:
    """The wide tables, each as one table per question, so none needs scrolling on a wide screen."""
    return {
        "reuse": reuse_tables(a.vs_baseline, a.targets),
        "evidence": evidence_tables(tabs["evidence"]),
        "reductions": by_question(
            tabs["reductions"], ("scenario", "mode", "isolation", "round", "repeats"), SEED_QUESTIONS
        ),
        "stats": stats_tables(a.data),
    }


VERDICT_TITLE = "Verdict: with the KV cache vs without it (round 2, warm; same prompts)"


def _verdict_lines(a: Analysis) -> tuple[str, str]:
    """The verdict's two sentences: the answer counted over scenarios, and how to read the rows."""
    if a.headline.empty:
        return NO_BASELINE, ""
    t = a.targets
    answer = _answer(a.headline).removeprefix("Verdict: ")  # the title says Verdict
    return answer[:1].upper() + answer[1:], (
        "One row per scenario: round 2 (warm) with the cache vs without it, same prompts, each on a stack "
        "of its own. Change % = 100 x (with / without - 1): negative = faster TTFT, positive = more "
        f"throughput; the 95 % CI is for the figure beside it ({spans_line(a.headline)}). Targets, read from "
        f"the interval: TTFT <= -{t.ttft_reduction_percent:g} %, throughput >= +{t.throughput_increase_percent:g} "
        "%: met when the whole interval is beyond the target, not met when the whole interval falls short, "
        "inconclusive when it straddles the target or there is no interval. Warmth: share of the with-cache "
        "round's prompt tokens served from cache."
    )


NO_BASELINE = (
    "Verdict: this run has no baseline cells on isolated stacks (fresh, or proven cold by a reset), "
    "so nothing here measures with the cache vs without it (run with --mode both); the "
    "round-over-round figures compare rounds of the same stack only."
)


REUSE_TITLE = "What reuse buys: with the KV cache vs without it (same prompts, each on its own fresh stack)"


REUSE_TEXT = (
    "Per round, the same prompts with the KV connector and on the same engine without it (baseline). "
    "'with cache' is the measured warmth of the with-cache round (share of prompt tokens served from "
    "cache). Change % = 100 x (with / without - 1): negative = lower (faster TTFT), positive = higher "
    "(more throughput); every 95 % CI is for the figure beside it. TTFT mean change: with one repeat, "
    "the change of the mean over the prompts answered in both (BCa bootstrap over prompts, paired by "
    "prompt); with several, Student-t over the repeats' changes. Percentiles and throughput: Student-t "
    "over repeats (none with one repeat). Per-prompt TTFT change: geometric mean of each prompt's "
    "with/without TTFT ratio (BCa bootstrap over prompts, or Student-t over the repeats' estimates)."
)
SEED_TEXT = (
    "The seed's round-over-round figures and targets: each warm round against round 1 of the same stack "
    "(round 1 is itself partly warm where requests share a prefix: read the with-cache vs baseline "
    "figures above). Change % = 100 x (round r / round 1 - 1), each beside the 95 % CI of that figure: "
    "TTFT mean change, with one repeat over the prompts answered in both rounds (BCa over prompts), with "
    "several Student-t over the repeats' changes; throughput Student-t over repeats. A TTFT target of "
    "60 % is met by a change of -60 % or lower."
)


def section_notes(a: Analysis) -> dict[str, list[str]]:
    """Sentences shown under an optional section's table."""
    return {"cliff": a.cliff_notes, "breakeven": BE.notes(a.breakeven) if a.breakeven else []}


# Sections shown only when they have rows: (table key = HTML table id, title).
OPTIONAL = (
    ("server", "Client vs server-side timings (vLLM's own histograms, per round)"),
    ("connector", "Where the time goes in the KV connector (its own RPC timers, per round)"),
    ("breakeven", "Break-even prefix length: fetching vs recomputing the KV (warm round, concurrency 1)"),
    ("cliff", "Cache cliff: hit rate by store size (sweep), vs an infinite cache and a simulated LRU store"),
    ("sizing", "Store sizing per round: segment, keys, eviction watermark, evictions, allocation failures"),
    ("turns", "Multi-turn: TTFT and reused history by turn"),
    ("fidelity", "Reuse fidelity (temperature 0: identical generated tokens)"),
    ("isolation", "Isolation: round 1 on a stack of its own (fresh or verified reset) vs one shared stack"),
    ("timings", "Timings"),
)
SEED_TITLE = "Round over round (the seed's figures and targets: warm rounds vs round 1 of the same stack)"


def _targets_text(a: Analysis) -> str:
    t = a.targets
    return f"targets: TTFT mean change <= -{t.ttft_reduction_percent:g} %, throughput change >= " \
           f"+{t.throughput_increase_percent:g} %"  # fmt: skip


def md_tables(tables: Tables) -> list[str]:
    out: list[str] = []
    for _, title, df in tables:
        out += [f"### {title}", "", md_table(df), ""]
    return out


def _by_name(plots: list[P.Plot], names: tuple[str, ...]) -> list[P.Plot]:
    return [p for p in plots if p.name in names]


def _other_plots(plots: list[P.Plot]) -> list[P.Plot]:
    return [p for p in plots if p.name not in HEADLINE_PLOTS + SEED_PLOTS + ARMS_PLOTS]


ARMS_TITLE = "Four arms: what the store adds over vLLM's own prefix cache, by working set / pool"
ARMS_TEXT = (
    "Each arm on a stack of its own (fresh, or proven cold by a verified reset), the same prompts: none (no "
    "prefix cache, no connector), local (vLLM's prefix cache in the engine's own KV pool), store (the KV "
    "connector to Mooncake, no local prefix cache), local+store (both). Working set / pool = documents x "
    "document tokens over the pool the engine allocated (vllm:cache_config_info, blocks x block size). "
    "Figures over the measured rounds (2+: every document revisited). local pool % and store %: the "
    "engine's own counters (vllm:prefix_cache_hits, vllm:external_prefix_cache_hits) as a share of the "
    "measured rounds' prompt tokens (vllm:prompt_tokens); local LRU-predicted %: an LRU pool of the "
    "engine's size simulated on the same requests; reusable %: an unbounded cache. TTFT mean with its 95 % "
    "interval (one repeat: within-run, over requests; several: over repeats). vs local: local+store's "
    "change of the mean TTFT against local's, paired by prompt (negative = faster)."
)


def arms_lines(a: Analysis) -> list[str]:
    """The four arms' verdict and the controls that failed, as sentences."""
    if a.arms.empty and not a.misconfigured:
        return []
    out = [] if a.arms.empty else [verdict_line(a.crossover)]
    return out + [f"MISCONFIGURED {cell}: {why}." for cell, why in a.misconfigured.items()]


HEADLINE_FIGURES = "Headline figures: with the cache vs without"
OTHER_FIGURES = "Other figures"
REUSE_DETAIL = "Details behind the verdict"


def _markdown(a: Analysis, tabs: dict[str, pd.DataFrame], plots: list[P.Plot] | None) -> str:
    """The report as Markdown, in the HTML page's order: the verdict, the headline figures, the
    with-vs-without tables by question, evidence, the seed's round-over-round, the rest."""
    data, split = a.data, _split(a, tabs)
    answer, how = _verdict_lines(a)
    parts = [f"# kvbench report: {data.name}", "", run_info(data), "", f"## {VERDICT_TITLE}", "", f"**{answer}**", ""]
    if not a.headline.empty:
        v = tabs["verdict"]
        parts += [how, "", md_table(v.drop(columns="why")), ""]
        parts += [f"- why {name}: {why}" for name, why in zip(v["scenario"], v["why"]) if why] + [""]
    if arm_lines := arms_lines(a):
        parts += [f"## {ARMS_TITLE}", "", *[f"**{x}**" for x in arm_lines[:1]], "", *[f"- {x}" for x in arm_lines[1:]]]
        if plots is not None:
            parts += md_plots(_by_name(plots, ARMS_PLOTS))
        if not tabs["arms"].empty:
            parts += [ARMS_TEXT, "", md_table(tabs["arms"]), ""]
    if data.notes:
        parts += ["## What is missing", "", *md_notes(data.notes)]
    if plots is not None and not a.headline.empty:
        parts += [f"## {HEADLINE_FIGURES}", "", *md_plots(_by_name(plots, HEADLINE_PLOTS))]
    if split["reuse"]:
        parts += [f"## {REUSE_TITLE}", "", REUSE_TEXT, "", *md_tables(split["reuse"])]
    parts += [
        *[f"> {n}" for n in a.warm_round1],
        "",
        *[f"> Why: {n}" for n in a.why],
        "",
        *[f"> Reuse shortfall: {n}" for n in a.shortfalls],
        "",
    ]
    if not data.notes:
        parts += ["## What is missing", "", *md_notes(data.notes)]
    parts += ["## Evidence: isolation and cleanliness", "", *md_tables(split["evidence"])]
    parts += [f"## {SEED_TITLE} ({_targets_text(a)})", "", SEED_TEXT, "", *md_tables(split["reductions"])]
    if plots is not None:
        parts += md_plots(_by_name(plots, SEED_PLOTS))
        if a.headline.empty:  # the verdict says why there is no headline figure
            parts += [f"## {HEADLINE_FIGURES}", "", *md_plots(_by_name(plots, HEADLINE_PLOTS))]
        parts += [f"## {OTHER_FIGURES}", "", *md_plots(_other_plots(plots))]
    parts += ["## Per-round statistics", "", *md_tables(split["stats"])]
    said = section_notes(a)
    for key, title in OPTIONAL:
        if not tabs[key].empty:
            parts += [f"## {title}", "", md_table(tabs[key]), "", *[f"- {n}" for n in said.get(key, [])], ""]
    return "\n".join(parts) + "\n"


def html_figures(plots: list[P.Plot]) -> list[str]:
    return [H.figure(p.png, p.title, p.caption) if p.png else H.missing_figure(p.title, p.missing) for p in plots]


def html_tables(tables: Tables) -> list[str]:
    return [x for table_id, title, df in tables for x in (H.question(title), H.table(df, table_id, TEXT_COLS))]


def _html_verdict(a: Analysis, tabs: dict[str, pd.DataFrame]) -> str:
    answer, how = _verdict_lines(a)
    if a.headline.empty:
        return H.section(VERDICT_TITLE, H.paragraph(answer, "answer"), section_id="verdict")
    return H.section(
        VERDICT_TITLE,
        H.paragraph(answer, "answer"),
        H.table(tabs["verdict"], "verdict-table", TEXT_COLS, below="why"),
        H.paragraph(how),
        section_id="verdict",
    )


def _html(a: Analysis, tabs: dict[str, pd.DataFrame], plots: list[P.Plot]) -> str:
    data, split = a.data, _split(a, tabs)
    parts = [_html_verdict(a, tabs)]
    if arm_lines := arms_lines(a):
        parts.append(
            H.section(
                ARMS_TITLE,
                H.paragraph(arm_lines[0], "answer"),
                *[H.paragraph(x) for x in arm_lines[1:]],
                *html_figures(_by_name(plots, ARMS_PLOTS)),
                *([H.table(tabs["arms"], "arms", TEXT_COLS), H.paragraph(ARMS_TEXT)] if not tabs["arms"].empty else []),
                section_id="arms-section",
            )
        )
    if data.notes:
        parts.append(H.notes(data.notes))
    # on the first screen, no section heading: the figures' own titles say what they are
    title = HEADLINE_FIGURES if a.headline.empty else ""
    headline_figures = H.section(title, *html_figures(_by_name(plots, HEADLINE_PLOTS)), section_id="headline-figures")
    if not a.headline.empty:
        parts.append(headline_figures)
    if split["reuse"]:
        parts.append(
            H.section(
                REUSE_TITLE,
                H.paragraph(REUSE_TEXT),
                *html_tables(split["reuse"]),
                *[H.paragraph(n) for n in a.warm_round1],
                *[H.paragraph(f"Why: {n}") for n in a.why],
                *[H.paragraph(f"Reuse shortfall: {n}") for n in a.shortfalls],
            )
        )
    parts += [
        *([] if data.notes else [H.notes(data.notes)]),
        H.section(
            "Evidence: isolation and cleanliness",
            *html_tables(split["evidence"]),
            H.paragraph(
                "One fresh Docker Compose stack per scenario (or one shared stack): its project, the "
                "engine container, the cold check before round 1, the teardown check, foreign cache "
                "hits, KV reuse achieved vs what the scenario itself makes possible."
            ),
            section_id="evidence-section",
        ),
        H.section(
            f"{SEED_TITLE} ({_targets_text(a)})",
            H.paragraph(SEED_TEXT),
            *html_tables(split["reductions"]),
            *html_figures(_by_name(plots, SEED_PLOTS)),
        ),
        *([headline_figures] if a.headline.empty else []),
        H.section(OTHER_FIGURES, *html_figures(_other_plots(plots))),
        H.section("Per-round statistics", *html_tables(split["stats"])),
    ]
    said = section_notes(a)
    parts += [
        H.section(title, H.table(tabs[key], key, TEXT_COLS), *[H.paragraph(n) for n in said.get(key, [])])
        for key, title in OPTIONAL
        if not tabs[key].empty
    ]
    return H.page(f"kvbench report: {data.name}", run_info(data), parts)


def render(run_dir: Path) -> str:
    """The report as Markdown, without figures (write_report adds them)."""
    a = analyse(Path(run_dir))
    return _markdown(a, _sections(a), None)


def _write(a: Analysis, out: Path) -> tuple[Path, str]:
    out.mkdir(parents=True, exist_ok=True)
    tabs = _sections(a)
    plots = make_plots(a)
    save_plots(plots, out, PLOT_NAMES)
    text = _markdown(a, tabs, plots)
    path = out / "report.md"
    path.write_text(text)
    (out / "report.html").write_text(_html(a, tabs, plots))
    if not a.data.rounds.empty:
        write_table(out / "summary.csv", summary_csv(a.data, a.vs_baseline, changes_by_round(a)))
    return path, text


def write_report(run_dir: Path, out_dir: Path | None = None) -> tuple[Path, str]:
    """report.md, report.html, plots/*.png and summary.csv into `out_dir` (default: the run directory)."""
    run_dir = Path(run_dir)
    return _write(analyse(run_dir), Path(out_dir) if out_dir else run_dir)


def report_and_summary(run_dir: Path, out_dir: Path | None = None, width: int | None = None) -> str:
    """The end of a run: the report written and the console summary returned, from one analysis."""
    a = analyse(Path(run_dir))
    md, _ = _write(a, Path(out_dir) if out_dir else a.data.run_dir)
    return console_text(a, md.with_suffix(".html"), width)


def console_summary(run: Path | Analysis, width: int | None = None) -> str:
    """The text printed after a run (the report is written first when it is not there yet). Give
    the Analysis when there is one: a path is loaded and analysed again."""
    a = run if isinstance(run, Analysis) else analyse(Path(run))
    html = a.data.run_dir / "report.html"
    if not html.exists():
        _write(a, a.data.run_dir)
    return console_text(a, html, width)


# ------------------------------------------------------------------ console


def _short(verdict: object) -> str:
    """A target verdict in the console's narrow column ("inconcl." for inconclusive)."""
    return "inconcl." if verdict == INCONCLUSIVE else str(verdict)


def _seed_rows(a: Analysis) -> pd.DataFrame:
    """The round-over-round figures, compact: one row per cell label and warm round."""
    rr = a.round_over_round
    if rr.empty or "ttft_change" not in rr.columns:
        return pd.DataFrame()
    rr = rr.dropna(subset=["round"])
    several = rr["round"].nunique() > 1
    return pd.DataFrame(
        {
            "scenario": [f"{lab} r{int(n)}" if several else lab for lab, n in zip(rr["label"], rr["round"])],
            "TTFT mean chg %": [short_change_ci(*x) for x in zip(rr["ttft_change"], rr["ttft_lo"], rr["ttft_hi"])],
            "thrpt chg %": [short_change_ci(*x) for x in zip(rr["tput_change"], rr["tput_lo"], rr["tput_hi"])],
            "targets": [
                f"{_short(x)}/{_short(y)}" if not note else "no verdict"
                for x, y, note in zip(rr["ttft_verdict"], rr["tput_verdict"], rr["note"].fillna(""))
            ],
        }
    )


def _verdict_rows(head: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "scenario": [lab if n == 2 else f"{lab} r{n}" for lab, n in zip(head["label"], head["round"])],
            "TTFT mean chg %": [
                short_change_ci(*x)
                for x in zip(head["ttft_mean_ms_change"], head["ttft_mean_ms_lo"], head["ttft_mean_ms_hi"])
            ],
            "thrpt chg %": [
                short_change_ci(*x) for x in zip(head["req_per_s_change"], head["req_per_s_lo"], head["req_per_s_hi"])
            ],
            "targets": [f"{_short(x)}/{_short(y)}" for x, y in zip(head["ttft_target"], head["tput_target"])],
        }
    )


def _answer(head: pd.DataFrame) -> str:
    """The one sentence that answers the question, counted over scenarios: how many intervals clear 0
    (each at 95 %, unadjusted for the number of scenarios: say so), and the targets read from the
    intervals (met / not met / inconclusive)."""
    n = len(head)
    lower = int((head["ttft_mean_ms_hi"] < 0).sum())
    higher = int((head["ttft_mean_ms_lo"] > 0).sum())
    both = (head["ttft_target"] == MET) & (head["tput_target"] == MET)
    missed = (head["ttft_target"] == NOT_MET) | (head["tput_target"] == NOT_MET)
    met, not_met = int(both.sum()), int(missed.sum())
    unclear = n - lower - higher
    adjust = f", unadjusted for {n}" if n > 1 else ""
    inconclusive = n - met - not_met
    targets = [f"both targets met in {met} of {n}", *([f"a target not met in {not_met}"] if not_met else []),
               *([f"inconclusive in {inconclusive}"] if inconclusive else [])]  # fmt: skip
    return (
        f"Verdict: with the cache, warm mean TTFT lower in {lower} of {n} scenario(s), higher in {higher} "
        f"(95 % CIs clear of 0{adjust})" + (f", unclear in {unclear}" if unclear else "") + f"; {', '.join(targets)}."
    )


def spans_line(head: pd.DataFrame) -> str:
    """Which noise the headline's intervals span: the stacks per arm, or, with one repeat, only the
    prompts of one stack (within-run: a second stack can differ by more, docs/statistics.md)."""
    what = list(dict.fromkeys(head["spans"].astype(str))) if "spans" in head else []
    if not what:
        return ""
    if what == [WITHIN_RUN]:
        return "CIs within-run (prompts of one stack per arm): stack-to-stack noise not in them (--repeats N)"
    return "CIs over " + "; ".join(what)


def _verdict_block(a: Analysis, width: int) -> list[str]:
    """What the run answers: with cache vs without, warm round 2, same prompts. The console's last lines."""
    head = a.headline
    if head.empty:
        return wrap(NO_BASELINE.replace("the round-over-round figures", "the round-over-round figures above"), width)
    t = a.targets
    return [
        *wrap("With the KV cache vs without it: warm round 2, same prompts, isolated stacks", width),
        *wrap(
            f"change % [95 % CI] = 100 x (with/without - 1); targets <= -{t.ttft_reduction_percent:g} % / "
            f">= +{t.throughput_increase_percent:g} %",
            width,
        ),
        *fit_table(_verdict_rows(head), width, drop=("targets",), shrink="scenario"),
        *(wrap(noise, width) if (noise := spans_line(head)) else []),
        *wrap(_answer(head), width),
    ]


def _status_lines(status: pd.DataFrame, width: int) -> list[str]:
    """Every cell ok (which means proven cold and torn down clean): one line; otherwise the table."""
    if status.empty:
        return ["no scenario results"]
    if (status["status"] == "ok").all():
        return wrap(f"{len(status)} of {len(status)} cells ok: each proven cold before round 1, torn down, "
                    "nothing left", width)  # fmt: skip
    return fit_table(
        status, width, drop=("reps", "r1 TTFT p50 ms", "r2 TTFT p50 ms"), shrink="scenario", label_floor=999
    )


def console_text(a: Analysis, html: Path, width: int | None = None) -> str:
    """The console summary: the cells, the seed's round-over-round figures (labelled as such), the
    notes, where the report is; and last, the verdict with cache vs without. Every line fits
    `width` (default: the terminal's): tables drop columns, sentences wrap."""
    w = width or terminal_width()
    data = a.data
    out: list[str] = []
    out += _status_lines(status_rows(data), w)
    seed = _seed_rows(a)
    if not a.headline.empty:  # the verdict below compares modes: the seed's view is of the cache
        seed = seed[~seed["scenario"].str.contains(r"\[baseline\]", regex=True)]
    if not seed.empty:
        out += wrap("Round over round (seed's targets): warm round vs round 1 of the same stack", w)
        out += fit_table(seed, w, drop=("targets",), shrink="scenario")
    for prefix, sentences in (("note: ", a.warm_round1), ("why: ", a.why), ("shortfall: ", a.shortfalls)):
        for n in sentences:
            out += wrap(prefix + n, w, indent="  ")
    if data.notes:
        out += wrap(f"{len(data.notes)} note(s) on missing data: see the report", w)
    out += [f"report: {html}", *_verdict_block(a, w)]
    for line in arms_lines(a):
        out += wrap(line, w)
    return "\n".join(out)


def _compare_markdown(cmp: compare.Comparison, plots: list[P.Plot]) -> str:
    parts = [
        "# kvbench comparison: " + " vs ".join(cmp.labels),
        "",
        " | ".join(f"{lab}: {d.name}" for lab, d in zip(cmp.labels, cmp.datas)),
        "",
        "## What is missing",
        "",
        *md_notes(cmp.notes),
        "## Runs",
        "",
        md_table(cmp.runs),
        "",
        "## Configuration differences",
        "",
        md_table(cmp.config_diff),
        "",
        "## Reductions side by side (round 2 vs round 1; pp = percentage points vs run A)",
        "",
        md_table(cmp.reductions),
        "",
        "## Figures",
        "",
        *md_plots(plots),
        "## Metrics side by side (mean over repeats; delta vs run A)",
        "",
        md_table(cmp.metrics),
        "",
        "## Evidence: isolation and cleanliness",
        "",
        md_table(cmp.evidence),
        "",
    ]
    return "\n".join(parts) + "\n"


def _write_comparison(datas: list[RunData], out: Path) -> tuple[Path, str, compare.Comparison]:
    out.mkdir(parents=True, exist_ok=True)
    cmp = compare.build(datas)
    plots = compare.plots(cmp)
    save_plots(plots, out, compare.PLOT_NAMES)
    text = _compare_markdown(cmp, plots)
    path = out / "comparison.md"
    path.write_text(text)
    body = [
        H.notes(cmp.notes),
        H.section("Runs", H.table(cmp.runs, "runs", TEXT_COLS)),
        H.section("Configuration differences", H.table(cmp.config_diff, "config-diff", TEXT_COLS)),
        H.section(
            "Reductions side by side (round 2 vs round 1; pp = percentage points vs run A)",
            H.table(cmp.reductions, "reductions", TEXT_COLS),
        ),
        H.section("Figures", *html_figures(plots)),
        H.section(
            "Metrics side by side (mean over repeats; delta vs run A)", H.table(cmp.metrics, "metrics", TEXT_COLS)
        ),
        H.section("Evidence: isolation and cleanliness", H.table(cmp.evidence, "evidence", TEXT_COLS)),
    ]
    subtitle = " | ".join(f"{lab}: {d.name}" for lab, d in zip(cmp.labels, datas))
    (out / "comparison.html").write_text(H.page("kvbench comparison: " + " vs ".join(cmp.labels), subtitle, body))
    return path, text, cmp


def write_comparison(run_dirs: list[Path], out_dir: Path | None = None) -> tuple[Path, str]:
    """comparison.md / comparison.html (+ plots/compare_*.png) for several runs; default out: the first run dir."""
    datas = [load_run(Path(d)) for d in run_dirs]
    path, text, _ = _write_comparison(datas, Path(out_dir) if out_dir else Path(run_dirs[0]))
    return path, text


def _has_results(run_dir: Path) -> bool:
    """A cheap look: a manifest, or any rounds.csv / requests.csv below the directory."""
    return (run_dir / "manifest.json").exists() or any(
        next(run_dir.rglob(name), None) is not None for name in ("rounds.csv", "requests.csv")
    )


def report_main(run_dirs: list[Path], out: Path | None) -> int:
    """`kvbench report RUN_DIR [RUN_DIR ...] [--out DIR]`: one run -> its report; several -> a comparison.
    Prints a compact summary and the HTML path; returns 2 (writing nothing) when a run directory does not
    exist or holds no kvbench results."""
    if not run_dirs:
        print("kvbench: report: give at least one run directory", file=sys.stderr)
        return 2
    for d in run_dirs:
        if not Path(d).is_dir():
            print(f"kvbench: run_dir: {d} is not a directory", file=sys.stderr)
            return 2
        if not _has_results(Path(d)):
            print(
                f"kvbench: report: {d} holds no kvbench results (no manifest.json, rounds.csv or requests.csv)",
                file=sys.stderr,
            )
            return 2
    if len(run_dirs) == 1:
        print(report_and_summary(Path(run_dirs[0]), Path(out) if out else None))
        return 0
    datas = [load_run(Path(d)) for d in run_dirs]
    md, _, cmp = _write_comparison(datas, Path(out) if out else datas[0].run_dir)
    print(compare.console(cmp, terminal_width()))
    print(f"report: {md.with_suffix('.html')}")
    return 0
