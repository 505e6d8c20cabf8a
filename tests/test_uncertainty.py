"""Issue 34: intervals that say which noise they span, verdicts read from intervals, and the
statistical defects the audit found. Simulations are seeded: every run gives the same figures
(run with -s to see them). A rate measured over N experiments has a binomial sd of
sqrt(p (1 - p) / N); each band below is at least 4 sd wide on either side of the nominal rate,
and the defect each test guards against lies well outside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.intervals import (
    INCONCLUSIVE,
    MET,
    NOT_MET,
    geometric_mean,
    holm,
    min_samples_for_quantile,
    paired_mean_change_pct,
    quantile_supported,
    repeats_change_pct,
    t_mean,
    target_verdict,
    tost_log_ratio,
)
from harness.config import Targets
from harness.records import CellEntry
from harness.records.metrics import HEADLINE
from harness.report.analysis import analyse
from harness.report.data import RunData
from harness.report.verdict import WITHIN_RUN, reuse_buys, targets_vs_baseline
from tests.report_synth import Scen, make_run

# --- item 3: changes over repeats on the log scale ------------------------------------------------


def test_changes_over_repeats_are_averaged_as_log_ratios_so_no_bound_is_impossible():
    """Changes of -95 and -60 %: a t interval on the % scale gave [-299.9, +144.9] (a TTFT below
    zero); on the log scale both bounds are possible changes, and the estimate is the geometric
    mean of the ratios (0.05 and 0.40 -> 0.141)."""
    old = t_mean([-95.0, -60.0])
    assert old.lo < -100  # the defect, as the old computation gives it
    iv = repeats_change_pct([-95.0, -60.0])
    assert -100 < iv.lo <= iv.estimate <= iv.hi
    assert iv.estimate == pytest.approx((math.sqrt(0.05 * 0.40) - 1) * 100)
    assert iv.method == "t over 2 repeats, log ratios"


def test_one_repeat_has_no_interval_over_repeats():
    iv = repeats_change_pct([-40.0])
    assert iv.estimate == pytest.approx(-40.0) and math.isnan(iv.lo) and iv.n == 1


def test_the_means_beside_a_change_over_repeats_are_over_the_same_repeats_and_make_the_change(tmp_path):
    """Repeat 3 ran with the cache only: it is in neither the change nor the means beside it, and
    the change is exactly the ratio of the two (geometric) means shown."""
    scens = [Scen("rag", mode=m, repeat=r, speedup=s) for r, s in ((1, 3.0), (2, 5.0)) for m in ("with-cache",)]
    scens += [Scen("rag", mode="baseline", repeat=r, speedup=1.0) for r in (1, 2)]
    scens.append(Scen("rag", repeat=3, speedup=50.0))
    a = analyse(make_run(tmp_path, scens))
    row = a.vs_baseline.set_index("round").loc[2]
    assert row["repeats"] == 2
    r = a.data.rounds
    r2 = r[(r["round"] == 2) & (r["repeat"] <= 2)].set_index(["mode", "repeat"])["ttft_mean_ms"]
    assert row["ttft_mean_ms_cache"] == pytest.approx(geometric_mean(r2.loc["with-cache"]))
    assert row["ttft_mean_ms_base"] == pytest.approx(geometric_mean(r2.loc["baseline"]))
    assert row["ttft_mean_ms_change"] == pytest.approx(100 * (row["ttft_mean_ms_cache"] / row["ttft_mean_ms_base"] - 1))


# --- item 4: verdicts from the interval ---------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "lower", "higher"),
    [
        (-80.0, -65.0, MET, NOT_MET),  # wholly beyond -60; wholly short of +150
        (-70.0, -50.0, INCONCLUSIVE, NOT_MET),  # straddles -60
        (-55.0, -20.0, NOT_MET, NOT_MET),
        (160.0, 200.0, NOT_MET, MET),
        (100.0, 200.0, NOT_MET, INCONCLUSIVE),
        (math.nan, math.nan, INCONCLUSIVE, INCONCLUSIVE),  # one value per stack: no interval, no verdict
    ],
)
def test_a_target_is_read_from_the_whole_interval(lo, hi, lower, higher):
    est = (lo + hi) / 2 if not math.isnan(lo) else -61.0
    assert target_verdict(est, lo, hi, -60, "lower") == lower
    assert target_verdict(est, lo, hi, 150, "higher") == higher
    assert target_verdict(math.nan, lo, hi, -60, "lower") == "n/a"


def test_a_point_estimate_beyond_the_target_with_an_interval_across_it_is_inconclusive():
    """-62 % [-70, -50]: the old verdict said "pass" from the figure alone."""
    table = pd.DataFrame(
        {"ttft_mean_ms_change": [-62.0], "ttft_mean_ms_lo": [-70.0], "ttft_mean_ms_hi": [-50.0],
         "req_per_s_change": [200.0], "req_per_s_lo": [170.0], "req_per_s_hi": [240.0]}
    )  # fmt: skip
    out = targets_vs_baseline(table, 60, 150).iloc[0]
    assert out["ttft_target"] == INCONCLUSIVE and out["tput_target"] == MET


def test_summary_csv_and_console_carry_the_interval_verdicts(tmp_path):
    scens = [Scen("rag", mode=m, n=30, speedup=6.0 if m == "with-cache" else 1.0) for m in ("with-cache", "baseline")]
    run = make_run(tmp_path, scens)
    from harness.report.write import console_summary

    text = console_summary(run, width=100)
    summary = pd.read_csv(run / "summary.csv")
    lead = summary[(summary["mode"] == "with-cache") & (summary["round"] == 2)].iloc[0]
    assert lead["vs_baseline_ttft_target"] == MET  # -83 % with an interval wholly below -60
    assert lead["vs_baseline_tput_target"] == INCONCLUSIVE  # one stack per arm: no throughput interval
    assert lead["vs_baseline_spans"] == WITHIN_RUN
    assert "met/inconcl." in text and "pass" not in text and "FAIL" not in text


# --- item 1: fresh and reset cells are never pooled ----------------------------------------------


def test_fresh_and_reset_cells_get_a_row_each_and_pair_prompts_within_their_isolation(tmp_path):
    """The old join on (repeat, prompt) crossed the two isolations: 4 rows per prompt, "48 pairs"
    from 12 prompts."""
    scens = [
        Scen("rag", mode=m, isolation=iso, speedup=3.0 if m == "with-cache" else 1.0)
        for iso in ("fresh", "reset")
        for m in ("with-cache", "baseline")
    ]
    vs = analyse(make_run(tmp_path, scens)).vs_baseline
    r2 = vs[vs["round"] == 2].set_index("isolation")
    assert sorted(r2.index) == ["fresh", "reset"]
    assert list(r2["pairs"]) == [12, 12]
    assert set(r2["label"]) == {"rag", "rag [reset]"}


def _stack_frames(rng: np.random.Generator, prompts: int, stack_sd: float) -> RunData:
    """An in-memory run of one scenario, fresh and reset cells, with and without the cache, 1 repeat,
    no true difference between with and without: per-prompt difficulty (shared by every cell),
    per-request noise, and a per-stack offset (sd `stack_sd` on the log scale)."""
    difficulty = rng.normal(5.0, 0.5, prompts)
    rounds, req, dirs = [], [], []
    for iso in ("fresh", "reset"):
        for mode in ("with-cache", "baseline"):
            d = len(dirs)
            offset = rng.normal(0, stack_sd)
            entry = CellEntry(scenario="s", mode=mode, isolation=iso, repeat=1, status="ok", project=f"p{d}")
            dirs.append({"dir": d, "entry": entry})
            for rnd in (1, 2):
                ttft = np.exp(difficulty + offset + rng.normal(0, 0.2, prompts))
                req.append(pd.DataFrame({"dir": d, "round": rnd, "pid": np.arange(prompts), "ttft_ms": ttft}))
                row = {"dir": d, "scenario": "s", "mode": mode, "isolation": iso, "repeat": 1, "round": rnd,
                       "partial": False, "phase": "cold", "reused_token_pct": 0.0}  # fmt: skip
                row.update({m: float(ttft.mean()) for m in HEADLINE})
                rounds.append(row)
    return RunData(Path("."), None, pd.DataFrame(dirs), pd.DataFrame(rounds), pd.concat(req), Targets())


@pytest.mark.slow  # 300 simulated runs through reuse_buys (bootstraps): ~25 s
def test_pooled_isolations_no_longer_inflate_the_false_significance_rate():
    """No true difference and no stack effect: a 95 % interval that clears 0 is a false positive,
    at most 5 % of the time. Pooling fresh and reset cells (4 rows per prompt) made the intervals
    too narrow: the audit measured 18 % (mean) and 13 % (per prompt). 300 runs: sd 1.3 pp at 5 %."""
    rng = np.random.default_rng(34)
    hits = np.zeros(2)
    n = 300
    for _ in range(n):
        data = _stack_frames(rng, prompts=20, stack_sd=0.0)
        vs = reuse_buys(data, data.requests)
        row = vs[(vs["round"] == 2) & (vs["isolation"] == "fresh")].iloc[0]
        assert row["pairs"] == 20
        hits += [row["ttft_mean_ms_lo"] > 0 or row["ttft_mean_ms_hi"] < 0, row["paired_lo"] > 0 or row["paired_hi"] < 0]
    rate = hits / n
    print(
        f"\nfalse 'clear of 0' rate, 20 prompts, fresh row: mean {rate[0]:.3f}, per prompt {rate[1]:.3f} (nominal 0.05)"
    )
    assert (rate <= 0.10).all() and (rate >= 0.01).all()


# --- item 2: stack-to-stack noise ----------------------------------------------------------------


def _stack_experiment(rng: np.random.Generator, stacks: int, stack_sd: float, prompts: int = 30) -> tuple:
    """One run: `stacks` stacks per arm, each with its own offset (sd `stack_sd`, log scale) on top
    of shared per-prompt difficulty and per-request noise; the true change of the mean is -50 %."""
    difficulty = rng.lognormal(5.0, 0.5, prompts)
    per_stack, first = [], None
    for _ in range(stacks):
        base = difficulty * np.exp(rng.normal(0, stack_sd) + rng.normal(0, 0.1, prompts))
        cache = 0.5 * difficulty * np.exp(rng.normal(0, stack_sd) + rng.normal(0, 0.1, prompts))
        per_stack.append(100 * (cache.mean() / base.mean() - 1))
        first = first or (base, cache)
    return first, per_stack


@pytest.mark.slow  # 1,000 bootstrap intervals
def test_with_a_per_stack_effect_one_stack_undercovers_and_five_stacks_cover():
    """A per-stack effect of 5 % (sd, log scale): the within-run interval over the prompts of one
    stack holds the true change far less than 95 % of the time (the audit: 58 %); a t interval
    over 5 stacks' log ratios holds it at its level. This is why one-repeat intervals are labelled
    "prompts of one stack"."""
    rng = np.random.default_rng(2)
    true = -50.0
    n = 1000
    within = over5 = 0
    for _ in range(n):
        (base, cache), per_stack = _stack_experiment(rng, 5, 0.05)
        iv = paired_mean_change_pct(base, cache)
        within += iv.lo <= true <= iv.hi
        r = repeats_change_pct(per_stack)
        over5 += r.lo <= true <= r.hi
    within_rate, over5_rate = within / n, over5 / n
    print(f"\ncoverage with a 5 % per-stack effect: within-run {within_rate:.3f}, t over 5 stacks {over5_rate:.3f}")
    assert within_rate < 0.85  # undercovers: its label must say what it spans
    assert 0.93 <= over5_rate <= 0.97  # sd 0.7 pp at 95 %


# --- item 5: many scenarios ----------------------------------------------------------------------


def test_holm_adjusts_the_threshold_step_down():
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]  # 0.01 < 0.05/3; 0.03 !< 0.05/2
    assert holm([0.01, 0.02, 0.04]) == [True, True, True]  # 0.01 < .0167, 0.02 < .025, 0.04 < .05
    assert holm([math.nan, 0.001]) == [False, True]


def test_the_verdict_sentence_says_its_count_is_unadjusted(tmp_path):
    scens = [
        Scen(s, mode=m, speedup=3.0 if m == "with-cache" else 1.0)
        for s in ("a", "b")
        for m in ("with-cache", "baseline")
    ]
    from harness.report.write import console_summary

    text = " ".join(console_summary(make_run(tmp_path, scens), width=200).split())
    assert "(95 % CIs clear of 0, unadjusted for 2)" in text


# --- item 6: tail percentiles --------------------------------------------------------------------


def test_the_samples_a_tail_percentile_needs_follow_the_order_statistic_bound():
    """A distribution-free 95 % interval of the q-quantile has an upper bound only when the sample's
    maximum lies above the true quantile with probability >= 97.5 %: 1 - q^n >= 0.975."""
    assert min_samples_for_quantile(0.9) == 36  # 0.9^35 = 0.02503: just short
    assert min_samples_for_quantile(0.99) == 368
    assert min_samples_for_quantile(0.5) == 6
    for q in (0.5, 0.9, 0.99):
        n = min_samples_for_quantile(q)
        assert 1 - q**n >= 0.975 > 1 - q ** (n - 1)
        assert quantile_supported(n, q) and not quantile_supported(n - 1, q) and not quantile_supported(math.nan, q)


def test_the_rule_agrees_with_scipys_order_statistic_interval():
    from scipy import stats

    x = np.random.default_rng(0).lognormal(size=400)
    for q in (0.9, 0.99):
        n = min_samples_for_quantile(q)
        for size in (n - 1, n):
            hi = stats.quantile_test(x[:size], p=q).confidence_interval(0.95).high
            assert np.isfinite(hi) == quantile_supported(size, q)


# --- item 7: TOST ---------------------------------------------------------------------------------


@pytest.mark.slow  # 8,000 simulated audits
def test_tost_error_rates_at_the_margin_and_power_at_equality():
    """8 stack pairs, 5 % sd of the log ratio per pair. A true ratio exactly at the margin (1.10 or
    0.90) must be called equivalent at most 5 % of the time (sd 0.5 pp at N = 2000); a true ratio of
    1 is called equivalent nearly always at this noise."""
    rng = np.random.default_rng(7)
    n = 2000
    rates = {}
    for true in (1.10, 0.90, 1.0):
        logs = rng.normal(math.log(true), 0.05, (n, 8))
        rates[true] = np.mean([tost_log_ratio(np.exp(x)).equivalent for x in logs])
    print(
        f"\nTOST, 8 pairs, sd 5 %: equivalent at 1.10 {rates[1.10]:.3f}, at 0.90 {rates[0.90]:.3f}, "
        f"at 1 {rates[1.0]:.3f}"
    )
    assert 0.03 <= rates[1.10] <= 0.065 and 0.03 <= rates[0.90] <= 0.065
    assert rates[1.0] > 0.95


def test_tost_is_the_90_percent_interval_inside_the_margin():
    ratios = [1.02, 0.98, 1.01, 1.03, 0.99, 1.00, 1.02, 0.97]
    e = tost_log_ratio(ratios)
    assert e.equivalent and -10 < e.lo <= e.estimate <= e.hi < 10 and e.n == 8 and e.p < 0.05
    wide = tost_log_ratio([1.3, 0.8, 1.2, 0.85])
    assert not wide.equivalent and (wide.lo < -10 or wide.hi > 10)
    assert not tost_log_ratio([1.0]).equivalent  # one pair shows nothing


def _pair(name: str, pair: int, fresh: list[float], reset: list[float]):
    from benchmarks.reset_audit import PairResult
    from harness.records import ResetEvidence

    def rows(v: list[float]) -> pd.DataFrame:
        n = len(v) // 2
        return pd.DataFrame({"round": [1] * n + [2] * n, "prompt_id": [f"p{i}" for i in range(n)] * 2, "ttft_ms": v})

    ev = ResetEvidence(external=True)
    return PairResult(name, pair, rows(fresh), rows(reset), ev, ev, "cold", True)


def test_the_reset_audit_takes_one_ratio_per_stack_pair_and_rounds_1_and_2():
    """Three prompts per stack are one ratio per pair, not three independent pairs; round 2 is judged
    too. Reset 2 % slower in round 1 in every pair: equivalent; round 2 30 % slower: not."""
    from benchmarks.reset_audit import compare, pair_ratios

    rng = np.random.default_rng(1)
    results = []
    for p in range(1, 9):
        fresh = list(rng.lognormal(5, 0.3, 3)) + list(rng.lognormal(3, 0.3, 3))
        k = np.exp(rng.normal(0, 0.02))
        reset = [v * 1.02 * k for v in fresh[:3]] + [v * 1.30 * k for v in fresh[3:]]
        results.append(_pair("s", p, fresh, reset))
    assert len(pair_ratios(results, "s", 1)) == 8  # pairs, not 24 prompts
    t = compare(results, margin=10).set_index("round")
    assert list(t["pairs"]) == [8, 8]
    assert bool(t.loc[1, "equivalent"]) and not bool(t.loc[2, "equivalent"])
    assert t.loc[1, "verdict"] == "equivalent (within +-10 %)" and "90 % CI" in " ".join(t.columns)


def test_the_reset_audit_alternates_the_scenario_order():
    from benchmarks.reset_audit import abba

    assert abba(["a", "b"], 4) == [(1, "a"), (1, "b"), (2, "b"), (2, "a"), (3, "a"), (3, "b"), (4, "b"), (4, "a")]


# --- item 9: the engine warm-up ------------------------------------------------------------------


def test_the_warm_up_shares_nothing_and_leaves_the_store_empty_for_the_cold_proof():
    """Against the fake engine with a connector (its store saves every full block it served): the
    warm-up's prompts are below one block, so the store still counts 0 keys and the cold proof
    passes after it; its evidence says what was sent."""
    from harness.observe.probes import Probe, cold_state
    from harness.runner.warmup import warm_up
    from tests.stub_server import FakeEngine, FakeStore, StubServer

    store = FakeStore()
    with StubServer(engine=FakeEngine(store, block_size=16)) as eng, StubServer(store=store) as master:
        url = eng.url("vllm")
        probe = Probe(url, master.url("master"))
        try:
            block = probe.snapshot().block_size
            ev = warm_up(url, "tiny", block)
            cold, detail = cold_state(probe.snapshot())
        finally:
            probe.close()
    assert block == 16 and ev["requests"] == 4 and ev["block_size"] == 16
    assert all(0 < n < 16 for n in ev["prompt_tokens"]) and len(ev["ttft_ms"]) == 4
    assert cold and "master_key_count=0" in detail and not store.keys
