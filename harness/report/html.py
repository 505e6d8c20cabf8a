"""report.html: the same sections as a self-contained page (figures inlined, html_page's blocks)."""

from __future__ import annotations

import pandas as pd

from harness.report import html_page as H
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
    TEXT_COLS,
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


def html_figures(plots: list[P.Plot]) -> list[str]:
    return [H.figure(p.png, p.title, p.caption) if p.png else H.missing_figure(p.title, p.missing) for p in plots]


def html_tables(tables: Tables) -> list[str]:
    return [x for table_id, title, df in tables for x in (H.question(title), H.table(df, table_id, TEXT_COLS))]


def _html_verdict(a: Analysis, tabs: dict[str, pd.DataFrame]) -> str:
    answer, how = verdict_lines(a)
    if a.headline.empty:
        return H.section(VERDICT_TITLE, H.paragraph(answer, "answer"), section_id="verdict")
    return H.section(
        VERDICT_TITLE,
        H.paragraph(answer, "answer"),
        H.table(tabs["verdict"], "verdict-table", TEXT_COLS, below="why"),
        H.paragraph(how),
        section_id="verdict",
    )


def report_html(a: Analysis, tabs: dict[str, pd.DataFrame], plots: list[P.Plot]) -> str:
    data, split = a.data, split_by_question(a, tabs)
    parts = [_html_verdict(a, tabs)]
    if arm_lines := arms_lines(a):
        parts.append(
            H.section(
                ARMS_TITLE,
                H.paragraph(arm_lines[0], "answer"),
                *[H.paragraph(x) for x in arm_lines[1:]],
                *html_figures(plots_named(plots, ARMS_PLOTS)),
                *([H.table(tabs["arms"], "arms", TEXT_COLS), H.paragraph(ARMS_TEXT)] if not tabs["arms"].empty else []),
                section_id="arms-section",
            )
        )
    if data.notes:
        parts.append(H.notes(data.notes))
    # on the first screen, no section heading: the figures' own titles say what they are
    title = HEADLINE_FIGURES if a.headline.empty else ""
    headline_figures = H.section(
        title, *html_figures(plots_named(plots, HEADLINE_PLOTS)), section_id="headline-figures"
    )
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
            f"{SEED_TITLE} ({targets_text(a)})",
            H.paragraph(SEED_TEXT),
            *html_tables(split["reductions"]),
            *html_figures(plots_named(plots, SEED_PLOTS)),
        ),
        *([headline_figures] if a.headline.empty else []),
        H.section(OTHER_FIGURES, *html_figures(other_plots(plots))),
        H.section("Per-round statistics", *html_tables(split["stats"])),
    ]
    said = section_notes(a)
    parts += [
        H.section(title, H.table(tabs[key], key, TEXT_COLS), *[H.paragraph(n) for n in said.get(key, [])])
        for key, title in OPTIONAL
        if not tabs[key].empty
    ]
    return H.page(f"kvbench report: {data.name}", run_info(data), parts)
