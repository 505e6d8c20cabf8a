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

`store_health`: the store's read failures per round, and whether the round measured a degraded
store rather than the cache.
"""

from __future__ import annotations

import pandas as pd

from harness.analysis.frames import num

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


def served(t: pd.DataFrame) -> pd.Series:
    """Requests the server served in each round, the divisor of every per-request figure: vLLM's own
    count (its TTFT histogram) where it is known, else the client's successes. Not the round's rows:
    those include requests never sent (a conversation's turns after a failed one). A table without
    successes (not from stats.round_summary) has only its rows to go by."""
    client = num(t, "successes") if "successes" in t else num(t, "requests")
    server = num(t, "server_requests")
    return server.where(server.notna(), client).where(lambda x: x > 0)


def time_in_connector(table: pd.DataFrame) -> pd.DataFrame:
    """The rounds table with COLUMNS added (NaN where the connector's counters are absent)."""
    t = table.copy()
    n = served(t)
    lookup, load = num(t, "mc_lookup_exists_time_s"), num(t, "mc_load_get_time_s")
    save = num(t, "mc_save_exists_time_s") + num(t, "mc_save_put_time_s")
    t["mc_lookup_ms_per_req"] = lookup * 1e3 / n
    t["mc_load_ms_per_req"] = load * 1e3 / n
    t["mc_save_ms_per_req"] = save * 1e3 / n
    t["mc_loaded_mb"] = num(t, "mc_load_get_bytes") / 1e6
    t["mc_saved_mb"] = num(t, "mc_save_put_bytes") / 1e6
    t["mc_load_gbps"] = (num(t, "mc_load_get_bytes") / load.where(load > 0)) / 1e9
    t["mc_save_gbps"] = (num(t, "mc_save_put_bytes") / num(t, "mc_save_put_time_s").where(lambda x: x > 0)) / 1e9
    t["fetch_share_pct"] = 100 * (t["mc_lookup_ms_per_req"] + t["mc_load_ms_per_req"]) / num(t, "ttft_mean_ms")
    return t


# The store's read path: a failed lookup or load is a request that recomputed what it should have
# fetched. (Failed saves are a full store refusing puts: a shortfall of reuse, explained elsewhere,
# not a broken store.)
READ_OPS = ("lookup_exists", "load_get")


def store_health(table: pd.DataFrame, max_failed_pct: float) -> pd.DataFrame:
    """The rounds table with the store's read failures per round (`store_read_failed_keys`, and
    their share of the keys read, `store_read_failed_pct`) and `degraded`: more than
    `max_failed_pct` of the keys failed. Unknown (NaN / None) where the connector's counters are
    absent: a baseline round, or an engine without them."""
    t = table.copy()
    failed = sum(num(t, f"mc_{op}_failed_keys") for op in READ_OPS)
    keys = sum(num(t, f"mc_{op}_keys") for op in READ_OPS)
    t["store_read_failed_keys"] = failed
    t["store_read_failed_pct"] = 100 * failed / keys.where(keys > 0)
    pct = t["store_read_failed_pct"].where(keys > 0, 0.0).where(failed.notna())
    t["degraded"] = [None if pd.isna(p) else bool(p > max_failed_pct) for p in pct]
    return t
