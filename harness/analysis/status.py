"""A measured cell's status from its rounds table and its cold proof: failed, contaminated,
unverified, degraded or ok (the order in which they are decided); then misconfigured, for an arm that
measured something else than it claims (analysis/arms.py)."""

from __future__ import annotations

import pandas as pd

from harness.analysis.arms import control_problem
from harness.config import ARM_FLAGS, StackConfig
from harness.records import CellEntry


def degraded(table: pd.DataFrame) -> str | None:
    """Why a with-cache cell measured a broken store rather than the cache (None: it did not)."""
    if "degraded" not in table:
        return None
    bad = table[table["degraded"].map(lambda v: v is True)]
    why = [
        f"round {int(r['round'])}: the store failed {r['store_read_failed_keys']:,.0f} of its reads' keys "
        f"({r['store_read_failed_pct']:.1f} %): degraded, not a measurement of the cache"
        for _, r in bad.iterrows()
    ]
    return "; ".join(why) or None


def judge(table: pd.DataFrame, cold: bool, max_failed_percent: float, cold_detail: str | None = None) -> dict:
    """A measured cell's status: failed (too many failed requests) before contaminated before
    unverified before ok. Contaminated needs evidence: the cold gate saw keys or hits, or round 1
    hit tokens the scenario never computed. A gate that could not look (`cold_detail` "cannot
    verify ...": an external server without the metrics) leaves the cell unverified, not accused."""
    foreign = table.loc[table["round"] == 1, "foreign_hit_tokens"] if "foreign_hit_tokens" in table else None
    out: dict = {
        "foreign_hit_tokens_round1": int(foreign.iloc[0])
        if foreign is not None and len(foreign) and foreign.notna().iloc[0]
        else None
    }
    sent, failed = int(table["requests"].sum()), int(table["failures"].sum())
    pct = 100 * failed / sent if sent else 100.0
    if pct > max_failed_percent:
        out.update(
            status="failed",
            reason=f"{failed} of {sent} requests failed ({pct:.1f} % > max_failed_percent {max_failed_percent:g} %)",
        )
    elif out["foreign_hit_tokens_round1"]:
        out.update(status="contaminated", reason=f"round 1 hit {out['foreign_hit_tokens_round1']:,} foreign tokens")
    elif cold:
        out["status"] = "ok"
    elif _unseen(cold_detail):
        out.update(status="unverified", reason=f"cold state not verified ({cold_detail})")
    else:
        out.update(status="contaminated", reason=f"cold-state gate: {cold_detail or 'not cold'}")
    return out


def cell_status(table: pd.DataFrame, cold: bool, max_failed_percent: float, cold_detail: str | None) -> dict:
    """judge(), then degraded when the store broke in a cell that did not fail outright."""
    out = judge(table, cold, max_failed_percent, cold_detail)
    if out.get("status") != "failed" and (why := degraded(table)):
        out.update(status="degraded", reason=why)
    return out


def _unseen(cold_detail: str | None) -> bool:
    """The gate could not look (metrics missing) and, on no engine, saw a key or a hit."""
    return cold_detail is not None and "cannot verify" in cold_detail and "not cold" not in cold_detail


def misconfigured(table: pd.DataFrame, entry: CellEntry, stack: StackConfig) -> str | None:
    """Why the cell's arm measured something else than it claims (None: it did not): the engine runs
    with another prefix-cache setting or another KV pool than asked (`engine_mismatch`), or its
    measured rounds' hit counters contradict the arm (arms.control_problem)."""
    problems = engine_mismatch(entry, stack)
    if "round" in table:
        why = control_problem(entry.mode, table[table["round"] > 1], entry.block_size)
        problems += [why] if why else []
    return "; ".join(problems) or None


def engine_mismatch(entry: CellEntry, stack: StackConfig) -> list[str]:
    """What the engine reported before round 1 (its prefix-cache flag, its KV pool) against what the
    cell's arm and stack asked for: known before any request."""
    problems = []
    flags = ARM_FLAGS.get(entry.mode)
    if flags is not None and entry.engine_prefix_caching is not None and entry.engine_prefix_caching != flags[0]:
        problems.append(
            f"the engine reports prefix caching {'on' if entry.engine_prefix_caching else 'off'}, the arm wants it "
            f"{'on' if flags[0] else 'off'}"
        )
    if (
        stack.pool_blocks is not None
        and entry.engine_pool_blocks is not None
        and entry.engine_pool_blocks != stack.pool_blocks
    ):
        problems.append(
            f"the engine allocated {entry.engine_pool_blocks:,} KV blocks, {stack.pool_blocks:,} were asked"
        )
    return problems
