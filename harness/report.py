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
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from . import compare
from . import html_report as H
from . import plots as P
from .metrics import HEADLINE, ROUND_TABLE, SERVER_TABLE, fmt, pick
from .report_data import RunData, col, evidence, load_run, ok_requests, paired_speedups, reductions, token_sources
from .results import write_table
from .stats import round1_caveat
from .verdict import fidelity, headline_round, reuse_buys, targets_vs_baseline

TIMINGS = [
    ("up_s", "up s"),
    ("service_start_s", "vLLM start s"),
    ("workload_s", "workload s"),
    ("rounds_s", "rounds s"),
    ("teardown_s", "teardown s"),
    ("harness_overhead_s", "overhead s"),
    ("total_s", "total s"),
]
STATUS_RANK = ["failed", "interrupted", "contaminated", "running", "pending", "unknown", "no manifest", "ok"]
PLOT_NAMES = ("ttft_cdf", "gains", "token_sources", "speedups")
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


def _ci(lo: float, hi: float) -> str:
    return "n/a" if math.isnan(lo) or math.isnan(hi) else f"[{lo:+.1f}, {hi:+.1f}]"


def _change_ci(v: float, lo: float, hi: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:+.1f} % " + ("(no CI: 1 repeat)" if math.isnan(lo) else _ci(lo, hi))


def reuse_table(data: RunData) -> pd.DataFrame:
    """The headline: per scenario and round, with cache vs without (baseline), same prompts."""
    t = targets_vs_baseline(
        reuse_buys(data), data.targets.ttft_reduction_percent, data.targets.throughput_increase_percent
    )
    rows = []
    for x in t.to_dict("records"):
        row = {
            "scenario": x["scenario"],
            "round": str(x["round"]),
            "with cache": x["phase with cache"],
            "repeats": str(x["repeats"]),
        }
        for m in pick(HEADLINE):
            c = m.column
            row[f"{m.header} with / without"] = f"{m.show(x[f'{c}_cache'])} / {m.show(x[f'{c}_base'])}"
            row[f"{m.header} change"] = _change_ci(x[f"{c}_change"], x[f"{c}_lo"], x[f"{c}_hi"])
        row["per-prompt TTFT change"] = (
            _change_ci(x["paired_change"], x["paired_lo"], x["paired_hi"]) + f" ({x['pairs']} prompts)"
        )
        row[f"TTFT target -{data.targets.ttft_reduction_percent:g} % vs baseline"] = x["ttft_target"]
        row[f"throughput target +{data.targets.throughput_increase_percent:g} % vs baseline"] = x["tput_target"]
        rows.append(row)
    return pd.DataFrame(rows)


def fidelity_table(data: RunData) -> pd.DataFrame:
    f = fidelity(data)
    if f.empty:
        return f
    out = f[["scenario"]].copy()
    out["could it fail?"] = [
        f"yes ({o} outputs for {p} prompts)"
        if o > 1
        else f"NO: {p} different prompts all gave one output (degenerate model): identical outputs prove nothing"
        for p, o in zip(f["distinct prompts"], f["distinct outputs"])
    ]
    for name in ("warm vs cold", "with cache vs baseline"):
        out[f"identical output, {name}"] = [
            "n/a" if not n else f"{same}/{n} ({pct:.0f} %)"
            for same, n, pct in zip(f[f"{name} identical"], f[f"{name} pairs"], f[f"{name} %"])
        ]
    return out


def round_phases(data: RunData) -> dict[tuple[str, int], str]:
    """(scenario label, round) -> the measured warmth; repeats that differ are joined with '/'."""
    r = data.rounds
    if r.empty or "phase" not in r.columns:
        return {}
    return {
        (lab, int(rnd)): "/".join(sorted(set(g.astype(str))))
        for (lab, rnd), g in r.groupby(["label", "round"])["phase"]
    }


def warm_round1_notes(data: RunData) -> list[str]:
    """One sentence per with-cache scenario whose round 1 was not cold."""
    r = data.rounds
    if r.empty or "reused_token_pct" not in r.columns:
        return []
    r1 = r[(r["round"] == 1) & (r["mode"] == "with-cache")]
    pct = col(r1, "reused_token_pct").groupby(r1["label"], sort=False).mean()
    return [f"{label}: {c}." for label, v in pct.items() if (c := round1_caveat(v))]


# ------------------------------------------------------------------------ tables (display strings)


def stats_table(data: RunData) -> pd.DataFrame:
    """Per scenario, repeat and round: the seed's statistics from rounds.csv."""
    r = data.rounds
    if r.empty:
        return pd.DataFrame()
    out = pd.DataFrame(
        {
            "scenario": r["scenario"],
            "mode": r["mode"],
            "isolation": r["isolation"],
            "rep": r["repeat"],
            "round": r["round"],
            "phase": r["phase"] if "phase" in r else "unknown",
        }
    )
    for m in pick(ROUND_TABLE):
        out[m.header] = col(r, m.column).map(m.show)
    return drop_default_mode(out.astype(str))


def drop_default_mode(df: pd.DataFrame) -> pd.DataFrame:
    """The mode column only matters when some rows are not with-cache (baseline runs)."""
    if "mode" in df.columns and (df["mode"].astype(str) == "with-cache").all():
        return df.drop(columns="mode")
    return df


def reductions_table(red: pd.DataFrame, data: RunData) -> pd.DataFrame:
    if red.empty:
        return pd.DataFrame()
    t = data.targets
    rows = []
    for x in red.to_dict("records"):
        if x.get("note"):
            rows.append(
                {
                    "scenario": x["scenario"],
                    "mode": x["mode"],
                    "isolation": x["isolation"],
                    "round": fmt(x["round"], 0) if not math.isnan(x["round"]) else "-",
                    "repeats": str(x["repeats"]),
                    "note": x["note"],
                }
            )
            continue
        rows.append(
            {
                "scenario": x["scenario"],
                "mode": x["mode"],
                "isolation": x["isolation"],
                "round": str(int(x["round"])),
                "repeats": str(x["repeats"]),
                "TTFT reduction %": fmt(x["ttft_reduction_pct"]),
                "TTFT 95 % CI": _ci(x["ttft_ci_lo"], x["ttft_ci_hi"])
                + (f" ({x['ttft_ci_basis']})" if not math.isnan(x["ttft_ci_lo"]) else ""),
                f"TTFT target >= {t.ttft_reduction_percent:g} %": x["ttft_verdict"],
                "throughput gain %": fmt(x["throughput_gain_pct"]),
                "throughput 95 % CI": _ci(x["tput_ci_lo"], x["tput_ci_hi"]),
                f"throughput target >= {t.throughput_increase_percent:g} %": x["tput_verdict"],
                "paired speed-up p50": "n/a" if math.isnan(x["speedup_p50"]) else f"{x['speedup_p50']:.2f}x",
                "note": "",
            }
        )
    return drop_default_mode(pd.DataFrame(rows).fillna(""))


def timings_table(data: RunData) -> pd.DataFrame:
    rows = []
    for d in data.dirs.to_dict("records"):
        t = d["entry"].timings
        if t:
            rows.append({"scenario": d["dir"], **{h: fmt(t.get(k)) for k, h in TIMINGS}})
    return pd.DataFrame(rows)


def isolation_table(data: RunData) -> pd.DataFrame:
    """Fresh vs shared stack, side by side: what pollution does to the cold round."""
    r = data.rounds
    if r.empty or r["isolation"].nunique() < 2:
        return pd.DataFrame()
    r1 = r[r["round"] == 1]
    cols = {
        "ttft_p50_ms": "r1 TTFT p50 ms",
        "cached_tokens": "r1 cached tokens",
        "external_hits": "r1 Mooncake hits",
        "foreign_hit_tokens": "r1 foreign hits",
        "master_key_count_start": "keys before r1",
    }
    name = r1["scenario"] + r1["mode"].map(lambda m: "" if m == "with-cache" else f" [{m}]")
    vals = pd.DataFrame({k: col(r1, k) for k in cols}).assign(scenario=name, isolation=r1["isolation"])
    wide = vals.pivot_table(index="scenario", columns="isolation", values=list(cols), aggfunc="mean", dropna=False)
    wide.columns = [f"{cols[m]} ({iso})" for m, iso in wide.columns]
    return wide.reset_index().map(lambda v: v if isinstance(v, str) else fmt(v))


def run_info(data: RunData) -> str:
    m = data.manifest
    if m is None:
        return f"run {data.name} (no manifest.json)"
    parts = [
        f"run {m.run_id}",
        f"started {m.started_at}",
        f"finished {m.finished_at or 'not finished'}",
        f"harness {m.harness_version}",
        f"commit {(m.git_commit or '?')[:10]}",
        f"host {m.host.get('hostname', '?')}",
    ]
    return " | ".join(parts)


# ------------------------------------------------------------------------ plots


def _safe(name: str, title: str, make: Callable[[], P.Plot]) -> P.Plot:
    """A figure that cannot be drawn from odd data must not cost the report: it says why instead."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - any plotting fault becomes a note in the report
        return P.Plot(name, title, "", None, f"could not be drawn ({type(e).__name__}: {str(e)[:120]})")


def make_plots(data: RunData, red: pd.DataFrame) -> list[P.Plot]:
    t = data.targets
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
    ]


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
    }


REUSE_TITLE = "What reuse buys: with the KV cache vs without it (same prompts, each on its own fresh stack)"
REUSE_TEXT = (
    "Per round, the same prompts with the KV connector and on the same engine without it (baseline). "
    "'with cache' is the measured warmth of the with-cache round (share of prompt tokens served from "
    "cache). Change: with cache vs baseline; CI: Student-t over repeats (none with one repeat). "
    "Per-prompt TTFT change: geometric mean of each prompt's with/without TTFT ratio, 95 % CI "
    "(BCa bootstrap over prompts, or Student-t over repeats' prompts)."
)
SEED_TITLE = "Round over round (the seed's figures: warm rounds vs round 1 of the same stack)"


def server_table(data: RunData) -> pd.DataFrame:
    """The client's TTFT next to vLLM's own (histogram deltas over exactly the round's requests)."""
    r = data.rounds
    if r.empty or "server_ttft_mean_ms" not in r.columns:
        return pd.DataFrame()
    out = pd.DataFrame(
        {
            "scenario": r["scenario"],
            "mode": r["mode"],
            "isolation": r["isolation"],
            "rep": r["repeat"],
            "round": r["round"],
        }
    )
    for m in pick(SERVER_TABLE):
        out[m.header] = col(r, m.column).map(m.show)
    return drop_default_mode(out.astype(str))


def _markdown(data: RunData, tabs: dict[str, pd.DataFrame], plots: list[P.Plot] | None) -> str:
    t = data.targets
    parts = [f"# kvbench report: {data.name}", "", run_info(data), ""]
    if not tabs["reuse"].empty:
        parts += [f"## {REUSE_TITLE}", "", REUSE_TEXT, "", md_table(tabs["reuse"]), ""]
    parts += [
        *[f"> {n}" for n in warm_round1_notes(data)],
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
    if not tabs["server"].empty:
        parts += [
            "## Client vs server-side timings (vLLM's own histograms, per round)",
            "",
            md_table(tabs["server"]),
            "",
        ]
    if not tabs["fidelity"].empty:
        parts += ["## Reuse fidelity (temperature 0: identical generated tokens)", "", md_table(tabs["fidelity"]), ""]
    if not tabs["isolation"].empty:
        parts += ["## Isolation: fresh stack per scenario vs one shared stack", "", md_table(tabs["isolation"]), ""]
    if not tabs["timings"].empty:
        parts += ["## Timings", "", md_table(tabs["timings"]), ""]
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
    if not tabs["server"].empty:
        parts.append(
            H.section(
                "Client vs server-side timings (vLLM's own histograms, per round)",
                H.table(tabs["server"], "server", TEXT_COLS),
            )
        )
    if not tabs["fidelity"].empty:
        parts.append(
            H.section(
                "Reuse fidelity (temperature 0: identical generated tokens)",
                H.table(tabs["fidelity"], "fidelity", TEXT_COLS),
            )
        )
    if not tabs["isolation"].empty:
        parts.append(
            H.section(
                "Isolation: fresh stack per scenario vs one shared stack",
                H.table(tabs["isolation"], "isolation", TEXT_COLS),
            )
        )
    if not tabs["timings"].empty:
        parts.append(H.section("Timings", H.table(tabs["timings"], "timings", TEXT_COLS)))
    return H.page(f"kvbench report: {data.name}", run_info(data), parts)


def summary_csv(data: RunData) -> pd.DataFrame:
    """Every round of every cell, led by the headline: on with-cache rows of fresh stacks, the change
    vs baseline (same scenario and round) with its intervals, as `vs_baseline_*` columns."""
    rounds = data.rounds.drop(columns=["dir", "label"])
    head = reuse_buys(data)
    if head.empty:
        return rounds
    keep = {
        c: f"vs_baseline_{c}"
        for c in head.columns
        if c.endswith(("_change", "_lo", "_hi")) or c.startswith("paired_") or c == "pairs"
    }
    head = head[["scenario", "round", *keep]].rename(columns=keep).assign(mode="with-cache", isolation="fresh")
    merged = rounds.merge(head, on=["scenario", "round", "mode", "isolation"], how="left")
    ident = [c for c in ("scenario", "mode", "isolation", "repeat", "round", "phase") if c in merged.columns]
    return merged[[*ident, *keep.values(), *[c for c in rounds.columns if c not in ident]]]


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


# ------------------------------------------------------------------------ console


def _worst(statuses: pd.Series) -> str:
    s = set(statuses)
    return next((x for x in STATUS_RANK if x in s), next(iter(s), "?"))


def summary_rows(data: RunData, red: pd.DataFrame) -> pd.DataFrame:
    """One compact row per scenario (and isolation): repeats averaged."""
    rows = []
    r = data.rounds
    for label, d in data.dirs.groupby("label", sort=False):
        rr = r[r["label"] == label] if not r.empty else r
        red1 = red[(red["label"] == label) & (red["round"] == 2)] if not red.empty else red
        x = red1.iloc[0].to_dict() if len(red1) else {}

        def p50(n: int, rr: pd.DataFrame = rr) -> str:
            return fmt(col(rr[rr["round"] == n], "ttft_p50_ms").mean()) if len(rr) else "n/a"

        rows.append(
            {
                "scenario": label,
                "reps": len(d),
                "status": _worst(d["status"]),
                "r1 TTFT p50 ms": p50(1),
                "r2 TTFT p50 ms": p50(2),
                "r2 vs r1 TTFT -%": fmt(x.get("ttft_reduction_pct")),
                "r2 vs r1 thrpt +%": fmt(x.get("throughput_gain_pct")),
                "targets r2 vs r1": f"{x.get('ttft_verdict', 'n/a')}/{x.get('tput_verdict', 'n/a')}",
                "cold/teardown": "/".join(_evidence_word(d, k) for k in ("cold_verified", "teardown_verified")),
            }
        )
    return pd.DataFrame(rows)


def _evidence_word(d: pd.DataFrame, key: str) -> str:
    vals = [getattr(e, key) for e in d["entry"]]
    if any(v is None for v in vals):
        return "?"
    return "yes" if all(vals) else "NO"


def headline_lines(data: RunData) -> list[str]:
    """What reuse buys, one line per scenario (its last round): what the console leads with."""
    t = headline_round(
        targets_vs_baseline(
            reuse_buys(data), data.targets.ttft_reduction_percent, data.targets.throughput_increase_percent
        )
    )
    lines = []
    for x in t.to_dict("records"):
        lines.append(
            f"{x['scenario']} round {x['round']}: TTFT mean {fmt(x['ttft_mean_ms_cache'])} ms with cache vs "
            f"{fmt(x['ttft_mean_ms_base'])} ms without "
            f"({_change_ci(x['ttft_mean_ms_change'], x['ttft_mean_ms_lo'], x['ttft_mean_ms_hi'])}), "
            f"per prompt {_change_ci(x['paired_change'], x['paired_lo'], x['paired_hi'])}; "
            f"throughput {fmt(x['req_per_s_cache'], 2)} vs {fmt(x['req_per_s_base'], 2)} req/s "
            f"({_change_ci(x['req_per_s_change'], x['req_per_s_lo'], x['req_per_s_hi'])}); "
            f"targets vs baseline {x['ttft_target']}/{x['tput_target']}"
        )
    return lines


def _console_table(data: RunData, red: pd.DataFrame) -> str:
    rows = summary_rows(data, red)
    table = (
        tabulate(rows, headers="keys", tablefmt="simple", showindex=False, disable_numparse=True)
        if not rows.empty
        else "no scenario results"
    )
    head = headline_lines(data)
    parts = ["What reuse buys (with cache vs without, same prompts):", *[f"  {x}" for x in head], ""] if head else []
    parts += [*[f"note: {n}" for n in warm_round1_notes(data)], table]
    return "\n".join(parts) + (f"\n{len(data.notes)} note(s) on missing data: see the report" if data.notes else "")


def console_summary(run_dir: Path) -> str:
    """Compact table for the terminal + where report.html is (the report is written first if it is not there)."""
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    html = run_dir / "report.html"
    red = _write(data, run_dir)[2] if not html.exists() else reductions(data)
    return f"{_console_table(data, red)}\nreport: {html}"


# ------------------------------------------------------------------------ comparison of runs


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
