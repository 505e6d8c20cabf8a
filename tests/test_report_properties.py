"""Properties of the one analysis (harness.report.analysis) on random synthetic runs: every interval
it reports contains its own figure, and every figure has the one sign convention (change % =
100 * (new / old - 1): negative = faster TTFT, positive = more throughput). Also: the console fits
80 columns and ends with the verdict. Fast (no figures are drawn), no Docker."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.analysis.intervals import target_verdict
from harness.report.analysis import analyse
from harness.report.write import console_summary
from harness.suite.console import rounds_lines

from .report_synth import Scen, make_run, requests_frame, rounds_frame

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEED_SCENARIOS = [("long_context_high_reuse", 30), ("multi_turn_conversation", 40), ("code_generation", 25),
                  ("batch_processing", 50), ("cold_start", 20)]  # fmt: skip


@st.composite
def runs(draw: st.DrawFn) -> list[Scen]:
    """1-2 scenarios, with or without baseline cells, 1-2 repeats, 1-3 rounds; warm rounds from 8x
    slower to 8x faster, 2-30 prompts, no noise to very noisy."""
    modes = draw(st.sampled_from([("with-cache",), ("with-cache", "baseline")]))
    repeats, rounds = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    scens = []
    for i in range(draw(st.integers(1, 2))):
        speedup = draw(st.floats(1 / 8, 8))
        n, noise = draw(st.sampled_from([2, 3, 5, 12, 30])), draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
        scens += [
            Scen(
                f"s{i}", mode=m, repeat=r, n=n, rounds=rounds, noise=noise, speedup=speedup if m == "with-cache" else 1
            )
            for m in modes
            for r in range(1, repeats + 1)
        ]
    return scens


@pytest.mark.slow  # bootstrap intervals over many generated runs
@SETTINGS
@given(runs(), st.integers(0, 2**16))
def test_every_reported_interval_contains_its_figure(scens, seed):
    with tempfile.TemporaryDirectory() as tmp:
        a = analyse(make_run(Path(tmp), scens, seed=seed))
        reported = a.intervals()
    assert reported or all(s.rounds == 1 for s in scens)
    for r in reported:
        if math.isnan(r.lo) and math.isnan(r.hi):
            continue  # no interval (one repeat of a throughput, too few pairs): shown as "no CI"
        assert not (math.isnan(r.lo) or math.isnan(r.hi)), r
        assert r.lo <= r.estimate <= r.hi, r


@pytest.mark.slow  # bootstrap intervals over many generated runs
@SETTINGS
@given(
    st.one_of(st.floats(2, 8), st.floats(1 / 8, 1 / 2)),
    st.sampled_from([0.0, 0.02, 0.08]),
    st.sampled_from([12, 30]),
    st.integers(0, 2**16),
)
def test_a_clear_change_has_the_sign_of_the_convention_in_figure_and_interval(speedup, noise, n, seed):
    """Every prompt clearly faster (or slower) warm: the TTFT figures are negative (positive) and so is
    their whole interval; the seed's target is judged on the figure shown; throughput's sign follows
    rounds.csv's req/s."""
    scens = [Scen("s", n=n, noise=noise, speedup=speedup), Scen("s", mode="baseline", n=n, noise=noise, speedup=1.0)]
    with tempfile.TemporaryDirectory() as tmp:
        a = analyse(make_run(Path(tmp), scens, seed=seed))
    sign = -1 if speedup > 1 else 1
    rr = a.round_over_round.set_index("label").loc["s"]
    for key in ("ttft", "prompt"):
        assert np.sign(rr[f"{key}_change"]) == sign
        if not math.isnan(rr[f"{key}_lo"]):  # noise 0: every ratio equal, no interval
            assert np.sign(rr[f"{key}_lo"]) == np.sign(rr[f"{key}_hi"]) == sign
    assert rr["ttft_verdict"] == target_verdict(rr["ttft_change"], rr["ttft_lo"], rr["ttft_hi"], -60, "lower")
    r = a.data.rounds[a.data.rounds["label"] == "s"].set_index("round")["req_per_s"]
    assert np.sign(rr["tput_change"]) == np.sign(r[2] - r[1])
    vs = a.vs_baseline.set_index("round").loc[2]
    if noise > 0.0 and abs(math.log(speedup)) > 10 * noise:  # the baseline's own noise cannot blur it
        assert np.sign(vs["ttft_mean_ms_change"]) == np.sign(vs["ttft_mean_ms_hi"]) == sign
        assert (vs["ttft_target"] == "met") == (vs["ttft_mean_ms_hi"] <= -60)
        assert (vs["ttft_target"] == "not met") == (vs["ttft_mean_ms_lo"] > -60)


def test_the_console_of_a_five_scenario_two_mode_run_fits_80_columns_and_ends_with_the_verdict():
    scens = [Scen(name, mode=m, n=n, speedup=3.0 if m == "with-cache" else 1.0)
             for name, n in SEED_SCENARIOS for m in ("with-cache", "baseline")]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="kv", dir="/tmp") as tmp:  # a short path: the report line fits too
        run = make_run(Path(tmp), scens)
        text = console_summary(run, width=80)
    lines = text.splitlines()
    assert max(len(x) for x in lines) <= 80, [x for x in lines if len(x) > 80]
    seed_at = text.index("Round over round (seed's targets")
    verdict_at = text.index("With the KV cache vs without it")
    assert seed_at < text.index("report: ") < verdict_at  # the seed's targets above, the verdict last
    tail = text[verdict_at:].splitlines()
    rows = [x for x in tail if x.split(" ")[0] in dict(SEED_SCENARIOS)]
    assert [x.split(" ")[0] for x in rows] == [name for name, _ in SEED_SCENARIOS]
    words = ("met", "not met", "inconcl.")
    assert all(any(x.endswith(f"{a}/{b}") for a in words for b in words) for x in rows), rows
    last = [x for x in lines if x.strip()][-3:]
    assert any(x.startswith("Verdict: with the cache") for x in last)
    assert "lower in 5 of 5 scenario(s)" in " ".join(tail)  # 3x faster with the cache, in every scenario


def test_the_per_round_lines_after_each_cell_fit_80_columns():
    s = Scen("long_context_high_reuse", rounds=3, n=40)
    table = rounds_frame(s, requests_frame(s, np.random.default_rng(0)))
    server = {"server_ttft_mean_ms": [150.0, 48.0, 47.0], "client_server_ttft_gap_ms": [1.2, 0.5, 0.4]}
    table = table.assign(concurrency=8, planned=40, partial=[False, False, True], inflight_mean=7.5, **server)
    lines = rounds_lines(table, 80)
    assert max(len(x) for x in lines) <= 80
    assert [x.split(":")[0].strip() for x in lines[:3]] == ["round 1", "round 2", "round 3"]  # one line each
    assert "vs r1" in lines[1]  # the change vs round 1 stays at 80 columns (optional figures go first)
    assert "vs r1" not in lines[0] and "vs r1" not in lines[2]  # none for round 1 or the partial round
    wide = rounds_lines(table, 200)
    assert "vLLM TTFT 48.0 ms" in wide[1] and "p50" in wide[1]  # shown where there is room
    r2 = lines[1]
    change = (table.loc[1, "ttft_mean_ms"] / table.loc[0, "ttft_mean_ms"] - 1) * 100
    assert f"{change:+.1f}" in r2 and change < 0
    assert pd.notna(table.loc[2, "partial"]) and any("partial" in x for x in lines)
