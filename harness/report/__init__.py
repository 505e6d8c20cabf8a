"""Stage 10, report: a run directory (or several) -> report.md, report.html, plots/*.png, summary.csv.

    data      load a run defensively: manifest, rounds.csv, requests.csv (notes for what is missing)
    verdict   what reuse buys (with cache vs baseline), targets, reuse fidelity
    tables    every table as display strings, and summary.csv's rows
    analysis  the run analysed once: every figure, interval, verdict and note, in one record
    plots     the figures (matplotlib, PNG)
    html_page self-contained HTML building blocks
    compare   several runs side by side
    write     renders it all from one Analysis: report files, summary.csv, the console; `kvbench report`

Imports flow down this list (data imports none of the others, write imports them all).
"""

from harness.report.analysis import Analysis, analyse
from harness.report.write import (
    console_summary,
    render,
    report_and_summary,
    report_main,
    write_comparison,
    write_report,
)

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
