"""Every shortfall explained (issue 21, item 3): a with-cache round 2+ that reused less than 90 % of
what it could gets one sentence naming the cause from the counters, or saying it is unknown."""

from __future__ import annotations

import math

import pandas as pd

from harness.analysis.shortfall import cell_shortfalls, shortfall_notes, shortfall_sentence
from harness.report.data import load_run
from tests.report_synth import Scen, make_run

GIB = 2**30
# The trace replay: round 2 reused 33,792 of 1,119,616 expected tokens (3 %).
SHORT = {"expected_reuse_tokens": [0, 1_119_616], "achieved_reuse_tokens": [0, 33_792]}
QUIET = {  # counters scraped, nothing happened
    "master_evicted_keys": [0, 0],
    "master_evicted_bytes": [0, 0],
    "master_alloc_failures": [0, 0],
    "master_put_failed_items": [0, 0],
    "master_capacity_bytes_start": [GIB, GIB],
    "master_capacity_bytes_end": [GIB, GIB],
    "master_key_count_start": [0, 900],
    "master_key_count_end": [900, 900],
    "mc_save_put_keys": [900, 0],
    "mc_save_put_bytes": [0.5 * GIB, 0],
    **{f"mc_{op}_failed_keys": [0, 0] for op in ("lookup_exists", "load_get", "save_exists", "save_put")},
}


def _notes(tmp_path, *scens: Scen) -> list[str]:
    return shortfall_notes(load_run(make_run(tmp_path, list(scens))).rounds)


def test_a_store_smaller_than_the_working_set_gets_the_eviction_sentence(tmp_path):
    """Evictions in round 1 and 2 count (blocks lost in round 1 are missing in round 2), the bytes
    written against the capacity, and what an LRU store of that size would have kept."""
    extra = {
        **QUIET,
        **SHORT,
        "master_evicted_keys": [1_500, 1_000],
        "master_evicted_bytes": [1.2e9, 0.8e9],
        "mc_save_put_bytes": [3.0e9, 0.1e9],
        "lru_reuse_tokens": [0, 40_960],
    }
    (line,) = _notes(tmp_path, Scen("trace", extra=extra), Scen("trace", mode="baseline", extra=SHORT))
    assert line.startswith("trace round 2: reused 33,792 of 1,119,616 expected tokens (3 %): "), line
    assert "the store evicted 2,500 keys (2.00 GB) by then" in line
    assert "its working set (3.10 GB written) exceeds the store's capacity (1.07 GB)" in line
    assert "an LRU store of that size would have reused only 3 % of it too" in line
    assert line.count(".") >= 1 and "\n" not in line  # one sentence per round


def test_refused_puts_and_connector_failures_are_named(tmp_path):
    extra = {
        **QUIET,
        **SHORT,
        "master_alloc_failures": [40, 2],
        "master_put_failed_items": [0, 3],
        "mc_load_get_failed_keys": [0, 12],
    }
    (line,) = _notes(tmp_path, Scen("s", extra=extra))
    assert "42 allocation failures and 3 failed puts left blocks unstored (the store was full)" in line, line
    assert "the connector's store operations failed for 12 keys (load_get 12)" in line


def test_a_segment_lost_to_an_expired_lease_is_named(tmp_path):
    extra = {**QUIET, **SHORT, "master_capacity_bytes_end": [GIB, GIB / 2], "master_key_count_end": [900, 450]}
    (line,) = _notes(tmp_path, Scen("s", extra=extra))
    assert "capacity fell from 1.07 GB to 0.54 GB (a segment unmounted: its client's lease expired)" in line, line


def test_keys_lost_between_rounds_are_named(tmp_path):
    """Measured (configs/store-node.yaml, embedded store, engine restarted before round 2): 62 keys at
    the end of round 1, 0 at the start of round 2, round 2 reused 85,504 of 95,232 expected tokens."""
    extra = {**QUIET, "expected_reuse_tokens": [0, 95_232], "achieved_reuse_tokens": [0, 85_504],
             "master_key_count_start": [0, 0], "master_key_count_end": [62, 62]}  # fmt: skip
    (line,) = _notes(tmp_path, Scen("s", extra=extra))
    assert "reused 85,504 of 95,232 expected tokens (89 %)" in line, line
    assert "the store held 62 keys at the end of round 1 and 0 at the start of round 2 (lost between the rounds" in line


def test_no_counted_cause_says_the_cause_is_unknown(tmp_path):
    (line,) = _notes(tmp_path, Scen("s", extra={**QUIET, **SHORT}))
    assert "the cause is unknown: no eviction, failed allocation or put, lost segment or connector failure" in line
    (bare,) = _notes(tmp_path / "bare", Scen("s", extra=SHORT))  # no counters at all (an external server)
    assert "the cause is unknown: no store or connector counters were scraped" in bare, bare


def test_a_shared_store_names_outside_traffic_when_nothing_was_counted(tmp_path):
    (line,) = _notes(tmp_path, Scen("s", isolation="shared", extra={**QUIET, **SHORT}))
    assert "traffic from outside this cell (shared)" in line, line


def test_rounds_that_reached_90_percent_baselines_and_unknown_achievement_get_nothing(tmp_path):
    enough = {**QUIET, "expected_reuse_tokens": [0, 10_000], "achieved_reuse_tokens": [0, 9_000]}
    unknown = {**QUIET, **SHORT, "cached_tokens": [math.nan, math.nan]}  # the server sent no cached_tokens
    assert (
        _notes(
            tmp_path,
            Scen("enough", extra=enough),
            Scen("base", mode="baseline", extra={**QUIET, **SHORT}),
            Scen("unknown", extra=unknown),
        )
        == []
    )


def test_the_console_gets_the_same_sentence_from_a_cells_rounds_table():
    """What the runner returns for one cell (no label column): the scenario names the sentence."""
    table = pd.DataFrame(
        {
            "scenario": "trace",
            "mode": "with-cache",
            "isolation": "fresh",
            "round": [1, 2, 3],
            "cached_tokens": [0, 33_792, 500_000],
            "expected_reuse_tokens": [0, 1_119_616, 1_119_616],
            "achieved_reuse_tokens": [0, 33_792, 1_100_000],
            "master_evicted_keys": [1_500, 0, 0],
            "master_evicted_bytes": [1.2e9, 0, 0],
        }
    )
    assert cell_shortfalls(table) == [shortfall_sentence(table.iloc[1], table)]
    assert (
        cell_shortfalls(table)[0].startswith("trace round 2: reused 33,792")
        and "evicted 1,500 keys" in (cell_shortfalls(table)[0])
    )
    assert shortfall_sentence(table.iloc[2], table) is None  # 98 %
