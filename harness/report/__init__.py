"""Stage 10, report: a run directory (or several) -> report.md, report.html, plots/*.png, summary.csv.

    data      load a run defensively: manifest, rounds.csv, requests.csv (notes for what is missing)
    verdict   what reuse buys (with cache vs baseline), targets, reuse fidelity
    tables    every table as display strings, and summary.csv's rows
    analysis  the run analysed once: every figure, interval, verdict and note, in one record
    plots     the figures (matplotlib, PNG)
    html_page self-contained HTML building blocks
    compare   several runs side by side
    fit       tables and text fitted to the terminal's width
    figures   the report's figures made and saved (plots/*.png)
    sections  what the report says, in order, for every output: tables, titles, texts, notes
    markdown  report.md (and a comparison's)
    html      report.html (html_page's blocks, figures inlined)
    console   the end of a run: status lines, round over round, the verdict
    write     the entry points: report files and summary.csv from one Analysis; `kvbench report`

Imports flow down this list (data imports none of the others, write imports them all).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.report.analysis import Analysis, analyse
    from harness.report.write import (
        console_summary,
        render,
        report_and_summary,
        report_main,
        write_comparison,
        write_report,
    )

# Loaded on first use: the suite imports this package for `fit` at start, and `write` brings in
# matplotlib and scipy.stats (~1 s of every `kvbench` command's start, --help included).
_HOME = {"Analysis": "analysis", "analyse": "analysis"} | dict.fromkeys(
    ("console_summary", "render", "report_and_summary", "report_main", "write_comparison", "write_report"), "write"
)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


__all__ = [
    "Analysis",
    "analyse",
    "console_summary",
    "render",
    "report_and_summary",
    "report_main",
    "write_comparison",
    "write_report",
]
