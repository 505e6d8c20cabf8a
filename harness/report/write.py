"""A run's report written: report.md, report.html (self-contained), plots/*.png and summary.csv.

Everything rendered comes from one `analysis.Analysis` (the run loaded and analysed once):
`report_and_summary(run_dir)` writes the report and returns the console summary from the same
analysis (the end of every bench run); `write_report(run_dir)` writes the report only;
`console_summary(run_dir)` is the text printed after a run; `report_main(run_dirs, out)` is
`kvbench report` itself (several run directories -> one side-by-side comparison). One module per
output: sections.py (what the report says, in order), markdown.py (report.md), html.py
(report.html, with html_page's blocks), figures.py (plots/*.png), console.py (the end of a run);
the tables come from `tables`, the comparison from `compare`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.report import compare
from harness.report import html_page as H
from harness.report.analysis import Analysis, analyse, changes_by_round
from harness.report.console import console_text
from harness.report.data import RunData, load_run
from harness.report.figures import PLOT_NAMES, make_plots, save_plots
from harness.report.fit import terminal_width
from harness.report.html import html_figures, report_html
from harness.report.markdown import comparison_markdown, report_markdown
from harness.report.sections import TEXT_COLS, section_tables
from harness.report.tables import summary_csv
from harness.results import write_table


def render(run_dir: Path) -> str:
    """The report as Markdown, without figures (write_report adds them)."""
    a = analyse(Path(run_dir))
    return report_markdown(a, section_tables(a), None)


def _write(a: Analysis, out: Path) -> tuple[Path, str]:
    out.mkdir(parents=True, exist_ok=True)
    tabs = section_tables(a)
    plots = make_plots(a)
    save_plots(plots, out, PLOT_NAMES)
    text = report_markdown(a, tabs, plots)
    path = out / "report.md"
    path.write_text(text)
    (out / "report.html").write_text(report_html(a, tabs, plots))
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


def _write_comparison(datas: list[RunData], out: Path) -> tuple[Path, str, compare.Comparison]:
    out.mkdir(parents=True, exist_ok=True)
    cmp = compare.build(datas)
    plots = compare.plots(cmp)
    save_plots(plots, out, compare.PLOT_NAMES)
    text = comparison_markdown(cmp, plots)
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
