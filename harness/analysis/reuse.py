"""What reuse a scenario can expect from itself, and what it actually got.

A request can reuse KV blocks only for a prefix that another request of the
same scenario computed before it: the same prompt (same text, or the same
`prompt_id` in an earlier round) or the shared part (`prefix_key`: document,
instruction, conversation history). Only whole blocks count, and the block
holding the last prompt token is always recomputed.

"Before" is prefill order, taken as the order of first tokens: the engine looks
the cache up when it schedules a request, and requests sent together are not
scheduled in send order. Within a group of requests that share a prefix, the
first one prefilled must compute it, so it can expect nothing - which is what
exposes a polluted cold round.

Hits beyond that are foreign: they came from outside the scenario, i.e. from a
cache that was not cold. Except a strict part of a shared prefix that a request of the same
round was still prefilling (`in_flight_partial`): chunked prefill stores it chunk by chunk.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections import OrderedDict

import numpy as np
import pandas as pd

from harness.analysis.frames import num, truthy


def _full_blocks(tokens: float, block: int) -> int:
    return int(tokens // block) * block


def block_chain(token_ids: list[int] | None, block: int | None) -> str:
    """The prompt's full blocks as the engine keys them: each block's key covers every token up to
    its end (a chained hash), so two prompts share a key exactly where they share a whole-block
    prefix. Short hex keys, space-separated; empty when the server sent no prompt ids."""
    if not token_ids or not block:
        return ""
    h = hashlib.blake2b(digest_size=6)
    keys = []
    for end in range(block, len(token_ids) + 1, block):
        h.update(array("l", token_ids[end - block : end]).tobytes())
        keys.append(h.copy().hexdigest())
    return " ".join(keys)


def _first_token_s(requests: pd.DataFrame) -> pd.Series:
    """When each request's first token came (never, for one without)."""
    return requests["send_s"] + requests["ttft_ms"].fillna(np.inf) / 1e3


def _prefill_order(requests: pd.DataFrame) -> pd.Index:
    return requests.assign(_ft=_first_token_s(requests)).sort_values(["round", "_ft", "send_s"]).index


def lru_reuse(requests: pd.DataFrame, block: int, capacity_blocks: int) -> pd.Series:
    """Reusable tokens per request if the store held at most `capacity_blocks` blocks and evicted
    the least recently used: the request sequence (all rounds, prefill order) replayed against a
    simulated LRU store of whole blocks (prefix-only hits, as the engine reuses; every block of a
    request is then stored or refreshed). Needs the served prompts' ids (`prefix_blocks`)."""
    store: OrderedDict[str, None] = OrderedDict()
    out = pd.Series(0, index=requests.index, dtype=int)
    for idx in _prefill_order(requests):
        r = requests.loc[idx]
        keys = r["prefix_blocks"].split() if isinstance(r["prefix_blocks"], str) else []
        tokens = r["prompt_tokens"] if pd.notna(r["prompt_tokens"]) else r["expected_prompt_tokens"]
        shared = next((i for i, k in enumerate(keys) if k not in store), len(keys))
        out[idx] = min(shared * block, _full_blocks(max(int(tokens) - 1, 0), block))
        for k in keys:
            store[k] = None
            store.move_to_end(k)
        while len(store) > capacity_blocks:
            store.popitem(last=False)
    return out


def expected_reuse(requests: pd.DataFrame, block: int) -> pd.Series:
    """Reusable tokens per request (index aligned with `requests`), from the scenario's own history.

    With the served prompt's token ids (`prefix_blocks`) this is exact: the leading whole blocks
    an earlier-prefilled request also had. Without them (servers that do not return ids), the
    workload's declared sharing: the same prompt, or the declared shared prefix."""
    order = _prefill_order(requests)
    seen_prompts: set[str] = set()
    seen_prefixes: set[str] = set()
    seen_blocks: set[str] = set()
    chains = requests["prefix_blocks"] if "prefix_blocks" in requests else pd.Series("", index=requests.index)
    out = pd.Series(0, index=requests.index, dtype=int)
    for idx in order:
        r = requests.loc[idx]
        tokens = r["prompt_tokens"] if pd.notna(r["prompt_tokens"]) else r["expected_prompt_tokens"]
        whole = _full_blocks(max(int(tokens) - 1, 0), block)
        keys = chains[idx].split() if isinstance(chains[idx], str) else []
        if keys:
            shared = next((i for i, k in enumerate(keys) if k not in seen_blocks), len(keys))
            out[idx] = min(shared * block, whole)
            seen_blocks.update(keys)
            continue
        prompt_keys = {str(r["prompt_id"]), str(r.get("prompt_hash", ""))} - {"", "nan"}
        key = r.get("prefix_key")
        if prompt_keys & seen_prompts:
            out[idx] = whole
        elif isinstance(key, str) and key in seen_prefixes:
            out[idx] = min(_full_blocks(r.get("shared_prefix_tokens") or 0, block), whole)
        seen_prompts |= prompt_keys
        provides = r.get("provides_prefix_key")
        if isinstance(provides, str) and provides:
            seen_prefixes.add(provides)
    return out


def _leading_shared(a: list[str], b: list[str]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def in_flight_partial(requests: pd.DataFrame, block: int, cached: pd.Series) -> pd.Series:
    """Hit tokens a request may have loaded from one of its round that was still prefilling. With
    chunked prefill the engine stores a long prompt's blocks chunk by chunk, so a request sent
    beside it can load its first chunks and still return its first token earlier: prefill order
    by first token then calls the hit foreign (seen after a verified reset: 2,048 tokens, one
    chunk of 16 blocks). Such a hit is a strict part of the prefix the two share; a cache from
    outside the scenario offers all of it, so a whole-prefix hit stays foreign. Needs token ids."""
    out = pd.Series(0, index=requests.index, dtype=int)
    if "prefix_blocks" not in requests:
        return out
    first = _first_token_s(requests).to_numpy()
    send, rounds = requests["send_s"].to_numpy(), requests["round"].to_numpy()
    chains = [c.split() if isinstance(c, str) else [] for c in requests["prefix_blocks"]]
    for i, idx in enumerate(requests.index):
        hit = int(cached[idx] // block)
        if hit == 0 or not chains[i]:
            continue
        # Sent before this one's first token, first token after it: prefilling when it looked up.
        peers = np.flatnonzero((rounds == rounds[i]) & (send <= first[i]) & (first > first[i]))
        if any(hit < _leading_shared(chains[i], chains[j]) for j in peers):
            out[idx] = hit * block
    return out


def reuse_by_round(requests: pd.DataFrame, block: int | None) -> pd.DataFrame:
    """Per round: expected reusable tokens, achieved (cached_tokens), ratio, and foreign hits."""
    if not block or requests.empty:
        return pd.DataFrame({"round": sorted(requests["round"].unique())})
    df = requests.copy()
    df["expected_reuse"] = expected_reuse(df, block)
    df["cached"] = num(df, "cached_tokens").fillna(0)
    explained = np.maximum(df["expected_reuse"], in_flight_partial(df, block, df["cached"]))
    df["foreign"] = (df["cached"] - explained).clip(lower=0)
    rows = []
    for rnd, g in df.groupby("round"):
        exp, got = int(g["expected_reuse"].sum()), int(g["cached"].sum())
        rows.append(
            {
                "round": int(rnd),
                "expected_reuse_tokens": exp,
                "achieved_reuse_tokens": got,
                "reuse_achieved_ratio": got / exp if exp else (math.nan if got == 0 else math.inf),
                "foreign_hit_tokens": int(g["foreign"].sum()),
            }
        )
    return pd.DataFrame(rows)


def lru_by_round(requests: pd.DataFrame, block: int | None, counters: pd.DataFrame) -> pd.DataFrame:
    """Per round, the reuse an LRU store of this stack's capacity would have given the same request
    sequence: the reference a measured hit rate is held against in a store-size sweep. The
    capacity is the master's (`master_capacity_bytes_start`), the size of a block what the
    connector's puts moved per key (bytes / keys: the model's KV geometry, as measured)."""
    need = ("master_capacity_bytes_start", "mc_save_put_bytes", "mc_save_put_keys")
    if not block or counters.empty or any(c not in counters for c in need) or "prefix_blocks" not in requests:
        return pd.DataFrame()
    keys = counters["mc_save_put_keys"].sum()
    capacity = counters["master_capacity_bytes_start"].dropna()
    if not keys or capacity.empty or not requests["prefix_blocks"].notna().any():
        return pd.DataFrame()
    per_block = counters["mc_save_put_bytes"].sum() / keys
    blocks = int(capacity.iloc[0] // per_block)
    sim = lru_reuse(requests, block, blocks).groupby(requests["round"]).sum()
    return pd.DataFrame(
        {
            "round": sim.index.astype(int),
            "lru_reuse_tokens": sim.to_numpy(),
            "kv_bytes_per_block": per_block,
            "store_capacity_blocks": blocks,
        }
    )


def lru_local_by_round(requests: pd.DataFrame, block: int | None, counters: pd.DataFrame) -> pd.DataFrame:
    """Per round, the reuse the engine's own prefix cache should give: the same request sequence
    replayed against an LRU pool of the engine's allocated blocks (`engine_pool_blocks`, read from
    vllm:cache_config_info) less the one vLLM keeps back (its null block). Blocks held by requests
    still running are not modelled: with concurrency > 1 the real pool holds a little less."""
    if not block or counters.empty or "engine_pool_blocks" not in counters or "prefix_blocks" not in requests:
        return pd.DataFrame()
    pool = pd.to_numeric(counters["engine_pool_blocks"], errors="coerce").dropna()
    if pool.empty or not requests["prefix_blocks"].notna().any():
        return pd.DataFrame()
    sim = lru_reuse(requests, block, max(int(pool.iloc[0]) - 1, 0)).groupby(requests["round"]).sum()
    return pd.DataFrame({"round": sim.index.astype(int), "lru_local_reuse_tokens": sim.to_numpy()})


def ttft_speedups(requests: pd.DataFrame) -> pd.DataFrame:
    """Pair each later-round request with the same prompt's round-1 request: TTFT speed-up (round 1 / later)."""
    ok = requests[truthy(requests["ok"])]
    cold = ok[ok["round"] == 1].groupby("prompt_id")["ttft_ms"].first()
    rows = []
    for rnd, g in ok[ok["round"] > 1].groupby("round"):
        warm = g.groupby("prompt_id")["ttft_ms"].first()
        s = (cold / warm).dropna()
        s = s[np.isfinite(s)]
        row: dict[str, float] = {"round": int(rnd), "paired_requests": int(len(s))}
        for q in (10, 50, 90):
            row[f"ttft_speedup_p{q}"] = float(np.percentile(s, q)) if len(s) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
