"""The report stage: a run directory (or several) -> report.md, report.html, plots/*.png, summary.csv.

    data      load a run defensively: manifest, rounds.csv, requests.csv (notes for what is missing)
    verdict   what reuse buys (with cache vs baseline), targets, reuse fidelity
    tables    every table as display strings, and summary.csv's rows
    plots     the figures (matplotlib, PNG)
    html_page self-contained HTML building blocks
    compare   several runs side by side
    write     assembles and writes it all; the console summary; `kvbench report`

Imports flow down this list (data imports none of the others, write imports them all).
"""

from .write import console_summary, render, report_main, write_comparison, write_report

__all__ = ["console_summary", "render", "report_main", "write_comparison", "write_report"]
