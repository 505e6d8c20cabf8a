"""What the report says, in order, for every output: its sections' tables, titles, texts and notes."""

from __future__ import annotations

import pandas as pd

from harness.analysis.arms import verdict_line
from harness.analysis.intervals import INCONCLUSIVE, MET, NOT_MET
from harness.report import breakeven as BE
from harness.report import plots as P
from harness.report.analysis import Analysis
from harness.report.figures import ARMS_PLOTS, HEADLINE_PLOTS, SEED_PLOTS
from harness.report.tables import (
    arms_table,
    by_question,
    connector_table,
    drop_default_mode,
    evidence_tables,
    fidelity_table,
    isolation_table,
    reuse_tables,
    round_over_round_table,
    server_table,
    sizing_table,
    stats_tables,
    timings_table,
    turns_table,
    verdict_table,
)
from harness.report.verdict import WITHIN_RUN

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
    "arm",
    "documents x tokens",
    "95 % CI",
    "vs local 95 % CI",
    "control",
)


Tables = list[tuple[str, str, pd.DataFrame]]  # (HTML table id, title, display strings)


# The seed's round-over-round table, one table per question.
SEED_QUESTIONS = (
    ("reductions", "TTFT", ("TTFT", "per-prompt", "note")),
    ("reductions-throughput", "Throughput", ("throughput",)),
)


def section_tables(a: Analysis) -> dict[str, pd.DataFrame]:
    data = a.data
    return {
        "verdict": verdict_table(a.headline, a.targets),
        "evidence": drop_default_mode(a.evidence),
        "reductions": round_over_round_table(a.round_over_round, a.targets),
        "timings": timings_table(data),
        "isolation": isolation_table(data),
        "fidelity": fidelity_table(a.fidelity),
        "server": server_table(data),
        "connector": connector_table(data),
        "turns": turns_table(data),
        "cliff": a.cliff_table,
        "sizing": sizing_table(data),
        "breakeven": BE.table(a.breakeven) if a.breakeven else pd.DataFrame(),
        "arms": arms_table(a.arms, a.arm_changes),
    }


def split_by_question(a: Analysis, tabs: dict[str, pd.DataFrame]) -> dict[str, Tables]:
    """The wide tables, each as one table per question, so none needs scrolling on a wide screen."""
    return {
        "reuse": reuse_tables(a.vs_baseline, a.targets),
        "evidence": evidence_tables(tabs["evidence"]),
        "reductions": by_question(
            tabs["reductions"], ("scenario", "mode", "isolation", "round", "repeats"), SEED_QUESTIONS
        ),
        "stats": stats_tables(a.data),
    }


VERDICT_TITLE = "Verdict: with the KV cache vs without it (round 2, warm; same prompts)"


def verdict_lines(a: Analysis) -> tuple[str, str]:
    """The verdict's two sentences: the answer counted over scenarios, and how to read the rows."""
    if a.headline.empty:
        return NO_BASELINE, ""
    t = a.targets
    answer = verdict_answer(a.headline).removeprefix("Verdict: ")  # the title says Verdict
    return answer[:1].upper() + answer[1:], (
        "One row per scenario: round 2 (warm) with the cache vs without it, same prompts, each on a stack "
        "of its own. Change % = 100 x (with / without - 1): negative = faster TTFT, positive = more "
        f"throughput; the 95 % CI is for the figure beside it ({spans_line(a.headline)}). Targets, read from "
        f"the interval: TTFT <= -{t.ttft_reduction_percent:g} %, throughput >= +{t.throughput_increase_percent:g} "
        "%: met when the whole interval is beyond the target, not met when the whole interval falls short, "
        "inconclusive when it straddles the target or there is no interval. Warmth: share of the with-cache "
        "round's prompt tokens served from cache."
    )


NO_BASELINE = (
    "Verdict: this run has no baseline cells on isolated stacks (fresh, or proven cold by a reset), "
    "so nothing here measures with the cache vs without it (run with --mode both); the "
    "round-over-round figures compare rounds of the same stack only."
)


REUSE_TITLE = "What reuse buys: with the KV cache vs without it (same prompts, each on its own fresh stack)"


REUSE_TEXT = (
    "Per round, the same prompts with the KV connector and on the same engine without it (baseline). "
    "'with cache' is the measured warmth of the with-cache round (share of prompt tokens served from "
    "cache). Change % = 100 x (with / without - 1): negative = lower (faster TTFT), positive = higher "
    "(more throughput); every 95 % CI is for the figure beside it. TTFT mean change: with one repeat, "
    "the change of the mean over the prompts answered in both (BCa bootstrap over prompts, paired by "
    "prompt); with several, Student-t over the repeats' changes. Percentiles and throughput: Student-t "
    "over repeats (none with one repeat). Per-prompt TTFT change: geometric mean of each prompt's "
    "with/without TTFT ratio (BCa bootstrap over prompts, or Student-t over the repeats' estimates)."
)


SEED_TEXT = (
    "The seed's round-over-round figures and targets: each warm round against round 1 of the same stack "
    "(round 1 is itself partly warm where requests share a prefix: read the with-cache vs baseline "
    "figures above). Change % = 100 x (round r / round 1 - 1), each beside the 95 % CI of that figure: "
    "TTFT mean change, with one repeat over the prompts answered in both rounds (BCa over prompts), with "
    "several Student-t over the repeats' changes; throughput Student-t over repeats. A TTFT target of "
    "60 % is met by a change of -60 % or lower."
)


def section_notes(a: Analysis) -> dict[str, list[str]]:
    """Sentences shown under an optional section's table."""
    return {"cliff": a.cliff_notes, "breakeven": BE.notes(a.breakeven) if a.breakeven else []}


# Sections shown only when they have rows: (table key = HTML table id, title).
OPTIONAL = (
    ("server", "Client vs server-side timings (vLLM's own histograms, per round)"),
    ("connector", "Where the time goes in the KV connector (its own RPC timers, per round)"),
    ("breakeven", "Break-even prefix length: fetching vs recomputing the KV (warm round, concurrency 1)"),
    ("cliff", "Cache cliff: hit rate by store size (sweep), vs an infinite cache and a simulated LRU store"),
    ("sizing", "Store sizing per round: segment, keys, eviction watermark, evictions, allocation failures"),
    ("turns", "Multi-turn: TTFT and reused history by turn"),
    ("fidelity", "Reuse fidelity (temperature 0: identical generated tokens)"),
    ("isolation", "Isolation: round 1 on a stack of its own (fresh or verified reset) vs one shared stack"),
    ("timings", "Timings"),
)


SEED_TITLE = "Round over round (the seed's figures and targets: warm rounds vs round 1 of the same stack)"


def targets_text(a: Analysis) -> str:
    t = a.targets
    return f"targets: TTFT mean change <= -{t.ttft_reduction_percent:g} %, throughput change >= " \
           f"+{t.throughput_increase_percent:g} %"  # fmt: skip


def plots_named(plots: list[P.Plot], names: tuple[str, ...]) -> list[P.Plot]:
    return [p for p in plots if p.name in names]


def other_plots(plots: list[P.Plot]) -> list[P.Plot]:
    return [p for p in plots if p.name not in HEADLINE_PLOTS + SEED_PLOTS + ARMS_PLOTS]


ARMS_TITLE = "Four arms: what the store adds over vLLM's own prefix cache, by working set / pool"


ARMS_TEXT = (
    "Each arm on a stack of its own (fresh, or proven cold by a verified reset), the same prompts: none (no "
    "prefix cache, no connector), local (vLLM's prefix cache in the engine's own KV pool), store (the KV "
    "connector to Mooncake, no local prefix cache), local+store (both). Working set / pool = documents x "
    "document tokens over the pool the engine allocated (vllm:cache_config_info, blocks x block size). "
    "Figures over the measured rounds (2+: every document revisited). local pool % and store %: the "
    "engine's own counters (vllm:prefix_cache_hits, vllm:external_prefix_cache_hits) as a share of the "
    "measured rounds' prompt tokens (vllm:prompt_tokens); local LRU-predicted %: an LRU pool of the "
    "engine's size simulated on the same requests; reusable %: an unbounded cache. TTFT mean with its 95 % "
    "interval (one repeat: within-run, over requests; several: over repeats). vs local: local+store's "
    "change of the mean TTFT against local's, paired by prompt (negative = faster)."
)


def arms_lines(a: Analysis) -> list[str]:
    """The four arms' verdict and the controls that failed, as sentences."""
    if a.arms.empty and not a.misconfigured:
        return []
    out = [] if a.arms.empty else [verdict_line(a.crossover)]
    return out + [f"MISCONFIGURED {cell}: {why}." for cell, why in a.misconfigured.items()]


HEADLINE_FIGURES = "Headline figures: with the cache vs without"


OTHER_FIGURES = "Other figures"


REUSE_DETAIL = "Details behind the verdict"


def short_text(verdict: object) -> str:
    """A target verdict in the console's narrow column ("inconcl." for inconclusive)."""
    return "inconcl." if verdict == INCONCLUSIVE else str(verdict)


def verdict_answer(head: pd.DataFrame) -> str:
    """The one sentence that answers the question, counted over scenarios: how many intervals clear 0
    (each at 95 %, unadjusted for the number of scenarios: say so), and the targets read from the
    intervals (met / not met / inconclusive)."""
    n = len(head)
    lower = int((head["ttft_mean_ms_hi"] < 0).sum())
    higher = int((head["ttft_mean_ms_lo"] > 0).sum())
    both = (head["ttft_target"] == MET) & (head["tput_target"] == MET)
    missed = (head["ttft_target"] == NOT_MET) | (head["tput_target"] == NOT_MET)
    met, not_met = int(both.sum()), int(missed.sum())
    unclear = n - lower - higher
    adjust = f", unadjusted for {n}" if n > 1 else ""
    inconclusive = n - met - not_met
    targets = [f"both targets met in {met} of {n}", *([f"a target not met in {not_met}"] if not_met else []),
               *([f"inconclusive in {inconclusive}"] if inconclusive else [])]  # fmt: skip
    return (
        f"Verdict: with the cache, warm mean TTFT lower in {lower} of {n} scenario(s), higher in {higher} "
        f"(95 % CIs clear of 0{adjust})" + (f", unclear in {unclear}" if unclear else "") + f"; {', '.join(targets)}."
    )


def spans_line(head: pd.DataFrame) -> str:
    """Which noise the headline's intervals span: the stacks per arm, or, with one repeat, only the
    prompts of one stack (within-run: a second stack can differ by more, docs/statistics.md)."""
    what = list(dict.fromkeys(head["spans"].astype(str))) if "spans" in head else []
    if not what:
        return ""
    if what == [WITHIN_RUN]:
        return "CIs within-run (prompts of one stack per arm): stack-to-stack noise not in them (--repeats N)"
    return "CIs over " + "; ".join(what)
