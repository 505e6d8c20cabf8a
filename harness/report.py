"""A run's report: report.md, report.html (self-contained), plots/*.png and summary.csv.

`write_report(run_dir)` is called at the end of every bench run and by `kvbench
report`; `report_main(run_dirs, out)` is `kvbench report` itself (several run
directories -> one side-by-side comparison); `console_summary(run_dir)` is the
compact table printed after a run. Data loading lives in `report_data`, figures in
`plots`, HTML layout in `html_report`, the comparison's tables in `compare`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from . import compare, html_report as H, plots as P
from .report_data import RunData, col, evidence, load_run, ok_requests, paired_speedups, reductions, token_sources

STAT_COLUMNS = [  # (rounds.csv column, header, decimals)
    ("successes", "ok", 0), ("failures", "failed", 0),
    ("ttft_mean_ms", "TTFT mean ms", 1), ("ttft_p50_ms", "TTFT p50 ms", 1), ("ttft_p90_ms", "TTFT p90 ms", 1),
    ("ttft_p99_ms", "TTFT p99 ms", 1), ("tpot_mean_ms", "TPOT mean ms", 2), ("tpot_p50_ms", "TPOT p50 ms", 2),
    ("itl_p50_ms", "ITL p50 ms", 2), ("itl_p99_ms", "ITL p99 ms", 2), ("e2e_mean_ms", "E2E mean ms", 1),
    ("e2e_p90_ms", "E2E p90 ms", 1), ("req_per_s", "req/s", 2), ("output_tok_per_s", "out tok/s", 1),
    ("total_tok_per_s", "total tok/s", 0), ("cached_token_ratio", "cached ratio", 3),
]
TIMINGS = [("up_s", "up s"), ("service_start_s", "vLLM start s"), ("workload_s", "workload s"),
           ("rounds_s", "rounds s"), ("teardown_s", "teardown s"), ("harness_overhead_s", "overhead s"),
           ("total_s", "total s")]
STATUS_RANK = ["failed", "interrupted", "contaminated", "running", "pending", "unknown", "no manifest", "ok"]
PLOT_NAMES = ("ttft_cdf", "gains", "token_sources", "speedups")
TEXT_COLS = ("scenario", "isolation", "status", "stack project", "engine container", "contamination",
             "reuse achieved/expected tokens", "reason", "phase", "note", "run", "metric", "key", "value")


def fmt(v: object, nd: int = 1, signed: bool = False) -> str:
    """A number for a table; NaN / None / unparsable -> n/a."""
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "n/a"
    if math.isinf(f):
        return "inf"
    return f"{f:+,.{nd}f}" if signed else f"{f:,.{nd}f}"


def _ci(lo: float, hi: float) -> str:
    return "n/a" if math.isnan(lo) or math.isnan(hi) else f"[{lo:+.1f}, {hi:+.1f}]"


# ------------------------------------------------------------------------ tables (display strings)


def stats_table(data: RunData) -> pd.DataFrame:
    """Per scenario, repeat and round: the seed's statistics from rounds.csv."""
    r = data.rounds
    if r.empty:
        return pd.DataFrame()
    out = pd.DataFrame({"scenario": r["scenario"], "isolation": r["isolation"], "rep": r["repeat"],
                        "round": r["round"],
                        "phase": r["phase"] if "phase" in r else r["round"].map(lambda x: "cold" if x == 1 else "warm")})
    for c, head, nd in STAT_COLUMNS:
        out[head] = col(r, c).map(lambda v, nd=nd: fmt(v, nd))
    return out.astype(str)


def reductions_table(red: pd.DataFrame, data: RunData) -> pd.DataFrame:
    if red.empty:
        return pd.DataFrame()
    t = data.targets
    rows = []
    for x in red.to_dict("records"):
        if x.get("note"):
            rows.append({"scenario": x["scenario"], "isolation": x["isolation"], "round": "-",
                         "repeats": str(x["repeats"]), "note": x["note"]})
            continue
        rows.append({
            "scenario": x["scenario"], "isolation": x["isolation"], "round": str(x["round"]),
            "repeats": str(x["repeats"]),
            "TTFT reduction %": fmt(x["ttft_reduction_pct"]),
            "95 % CI": _ci(x["ttft_ci_lo"], x["ttft_ci_hi"]) + (f" ({x['ttft_ci_basis']})"
                                                               if not math.isnan(x["ttft_ci_lo"]) else ""),
            f"TTFT target >= {t.ttft_reduction_percent:g} %": x["ttft_verdict"],
            "throughput gain %": fmt(x["throughput_gain_pct"]),
            "95 % CI ": _ci(x["tput_ci_lo"], x["tput_ci_hi"]),
            f"throughput target >= {t.throughput_increase_percent:g} %": x["tput_verdict"],
            "paired speed-up p50": "n/a" if math.isnan(x["speedup_p50"]) else f"{x['speedup_p50']:.2f}x",
            "note": "",
        })
    return pd.DataFrame(rows).fillna("")


def timings_table(data: RunData) -> pd.DataFrame:
    rows = []
    for d in data.dirs.to_dict("records"):
        t = d["entry"].get("timings") or {}
        if t:
            rows.append({"scenario": d["dir"], **{h: fmt(t.get(k)) for k, h in TIMINGS}})
    return pd.DataFrame(rows)


def isolation_table(data: RunData) -> pd.DataFrame:
    """Fresh vs shared stack, side by side: what pollution does to the cold round."""
    r = data.rounds
    if r.empty or r["isolation"].nunique() < 2:
        return pd.DataFrame()
    r1 = r[r["round"] == 1]
    cols = {"ttft_p50_ms": "r1 TTFT p50 ms", "cached_tokens": "r1 cached tokens",
            "external_hits": "r1 Mooncake hits", "foreign_hit_tokens": "r1 foreign hits",
            "master_key_count_start": "keys before r1"}
    vals = pd.DataFrame({k: col(r1, k) for k in cols}).assign(scenario=r1["scenario"], isolation=r1["isolation"])
    wide = vals.pivot_table(index="scenario", columns="isolation", values=list(cols), aggfunc="mean", dropna=False)
    wide.columns = [f"{cols[m]} ({iso})" for m, iso in wide.columns]
    return wide.reset_index().map(lambda v: v if isinstance(v, str) else fmt(v))


def run_info(data: RunData) -> str:
    m = data.manifest or {}
    parts = [f"run {m.get('run_id', data.name)}", f"started {m.get('started_at', '?')}",
             f"finished {m.get('finished_at') or 'not finished'}", f"harness {m.get('harness_version', '?')}",
             f"commit {(m.get('git_commit') or '?')[:10]}", f"host {(m.get('host') or {}).get('hostname', '?')}"]
    return " | ".join(parts) if data.manifest is not None else f"run {data.name} (no manifest.json)"


# ------------------------------------------------------------------------ plots


def make_plots(data: RunData, red: pd.DataFrame) -> list[P.Plot]:
    req = ok_requests(data)
    t = data.targets
    return [P.ttft_cdf(req[["label", "round", "ttft_ms"]]),
            P.gains(red, t.ttft_reduction_percent, t.throughput_increase_percent),
            P.token_sources(token_sources(data)),
            P.speedups(paired_speedups(data))]


def save_plots(plots: list[P.Plot], out_dir: Path, known: tuple[str, ...]) -> None:
    d = out_dir / "plots"
    for name in known:  # a figure that has no data this time must not survive from an earlier report
        (d / f"{name}.png").unlink(missing_ok=True)
    for p in plots:
        if p.png:
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{p.name}.png").write_bytes(p.png)


# ------------------------------------------------------------------------ Markdown / HTML


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
        out += [f"### {p.title}", "", f"![{p.title}](plots/{p.name}.png)" if p.png else f"_No figure: {p.missing}._",
                ""]
    return out


def _sections(data: RunData, red: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {"evidence": evidence(data), "reductions": reductions_table(red, data), "stats": stats_table(data),
            "timings": timings_table(data), "isolation": isolation_table(data)}


def _markdown(data: RunData, tabs: dict[str, pd.DataFrame], plots: list[P.Plot] | None) -> str:
    t = data.targets
    parts = [f"# kvbench report: {data.name}", "", run_info(data), "", "## What is missing", "", *md_notes(data.notes),
             "## Evidence: isolation and cleanliness", "", md_table(tabs["evidence"]), "",
             f"## Reductions vs round 1 (targets: TTFT -{t.ttft_reduction_percent:g} %, "
             f"throughput +{t.throughput_increase_percent:g} %)", "", md_table(tabs["reductions"]), ""]
    if plots is not None:
        parts += ["## Figures", "", *md_plots(plots)]
    parts += ["## Per-round statistics", "", md_table(tabs["stats"]), ""]
    if not tabs["isolation"].empty:
        parts += ["## Isolation: fresh stack per scenario vs one shared stack", "", md_table(tabs["isolation"]), ""]
    if not tabs["timings"].empty:
        parts += ["## Timings", "", md_table(tabs["timings"]), ""]
    return "\n".join(parts) + "\n"


def html_figures(plots: list[P.Plot]) -> list[str]:
    return [H.figure(p.png, p.title, p.caption) if p.png else H.missing_figure(p.title, p.missing) for p in plots]


def _html(data: RunData, tabs: dict[str, pd.DataFrame], plots: list[P.Plot]) -> str:
    t = data.targets
    parts = [
        H.notes(data.notes),
        H.section("Evidence: isolation and cleanliness", H.table(tabs["evidence"], "evidence", TEXT_COLS),
                  H.paragraph("One fresh Docker Compose stack per scenario (or one shared stack): its project, the "
                              "engine container, the cold check before round 1, the teardown check, foreign cache "
                              "hits, KV reuse achieved vs what the scenario itself makes possible."),
                  section_id="evidence-section"),
        H.section(f"Reductions vs round 1 (targets: TTFT -{t.ttft_reduction_percent:g} %, throughput "
                  f"+{t.throughput_increase_percent:g} %)", H.table(tabs["reductions"], "reductions", TEXT_COLS)),
        H.section("Figures", *html_figures(plots)),
        H.section("Per-round statistics", H.table(tabs["stats"], "round-stats", TEXT_COLS)),
    ]
    if not tabs["isolation"].empty:
        parts.append(H.section("Isolation: fresh stack per scenario vs one shared stack",
                               H.table(tabs["isolation"], "isolation", TEXT_COLS)))
    if not tabs["timings"].empty:
        parts.append(H.section("Timings", H.table(tabs["timings"], "timings", TEXT_COLS)))
    return H.page(f"kvbench report: {data.name}", run_info(data), parts)


def render(run_dir: Path) -> str:
    """The report as Markdown, without figures (write_report adds them)."""
    data = load_run(Path(run_dir))
    return _markdown(data, _sections(data, reductions(data)), None)


def write_report(run_dir: Path, out_dir: Path | None = None) -> tuple[Path, str]:
    """report.md, report.html, plots/*.png and summary.csv into `out_dir` (default: the run directory)."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    data = load_run(run_dir)
    red = reductions(data)
    tabs = _sections(data, red)
    plots = make_plots(data, red)
    save_plots(plots, out, PLOT_NAMES)
    text = _markdown(data, tabs, plots)
    path = out / "report.md"
    path.write_text(text)
    (out / "report.html").write_text(_html(data, tabs, plots))
    if not data.rounds.empty:
        data.rounds.drop(columns=["dir", "label"]).to_csv(out / "summary.csv", index=False, float_format="%.4f")
    return path, text


# ------------------------------------------------------------------------ console


def _worst(statuses: pd.Series) -> str:
    s = set(statuses)
    return next((x for x in STATUS_RANK if x in s), next(iter(s), "?"))


def summary_rows(data: RunData, red: pd.DataFrame) -> pd.DataFrame:
    """One compact row per scenario (and isolation): repeats averaged."""
    rows = []
    r = data.rounds
    for (label, scen, iso), d in data.dirs.groupby(["label", "scenario", "isolation"], sort=False):
        rr = r[r["label"] == label] if not r.empty else r
        red1 = red[(red["label"] == label) & (red["round"] == 2)] if not red.empty else red
        x = red1.iloc[0].to_dict() if len(red1) else {}
        p50 = lambda n: fmt(col(rr[rr["round"] == n], "ttft_p50_ms").mean()) if len(rr) else "n/a"  # noqa: E731
        rows.append({
            "scenario": label, "reps": len(d), "status": _worst(d["status"]),
            "r1 TTFT p50 ms": p50(1), "r2 TTFT p50 ms": p50(2),
            "TTFT -%": fmt(x.get("ttft_reduction_pct")), "thrpt +%": fmt(x.get("throughput_gain_pct")),
            "targets": f"{x.get('ttft_verdict', 'n/a')}/{x.get('tput_verdict', 'n/a')}",
            "cold/teardown": "/".join(_evidence_word(d, k) for k in ("cold_verified", "teardown_verified")),
        })
    return pd.DataFrame(rows)


def _evidence_word(d: pd.DataFrame, key: str) -> str:
    vals = [e.get(key) for e in d["entry"]]
    if any(v is None for v in vals):
        return "?"
    return "yes" if all(vals) else "NO"


def console_summary(run_dir: Path) -> str:
    """Compact table for the terminal + where report.html is (written first when it is not there yet)."""
    run_dir = Path(run_dir)
    html = run_dir / "report.html"
    if not html.exists():
        write_report(run_dir)
    data = load_run(run_dir)
    rows = summary_rows(data, reductions(data))
    table = tabulate(rows, headers="keys", tablefmt="simple", showindex=False, disable_numparse=True) \
        if not rows.empty else "no scenario results"
    missing = f"\n{len(data.notes)} note(s) on missing data: see the report" if data.notes else ""
    return f"{table}{missing}\nreport: {html}"


# ------------------------------------------------------------------------ comparison of runs


def write_comparison(run_dirs: list[Path], out_dir: Path | None = None) -> tuple[Path, str]:
    """comparison.md / comparison.html (+ plots/compare_*.png) for several runs; default out: the first run dir."""
    datas = [load_run(Path(d)) for d in run_dirs]
    out = Path(out_dir) if out_dir else Path(run_dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    cmp = compare.build(datas)
    plots = compare.plots(cmp)
    save_plots(plots, out, compare.PLOT_NAMES)
    text = compare.markdown(cmp, plots, md_table, md_notes, md_plots)
    path = out / "comparison.md"
    path.write_text(text)
    body = [H.notes(cmp.notes),
            H.section("Runs", H.table(cmp.runs, "runs", TEXT_COLS)),
            H.section("Configuration differences", H.table(cmp.config_diff, "config-diff", TEXT_COLS)),
            H.section("Reductions side by side", H.table(cmp.reductions, "reductions", TEXT_COLS)),
            H.section("Metrics side by side (mean over repeats; delta vs run A)",
                      H.table(cmp.metrics, "metrics", TEXT_COLS)),
            H.section("Figures", *html_figures(plots)),
            H.section("Evidence: isolation and cleanliness", H.table(cmp.evidence, "evidence", TEXT_COLS))]
    (out / "comparison.html").write_text(H.page("kvbench comparison: " + " vs ".join(cmp.labels),
                                                " | ".join(f"{lab}: {d.name}" for lab, d in zip(cmp.labels, datas)),
                                                body))
    return path, text


def report_main(run_dirs: list[Path], out: Path | None) -> int:
    """`kvbench report RUN_DIR [RUN_DIR ...] [--out DIR]`: one run -> its report; several -> a comparison.
    Prints a compact summary and the HTML path; 2 when a run directory does not exist."""
    if not run_dirs:
        print("kvbench: report: give at least one run directory", file=sys.stderr)
        return 2
    for d in run_dirs:
        if not Path(d).is_dir():
            print(f"kvbench: run_dir: {d} is not a directory", file=sys.stderr)
            return 2
    if len(run_dirs) == 1:
        md, _ = write_report(Path(run_dirs[0]), out)
        data = load_run(Path(run_dirs[0]))
        rows = summary_rows(data, reductions(data))
        print(tabulate(rows, headers="keys", tablefmt="simple", showindex=False, disable_numparse=True)
              if not rows.empty else "no scenario results")
        if data.notes:
            print(f"{len(data.notes)} note(s) on missing data: see the report")
        print(f"report: {md.with_suffix('.html')}")
        return 0
    md, _ = write_comparison([Path(d) for d in run_dirs], out)
    print(compare.console(compare.build([load_run(Path(d)) for d in run_dirs])))
    print(f"report: {md.with_suffix('.html')}")
    return 0
