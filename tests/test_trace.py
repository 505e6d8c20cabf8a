"""Trace replay (Mooncake FAST'25 format): block synthesis, selection, expected sharing, the
workload it becomes, and that the runner keeps the recorded arrivals and output lengths.
The published traces are read from ../shared/data/mooncake-traces/ (never copied)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.config import ConfigError, MultiTurn, Trace, load_config
from harness.config.trace import TRACE_BLOCK, BlockMaker, TraceRecord, read_trace, select, shared_prefix_blocks
from harness.runner import Endpoint, run_rounds
from harness.workload import build_workload

from .stub_server import StubServer
from .test_client_stub import _cfg
from .test_workload import Words

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "mooncake-traces"
CONVERSATION = TRACES / "conversation_trace.jsonl"
needs_traces = pytest.mark.skipif(not CONVERSATION.exists(), reason=f"{TRACES} not present")
VOCAB = list(range(1000, 1400))


def rec(ts: float, n: int, ids: list[int], out: int = 4) -> TraceRecord:
    return TraceRecord(timestamp=ts, input_length=n, output_length=out, hash_ids=tuple(ids))


def test_equal_id_prefixes_give_equal_token_prefixes_and_exact_lengths():
    maker = BlockMaker(VOCAB, seed=7)
    a, b = rec(0, 1200, [1, 2, 3]), rec(0, 1500, [1, 2, 9])
    ta, tb = maker.prompt_ids(a), maker.prompt_ids(b)
    assert (len(ta), len(tb)) == (1200, 1500)
    assert ta[: 2 * TRACE_BLOCK] == tb[: 2 * TRACE_BLOCK]  # ids 1, 2 shared
    assert ta[2 * TRACE_BLOCK :] != tb[2 * TRACE_BLOCK : 1200]  # id 3 vs 9
    assert BlockMaker(VOCAB, seed=7).prompt_ids(a) == ta  # deterministic ...
    assert BlockMaker(VOCAB, seed=8).prompt_ids(a) != ta  # ... per seed
    assert set(ta) <= set(VOCAB)


def test_different_ids_share_no_block_even_at_the_engines_granularity():
    """No 16-token engine block of one hash id's block appears in another's (300 ids)."""
    maker = BlockMaker(VOCAB, seed=1)
    seen: dict[tuple[int, ...], int] = {}
    for h in range(300):
        ids = maker.block_ids(h)
        for i in range(0, TRACE_BLOCK, 16):
            key = tuple(ids[i : i + 16])
            assert seen.setdefault(key, h) == h, f"ids {seen[key]} and {h} share an engine block"


def test_shared_prefix_counts_only_leading_ids_seen_before():
    records = [rec(0, 1500, [1, 2, 3]), rec(1, 1500, [1, 2, 4]), rec(2, 1000, [5, 2]), rec(3, 2000, [1, 2, 4, 6])]
    assert shared_prefix_blocks(records) == [0, 2, 0, 3]  # [5, 2]: the 2 is not a prefix


@needs_traces
def test_shared_prefix_on_the_published_trace_matches_brute_force():
    records = read_trace(CONVERSATION)[:300]
    brute = []
    for i, r in enumerate(records):
        best = 0
        for q in records[:i]:
            k = 0
            while k < min(len(r.hash_ids), len(q.hash_ids)) and r.hash_ids[k] == q.hash_ids[k]:
                k += 1
            best = max(best, k)
        brute.append(best)
    assert shared_prefix_blocks(records) == brute
    assert sum(brute) > 0  # the trace does reuse


@needs_traces
def test_selection_by_count_window_and_context_counts_what_it_skips():
    records = read_trace(CONVERSATION)
    sel = select(records, num_requests=200, max_total_tokens=32768)
    too_long = sum(r.input_length + r.output_length > 32768 for r in records[:200])
    assert too_long > 0 and sel.skipped_too_long == too_long and len(sel.records) == 200 - too_long
    window = select(records, num_requests=None, start_ms=10_000, end_ms=20_000)
    assert window.records and all(10_000 <= r.timestamp < 20_000 for r in window.records)
    assert window.skipped_too_long == 0
    short = select(records, num_requests=200, max_input_length=8192)
    assert short.skipped_too_long == sum(r.input_length > 8192 for r in records[:200]) > too_long


def test_a_bad_trace_is_a_one_line_config_error_naming_file_and_line(tmp_path):
    good = {"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [1, 2]}
    (tmp_path / "t.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "hash_ids": [1]}) + "\n")
    (tmp_path / "c.yaml").write_text("default_scenarios: [t]\nscenarios:\n  t: {kind: trace, path: t.jsonl}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: scenarios.t.trace: .*t.jsonl:2: record: 1 hash_ids") as e:
        load_config(tmp_path / "c.yaml")
    assert "\n" not in str(e.value)
    (tmp_path / "c.yaml").write_text("default_scenarios: [t]\nscenarios:\n  t: {kind: trace, path: none.jsonl}\n")
    with pytest.raises(ConfigError, match="none.jsonl: file not found"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "t.jsonl").write_text(json.dumps(good) + "\n")
    (tmp_path / "c.yaml").write_text(
        "api: chat\ndefault_scenarios: [t]\nscenarios:\n  t: {kind: trace, path: t.jsonl}\n"
    )
    with pytest.raises(ConfigError, match="needs api: completions"):
        load_config(tmp_path / "c.yaml")


def _trace_file(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_trace_becomes_token_id_prompts_with_scaled_arrivals_and_fixed_outputs(tmp_path):
    path = _trace_file(
        tmp_path,
        [
            {"timestamp": 1000, "input_length": 700, "output_length": 5, "hash_ids": [0, 1]},
            {"timestamp": 3000, "input_length": 900, "output_length": 50, "hash_ids": [0, 2]},
            {"timestamp": 4000, "input_length": 40000, "output_length": 5, "hash_ids": list(range(79))},
        ],
    )
    cfg = Trace(kind="trace", path=path, speed=2.0, max_output_length=20)
    wl = build_workload("tr", cfg, Words(), api="completions", seed=3, max_model_len=32768)
    assert wl.num_requests == 2 and wl.skipped == 1
    p = [s.build(0, []) for s in wl.sessions]
    assert [len(x.body) for x in p] == [700, 900] and [x.prompt_tokens for x in p] == [700, 900]
    assert p[0].body[:TRACE_BLOCK] == p[1].body[:TRACE_BLOCK] and p[0].body[TRACE_BLOCK:] != p[1].body[TRACE_BLOCK:700]
    assert [x.send_at_s for x in p] == [0.0, 1.0]  # (3000 - 1000) ms / speed 2
    assert [x.max_tokens for x in p] == [5, 20]  # output_length, capped
    assert [x.shared_prefix_tokens for x in p] == [0, TRACE_BLOCK]


def test_think_times_are_fixed_or_seeded_exponential():
    fixed = MultiTurn(kind="multi_turn", num_conversations=2, turns=3, system_length=5, user_length=5, think_time_s=2)
    wl = build_workload("mt", fixed, Words(), api="completions", seed=1)
    assert [s.think_s for s in wl.sessions] == [(2.0, 2.0), (2.0, 2.0)]
    expo = fixed.model_copy(update={"think_time": "exponential", "turns": 200, "num_conversations": 1})
    a = build_workload("mt", expo, Words(), api="completions", seed=1).sessions[0].think_s
    assert a == build_workload("mt", expo, Words(), api="completions", seed=1).sessions[0].think_s
    assert len(a) == 199 and 1.5 < sum(a) / len(a) < 2.5 and len(set(a)) == 199


def test_the_runner_keeps_the_recorded_arrivals_and_output_lengths(tmp_path):
    """Against the stub server: each request leaves at its scaled timestamp (never early), and
    asks for the trace's output length, which the usage then reports."""
    rng = random.Random(0)
    path = _trace_file(
        tmp_path,
        [
            {"timestamp": t, "input_length": 600, "output_length": rng.randint(2, 9), "hash_ids": [i, i + 100]}
            for i, t in enumerate([0, 100, 150, 600, 900])
        ],
    )
    cfg = _cfg(rounds=1, concurrency=8)
    wl = build_workload("tr", Trace(kind="trace", path=path), Words(), api="completions", seed=1)
    with StubServer(tokens=4) as stub:
        run_rounds(wl, cfg, Endpoint(stub.url("ok"), "stub"), tmp_path)
    rows = pd.read_csv(tmp_path / "requests.csv").sort_values("index")
    want = [p.send_at_s for p in (s.build(0, []) for s in wl.sessions)]
    sched = rows["scheduled_s"].to_numpy()
    assert np.allclose(sched - sched[0], want, atol=1e-5)  # the recorded arrivals, on the round's clock
    lag_ms = (rows["send_s"] - rows["scheduled_s"]) * 1e3  # recorded per request, on the same clock
    # Never early. Late only by the client's scheduling: on a loaded 2-core CI host, with a real engine
    # on the other pytest worker, sends were seen up to 64 ms late (the first one included) and one 99 ms
    # late. 150 ms still tells a send that waits for its arrival from one that waits for anything else.
    assert (lag_ms > -2).all() and (lag_ms < 150).all() and np.median(lag_ms) < 75, lag_ms
    assert rows["completion_tokens"].tolist() == [r.output_length for r in read_trace(path)]
    assert rows["expected_prompt_tokens"].tolist() == [600] * 5


def test_a_replay_capped_by_concurrency_is_told_it_no_longer_follows_the_trace(tmp_path):
    """Five requests at one instant, one allowed in flight: they leave one after another, the round's
    send lag says how late, and the warning names the cause."""
    from harness.analysis.stats import schedule_warning

    path = _trace_file(
        tmp_path,
        [{"timestamp": 0, "input_length": 600, "output_length": 8, "hash_ids": [i, i + 100]} for i in range(5)],
    )
    wl = build_workload("tr", Trace(kind="trace", path=path), Words(), api="completions", seed=1)
    with StubServer(tokens=8) as stub:
        table = run_rounds(wl, _cfg(rounds=1, concurrency=1), Endpoint(stub.url("stamp_50_20"), "stub"), tmp_path)
    lag = table.loc[0, "send_lag_p99_ms"]
    assert lag > 100, lag
    assert "concurrency" in schedule_warning(table.loc[0])
