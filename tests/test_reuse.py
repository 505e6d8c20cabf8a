"""Expected reuse from the prompts' own token ids: what the engine can reuse, block by block."""

from __future__ import annotations

import pandas as pd

from harness.analysis.reuse import block_chain, expected_reuse

BLOCK = 4


def _rows(prompts: list[list[int]], first_token_s: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "round": 1,
            "prompt_id": [f"p{i}" for i in range(len(prompts))],
            "prompt_hash": "",
            "send_s": 0.0,
            "ttft_ms": [t * 1e3 for t in first_token_s],
            "prompt_tokens": [len(p) for p in prompts],
            "expected_prompt_tokens": [len(p) for p in prompts],
            "shared_prefix_tokens": 0,
            "prefix_key": "",
            "provides_prefix_key": "",
            "prefix_blocks": [block_chain(p, BLOCK) for p in prompts],
        }
    )


def test_block_keys_match_exactly_where_whole_block_prefixes_match():
    a, b = block_chain(list(range(12)), BLOCK).split(), block_chain([*range(6), 99, 7, *range(8, 12)], BLOCK).split()
    assert len(a) == len(b) == 3
    assert a[0] == b[0] and a[1] != b[1] and a[2] != b[2]  # block 3 is equal text, but after a difference
    assert block_chain(None, BLOCK) == "" and block_chain([1, 2, 3], None) == ""


def test_expected_reuse_counts_whole_shared_blocks_in_prefill_order():
    """A coincidence the workload did not declare (two prompts sharing a few more tokens than their
    common instruction) is still expected when it completes a block: it is no foreign hit."""
    shared = [7] * 8  # two whole blocks every prompt has
    p0 = shared + [1, 2, 3, 4, 5]
    p1 = shared + [1, 2, 3, 4, 9]  # shares a third block with p0 by coincidence
    p2 = shared + [6, 6, 6, 6, 6]
    p3 = list(p0)  # the same prompt again: all but the block holding its last token
    reuse = expected_reuse(_rows([p0, p1, p2, p3], [0.3, 0.1, 0.2, 0.4]), BLOCK)
    # prefill order p1, p2, p0, p3: p1 computes everything first
    assert list(reuse) == [12, 0, 8, 12]


def test_an_lru_store_big_enough_reuses_what_is_expected_and_a_small_one_thrashes():
    """Three distinct 3-block prompts, sent twice (two rounds). Unbounded: round 2 reuses every
    whole block but the last token's, as expected_reuse says. Room for 6 blocks: each prompt's
    blocks were evicted by the two after it before it comes back (the LRU cliff): nothing."""
    from harness.analysis.reuse import lru_reuse

    prompts = [[10 * i + k for k in range(12)] for i in range(3)]
    one = _rows(prompts, [1, 2, 3])
    rows = pd.concat([one, one.assign(round=2)], ignore_index=True)
    unbounded = lru_reuse(rows, BLOCK, 10_000)
    assert unbounded.tolist() == expected_reuse(rows, BLOCK).tolist() == [0, 0, 0, 8, 8, 8]
    assert lru_reuse(rows, BLOCK, 6).tolist() == [0] * 6
    assert lru_reuse(rows, BLOCK, 9).tolist() == [0, 0, 0, 8, 8, 8]  # exactly the working set


def test_a_chunk_of_a_prompt_still_prefilling_is_no_foreign_hit_but_the_whole_shared_prefix_is():
    """Seen after a verified reset: two requests on one document sent together; the engine stored
    the first's first chunk (16 of its 32 shared blocks) while it still prefilled, the second loaded
    it and returned its first token first, and prefill order by first token called the 2,048 tokens
    foreign. A strict part of the shared prefix, from a request still prefilling, is explained; all
    of it (what a cache left by another scenario offers) stays foreign, as does a hit on a request
    that had already returned its first token (prefill order covers that one)."""
    from harness.analysis.reuse import reuse_by_round

    doc = [7] * 32  # eight whole blocks both prompts share
    rows = _rows([doc + [1, 2, 3], doc + [4, 5, 6]], [0.5, 0.3])  # sent together, the second first out
    rows["cached_tokens"] = [0, 16]  # four of the eight shared blocks: a chunk of the first one's
    assert reuse_by_round(rows, BLOCK)["foreign_hit_tokens"].tolist() == [0]
    rows["cached_tokens"] = [0, 32]  # the whole document before anything of this round had it
    assert reuse_by_round(rows, BLOCK)["foreign_hit_tokens"].tolist() == [32]
    late = rows.assign(send_s=[0.0, 0.6], cached_tokens=[0, 16])  # sent after the first's first token
    assert reuse_by_round(late, BLOCK)["foreign_hit_tokens"].tolist() == [0]  # prefill order expects all 32
    apart = rows.assign(send_s=[0.0, 0.0], prefix_blocks=[rows["prefix_blocks"][0], block_chain([9] * 35, BLOCK)])
    assert reuse_by_round(apart.assign(cached_tokens=[0, 16]), BLOCK)["foreign_hit_tokens"].tolist() == [16]
