"""A run's report written: report.md, report.html (self-contained), plots/*.png and summary.csv.

`write_report(run_dir)` is called at the end of every bench run and by `kvbench
report`; `report_main(run_dirs, out)` is `kvbench report` itself (several run
directories -> one side-by-side comparison); `console_summary(run_dir)` is the
compact table printed after a run. The tables come from `tables`, figures from
`plots`, HTML blocks from `html_page`, the comparison from `compare`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from ..results import write_table
from . import breakeven as BE
from . import compare
from . import html_page as H
from . import plots as P
from .data import RunData, cache_cliff, evidence, load_run, ok_requests, paired_speedups, reductions, token_sources
from .tables import (
    cliff_notes,
    cliff_table,
    connector_table,
    drop_default_mode,
    fidelity_table,
    headline_lines,
    isolation_table,
    reductions_table,
    reuse_table,
    round_phases,
    run_info,
    server_table,
    stats_table,
    summary_csv,
    summary_rows,
    timings_table,
    turns_table,
    warm_round1_notes,
    why_lines,
)

PLOT_NAMES = ("ttft_cdf", "gains", "token_sources", "speedups", "cache_cliff")


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
)


def _safe(name: str, title: str, make: Callable[[], P.Plot]) -> P.Plot:
    """A figure that cannot be drawn from odd data must not cost the report: it says why instead."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - any plotting fault becomes a note in the report
        return P.Plot(name, title, "", None, f"could not be drawn ({type(e).__name__}: {str(e)[:120]})")


def make_plots(data: RunData, red: pd.DataFrame) -> list[P.Plot]:
    t = data.targets
    be = BE.break_even(data)
    return [
        _safe(
            "ttft_cdf",
            "TTFT distribution",
            lambda: P.ttft_cdf(ok_requests(data)[["label", "round", "ttft_ms"]], round_phases(data)),
        ),
        _safe(
            "gains",
            "TTFT reduction and throughput gain",
            lambda: P.gains(red, t.ttft_reduction_percent, t.throughput_increase_percent),
        ),
        _safe("token_sources", "Prompt tokens by source", lambda: P.token_sources(token_sources(data))),
        _safe("speedups", "Per-request TTFT speed-up", lambda: P.speedups(paired_speedups(data))),
        *(
            [_safe("cache_cliff", "Cache cliff", lambda: P.cliff(cliff))]
            if not (cliff := cache_cliff(data)).empty
            else []
        ),
        *([_safe("breakeven", "Break-even prefix length", lambda: _breakeven_plot(be))] if be else []),
    ]


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


def _sections(data: RunData, red: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {
        "reuse": reuse_table(data),
        "evidence": drop_default_mode(evidence(data)),
        "reductions": reductions_table(red, data),
        "stats": stats_table(data),
        "timings": timings_table(data),
        "isolation": isolation_table(data),
        "fidelity": fidelity_table(data),
        "server": server_table(data),
        "connector": connector_table(data),
        "turns": turns_table(data),
        "cliff": cliff_table(data),
        "breakeven": BE.table(be) if (be := BE.break_even(data)) else pd.DataFrame(),
    }


REUSE_TITLE = "What reuse buys: with the KV cache vs without it (same prompts, each on its own fresh stack)"


REUSE_TEXT = (
    "Per round, the same prompts with the KV connector and on the same engine without it (baseline). "
    "'with cache' is the measured warmth of the with-cache round (share of prompt tokens served from "
    "cache). Change: with cache vs baseline; CI: Student-t over repeats (none with one repeat). "
    "Per-prompt TTFT change: geometric mean of each prompt's with/without TTFT ratio, 95 % CI "
    "(BCa bootstrap over prompts, or Student-t over repeats' prompts)."
)


def section_notes(data: RunData) -> dict[str, list[str]]:
    """Sentences shown under an optional section's table."""
    be = BE.break_even(data)
    return {"cliff": cliff_notes(data), "breakeven": BE.notes(be) if be else []}


# Sections shown only when they have rows: (table key = HTML table id, title).
OPTIONAL = (
    ("server", "Client vs server-side timings (vLLM's own histograms, per round)"),
    ("connector", "Where the time goes in the KV connector (its own RPC timers, per round)"),
    ("breakeven", "Break-even prefix length: fetching vs recomputing the KV (warm round, concurrency 1)"),
    ("cliff", "Cache cliff: hit rate by store size (sweep), vs an infinite cache and a simulated LRU store"),
    ("turns", "Multi-turn: TTFT and reused history by turn"),
    ("fidelity", "Reuse fidelity (temperature 0: identical generated tokens)"),
    ("isolation", "Isolation: fresh stack per scenario vs one shared stack"),
    ("timings", "Timings"),
)
SEED_TITLE = "Round over round (the seed's figures: warm rounds vs round 1 of the same stack)"


def _markdown(data: RunData, tabs: dict[str, pd.DataFrame], plots: list[P.Plot] | None) -> str:
    t = data.targets
    parts = [f"# kvbench report: {data.name}", "", run_info(data), ""]
    if not tabs["reuse"].empty:
        parts += [f"## {REUSE_TITLE}", "", REUSE_TEXT, "", md_table(tabs["reuse"]), ""]
    parts += [
        *[f"> {n}" for n in warm_round1_notes(data)],
        "",
        *[f"> Why: {n}" for n in why_lines(data)],
        "",
        "## What is missing",
        "",
        *md_notes(data.notes),
        "## Evidence: isolation and cleanliness",
        "",
        md_table(tabs["evidence"]),
        "",
        f"## {SEED_TITLE} (targets: TTFT -{t.ttft_reduction_percent:g} %, "
        f"throughput +{t.throughput_increase_percent:g} %)",
        "",
        md_table(tabs["reductions"]),
        "",
    ]
    if plots is not None:
        parts += ["## Figures", "", *md_plots(plots)]
    parts += ["## Per-round statistics", "", md_table(tabs["stats"]), ""]
    said = section_notes(data)
    for key, title in OPTIONAL:
        if not tabs[key].empty:
            parts += [f"## {title}", "", md_table(tabs[key]), "", *[f"- {n}" for n in said.get(key, [])], ""]
    return "\n".join(parts) + "\n"


def html_figures(plots: list[P.Plot]) -> list[str]:
    return [H.figure(p.png, p.title, p.caption) if p.png else H.missing_figure(p.title, p.missing) for p in plots]


def _html(data: RunData, tabs: dict[str, pd.DataFrame], plots: list[P.Plot]) -> str:
    t = data.targets
    parts = []
    if not tabs["reuse"].empty:
        parts.append(
            H.section(
                REUSE_TITLE,
                H.paragraph(REUSE_TEXT),
                H.table(tabs["reuse"], "reuse", TEXT_COLS),
                *[H.paragraph(n) for n in warm_round1_notes(data)],
                *[H.paragraph(f"Why: {n}") for n in why_lines(data)],
            )
        )
    parts += [
        H.notes(data.notes),
        H.section(
            "Evidence: isolation and cleanliness",
            H.table(tabs["evidence"], "evidence", TEXT_COLS),
            H.paragraph(
                "One fresh Docker Compose stack per scenario (or one shared stack): its project, the "
                "engine container, the cold check before round 1, the teardown check, foreign cache "
                "hits, KV reuse achieved vs what the scenario itself makes possible."
            ),
            section_id="evidence-section",
        ),
        H.section(
            f"{SEED_TITLE} (targets: TTFT -{t.ttft_reduction_percent:g} %, throughput "
            f"+{t.throughput_increase_percent:g} %)",
            H.table(tabs["reductions"], "reductions", TEXT_COLS),
        ),
        H.section("Figures", *html_figures(plots)),
        H.section("Per-round statistics", H.table(tabs["stats"], "round-stats", TEXT_COLS)),
    ]
    said = section_notes(data)
    parts += [
        H.section(title, H.table(tabs[key], key, TEXT_COLS), *[H.paragraph(n) for n in said.get(key, [])])
        for key, title in OPTIONAL
        if not tabs[key].empty
    ]
    return H.page(f"kvbench report: {data.name}", run_info(data), parts)


def render(run_dir: Path) -> str:
    """The report as Markdown, without figures (write_report adds them)."""
    data = load_run(Path(run_dir))
    return _markdown(data, _sections(data, reductions(data)), None)


def _write(data: RunData, out: Path) -> tuple[Path, str, pd.DataFrame]:
    out.mkdir(parents=True, exist_ok=True)
    red = reductions(data)
    tabs = _sections(data, red)
    plots = make_plots(data, red)
    save_plots(plots, out, PLOT_NAMES)
    text = _markdown(data, tabs, plots)
    path = out / "report.md"
    path.write_text(text)
    (out / "report.html").write_text(_html(data, tabs, plots))
    if not data.rounds.empty:
        write_table(out / "summary.csv", summary_csv(data))
    return path, text, red


def write_report(run_dir: Path, out_dir: Path | None = None) -> tuple[Path, str]:
    """report.md, report.html, plots/*.png and summary.csv into `out_dir` (default: the run directory)."""
    run_dir = Path(run_dir)
    path, text, _ = _write(load_run(run_dir), Path(out_dir) if out_dir else run_dir)
    return path, text


def _console_table(data: RunData, red: pd.DataFrame) -> str:
    rows = summary_rows(data, red)
    table = (
        tabulate(rows, headers="keys", tablefmt="simple", showindex=False, disable_numparse=True)
        if not rows.empty
        else "no scenario results"
    )
    head = headline_lines(data)
    parts = ["What reuse buys (with cache vs without, same prompts):", *[f"  {x}" for x in head], ""] if head else []
    parts += [*[f"note: {n}" for n in warm_round1_notes(data)], *[f"why: {n}" for n in why_lines(data)], table]
    return "\n".join(parts) + (f"\n{len(data.notes)} note(s) on missing data: see the report" if data.notes else "")


def console_summary(run_dir: Path) -> str:
    """Compact table for the terminal + where report.html is (the report is written first if it is not there)."""
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    html = run_dir / "report.html"
    red = _write(data, run_dir)[2] if not html.exists() else reductions(data)
    return f"{_console_table(data, red)}\nreport: {html}"


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
        data = load_run(Path(run_dirs[0]))
        md, _, red = _write(data, Path(out) if out else data.run_dir)
        print(_console_table(data, red))
    else:
        datas = [load_run(Path(d)) for d in run_dirs]
        md, _, cmp = _write_comparison(datas, Path(out) if out else datas[0].run_dir)
        print(compare.console(cmp))
    print(f"report: {md.with_suffix('.html')}")
    return 0
