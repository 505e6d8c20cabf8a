"""The report on synthetic run directories: complete, partial, damaged, several runs. Fast, no Docker."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.intervals import t_interval
from harness.cli import main as cli_main
from harness.report import console_summary, render, report_main, write_comparison, write_report
from harness.report.analysis import analyse
from harness.report.data import load_run
from harness.results import write_rounds

from .report_synth import Scen, cliff_sweep, make_run, md_number, md_table, png_size


def reductions(data):
    """The round-over-round frame (analysis.round_over_round), as the report computed it."""
    return analyse(data).round_over_round


PLOTS = ("ttft_cdf", "gains", "token_sources", "speedups")


def _html(run: Path, name: str = "report.html") -> str:
    return (run / name).read_text()


def _evidence_rows(html: str) -> list[str]:
    """The evidence, one row per cell: its checks table and its stacks table side by side (the
    report splits the evidence so that neither needs horizontal scrolling)."""
    parts = []
    for table_id in ("evidence", "evidence-stacks"):  # a comparison has one evidence table
        table = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
        assert table or table_id != "evidence", "no evidence table"
        parts += [re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)] if table else []
    assert len({len(rows) for rows in parts}) == 1
    return ["".join(cells) for cells in zip(*parts)]


def _md_table(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the markdown table under `## heading...`, as {column header: cell}. A table the
    report splits by question (one `### question` table each, same rows) is joined back row by row."""
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    tables = [t for t in re.split(r"\n(?!\|)[^\n]*", "\n" + section) if t.strip().startswith("|")]
    joined: list[dict[str, str]] = []
    for t in tables:
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in t.strip().splitlines()]
        rows = [dict(zip(cells[0], row)) for row in cells[2:]]
        assert not joined or len(rows) == len(joined), "tables of one section with different rows"
        joined = [{**a, **b} for a, b in zip(joined, rows)] if joined else rows
    return joined


def _assert_self_contained(html: str) -> None:
    assert "<link" not in html and "@import" not in html
    assert not re.search(r'(src|href)="(?!data:)', html), "external resource referenced"
    for src in re.findall(r'<img[^>]*src="([^"]+)"', html):
        assert src.startswith("data:image/png;base64,")
        png_size(base64.b64decode(src.split(",", 1)[1]))


def test_complete_run_writes_md_html_plots_and_summary(tmp_path):
    run = make_run(tmp_path, [Scen("rag_a"), Scen("rag_b", speedup=1.5)])
    md_path, text = write_report(run)
    assert md_path == run / "report.md" and md_path.read_text() == text
    for name in PLOTS:
        w, h = png_size((run / "plots" / f"{name}.png").read_bytes())
        assert w > 300 and h > 150
        assert f"plots/{name}.png" in text
    html = _html(run)
    _assert_self_contained(html)
    assert html.count("<img") == len(PLOTS)
    assert "Complete: every scenario" in html and "Complete: every scenario" in text
    rows = _evidence_rows(html)
    assert len(rows) == 3  # header + 2 scenarios
    manifest = json.loads((run / "manifest.json").read_text())
    cid = manifest["scenarios"]["rag_a"]["engine_container_ids"][0]
    assert manifest["scenarios"]["rag_a"]["project"] in rows[1] and cid[:12] in rows[1] and cid[:13] not in rows[1]
    assert ">yes<" in rows[1] and ">no<" in rows[1]  # cold + teardown verified, not contaminated
    assert "r1 " in rows[1] and "r2 " in rows[1]  # hits achieved vs expected per round
    summary = pd.read_csv(run / "summary.csv")
    assert len(summary) == 4 and {"scenario", "round", "ttft_p99_ms"} <= set(summary.columns)
    for head in ("TTFT mean ms", "TTFT p99 ms", "TPOT mean ms", "E2E mean ms", "req/s", "total tok/s"):
        assert head in text and head in html
    # the per-round figures printed are rounds.csv's, each in its row
    stats = _md_table(text, "Per-round statistics")
    for name in ("rag_a", "rag_b"):
        rounds = pd.read_csv(run / name / "rounds.csv").set_index("round")
        for row in (r for r in stats if r["scenario"] == name):
            rnd = int(row["round"])
            assert float(row["TTFT mean ms"].replace(",", "")) == pytest.approx(
                rounds.loc[rnd, "ttft_mean_ms"], abs=0.051
            )
            p99, flag = row["TTFT p99 ms"].split(" ", 1)  # 12 requests cannot support a p99: flagged
            assert float(p99.replace(",", "")) == pytest.approx(rounds.loc[rnd, "ttft_p99_ms"], abs=0.051)
            assert flag == "(n=12<368: ~max)"
    # rag_a: warm 3x faster -> TTFT target met; rag_b 1.5x -> missed. Throughput of the synthetic rows is flat.
    seed = {r["scenario"]: r for r in _md_table(text, "Round over round")}
    assert seed["rag_a"]["TTFT target <= -60 %"] == "met" and seed["rag_b"]["TTFT target <= -60 %"] == "not met"
    assert 'class="pass"' in html and 'class="fail"' in html


def test_stats_come_from_rounds_csv(tmp_path):
    run = make_run(tmp_path, [Scen("rag_a")])
    rounds = pd.read_csv(run / "rag_a" / "rounds.csv")
    rounds.loc[0, "ttft_p99_ms"] = 12345.678  # the report must show what the runner computed
    rounds.to_csv(run / "rag_a" / "rounds.csv", index=False)
    _, text = write_report(run)
    assert "12,345.7" in text


def test_contamination_and_repeats(tmp_path):
    scens = [Scen("rag_a", repeat=r, speedup=2.5 + r / 4) for r in (1, 2, 3)]
    scens.append(Scen("rag_b", isolation="shared", status="contaminated", foreign_r1=3968))
    run = make_run(tmp_path, scens)
    _, text = write_report(run)
    html = _html(run)
    rows = _evidence_rows(html)
    shared = next(r for r in rows if "shared/rag_b" in r)
    assert "CONTAMINATED" in shared and "3,968 foreign tokens" in shared and ">NO<" in shared
    data = load_run(run)
    red = reductions(data)
    a = red[(red["scenario"] == "rag_a") & (red["round"] == 2)].iloc[0]
    assert a["repeats"] == 3 and a["ttft_method"] == "t over 3 repeats, log ratios"
    # the figure is the geometric mean of the repeats' TTFT ratios (negative change: faster), the interval a
    # t interval over their log ratios, mapped back to %
    per_rep = -data.rounds[(data.rounds["scenario"] == "rag_a") & (data.rounds["round"] == 2)]["ttft_reduction_pct"]
    logs = np.log1p(per_rep.to_numpy() / 100)
    lo, hi = t_interval(logs.tolist())
    assert a["ttft_lo"] == pytest.approx(np.expm1(lo) * 100, abs=0.01)
    assert a["ttft_hi"] == pytest.approx(np.expm1(hi) * 100, abs=0.01)
    assert a["ttft_change"] == pytest.approx(np.expm1(logs.mean()) * 100, abs=0.01) and a["ttft_change"] < 0
    b = red[red["scenario"] == "rag_b"].iloc[0]
    assert b["ttft_method"].startswith("BCa") and b["ttft_lo"] <= b["ttft_change"] <= b["ttft_hi"]
    # fresh and shared side by side: the foreign tokens the shared cell's round 1 hit, none in the fresh one
    iso = md_table(text, "round 1 on a stack of its own").set_index("scenario")
    assert md_number(iso.loc["rag_b", "r1 foreign hits (shared)"]) == 3968


def test_failed_scenario_without_csvs(tmp_path):
    run = make_run(tmp_path, [Scen("rag_a")])
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["scenarios"]["broken"] = {
        "scenario": "broken",
        "isolation": "fresh",
        "repeat": 1,
        "status": "failed",
        "reason": "StackError: vllm did not become healthy",
        "timings": {},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    _, text = write_report(run)
    assert "broken: status failed (StackError: vllm did not become healthy)" in text
    assert "broken: no requests.csv and no rounds.csv: nothing measured." in text
    html = _html(run)
    broken = next(r for r in _evidence_rows(html) if ">broken<" in r)
    assert ">failed<" in broken and "vllm did not become healthy" in broken
    assert html.count("<img") == len(PLOTS)  # rag_a still has every figure


def test_interrupted_scenario_with_only_some_rows(tmp_path):
    run = make_run(tmp_path, [Scen("long_batch", status="interrupted", reason="interrupted during the scenario")])
    d = run / "long_batch"
    (d / "rounds.csv").unlink()
    req = pd.read_csv(d / "requests.csv")
    req[req["round"] == 1].head(7).to_csv(d / "requests.csv", index=False)
    with (d / "requests.csv").open("a") as fh:
        fh.write("long_batch,1,7,long_batch-0007,,long_batch-0007,0,completions,True,200,,,0.35,12")  # torn last line
    _, text = write_report(run)
    assert "long_batch: status interrupted (interrupted during the scenario): results are partial." in text
    assert "rounds.csv is missing (interrupted?): statistics recomputed from its" in text
    assert "round 2 is missing" in text
    data = load_run(run)
    assert list(data.rounds["round"]) == [1] and data.rounds["successes"].iloc[0] >= 7
    html = _html(run)
    assert "No figure: no scenario has both a round 1 and a round 2" in html
    assert "round 2 missing: no warm round" in text
    assert (run / "plots" / "ttft_cdf.png").exists()  # round 1 alone still has a distribution


def test_manifest_missing(tmp_path):
    run = make_run(tmp_path, [Scen("rag_a")])
    (run / "manifest.json").unlink()
    _, text = write_report(run)
    assert "manifest.json is missing" in text
    row = _evidence_rows(_html(run))[1]
    assert row.count("unknown") >= 3  # project, container, cold/teardown verification
    stats = _md_table(text, "Per-round statistics")  # still there, from the CSVs
    assert [(r["scenario"], r["round"]) for r in stats] == [("rag_a", "1"), ("rag_a", "2")]
    assert all(float(r["TTFT p50 ms"]) > 0 for r in stats)


def test_manifest_unreadable_and_empty_csv(tmp_path):
    run = make_run(tmp_path, [Scen("rag_a"), Scen("rag_b")])
    (run / "manifest.json").write_text('{"run_id": "x", "scenarios": {')  # torn write
    (run / "rag_b" / "requests.csv").write_text("")
    _, text = write_report(run)
    assert "manifest.json could not be read" in text
    assert "rag_b: requests.csv is empty." in text
    assert "rag_b: requests.csv is missing: no TTFT distribution" in text


def test_round_two_missing(tmp_path):
    run = make_run(tmp_path, [Scen("rag_a", rounds=1), Scen("rag_b")])
    _, text = write_report(run)
    assert "rag_a: round 2 is missing: no round-over-round or per-prompt changes." in text
    red = reductions(load_run(run))
    assert red[red["scenario"] == "rag_a"]["note"].iloc[0] == "round 2 missing: no warm round"
    assert _html(run).count("<img") == len(PLOTS)  # rag_b carries the figures


def test_nan_columns(tmp_path):
    run = make_run(tmp_path, [Scen("rag_a")])
    d = run / "rag_a"
    rounds = pd.read_csv(d / "rounds.csv")
    for c in (
        "ttft_reduction_pct",
        "throughput_improvement_pct",
        "ttft_target_met",
        "throughput_target_met",
        "tokens_local_compute",
        "tokens_local_cache_hit",
        "tokens_external_kv_transfer",
        "tpot_mean_ms",
        "ttft_mean_ms",
        "req_per_s",
        "expected_reuse_tokens",
        "achieved_reuse_tokens",
        "foreign_hit_tokens",
    ):
        rounds[c] = float("nan")
    rounds.to_csv(d / "rounds.csv", index=False)
    req = pd.read_csv(d / "requests.csv")
    req["ttft_ms"] = float("nan")
    req.to_csv(d / "requests.csv", index=False)
    _, text = write_report(run)
    html = _html(run)
    assert "No figure: the server exposed no prompt_tokens_by_source counters" in html
    assert "No figure: no successful requests with a TTFT" in html
    assert "No figure: no scenario has both a round 1 and a round 2" in html
    # Missing numbers are shown as n/a, never as 0 or a verdict.
    (r2,) = _md_table(text, "Round over round")
    assert r2["round"] == "2" and r2["TTFT mean change"] == r2["throughput change"] == "n/a"
    assert {v for k, v in r2.items() if "target" in k} == {"n/a"}
    assert [r["TPOT mean ms"] for r in _md_table(text, "Per-round statistics")] == ["n/a", "n/a"]
    assert not (run / "plots" / "token_sources.png").exists()


def test_stale_figures_are_removed(tmp_path):
    run = make_run(tmp_path, [Scen("rag_a")])
    write_report(run)
    assert (run / "plots" / "speedups.png").exists()
    (run / "rag_a" / "requests.csv").unlink()
    write_report(run)
    assert not (run / "plots" / "speedups.png").exists() and not (run / "plots" / "ttft_cdf.png").exists()


def test_empty_run_dir(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    md, text = write_report(run)
    assert "no scenario results in this directory" in text and "manifest.json is missing" in text
    assert 'id="evidence"' in _html(run)
    assert "no scenario results" in console_summary(run)
    assert render(run).startswith("# kvbench report")


def test_console_summary_and_report_main(tmp_path, capsys):
    run = make_run(tmp_path, [Scen("rag_a"), Scen("rag_b")])
    out = console_summary(run)  # writes the report when it is not there yet
    assert (run / "report.html").exists() and f"report: {run / 'report.html'}" in out
    assert "rag_a" in out and "TTFT mean chg %" in out and "Round over round (seed's targets" in out
    assert report_main([run], None) == 0
    printed = capsys.readouterr().out
    assert "rag_b" in printed and f"report: {run / 'report.html'}" in printed
    alt = tmp_path / "elsewhere"
    assert report_main([run], alt) == 0 and (alt / "report.html").exists() and (alt / "plots" / "gains.png").exists()
    assert report_main([tmp_path / "nope"], None) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_comparison_of_two_runs(tmp_path, capsys):
    a = make_run(tmp_path / "a", [Scen("rag_a", speedup=3.0), Scen("rag_b")], run_id="20260101t000000z-aaaaaa")
    b = make_run(
        tmp_path / "b", [Scen("rag_a", mode="baseline", speedup=1.0)], run_id="20260102t000000z-bbbbbb", seed=1
    )
    assert report_main([a, b], None) == 0
    printed = capsys.readouterr().out
    assert f"report: {a / 'comparison.html'}" in printed and "A r2 TTFT ms" in printed
    text = (a / "comparison.md").read_text()
    html = _html(a, "comparison.html")
    _assert_self_contained(html)
    side = {(r["scenario"], r["round"], r["metric"]): r for r in _md_table(text, "Metrics side by side")}
    r2 = side[("rag_a", "2", "TTFT mean ms")]  # B is the baseline: its warm round is not faster
    a_ms, b_ms = float(r2["A"]), float(r2["B"])
    assert b_ms > 2 * a_ms
    assert float(r2["B vs A"].removesuffix(" %")) == pytest.approx((b_ms / a_ms - 1) * 100, abs=0.5)
    assert side[("rag_b", "2", "TTFT mean ms")]["B vs A"] == "n/a"  # rag_b is not in run B
    assert "scenario rag_b is not in run(s) B" in text
    assert re.search(r"\| mode +\| \[\"with-cache\"\] +\| \[\"baseline\"\]", text)  # configuration differences
    rows = _evidence_rows(html)
    assert len(rows) == 4 and ">A<" in rows[1] and ">B<" in rows[3]
    assert html.count("<img") == 4
    out = tmp_path / "cmp"
    md, _ = write_comparison([a, b], out)
    assert md == out / "comparison.md" and (out / "plots" / "compare_ttft_cdf.png").exists()


def test_with_cache_vs_baseline_in_one_run(tmp_path):
    """The headline is what reuse buys: round 2 is 3x faster with the cache (synthetic), the
    baseline is not; the report and the console lead with that comparison, with its interval."""
    run = make_run(tmp_path, [Scen("rag_a", n=40), Scen("rag_a", mode="baseline", speedup=1.0, n=40)])
    _, text = write_report(run)
    assert text.index("## What reuse buys") < text.index("## Evidence")
    r2 = analyse(run).vs_baseline.set_index("round").loc[2]
    assert r2["pairs"] == 40 and -75 < r2["paired_change"] < -58  # true value: (1/3 - 1) * 100 = -66.7 %
    assert r2["paired_lo"] < r2["paired_change"] < r2["paired_hi"]
    assert math.isnan(r2["req_per_s_lo"])  # one repeat: no interval over repeats
    printed = console_summary(run, width=100)
    verdict = printed[printed.index("With the KV cache vs without it") :]
    row = next(line for line in verdict.splitlines() if line.startswith("rag_a "))
    assert f"{r2['ttft_mean_ms_change']:+.1f} [{r2['ttft_mean_ms_lo']:+.1f}, {r2['ttft_mean_ms_hi']:+.1f}]" in row
    assert r2["ttft_mean_ms_lo"] <= r2["ttft_mean_ms_change"] <= r2["ttft_mean_ms_hi"] < 0
    # the seed's round over round is about the cache: the baseline's rounds (cold vs cold) are in the report
    assert "rag_a [baseline]" not in printed
    summary = pd.read_csv(run / "summary.csv")
    assert list(summary.columns[:6]) == ["scenario", "mode", "isolation", "repeat", "round", "phase"]
    lead = summary.set_index(["mode", "round"]).loc[("with-cache", 2)]
    assert lead["vs_baseline_paired_change"] == pytest.approx(r2["paired_change"])
    assert pd.isna(summary.set_index(["mode", "round"]).loc[("baseline", 2), "vs_baseline_paired_change"])
    ev = _evidence_rows(_html(run))
    assert any("baseline/rag_a" in r for r in ev)


def test_the_report_leads_with_the_verdict_then_the_headline_figures(tmp_path):
    """One verdict row per scenario (round 2, with vs without), a short why where the cache missed a
    target, then the with-vs-without figures, before any other table; Markdown in the page's order;
    the seed's round-over-round figures after, titled as such."""
    run = make_run(
        tmp_path,
        [Scen("rag_a", n=40, speedup=6.0), Scen("rag_a", mode="baseline", speedup=1.0, n=40),
         Scen("rag_b", n=40, speedup=0.8), Scen("rag_b", mode="baseline", speedup=1.0, n=40)],
    )  # fmt: skip
    _, text = write_report(run)
    order = [
        "## Verdict",
        "## Headline figures",
        "plots/headline_changes.png",
        "plots/with_without_cdf.png",
        "## What reuse buys",
        "## Evidence",
        "## Round over round",
        "Round over round: TTFT distribution",
    ]
    assert [text.index(x) for x in order] == sorted(text.index(x) for x in order)
    rows = {r["scenario"]: r for r in _md_table(text, "Verdict")}
    a = analyse(run).headline.set_index("label")
    assert set(rows) == {"rag_a", "rag_b"} and list(a["round"]) == [2, 2]
    assert rows["rag_a"]["TTFT target <= -60 %"] == "met" and rows["rag_b"]["TTFT target <= -60 %"] == "not met"
    missed = {k for k, r in rows.items() if set(r.values()) & {"not met", "inconclusive"}}
    assert "rag_b" in missed
    for k in rows:  # a why exactly where the cache missed a target
        assert (f"- why {k}: {a.loc[k, 'why']}" in text) == (k in missed) == bool(a.loc[k, "why"])
    x = a.loc["rag_b"]  # the interval printed is the analysis' own, beside its own figure
    assert (
        f"{x['ttft_mean_ms_change']:+.1f} % [{x['ttft_mean_ms_lo']:+.1f}, {x['ttft_mean_ms_hi']:+.1f}]"
        in (rows["rag_b"]["TTFT change [95 % CI]"])
    )
    html = _html(run)
    assert html.index('id="verdict"') < html.index('id="headline-figures"') < html.index('id="reuse-ttft"')
    assert 'class="why"' in html and html.count('<tr class="why">') == len(missed)


def test_tables_split_by_question_keep_every_column(tmp_path):
    """Splitting a wide table into one table per question loses no column: each split table leads
    with the identity columns, and the rest of its columns partition the original's."""
    from harness.report.tables import REUSE_IDENT, by_question, reuse_table, reuse_tables, stats_table, stats_tables

    run = make_run(tmp_path, [Scen("rag_a"), Scen("rag_a", mode="baseline", speedup=1.0)])
    a = analyse(run)
    for whole, parts, ident in (
        (reuse_table(a.vs_baseline, a.targets), reuse_tables(a.vs_baseline, a.targets), REUSE_IDENT),
        (stats_table(a.data), stats_tables(a.data), ("scenario", "point", "mode", "isolation", "rep", "round",
                                                     "phase")),
    ):  # fmt: skip
        lead = [c for c in ident if c in whole.columns]
        rest = [c for _, _, df in parts for c in df.columns[len(lead) :]]
        assert all(list(df.columns[: len(lead)]) == lead for _, _, df in parts)
        assert sorted(rest) == sorted(c for c in whole.columns if c not in lead) and len(rest) == len(set(rest))
    odd = pd.DataFrame({"scenario": ["x"], "a": ["1"], "b": ["2"]})
    assert [(i, list(df.columns)) for i, _, df in by_question(odd, ("scenario",), (("t", "A", ("a",)),))] == [
        ("t", ["scenario", "a"]), ("t-other", ["scenario", "b"])]  # fmt: skip


@pytest.mark.parametrize("out", [None, "elsewhere"])
def test_report_of_a_directory_without_results_is_refused_and_writes_nothing(tmp_path, capsys, out):
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)  # a subdirectory, but no manifest.json / rounds.csv / requests.csv
    argv = ["report", str(empty)] + (["--out", str(tmp_path / out)] if out else [])
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"kvbench: report: {empty} holds no kvbench results (no manifest.json, rounds.csv or requests.csv)"
    ), err
    assert [p.name for p in empty.rglob("*")] == ["notes"]
    assert not (tmp_path / "elsewhere").exists()


def test_report_of_a_directory_with_only_csvs_still_works(tmp_path, capsys):
    run = make_run(tmp_path, [Scen("rag_a")])
    (run / "manifest.json").unlink()
    assert report_main([run], None) == 0 and (run / "report.md").exists()


def _csv_column(text: str, name: str) -> list[str]:
    """The column's cells exactly as written (quoted cells, e.g. interval methods, may hold commas)."""
    rows = list(csv.reader(io.StringIO(text)))
    i = rows[0].index(name)
    return [row[i] for row in rows[1:]]


def test_whole_number_columns_are_written_as_integers(tmp_path):
    table = pd.DataFrame(
        {
            "scenario": ["a", "a"],
            "round": [1, 2],
            "external_hits": [float("nan"), 64268.0],
            "master_key_count_start": [0.0, 8.0],
            "ttft_p50_ms": [12.345678, float("nan")],
            "cached_token_ratio": [0.0, 1.0 / 3],
        }
    )
    write_rounds(tmp_path / "rounds.csv", table)
    text = (tmp_path / "rounds.csv").read_text()
    assert _csv_column(text, "external_hits") == ["", "64268"]
    assert _csv_column(text, "master_key_count_start") == ["0", "8"]
    assert _csv_column(text, "ttft_p50_ms") == ["12.3457", ""]
    assert _csv_column(text, "cached_token_ratio") == ["0.0000", "0.3333"]
    assert ".0000" not in text.replace("0.0000", "")


def test_summary_csv_writes_counters_as_integers(tmp_path):
    # rag_b has a counter rag_a lacks: in summary.csv that column is missing for rag_a (NaN -> float column).
    run = make_run(tmp_path, [Scen("rag_a"), Scen("rag_b", extra={"master_key_count_end": [64268, 70000]})])
    write_report(run)
    text = (run / "summary.csv").read_text()
    assert _csv_column(text, "master_key_count_end") == ["", "", "64268", "70000"]
    assert all(re.fullmatch(r"\d+", v) for v in _csv_column(text, "achieved_reuse_tokens"))
    assert all(re.fullmatch(r"\d+\.\d{4}", v) for v in _csv_column(text, "ttft_mean_ms"))


def test_a_partial_round_shows_its_counts_and_no_verdict(tmp_path):
    run = make_run(tmp_path, [Scen("rag_a")])
    rounds_csv = run / "rag_a" / "rounds.csv"
    r = pd.read_csv(rounds_csv).assign(planned=12, partial=[False, True], requests=[12, 7], failures=[0, 3])
    r.to_csv(rounds_csv, index=False)
    red = reductions(load_run(run))
    row = red[red["round"] == 2].iloc[0]
    assert row["note"] == "partial: 7 of 12 requests sent, 3 failed; no verdict"
    assert "met" not in str(row.get("ttft_verdict")) and "inconclusive" not in str(row.get("ttft_verdict"))


def test_with_repeats_the_headline_pairs_prompts_within_a_repeat_and_uses_student_t(tmp_path):
    scens = [
        Scen("rag_a", mode=m, repeat=r, n=20, speedup=3.0 if m == "with-cache" else 1.0)
        for r in (1, 2, 3)
        for m in ("with-cache", "baseline")
    ]
    r2 = analyse(make_run(tmp_path, scens)).vs_baseline.set_index("round").loc[2]
    assert r2["repeats"] == 3 and r2["pairs"] == 60  # 20 prompts x 3 repeats, never across repeats
    assert r2["paired_method"] == "t over 3 repeats, log ratios"
    assert r2["paired_lo"] < r2["paired_change"] < r2["paired_hi"]
    assert not math.isnan(r2["req_per_s_lo"])  # throughput gets an interval over repeats too


def test_a_scenario_whose_requests_all_failed_does_not_break_the_report(tmp_path):
    """Its output_hash column is all empty (read as floats); the other scenario's holds strings."""
    run = make_run(tmp_path, [Scen("rag_a"), Scen("rag_b")])
    for name, values in (("rag_a", lambda n: ["ab12"] * n), ("rag_b", lambda n: [None] * n)):
        path = run / name / "requests.csv"
        df = pd.read_csv(path)
        df.assign(output_hash=values(len(df))).to_csv(path, index=False)
    _, text = write_report(run)
    assert "| rag_b " in text


def test_a_store_size_sweep_gets_its_cache_cliff_with_both_reference_lines(tmp_path):
    """Four store sizes: the table lists them by size with the measured hits, the simulated LRU and
    the counters; the note names the smallest size keeping 90 % of the infinite-cache hits and the
    loss the simulation does not explain; the figure is drawn."""
    scens = cliff_sweep([0.05, 0.30, 0.93, 1.0], [0.10, 0.35, 1.0, 1.0], evictions=True)
    run = make_run(tmp_path, scens)
    write_report(run)
    md = (run / "report.md").read_text()
    assert "## Cache cliff" in md
    section = md.split("## Cache cliff: hit rate by store size")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| tr ")]
    assert [r.split("|")[4].strip() for r in rows] == ["256", "512", "1,024", "2,048"]  # store MiB, by size
    assert [r.split("|")[5].strip() for r in rows] == ["5.0", "30.0", "93.0", "100.0"]
    assert "smallest store keeping >= 90 % of the infinite-cache hits is 1,024 MiB (global_segment_size=1024MB)" in md
    assert "a loss of 7.0 points of hits at 1,024 MiB is not explained by the simulated LRU store" in md
    assert (run / "plots" / "cache_cliff.png").is_file()
    assert "tr [global_segment_size=256MB]" in md  # points are told apart everywhere by their values


def test_with_and_without_the_cache_pair_up_within_each_sweep_point(tmp_path):
    """Two points x both modes: the headline compares each point's with-cache run with that
    point's baseline, never across points."""
    scens = [
        Scen("s", mode=mode, point=p, point_values={"concurrency": c}, speedup=speed if mode == "with-cache" else 1.0)
        for p, c, speed in ((1, 4, 2.0), (2, 16, 8.0))
        for mode in ("with-cache", "baseline")
    ]
    run = make_run(tmp_path, scens)
    head = analyse(run).vs_baseline
    assert list(dict.fromkeys(head["label"])) == ["s [concurrency=4]", "s [concurrency=16]"]
    r2 = head.set_index(["label", "round"])["ttft_mean_ms_change"]
    assert r2[("s [concurrency=16]", 2)] < r2[("s [concurrency=4]", 2)] < 0  # 8x faster vs 2x, each vs its own
    write_report(run)
    summary = pd.read_csv(run / "summary.csv")
    assert set(summary["point"]) == {"concurrency=4", "concurrency=16"}
    has = summary["vs_baseline_ttft_mean_ms_change"].notna()
    assert has.tolist() == (summary["mode"] == "with-cache").tolist()  # every with-cache round, per point


def test_the_connector_section_shows_where_the_time_goes_and_baseline_rounds_stay_empty(tmp_path):
    """Per round: lookup / load / save ms per request, MB moved and GB/s from the connector's own
    timers (harness/analysis/connector.py), next to TTFT; a baseline round has no connector figures."""
    timers = {"mc_lookup_ms_per_req": [0.5, 1.5], "mc_load_ms_per_req": [0.0, 12.25], "mc_loaded_mb": [0.0, 39.3],
              "mc_load_gbps": [float("nan"), 0.8], "mc_save_ms_per_req": [6.5, 0.2], "mc_saved_mb": [39.3, 0.0],
              "mc_save_gbps": [1.1, float("nan")], "fetch_share_pct": [0.4, 27.5]}  # fmt: skip
    run = make_run(tmp_path, [Scen("cold", extra=timers), Scen("cold", mode="baseline")])
    write_report(run)
    md = (run / "report.md").read_text()
    section = md.split("## Where the time goes in the KV connector")[1].split("\n## ")[0]
    header = [c.strip() for c in section.splitlines()[2].split("|")]
    rows = [[c.strip() for c in line.split("|")] for line in section.splitlines() if line.startswith("| cold ")]
    with_cache = [r for r in rows if "baseline" not in r]
    baseline = [r for r in rows if "baseline" in r]
    assert len(with_cache) == 2 and len(baseline) == 2
    assert with_cache[1][header.index("load ms/req")] == "12.25" and with_cache[1][header.index("load GB/s")] == "0.80"
    assert with_cache[0][header.index("save ms/req")] == "6.50" and with_cache[1][header.index("loaded MB")] == "39.3"
    assert {r[header.index("load ms/req")] for r in baseline} == {"n/a"}


def test_the_report_says_why_where_the_cache_loses_and_nothing_where_it_wins(tmp_path):
    timers = {"mc_lookup_ms_per_req": [0.5, 1.5], "mc_load_ms_per_req": [0.0, 12.25], "mc_loaded_mb": [0.0, 39.3],
              "mc_load_gbps": [float("nan"), 0.8], "mc_save_ms_per_req": [6.5, 0.2], "mc_saved_mb": [39.3, 0.0],
              "mc_save_gbps": [1.1, float("nan")], "fetch_share_pct": [0.4, 27.5],
              "server_prefill_mean_ms": [40.0, 5.0], "server_queue_mean_ms": [1.0, 45.0]}  # fmt: skip
    recompute = {"server_prefill_mean_ms": [40.0, 31.0], "server_queue_mean_ms": [1.0, 2.0]}
    scens = [
        *(Scen(name, speedup=speed, extra=timers) for name, speed in (("loses", 0.5), ("wins", 4.0))),
        *(Scen(name, mode="baseline", speedup=1.0, extra=recompute) for name in ("loses", "wins")),
    ]
    run = make_run(tmp_path, scens)
    write_report(run)
    md = (run / "report.md").read_text()
    why = [line for line in md.splitlines() if line.startswith("> Why: ")]
    (loses,) = [w for w in why if w.startswith("> Why: loses round 2:")]
    assert "Lookups and loads took 13.75 ms per request (3.27 MB at 0.80 GB/s)" in loses
    assert "saved 26.0 ms of vLLM's prefill (5.0 vs 31.0 ms)" in loses
    assert "waited 45.0 ms in vLLM's queue vs 2.0 ms without" in loses
    assert "the longer wait in vLLM's queue (43.0 ms), not the transfer itself (13.75 ms), outweighed" in loses
    assert not [w for w in why if w.startswith("> Why: wins round 2")]
    assert "why: loses round 2:" in console_summary(run, width=200)


def test_the_break_even_study_finds_where_fetching_overtakes_recomputing(tmp_path):
    """cold_start scenarios at six prompt lengths, with and without the connector: warm-round TTFT
    with = 30 ms + 4 ms per 1k tokens (fetch), without = 5 ms + 20 ms per 1k (recompute), with
    noise: the fitted crossover is (30 - 5) / (20 - 4) * 1000 = 1,562 tokens, inside its interval;
    the table says which path is faster at each length, and the figure is drawn."""
    lengths = [256, 512, 1024, 2048, 4096, 8192]
    scens = [Scen(f"p{n}", mode=mode) for n in lengths for mode in ("with-cache", "baseline")]
    run = make_run(tmp_path, scens)
    rng = np.random.default_rng(1)
    for s, (n, mode) in zip(scens, [(n, m) for n in lengths for m in ("with-cache", "baseline")], strict=True):
        path = run / s.key / "requests.csv"
        req = pd.read_csv(path)
        fixed, per_1k = (30.0, 4.0) if mode == "with-cache" else (5.0, 20.0)
        req["prompt_tokens"] = n
        req["ttft_ms"] = fixed + per_1k * n / 1e3 + rng.normal(0, 1.0, len(req))
        req.to_csv(path, index=False)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["scenarios"] = {f"p{n}": {"kind": "cold_start", "prompt_length": n} for n in lengths}
    (run / "manifest.json").write_text(json.dumps(manifest))
    write_report(run)
    md = (run / "report.md").read_text()
    section = md.split("## Break-even prefix length: fetching")[1].split("\n## ")[0]
    m = re.search(r"Break-even prefix length: ~([\d,]+) tokens \(95 % interval ([\d,]+)-([\d,]+)", section)
    assert m, section
    at, lo, hi = (int(g.replace(",", "")) for g in m.groups())
    assert at == 1600 and lo <= 1562 <= hi  # two significant figures: the data do not support more
    header = [c.strip() for c in section.splitlines()[2].split("|")]
    rows = [[c.strip() for c in line.split("|")] for line in section.splitlines() if line.startswith("| p")]
    assert [r[header.index("faster")] for r in rows] == ["fetch" if n > 1562 else "recompute" for n in lengths]
    assert (run / "plots" / "breakeven.png").is_file()


def test_malformed_rows_are_skipped_and_counted_never_silently(tmp_path):
    """Two writers' lines run together in rounds.csv (more fields than the header) and a requests.csv
    line cut off before its round: both are skipped, and the report says how many."""
    run = make_run(tmp_path, [Scen("rag_a")])
    rounds = run / "rag_a" / "rounds.csv"
    lines = rounds.read_text().splitlines()
    rounds.write_text("\n".join([*lines, lines[1] + "," + lines[2]]) + "\n")
    with (run / "rag_a" / "requests.csv").open("a") as fh:
        fh.write("rag_a,x")
    _, text = write_report(run)
    assert "rag_a: rounds.csv: 1 malformed line(s) skipped" in text
    assert "rag_a: requests.csv: 1 row(s) without a round skipped" in text


def test_the_warm_round_1_caveat_is_for_cells_with_a_round_over_round(tmp_path):
    """'round 1 already reused N %: round over round understates reuse' qualifies a round-over-round
    figure; a cell cut short in round 1 (engine or master killed) has none, so it gets no caveat."""
    run = make_run(
        tmp_path,
        [Scen("done"), Scen("killed", status="failed", reason="StoreDown: round 1", rounds=1, extra={"partial": True})],
    )
    notes = analyse(load_run(run)).warm_round1
    assert len(notes) == 1 and notes[0].startswith("done: round 1 already reused"), notes
