"""The break-even prefix length (harness/report/breakeven.py) on synthetic cold_start sweeps: the
crossing is looked for inside the measured lengths only, curves that do not cross there are said to
favour one path at every measured length, bootstrap replicates without a crossing stay in the
percentiles, and the minimum counts distinct lengths."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.breakeven import break_even, notes
from harness.report.data import load_run
from tests.report_synth import Scen, make_run

Line = Callable[[float], float]  # prompt tokens -> TTFT ms


def _sweep(tmp_path: Path, lengths: list[int], fetch: Line, recompute: Line, noise: float = 1.0, n: int = 12) -> Path:
    """cold_start scenarios, one per entry of `lengths` (names may repeat a length), with and without
    the connector; warm-round TTFT = the given curve + Gaussian noise (ms)."""
    names = [f"p{i}_{t}" for i, t in enumerate(lengths)]
    scens = [Scen(name, mode=mode, n=n) for name in names for mode in ("with-cache", "baseline")]
    run = make_run(tmp_path, scens)
    rng = np.random.default_rng(1)
    for s in scens:
        t = lengths[names.index(s.name)]
        path = run / s.key / "requests.csv"
        req = pd.read_csv(path)
        curve = fetch if s.mode == "with-cache" else recompute
        req["prompt_tokens"] = t
        req["ttft_ms"] = curve(t) + rng.normal(0, noise, len(req))
        req.to_csv(path, index=False)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["scenarios"] = {
        name: {"kind": "cold_start", "prompt_length": t} for name, t in zip(names, lengths)
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


LENGTHS = [256, 512, 1024, 2048, 4096, 8192]


def test_fetch_faster_at_every_length_is_said_so_not_a_crossing_outside_the_data(tmp_path):
    """Fetch 2 ms + 1 ms/1k, recompute 5 ms + 20 ms/1k: fetching wins from the shortest measured length
    on. The old search started at 1 token and reported a break-even of 1 token; there is no crossing
    inside the data, and the note says which path wins at every measured length."""
    be = break_even(load_run(_sweep(tmp_path, LENGTHS, lambda t: 2 + t / 1e3, lambda t: 5 + 20 * t / 1e3, 0.2)))
    assert be is not None and math.isnan(be.crossover) and be.faster_above == "fetch"
    text = " ".join(notes(be))
    assert "fetch faster at every measured length (256-8,192 tokens)" in text, text
    assert "break-even lies below 256 tokens" in text and "Break-even prefix length:" not in text
    assert "never" not in text and "not faster at any length" not in text


def test_a_crossing_beyond_the_longest_length_is_not_reported(tmp_path):
    """Fetch 100 ms + 4 ms/1k, recompute 4 ms + 12 ms/1k cross at 12,000 tokens: past the longest
    measured length (8,192), where the old search (up to twice the longest) still found it. Inside the
    data recomputing is faster everywhere, and the note says so - never "not faster at any length"."""
    be = break_even(load_run(_sweep(tmp_path, LENGTHS, lambda t: 100 + 4 * t / 1e3, lambda t: 4 + 12 * t / 1e3, 0.5)))
    assert be is not None and math.isnan(be.crossover) and be.faster_above == "recompute"
    text = " ".join(notes(be))
    assert "recompute faster at every measured length (256-8,192 tokens)" in text, text
    assert "above 8,192 tokens, if anywhere" in text
    assert "not faster at any length" not in text and "never" not in text


def test_the_crossing_inside_the_data_is_the_fitted_curves_solution(tmp_path):
    """Fetch 30 + 4 ms/1k, recompute 5 + 20 ms/1k, little noise: the curves cross at 1,562.5 tokens."""
    be = break_even(load_run(_sweep(tmp_path, LENGTHS, lambda t: 30 + 4 * t / 1e3, lambda t: 5 + 20 * t / 1e3, 0.1)))
    assert be is not None and be.faster_above == "fetch"
    assert abs(be.crossover - 1562.5) < 15 and be.lo <= be.crossover <= be.hi
    assert np.isfinite(be.lo) and np.isfinite(be.hi)


def test_replicates_without_a_crossing_stay_in_the_interval_which_is_then_open_ended(tmp_path):
    """Curves that cross near the longest length (fetch 60 + 4 ms/1k, recompute 20 + 9 ms/1k: 8,000
    tokens, the longest measured 8,192) with noise: many bootstrap refits do not cross inside the
    data at all. They are kept (as beyond the longest length), so the upper bound is open - dropping
    them made the interval look closed and tight."""
    be = break_even(
        load_run(_sweep(tmp_path, LENGTHS, lambda t: 60 + 4 * t / 1e3, lambda t: 20 + 9 * t / 1e3, noise=6.0))
    )
    assert be is not None and be.crosses, be
    assert be.hi == math.inf and be.lo <= be.crossover
    text = " ".join(notes(be))
    assert "to above 8,192 tokens, open-ended" in text, text


def test_the_minimum_counts_distinct_lengths_not_scenarios(tmp_path):
    """Five scenarios at three distinct lengths: not enough lengths for a curve (at least 4)."""
    run = _sweep(tmp_path, [512, 512, 2048, 2048, 8192], lambda t: 30 + 4 * t / 1e3, lambda t: 5 + 20 * t / 1e3)
    assert break_even(load_run(run)) is None
    run4 = _sweep(tmp_path / "four", [512, 1024, 2048, 8192], lambda t: 30 + 4 * t / 1e3, lambda t: 5 + 20 * t / 1e3)
    assert break_even(load_run(run4)) is not None
