"""Every per-round metric, defined once: its rounds.csv column, the header tables show, unit,
decimals, which direction is better, and its key in `vllm bench serve`'s result JSON where
there is one. Stats compute the columns; console, report, comparison and the
`bench_serve.json` export read them from here.

Adding a metric: one entry here, plus its computation in stats.round_summary (or probes for
a server-side one). records.RoundSummary declares every entry as a rounds.csv column, and the
server counters' columns (COUNTER_COLUMNS, at the end: what probes scrape and `deltas` writes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Better = Literal["lower", "higher"] | None


@dataclass(frozen=True)
class Metric:
    column: str
    header: str
    unit: str
    decimals: int
    better: Better = None
    bench_serve_key: str | None = None  # `vllm bench serve --save-result` JSON key

    def show(self, value: object) -> str:
        return fmt(value, self.decimals)


_ALL = [
    Metric("requests", "requests", "", 0),
    Metric("successes", "ok", "", 0, "higher", "completed"),
    Metric("failures", "failed", "", 0, "lower", "failed"),
    Metric("ttft_mean_ms", "TTFT mean ms", "ms", 1, "lower", "mean_ttft_ms"),
    Metric("ttft_p50_ms", "TTFT p50 ms", "ms", 1, "lower", "median_ttft_ms"),
    Metric("ttft_p90_ms", "TTFT p90 ms", "ms", 1, "lower", "p90_ttft_ms"),
    Metric("ttft_p99_ms", "TTFT p99 ms", "ms", 1, "lower", "p99_ttft_ms"),
    Metric("misses", "full prefills", "", 0),
    Metric("ttft_miss_mean_ms", "TTFT full-prefill ms", "ms", 1, "lower"),
    Metric("ttft_hit_mean_ms", "TTFT hit ms", "ms", 1, "lower"),
    Metric("tpot_mean_ms", "TPOT mean ms", "ms", 2, "lower", "mean_tpot_ms"),
    Metric("tpot_p50_ms", "TPOT p50 ms", "ms", 2, "lower", "median_tpot_ms"),
    Metric("itl_mean_ms", "ITL mean ms", "ms", 2, "lower", "mean_itl_ms"),
    Metric("itl_p50_ms", "ITL p50 ms", "ms", 2, "lower", "median_itl_ms"),
    Metric("itl_p99_ms", "ITL p99 ms", "ms", 2, "lower", "p99_itl_ms"),
    Metric("e2e_mean_ms", "E2E mean ms", "ms", 1, "lower", "mean_e2el_ms"),
    Metric("e2e_p90_ms", "E2E p90 ms", "ms", 1, "lower", "p90_e2el_ms"),
    Metric("duration_s", "duration s", "s", 2, None, "duration"),
    Metric("concurrency", "concurrency", "", 0),
    # Time in the KV connector (harness/analysis/connector.py): empty for baseline rounds.
    Metric("mc_lookup_ms_per_req", "lookup ms/req", "ms", 2, "lower"),
    Metric("mc_load_ms_per_req", "load ms/req", "ms", 2, "lower"),
    Metric("mc_save_ms_per_req", "save ms/req", "ms", 2, "lower"),
    Metric("mc_loaded_mb", "loaded MB", "MB", 1),
    Metric("mc_saved_mb", "saved MB", "MB", 1),
    Metric("mc_load_gbps", "load GB/s", "GB/s", 2, "higher"),
    Metric("mc_save_gbps", "save GB/s", "GB/s", 2, "higher"),
    Metric("fetch_share_pct", "lookup+load % of TTFT", "%", 1),  # requested (bench_serve.json: max_concurrency)
    # The store's read path failing (harness/analysis/connector.py store_health): a degraded round.
    Metric("store_read_failed_keys", "store read failures", "", 0, "lower"),
    Metric("store_read_failed_pct", "store read failed %", "%", 2, "lower"),
    Metric("inflight_mean", "in flight (avg)", "", 1, "higher"),
    Metric("req_per_s", "req/s", "1/s", 2, "higher", "request_throughput"),
    Metric("output_tok_per_s", "out tok/s", "tok/s", 1, "higher", "output_throughput"),
    Metric("total_tok_per_s", "total tok/s", "tok/s", 0, "higher", "total_token_throughput"),
    Metric("prompt_tokens", "prompt tokens", "tok", 0, None, "total_input_tokens"),
    Metric("completion_tokens", "output tokens", "tok", 0, None, "total_output_tokens"),
    Metric("cached_token_ratio", "cached ratio", "", 3, "higher"),
    Metric("server_ttft_mean_ms", "server TTFT mean ms", "ms", 1, "lower"),
    Metric("client_server_ttft_gap_ms", "client - server ms", "ms", 1, "lower"),
    Metric("server_prefill_mean_ms", "server prefill mean ms", "ms", 1, "lower"),
    Metric("server_queue_mean_ms", "server queue mean ms", "ms", 1, "lower"),
    Metric("server_e2e_mean_ms", "server E2E mean ms", "ms", 1, "lower"),
    Metric("server_requests", "server requests", "", 0),
    # How the client itself fared (kernel arrival stamps vs when Python read them).
    Metric("client_lag_p99_ms", "client lag p99 ms", "ms", 2, "lower"),
    Metric("shared_stamp_pct", "shared stamps %", "%", 1, "lower"),
    Metric("read_delay_p99_ms", "read delay p99 ms", "ms", 2, "lower"),
    Metric("send_lag_p99_ms", "send lag p99 ms", "ms", 1, "lower"),  # trace replay: sent late vs its timestamp
    # Reuse: what the server reported, what the workload's prefixes allowed, and round-over-round.
    Metric("cached_tokens", "cached tokens", "tok", 0),
    Metric("reused_token_pct", "reused %", "%", 1),
    Metric("expected_reuse_tokens", "expected reuse tokens", "tok", 0),
    Metric("achieved_reuse_tokens", "achieved reuse tokens", "tok", 0),
    Metric("reuse_achieved_ratio", "reuse achieved/expected", "", 3, "higher"),
    Metric("foreign_hit_tokens", "foreign hit tokens", "tok", 0, "lower"),
    # The cache-cliff reference: an LRU store of this stack's capacity, simulated on the same requests.
    Metric("lru_reuse_tokens", "simulated LRU reuse tokens", "tok", 0, "higher"),
    Metric("kv_bytes_per_block", "KV bytes per block", "B", 0),
    Metric("store_capacity_blocks", "store capacity blocks", "", 0),
    # The engine's own KV pool (vllm:cache_config_info num_gpu_blocks) and an LRU pool of that many
    # blocks simulated on the same requests: what vLLM's own prefix cache should hit.
    Metric("engine_pool_blocks", "engine KV pool blocks", "", 0),
    Metric("lru_local_reuse_tokens", "simulated local-pool LRU reuse tokens", "tok", 0, "higher"),
    Metric("ttft_reduction_pct", "r2 vs r1 TTFT -%", "%", 1, "higher"),
    Metric("ttft_p50_reduction_pct", "r2 vs r1 TTFT p50 -%", "%", 1, "higher"),
    Metric("throughput_improvement_pct", "r2 vs r1 thrpt +%", "%", 1, "higher"),
    Metric("paired_requests", "paired requests", "", 0),
    Metric("ttft_speedup_p10", "TTFT speed-up p10", "x", 2, "higher"),
    Metric("ttft_speedup_p50", "TTFT speed-up p50", "x", 2, "higher"),
    Metric("ttft_speedup_p90", "TTFT speed-up p90", "x", 2, "higher"),
]
METRICS: dict[str, Metric] = {m.column: m for m in _ALL}

# What each table shows, by column name.
ROUND_TABLE = (
    "successes",
    "failures",
    "ttft_mean_ms",
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p99_ms",
    "misses",
    "ttft_miss_mean_ms",
    "ttft_hit_mean_ms",
    "tpot_mean_ms",
    "tpot_p50_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "e2e_mean_ms",
    "e2e_p90_ms",
    "req_per_s",
    "concurrency",
    "inflight_mean",
    "output_tok_per_s",
    "total_tok_per_s",
    "cached_token_ratio",
)
CONNECTOR_TABLE = (
    "ttft_mean_ms",
    "server_prefill_mean_ms",
    "mc_lookup_ms_per_req",
    "mc_load_ms_per_req",
    "fetch_share_pct",
    "mc_loaded_mb",
    "mc_load_gbps",
    "mc_save_ms_per_req",
    "mc_saved_mb",
    "mc_save_gbps",
)
SERVER_TABLE = (
    "ttft_mean_ms",
    "server_ttft_mean_ms",
    "client_server_ttft_gap_ms",
    "server_prefill_mean_ms",
    "server_queue_mean_ms",
    "server_e2e_mean_ms",
    "server_requests",
)
HEADLINE = ("ttft_mean_ms", "ttft_p50_ms", "ttft_p90_ms", "req_per_s", "total_tok_per_s")
COMPARISON = (
    "ttft_mean_ms",
    "ttft_p50_ms",
    "ttft_p90_ms",
    "e2e_mean_ms",
    "req_per_s",
    "total_tok_per_s",
    "cached_token_ratio",
)


def pick(columns: tuple[str, ...]) -> list[Metric]:
    return [METRICS[c] for c in columns]


def fmt(v: object, nd: int = 1, signed: bool = False) -> str:
    """A number for a table; NaN / None / unparsable -> n/a."""
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "n/a"
    if math.isinf(f):
        return "inf"
    return f"{f:+,.{nd}f}" if signed else f"{f:,.{nd}f}"


def bench_serve_record(row: dict, settings: dict) -> dict:
    """One round in the shape of `vllm bench serve`'s result JSON (keys it has; missing -> null), so
    tools that read that format read kvbench rounds too. `settings`: model, max_concurrency, ..."""
    out: dict = {k: v for k, v in settings.items()}
    for m in _ALL:
        if m.bench_serve_key:
            v = row.get(m.column)
            out[m.bench_serve_key] = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
    return out


# ---------------------------------------------------------------- server counters (harness/observe/probes.py)
# The wire names probes scrape from vLLM's and the Mooncake master's /metrics, and the rounds.csv
# columns they become: defined here so that records declares the columns without importing probes.

# Counters (wire name without `_total`) recorded per round as deltas.
VLLM_COUNTERS = {
    "vllm_prompt_tokens": ("vllm:prompt_tokens", {}),
    "prefix_cache_queries": ("vllm:prefix_cache_queries", {}),
    "local_hits": ("vllm:prefix_cache_hits", {}),
    "external_queries": ("vllm:external_prefix_cache_queries", {}),
    "external_hits": ("vllm:external_prefix_cache_hits", {}),
    "tokens_local_compute": ("vllm:prompt_tokens_by_source", {"source": "local_compute"}),
    "tokens_local_cache_hit": ("vllm:prompt_tokens_by_source", {"source": "local_cache_hit"}),
    "tokens_external_kv_transfer": ("vllm:prompt_tokens_by_source", {"source": "external_kv_transfer"}),
    "prompt_tokens_cached": ("vllm:prompt_tokens_cached", {}),
}
MOONCAKE_OPS = ("lookup_exists", "save_exists", "save_put", "load_get")
for _op in MOONCAKE_OPS:
    VLLM_COUNTERS[f"mc_{_op}_ops"] = ("vllm:mooncake_store_operation", {"operation": _op})
    VLLM_COUNTERS[f"mc_{_op}_keys"] = ("vllm:mooncake_store_operation_keys", {"operation": _op})
    VLLM_COUNTERS[f"mc_{_op}_bytes"] = ("vllm:mooncake_store_operation_bytes", {"operation": _op})
    VLLM_COUNTERS[f"mc_{_op}_failed_keys"] = ("vllm:mooncake_store_operation_failed_keys", {"operation": _op})
    # Seconds spent in the operation's RPCs (the histogram's sum; every status counted).
    VLLM_COUNTERS[f"mc_{_op}_time_s"] = ("vllm:mooncake_store_operation_time_seconds_sum", {"operation": _op})

# vLLM's own per-request histograms: deltas of `_sum` / `_count` around a round give the
# server-side mean of exactly that round's requests (nothing else is sent meanwhile).
SERVER_HISTOGRAMS = {
    "server_ttft": "vllm:time_to_first_token_seconds",
    "server_prefill": "vllm:request_prefill_time_seconds",
    "server_queue": "vllm:request_queue_time_seconds",
    "server_e2e": "vllm:e2e_request_latency_seconds",
}

MASTER_GAUGES = {
    "master_key_count": "master_key_count",
    "master_allocated_bytes": "master_allocated_bytes",
    "master_capacity_bytes": "master_total_capacity_bytes",  # the store's size, as the master counts it
}
MASTER_COUNTERS = {
    "master_put_start_requests": "master_put_start_requests",
    "master_get_replica_list_requests": "master_get_replica_list_requests",
    # What a store too small for the working set does: evict, and refuse new puts.
    "master_evicted_keys": "master_evicted_key_count",
    "master_evicted_bytes": "master_evicted_size_bytes",
    "master_alloc_failures": "master_put_start_alloc_failures",
    "master_put_failed_items": "master_batch_put_start_failed_items",
}

# The rounds.csv columns `probes.deltas` writes, in order (records.RoundSummary declares them from here).
COUNTER_COLUMNS = (
    *VLLM_COUNTERS,
    *(f"{k}_{edge}" for k in MASTER_GAUGES for edge in ("start", "end")),
    *MASTER_COUNTERS,
    *(f"{k}_mean_ms" for k in SERVER_HISTOGRAMS),
    "server_requests",
)
