"""Stage 3, workload: deterministic prompts with lengths exact in the served model's tokens.

Scenario kinds sit behind one interface, `KINDS[type(scenario config)](builder, config) -> Workload`
(as vLLM's benchmark datasets do): kinds.py holds the seed's small ones, trace.py the trace replay, working_set.py
D documents revisited so that the working set is a chosen multiple of the engine's KV pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.config import (
    Api,
    BatchProcessing,
    CodeGeneration,
    ColdStart,
    DocumentQA,
    MultiTurn,
    Scenario,
    Trace,
    WorkingSet,
)
from harness.workload import kinds
from harness.workload.base import Prompt, Session, Tokenizer, Workload
from harness.workload.text import Builder, TextMaker, vocabulary
from harness.workload.trace import replay
from harness.workload.working_set import working_set

KINDS: dict[type, Callable[[Builder, Any], Workload]] = {
    DocumentQA: kinds.document_qa,
    CodeGeneration: kinds.code_generation,
    BatchProcessing: kinds.batch,
    ColdStart: kinds.cold_start,
    MultiTurn: kinds.multi_turn,
    Trace: replay,
    WorkingSet: working_set,
}


def build_workload(
    scenario: str, cfg: Scenario, tokenizer: Tokenizer, *, api: Api, seed: int, max_model_len: int | None = None
) -> Workload:
    """The scenario's sessions; `max_model_len` (the served context) decides which trace requests fit."""
    return KINDS[type(cfg)](Builder(scenario, cfg, tokenizer, api, seed, max_model_len), cfg)


__all__ = ["KINDS", "Prompt", "Session", "TextMaker", "Tokenizer", "Workload", "build_workload", "vocabulary"]
