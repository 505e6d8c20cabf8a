"""Where a round's time goes in the KV connector, from the connector's own counters.

vLLM's MooncakeStoreConnector times every store RPC (`vllm:mooncake_store_operation_time_seconds`,
by operation) and counts its keys and bytes; the probes take their deltas around each round.
From them, per round: milliseconds per request spent looking up (scheduler: which prefix blocks
the store has), loading (worker: fetching those blocks before the forward pass) and saving
(worker: write-through of new blocks, off the request's critical path), the bytes moved, the
effective load and save throughput (bytes / seconds inside the RPCs), and the share of the mean
TTFT that lookups and loads take. A baseline round (no connector) has none of them: empty, not 0.

Sums over concurrent requests: with several requests in flight, RPC seconds per request can add
up to more than the wall time; the share of TTFT is then an upper bound.
"""

from __future__ import annotations

import math

import pandas as pd

COLUMNS = (
    "mc_lookup_ms_per_req",
    "mc_load_ms_per_req",
    "mc_save_ms_per_req",
    "mc_loaded_mb",
    "mc_saved_mb",
    "mc_load_gbps",
    "mc_save_gbps",
    "fetch_share_pct",
)


def _col(t: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(t[name], errors="coerce") if name in t else pd.Series(math.nan, index=t.index)


def served(t: pd.DataFrame) -> pd.Series:
    """Requests the server served in each round, the divisor of every per-request figure: vLLM's own
    count (its TTFT histogram) where it is known, else the client's successes. Not the round's rows:
    those include requests never sent (a conversation's turns after a failed one). A table without
    successes (not from stats.round_summary) has only its rows to go by."""
    client = _col(t, "successes") if "successes" in t else _col(t, "requests")
    server = _col(t, "server_requests")
    return server.where(server.notna(), client).where(lambda x: x > 0)


def time_in_connector(table: pd.DataFrame) -> pd.DataFrame:
    """The rounds table with COLUMNS added (NaN where the connector's counters are absent)."""
    t = table.copy()
    n = served(t)
    lookup, load = _col(t, "mc_lookup_exists_time_s"), _col(t, "mc_load_get_time_s")
    save = _col(t, "mc_save_exists_time_s") + _col(t, "mc_save_put_time_s")
    t["mc_lookup_ms_per_req"] = lookup * 1e3 / n
    t["mc_load_ms_per_req"] = load * 1e3 / n
    t["mc_save_ms_per_req"] = save * 1e3 / n
    t["mc_loaded_mb"] = _col(t, "mc_load_get_bytes") / 1e6
    t["mc_saved_mb"] = _col(t, "mc_save_put_bytes") / 1e6
    t["mc_load_gbps"] = (_col(t, "mc_load_get_bytes") / load.where(load > 0)) / 1e9
    t["mc_save_gbps"] = (_col(t, "mc_save_put_bytes") / _col(t, "mc_save_put_time_s").where(lambda x: x > 0)) / 1e9
    t["fetch_share_pct"] = 100 * (t["mc_lookup_ms_per_req"] + t["mc_load_ms_per_req"]) / _col(t, "ttft_mean_ms")
    return t
