"""A cell's rounds table: per round, the client's figures, the expected reuse, the server's counter
deltas, the client - server TTFT gap, the time in the KV connector and the store's health."""

from __future__ import annotations

import pandas as pd

from harness.analysis.connector import store_health, time_in_connector
from harness.analysis.reuse import lru_by_round, lru_local_by_round, reuse_by_round, ttft_speedups
from harness.analysis.stats import rounds_table, ttft_gap
from harness.config import Config


def cell_rounds(
    requests: pd.DataFrame,
    cfg: Config,
    planned: int,
    block: int | None,
    counters: dict[int, dict],
    labels: dict | None = None,
) -> pd.DataFrame:
    """The rounds table of one cell's requests (a requests.csv frame).

    `planned`: requests per round (stats.rounds_table); `block`: tokens per KV block (reuse);
    `counters`: round -> the server's counter deltas (observe.probes.deltas, as the runner scraped
    them); `labels` (scenario, mode, ...) become the first columns."""
    table = rounds_table(requests, cfg.targets, planned=planned, concurrency=cfg.concurrency)
    server = pd.DataFrame([{"round": r, **c} for r, c in counters.items()])
    for extra in (
        reuse_by_round(requests, block),
        ttft_speedups(requests),
        server,
        lru_by_round(requests, block, server),
        lru_local_by_round(requests, block, server),
    ):
        if not extra.empty and "round" in extra and not table.empty:
            table = table.merge(extra, on="round", how="left")
    if "server_ttft_mean_ms" in table:  # what the client adds to the server's own TTFT, same requests
        table["client_server_ttft_gap_ms"], table["ttft_gap_note"] = ttft_gap(table)
    if not table.empty:
        table = store_health(time_in_connector(table), cfg.watch.degraded_failed_keys_percent)
    for i, (k, v) in enumerate((labels or {}).items()):  # identity columns first
        table.insert(i, k, v)
    return table


def counter_reset_notes(table: pd.DataFrame) -> list[str]:
    """One sentence per round whose counters went backwards (an engine restarted mid-round)."""
    return [
        f"round {rnd}: {why}: their deltas are unknown for this round"
        for rnd, why in zip(table.get("round", []), table.get("counter_resets", []))
        if isinstance(why, str) and why
    ]
