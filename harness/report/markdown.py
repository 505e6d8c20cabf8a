"""report.md (and a comparison's): the sections as Markdown tables, notes and figure links."""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from harness.report import compare
from harness.report import plots as P
from harness.report.analysis import Analysis
from harness.report.figures import ARMS_PLOTS, HEADLINE_PLOTS, SEED_PLOTS
from harness.report.sections import (
    ARMS_TEXT,
    ARMS_TITLE,
    HEADLINE_FIGURES,
    OPTIONAL,
    OTHER_FIGURES,
    REUSE_TEXT,
    REUSE_TITLE,
    SEED_TEXT,
    SEED_TITLE,
    VERDICT_TITLE,
    Tables,
    arms_lines,
    other_plots,
    plots_named,
    section_notes,
    split_by_question,
    targets_text,
    verdict_lines,
)
from harness.report.tables import run_info


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


def md_tables(tables: Tables) -> list[str]:
    out: list[str] = []
    for _, title, df in tables:
        out += [f"### {title}", "", md_table(df), ""]
    return out


def report_markdown(a: Analysis, tabs: dict[str, pd.DataFrame], plots: list[P.Plot] | None) -> str:
    """The report as Markdown, in the HTML page's order: the verdict, the headline figures, the
    with-vs-without tables by question, evidence, the seed's round-over-round, the rest."""
    data, split = a.data, split_by_question(a, tabs)
    answer, how = verdict_lines(a)
    parts = [f"# kvbench report: {data.name}", "", run_info(data), "", f"## {VERDICT_TITLE}", "", f"**{answer}**", ""]
    if not a.headline.empty:
        v = tabs["verdict"]
        parts += [how, "", md_table(v.drop(columns="why")), ""]
        parts += [f"- why {name}: {why}" for name, why in zip(v["scenario"], v["why"]) if why] + [""]
    if arm_lines := arms_lines(a):
        parts += [f"## {ARMS_TITLE}", "", *[f"**{x}**" for x in arm_lines[:1]], "", *[f"- {x}" for x in arm_lines[1:]]]
        if plots is not None:
            parts += md_plots(plots_named(plots, ARMS_PLOTS))
        if not tabs["arms"].empty:
            parts += [ARMS_TEXT, "", md_table(tabs["arms"]), ""]
    if data.notes:
        parts += ["## What is missing", "", *md_notes(data.notes)]
    if plots is not None and not a.headline.empty:
        parts += [f"## {HEADLINE_FIGURES}", "", *md_plots(plots_named(plots, HEADLINE_PLOTS))]
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
    parts += [f"## {SEED_TITLE} ({targets_text(a)})", "", SEED_TEXT, "", *md_tables(split["reductions"])]
    if plots is not None:
        parts += md_plots(plots_named(plots, SEED_PLOTS))
        if a.headline.empty:  # the verdict says why there is no headline figure
            parts += [f"## {HEADLINE_FIGURES}", "", *md_plots(plots_named(plots, HEADLINE_PLOTS))]
        parts += [f"## {OTHER_FIGURES}", "", *md_plots(other_plots(plots))]
    parts += ["## Per-round statistics", "", *md_tables(split["stats"])]
    said = section_notes(a)
    for key, title in OPTIONAL:
        if not tabs[key].empty:
            parts += [f"## {title}", "", md_table(tabs[key]), "", *[f"- {n}" for n in said.get(key, [])], ""]
    return "\n".join(parts) + "\n"


def comparison_markdown(cmp: compare.Comparison, plots: list[P.Plot]) -> str:
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
