"""The working-set kind: D documents of L tokens, revisited in a chosen order, so that the working
set (D x L tokens) is a chosen multiple of the engine's KV pool.

Each visit is one request: its document, then one of a few short questions. The document is the
visit's shared prefix (`prefix_key` = the document): a later visit of the same document can reuse
its whole blocks - from the engine's own pool while the pool still holds them (vLLM's prefix cache,
LRU), else from the store behind it. The visit sequence is seeded and the same every round, so the
warm rounds (2+) are revisits of exactly the same prompts in every arm.
"""

from __future__ import annotations

import random

from harness.config import WorkingSet
from harness.workload.base import Prompt, Workload
from harness.workload.text import Builder, static_sessions


def visit_order(c: WorkingSet, seed: str) -> list[int]:
    """The documents visited in one round, in order: cyclic 0..D-1 (whole passes), Zipf popularity
    (rank r drawn with weight 1 / r^s; which document has which rank is shuffled) or uniform."""
    d, n = c.num_documents, c.visits_per_round
    if c.order == "cyclic":
        return [i % d for i in range(n)]
    rng = random.Random(f"{seed}:visits")
    if c.order == "random":
        return [rng.randrange(d) for _ in range(n)]
    ranks = list(range(d))
    rng.shuffle(ranks)
    weights = [1.0 / (r + 1) ** c.zipf_s for r in range(d)]
    return [ranks[r] for r in rng.choices(range(d), weights=weights, k=n)]


def working_set(b: Builder, c: WorkingSet) -> Workload:
    # A distinct first line per document: no two documents share even a first block.
    docs = []
    for j in range(c.num_documents):
        head = f"[document {j:04d}]\n"
        docs.append(head + b.prefix_text.make(max(1, c.document_tokens - b.tok.count(head)), "prose", f"doc{j}"))
    questions = [b.text.make(c.question_length, "question", f"q{i}") for i in range(c.num_questions)]
    prompts = []
    for k, j in enumerate(visit_order(c, f"{b.seed}:{b.scenario}")):
        prefix = docs[j] + "\n\nQuestion:"
        p = b.prompt(f"{b.scenario}-v{k:04d}-d{j:04d}", prefix, f" {questions[k % len(questions)]}\n")
        key = f"{b.scenario}:doc{j:04d}"
        prompts.append(Prompt(p.prompt_id, p.body, p.prompt_tokens, p.shared_prefix_tokens, key, key))
    return b.workload(static_sessions(prompts))
