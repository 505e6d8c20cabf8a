"""Reuse fidelity can fail: a warm output that differs from its cold one (or from the baseline's)
is counted in the rate and named, and outputs that do not depend on the prompt are called out as
no evidence (identical text from a degenerate model proves nothing about the reused KV)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from harness.report import write_report
from harness.report.analysis import analyse
from harness.report.tables import fidelity_table

from .report_synth import Scen, make_run

Outputs = Callable[[pd.DataFrame], list[str]]


def _set(run: Path, key: str, outputs: Outputs, prompt_hash: Outputs | None = None) -> None:
    """Rewrite a scenario directory's output (and prompt) hashes."""
    path = run / key / "requests.csv"
    df = pd.read_csv(path)
    df["output_hash"] = outputs(df)
    if prompt_hash:
        df["prompt_hash"] = prompt_hash(df)
    df.to_csv(path, index=False)


def _per_prompt(df: pd.DataFrame) -> list[str]:
    return [f"out-{i}" for i in df["index"]]  # a model whose output depends on the prompt


def _run(tmp_path: Path, cache: Outputs, base: Outputs = _per_prompt, **kw) -> Path:
    run = make_run(tmp_path, [Scen("rag_a", **kw), Scen("rag_a", mode="baseline", speedup=1.0, **kw)])
    _set(run, "rag_a", cache)
    _set(run, "baseline/rag_a", base)
    return run


def _section(run: Path) -> str:
    _, md = write_report(run)
    return md.split("## Reuse fidelity")[1].split("\n## ")[0]


def test_a_warm_output_that_differs_from_its_cold_output_is_counted_and_named(tmp_path):
    """One prompt's warm output differs (wrong KV): 11 of 12 identical warm vs cold, 23 of 24 with
    the cache vs baseline, and the report names the prompt."""

    def wrong_warm(df: pd.DataFrame) -> list[str]:
        out = _per_prompt(df)
        return [o + "-wrong" if r == 2 and i == 3 else o for o, r, i in zip(out, df["round"], df["index"])]

    run = _run(tmp_path, wrong_warm)
    f = analyse(run).fidelity.set_index("scenario").loc["rag_a"]
    assert f["informative"] == "yes" and f["distinct outputs"] == 12 and f["distinct prompts"] == 12
    assert (f["warm vs cold identical"], f["warm vs cold pairs"]) == (11, 12)
    assert math.isclose(f["warm vs cold %"], 100 * 11 / 12)
    assert f["warm vs cold differ"] == ["rag_a-0003"]
    assert (f["with cache vs baseline identical"], f["with cache vs baseline pairs"]) == (23, 24)
    assert f["with cache vs baseline differ"] == ["rag_a-0003"]
    assert f["check"] == "FAIL: the output changed with reused KV for 1 prompt"

    section = _section(run)
    assert "yes (12 outputs for 12 prompts)" in section
    assert "11/12 (91.6 %); differs: rag_a-0003" in section  # floored: never rounded up to look better
    assert "23/24 (95.8 %); differs: rag_a-0003" in section


def test_outputs_that_do_not_depend_on_the_prompt_are_flagged_as_no_evidence(tmp_path):
    """The degenerate model of issue 21: every prompt answered "5555...": 100 % identical, and the
    report says that proves nothing."""
    run = _run(tmp_path, lambda df: ["5555"] * len(df), lambda df: ["5555"] * len(df))
    f = analyse(run).fidelity.set_index("scenario").loc["rag_a"]
    assert f["informative"] == "no" and f["distinct outputs"] == 1
    assert f["warm vs cold %"] == 100 and f["warm vs cold differ"] == []
    assert f["check"] == "no evidence"
    section = _section(run)
    assert "NO: 12 different prompts all gave one output" in section
    assert "outputs do not depend on the prompt" in section and "identical text proves nothing" in section
    assert "12/12 (100 %)" in section  # the rate is still stated


def test_few_outputs_are_weak_evidence_unless_the_prompts_themselves_repeat(tmp_path):
    """12 requests over 3 questions give 3 outputs: with prompt hashes that is one output per
    distinct prompt (a fine check); without them it looks like 3 outputs for 12 prompts (weak)."""
    three: Outputs = lambda df: [f"out-{i % 3}" for i in df["index"]]  # noqa: E731
    run = _run(tmp_path, three, three)
    assert analyse(run).fidelity["informative"].tolist() == ["weak"]
    assert "barely: 3 outputs for 12 different prompts" in _section(run)

    for key in ("rag_a", "baseline/rag_a"):
        _set(run, key, three, prompt_hash=lambda df: [f"q{i % 3}" for i in df["index"]])
    f = analyse(run).fidelity.set_index("scenario").loc["rag_a"]
    assert (f["informative"], f["distinct prompts"], f["distinct outputs"]) == ("yes", 3, 3)


def test_with_repeats_outputs_pair_up_within_a_repeat(tmp_path):
    """Two repeats of each mode: 12 prompts x 2 rounds x 2 repeats = 48 pairs with vs without the
    cache (never a repeat's output against another repeat's)."""
    scens = [Scen("rag_a", mode=m, repeat=r) for r in (1, 2) for m in ("with-cache", "baseline")]
    run = make_run(tmp_path, scens)
    for s in scens:
        _set(run, s.key, _per_prompt)
    f = analyse(run).fidelity.set_index("scenario").loc["rag_a"]
    assert (f["with cache vs baseline identical"], f["with cache vs baseline pairs"]) == (48, 48)
    assert (f["warm vs cold identical"], f["warm vs cold pairs"]) == (24, 24)
    assert f["check"] == "pass"


def test_the_rate_is_floored_and_long_lists_of_prompts_are_cut():
    f = pd.DataFrame(
        [
            {
                "scenario": "s",
                "distinct prompts": 3000,
                "distinct outputs": 3000,
                "informative": "yes",
                "warm vs cold identical": 2999,
                "warm vs cold pairs": 3000,
                "warm vs cold %": 100 * 2999 / 3000,
                "warm vs cold differ": ["p1"],
                "with cache vs baseline identical": 5993,
                "with cache vs baseline pairs": 6000,
                "with cache vs baseline %": 100 * 5993 / 6000,
                "with cache vs baseline differ": [f"p{i}" for i in range(7)],
            }
        ]
    )
    row = fidelity_table(f).iloc[0]
    assert row["identical output, warm vs cold"] == "2999/3000 (99.9 %); differs: p1"
    assert row["identical output, with cache vs baseline"] == (
        "5993/6000 (99.8 %); differs: p0, p1, p2, p3, p4 and 2 more"
    )
