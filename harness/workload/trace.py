"""Trace replay: each request of a Mooncake-format trace as token ids, its hash blocks shared where the
trace's are, sent at the trace's time offsets (when asked)."""

from __future__ import annotations

from harness.config import Trace
from harness.config.trace import TRACE_BLOCK, BlockMaker, read_trace, select, shared_prefix_blocks
from harness.workload.base import Prompt, Workload
from harness.workload.text import Builder, static_sessions, vocabulary


def replay(b: Builder, c: Trace) -> Workload:
    sel = select(
        read_trace(c.path),
        num_requests=c.num_requests,
        start_ms=c.start_ms,
        end_ms=c.end_ms,
        max_total_tokens=b.max_model_len,
        max_input_length=c.max_input_length,
    )
    seed = f"prefix:{c.prefix_seed}" if c.prefix_seed is not None else f"{b.seed}:{b.scenario}"
    blocks = BlockMaker(vocabulary(b.tok), seed)
    shared = shared_prefix_blocks(sel.records)
    t0 = sel.records[0].timestamp if sel.records else 0.0
    prompts = []
    for i, (rec, k) in enumerate(zip(sel.records, shared, strict=True)):
        out = min(rec.output_length, c.max_output_length or rec.output_length)
        at = (rec.timestamp - t0) / 1e3 / c.speed if c.timestamps else None
        ids = blocks.prompt_ids(rec)
        prompts.append(
            Prompt(f"{b.scenario}-{i:05d}", ids, len(ids), min(k * TRACE_BLOCK, len(ids)), max_tokens=out, send_at_s=at)
        )
    return b.workload(static_sessions(prompts), sel.skipped_too_long)
