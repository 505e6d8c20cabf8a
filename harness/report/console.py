"""The console's end of a run: status lines, the seed's round-over-round table and the verdict,
fitted to the terminal."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.report.analysis import Analysis
from harness.report.fit import fit_table, terminal_width, wrap
from harness.report.sections import NO_BASELINE, arms_lines, short_text, spans_line, verdict_answer
from harness.report.tables import (
    short_change_ci,
    status_rows,
)


def _seed_rows(a: Analysis) -> pd.DataFrame:
    """The round-over-round figures, compact: one row per cell label and warm round."""
    rr = a.round_over_round
    if rr.empty or "ttft_change" not in rr.columns:
        return pd.DataFrame()
    rr = rr.dropna(subset=["round"])
    several = rr["round"].nunique() > 1
    return pd.DataFrame(
        {
            "scenario": [f"{lab} r{int(n)}" if several else lab for lab, n in zip(rr["label"], rr["round"])],
            "TTFT mean chg %": [short_change_ci(*x) for x in zip(rr["ttft_change"], rr["ttft_lo"], rr["ttft_hi"])],
            "thrpt chg %": [short_change_ci(*x) for x in zip(rr["tput_change"], rr["tput_lo"], rr["tput_hi"])],
            "targets": [
                f"{short_text(x)}/{short_text(y)}" if not note else "no verdict"
                for x, y, note in zip(rr["ttft_verdict"], rr["tput_verdict"], rr["note"].fillna(""))
            ],
        }
    )


def _verdict_rows(head: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "scenario": [lab if n == 2 else f"{lab} r{n}" for lab, n in zip(head["label"], head["round"])],
            "TTFT mean chg %": [
                short_change_ci(*x)
                for x in zip(head["ttft_mean_ms_change"], head["ttft_mean_ms_lo"], head["ttft_mean_ms_hi"])
            ],
            "thrpt chg %": [
                short_change_ci(*x) for x in zip(head["req_per_s_change"], head["req_per_s_lo"], head["req_per_s_hi"])
            ],
            "targets": [f"{short_text(x)}/{short_text(y)}" for x, y in zip(head["ttft_target"], head["tput_target"])],
        }
    )


def _verdict_block(a: Analysis, width: int) -> list[str]:
    """What the run answers: with cache vs without, warm round 2, same prompts. The console's last lines."""
    head = a.headline
    if head.empty:
        return wrap(NO_BASELINE.replace("the round-over-round figures", "the round-over-round figures above"), width)
    t = a.targets
    return [
        *wrap("With the KV cache vs without it: warm round 2, same prompts, isolated stacks", width),
        *wrap(
            f"change % [95 % CI] = 100 x (with/without - 1); targets <= -{t.ttft_reduction_percent:g} % / "
            f">= +{t.throughput_increase_percent:g} %",
            width,
        ),
        *fit_table(_verdict_rows(head), width, drop=("targets",), shrink="scenario"),
        *(wrap(noise, width) if (noise := spans_line(head)) else []),
        *wrap(verdict_answer(head), width),
    ]


def _status_lines(status: pd.DataFrame, width: int, external: bool = False) -> list[str]:
    """Every cell ok (which means proven cold and, on stacks of ours, torn down clean): one line;
    otherwise the table. `external`: `kvbench run`'s server, which is not ours to tear down."""
    if status.empty:
        return ["no scenario results"]
    if (status["status"] == "ok").all():
        end = "on a server kvbench did not start (not torn down)" if external else "torn down, nothing left"
        return wrap(f"{len(status)} of {len(status)} cells ok: each proven cold before round 1, {end}", width)
    return fit_table(
        status, width, drop=("reps", "r1 TTFT p50 ms", "r2 TTFT p50 ms"), shrink="scenario", label_floor=999
    )


def console_text(a: Analysis, html: Path, width: int | None = None) -> str:
    """The console summary: the cells, the seed's round-over-round figures (labelled as such), the
    notes, where the report is; and last, the verdict with cache vs without. Every line fits
    `width` (default: the terminal's): tables drop columns, sentences wrap."""
    w = width or terminal_width()
    data = a.data
    out: list[str] = []
    external = data.manifest is not None and data.manifest.driver == "external-endpoint"
    out += _status_lines(status_rows(data), w, external)
    seed = _seed_rows(a)
    if not a.headline.empty:  # the verdict below compares modes: the seed's view is of the cache
        seed = seed[~seed["scenario"].str.contains(r"\[baseline\]", regex=True)]
    if not seed.empty:
        out += wrap("Round over round (seed's targets): warm round vs round 1 of the same stack", w)
        out += fit_table(seed, w, drop=("targets",), shrink="scenario")
    for prefix, sentences in (("note: ", a.warm_round1), ("why: ", a.why), ("shortfall: ", a.shortfalls)):
        for n in sentences:
            out += wrap(prefix + n, w, indent="  ")
    if data.notes:
        out += wrap(f"{len(data.notes)} note(s) on missing data: see the report", w)
    out += [f"report: {html}", *_verdict_block(a, w)]
    for line in arms_lines(a):
        out += wrap(line, w)
    return "\n".join(out)
