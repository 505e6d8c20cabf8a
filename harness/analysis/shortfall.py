"""Why a with-cache round reused less than it could: one sentence per short round, from the counters.

A round 2+ with the cache is expected to reuse what the scenario computed before it
(reuse.expected_reuse: the same prompts, the shared prefixes). When it achieves less than
SHORTFALL_BELOW of that, the store lost or never held the blocks, or could not serve them. The
rounds.csv counters say which, up to the end of that round (blocks lost in round 1 are missing in
round 2): the master's evictions and failed allocations, the working set written vs the store's
capacity (and what an LRU store of that size would have kept), a segment unmounted when its
client's lease expired (capacity and keys that fell without evictions), keys lost between rounds
(an engine restart withdrawing an embedded segment), the connector's failed
keys, and traffic from outside the cell on a shared or external store. Where none of them shows,
the sentence says the cause is unknown.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.analysis.frames import num, number
from harness.analysis.stats import reused_text

SHORTFALL_BELOW = 0.9  # a round reusing less than this share of its expected reuse gets a sentence
CONNECTOR_OPS = ("lookup_exists", "load_get", "save_exists", "save_put")


def _num(row: pd.Series, name: str) -> float:
    return number(row.get(name, math.nan))


def _upto(cell: pd.DataFrame | None, row: pd.Series, name: str) -> float:
    """A per-round counter summed over the cell's rounds up to this one (NaN when never counted):
    a block evicted or refused in round 1 is missing in round 2."""
    if cell is None or cell.empty or "round" not in cell:
        return _num(row, name)
    rounds = num(cell, name)[num(cell, "round") <= _num(row, "round")]
    return float(rounds.sum()) if rounds.notna().any() else math.nan


def _bytes(n: float) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def _evictions(row: pd.Series, cell: pd.DataFrame | None) -> list[str]:
    keys, size = _upto(cell, row, "master_evicted_keys"), _upto(cell, row, "master_evicted_bytes")
    if not keys > 0:  # NaN-safe
        return []
    return [f"the store evicted {keys:,.0f} keys" + (f" ({_bytes(size)})" if size > 0 else "") + " by then"]


def _refused_puts(row: pd.Series, cell: pd.DataFrame | None) -> list[str]:
    alloc, items = _upto(cell, row, "master_alloc_failures"), _upto(cell, row, "master_put_failed_items")
    parts = [f"{alloc:,.0f} allocation failures" if alloc > 0 else "", f"{items:,.0f} failed puts" if items > 0 else ""]
    said = " and ".join(p for p in parts if p)
    return [f"{said} left blocks unstored (the store was full)"] if said else []


def _working_set(row: pd.Series, cell: pd.DataFrame | None, expected: float) -> list[str]:
    """The working set against the store: bytes the connector wrote vs the master's capacity, and
    the reuse an LRU store of that capacity would give the same requests (reuse.lru_by_round)."""
    out = []
    written, capacity = _upto(cell, row, "mc_save_put_bytes"), _num(row, "master_capacity_bytes_start")
    if written > capacity > 0:
        out.append(f"its working set ({_bytes(written)} written) exceeds the store's capacity ({_bytes(capacity)})")
    lru = _num(row, "lru_reuse_tokens")
    if lru < SHORTFALL_BELOW * expected:  # NaN-safe
        out.append(f"an LRU store of that size would have reused only {reused_text(100 * lru / expected)} % of it too")
    return out


def _lost_segment(row: pd.Series) -> list[str]:
    """Capacity or keys that fell during the round without evictions: a client's lease expired and
    the master unmounted its segment, with the keys in it."""
    cap0, cap1 = _num(row, "master_capacity_bytes_start"), _num(row, "master_capacity_bytes_end")
    if cap1 < cap0:
        return [f"the store's capacity fell from {_bytes(cap0)} to {_bytes(cap1)} (a segment unmounted: its client's "
                "lease expired) and its keys with it"]  # fmt: skip
    keys0, keys1 = _num(row, "master_key_count_start"), _num(row, "master_key_count_end")
    if keys1 < keys0 and not _num(row, "master_evicted_keys") > 0:
        return [f"the store's keys fell from {keys0:,.0f} to {keys1:,.0f} without evictions (removed, e.g. on lease "
                "expiry)"]  # fmt: skip
    return []


def _lost_between_rounds(row: pd.Series, cell: pd.DataFrame | None) -> list[str]:
    """Keys the store held at the end of the round before and no longer at this round's start: lost
    between rounds without evictions, as when an engine restart withdraws its embedded segment."""
    if cell is None or cell.empty or "round" not in cell:
        return []
    rnd = _num(row, "round")
    before = cell[num(cell, "round") == rnd - 1]
    if before.empty:
        return []
    end, start = _num(before.iloc[0], "master_key_count_end"), _num(row, "master_key_count_start")
    if not start < end:  # NaN-safe
        return []
    return [
        f"the store held {end:,.0f} keys at the end of round {rnd - 1:.0f} and {start:,.0f} at the start of round "
        f"{rnd:.0f} (lost between the rounds: an engine restart takes an embedded store's segment with it)"
    ]


def _connector_failures(row: pd.Series, cell: pd.DataFrame | None) -> list[str]:
    failed = {op: _upto(cell, row, f"mc_{op}_failed_keys") for op in CONNECTOR_OPS}
    failed = {op: n for op, n in failed.items() if n > 0}
    if not failed:
        return []
    each = ", ".join(f"{op} {n:,.0f}" for op, n in failed.items())
    return [f"the connector's store operations failed for {sum(failed.values()):,.0f} keys ({each})"]


def _counted(row: pd.Series) -> bool:
    """Whether the store's and the connector's counters were scraped at all for this round."""
    return any(pd.notna(row.get(c)) for c in ("master_evicted_keys", "master_key_count_end", "mc_save_put_keys"))


def _engine_pool(row: pd.Series, expected: float) -> list[str]:
    """The local arm (vLLM's own prefix cache, no store) reuses only what the engine's KV pool still
    holds: an LRU pool of its size simulated on the same requests says how much that is."""
    lru, pool = _num(row, "lru_local_reuse_tokens"), _num(row, "engine_pool_blocks")
    if row.get("mode") != "local" or math.isnan(lru) or not lru < SHORTFALL_BELOW * expected:
        return []
    size = f" ({pool:,.0f} blocks)" if not math.isnan(pool) else ""
    share = f"{lru:,.0f} of these tokens ({100 * lru / expected:.0f} %)"
    return [
        f"the engine's own KV pool{size} holds less than this working set: an LRU pool of its size reuses "
        f"{share}, and this arm has no store behind it"
    ]


def shortfall_sentence(row: pd.Series, cell: pd.DataFrame | None = None) -> str | None:
    """One sentence for a with-cache round 2+ (a rounds.csv row) that achieved less than
    SHORTFALL_BELOW of its expected reuse, naming the cause from the counters; None for any other
    round, and where the achieved reuse is unknown (the server sent no cached_tokens). `cell`: the
    same cell's rounds, so losses of earlier rounds count too."""
    expected, achieved = _num(row, "expected_reuse_tokens"), _num(row, "achieved_reuse_tokens")
    if row.get("mode") == "baseline" or not _num(row, "round") > 1 or not expected > 0:
        return None
    unknown = "cached_tokens" in row and pd.isna(row["cached_tokens"])  # the server sent no cached_tokens
    if unknown or not achieved < SHORTFALL_BELOW * expected:
        return None  # an unknown achievement is no known shortfall: nothing to explain
    causes = [
        *_engine_pool(row, expected),
        *_evictions(row, cell),
        *_refused_puts(row, cell),
        *_working_set(row, cell, expected),
        *_lost_segment(row),
        *_lost_between_rounds(row, cell),
        *_connector_failures(row, cell),
    ]
    if not causes and str(row.get("isolation", "fresh")) in ("shared", "external"):
        causes = [f"the store also served traffic from outside this cell ({row['isolation']}), which may have "
                  "displaced these blocks (not counted)"]  # fmt: skip
    if not causes:
        causes = [
            "the cause is unknown: "
            + (
                "no eviction, failed allocation or put, lost segment or connector failure was counted (lease "
                "expiry and the engine's own choices are not counted)"
                if _counted(row)
                else "no store or connector counters were scraped for this round"
            )
        ]
    who = row.get("label") or row.get("scenario") or "?"
    return (
        f"{who} round {int(_num(row, 'round'))}: reused {achieved:,.0f} of {expected:,.0f} expected tokens "
        f"({reused_text(100 * achieved / expected)} %): " + "; ".join(causes) + "."
    )


def cell_shortfalls(table: pd.DataFrame) -> list[str]:
    """The sentences for one cell's rounds table (what the runner returns): for its console output."""
    return [s for _, row in table.iterrows() if (s := shortfall_sentence(row, table))]


def shortfall_notes(r: pd.DataFrame) -> list[str]:
    """One sentence per with-cache round 2+ of the run's rounds (all cells, a `dir` column telling
    them apart) that achieved less than SHORTFALL_BELOW of its expected reuse, cell by cell."""
    if r.empty or "expected_reuse_tokens" not in r:
        return []
    cells = r.groupby("dir", sort=False) if "dir" in r else [(None, r)]
    return [s for _, cell in cells for s in cell_shortfalls(cell)]
