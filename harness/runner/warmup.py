"""An engine warm-up before the cold proof and round 1 (issue 34, item 9).

A new engine process answers its first requests slower than its later ones (lazy
initialisation, first allocations, kernel selection), so without a warm-up round 1 of a fresh
cell carries the process's own cold start: round-over-round gains look larger than the cache
makes them, and a cell after a verified reset (on a process already warm) looks faster than a
fresh one for a reason that is not the reset.

The warm-up shares nothing with any workload and leaves nothing behind for the proof to see:
`WARMUP_REQUESTS` requests of random letters (their own random source, not the workload's seed),
each cut to fewer tokens than one KV block, sent as token ids to the completions endpoint. A
prompt shorter than a block fills no full block, so the KV connector stores nothing (the master
still counts 0 keys) and no later prompt can hit it: the cold proof that follows is the one
without a warm-up (master 0 keys, 0 local and 0 external hit tokens), and it runs after the
warm-up, so it proves the warm-up left nothing. What it does not warm: buffers only a long
prefill touches (a prompt of thousands of tokens would store blocks, and a fresh stack has no
reset endpoint to remove them).
"""

from __future__ import annotations

import asyncio
import random
import string
import time

from harness.client.client import RequestSettings, auth_headers, open_client, send
from harness.client.tokenizer import ServerTokenizer

WARMUP_REQUESTS = 4
WARMUP_MAX_TOKENS = 8
DEFAULT_BLOCK = 16  # the smallest block vLLM uses: a prompt below it is below any block


def warmup_prompts(tok: ServerTokenizer, block_size: int | None, n: int = WARMUP_REQUESTS) -> list[list[int]]:
    """`n` prompts of random lower-case words, as token ids, each shorter than one block."""
    rng = random.Random(0x5EED ^ 34)  # its own source: never the workload's texts
    limit = max(1, (block_size or DEFAULT_BLOCK) - 1)
    out = []
    for _ in range(n):
        words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8))) for _ in range(limit))
        out.append(tok.ids(words)[:limit])
    return out


def warm_up(url: str, model: str, block_size: int | None, timeout_s: float = 120.0) -> dict:
    """Send the warm-up, one request at a time; the evidence for the manifest: how many requests,
    their prompt tokens (all below the block size), their TTFTs (the first is the process's cold
    start) and how long it took. Raises RuntimeError when a warm-up request fails: an engine that
    cannot answer 8 tokens is not ready for a round."""
    t = time.perf_counter()
    with ServerTokenizer(url, model) as tok:
        prompts = warmup_prompts(tok, block_size)
    settings = RequestSettings(model=model, api="completions", max_tokens=WARMUP_MAX_TOKENS, timeout=timeout_s)

    async def go() -> list[float]:
        ttfts = []
        async with open_client(url, 1, timeout_s, auth_headers(url)) as client:
            for p in prompts:
                res = await send(client, p, settings)
                if not res.ok:
                    raise RuntimeError(f"warm-up request failed: {res.error_class}: {res.error_message}")
                ttfts.append(round(res.ttft_ms, 1) if res.ttft_ms is not None else float("nan"))
        return ttfts

    ttfts = asyncio.run(go())
    return {
        "requests": len(prompts),
        "prompt_tokens": [len(p) for p in prompts],
        "block_size": block_size,
        "ttft_ms": ttfts,
        "seconds": round(time.perf_counter() - t, 3),
    }
