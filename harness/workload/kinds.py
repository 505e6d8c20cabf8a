"""The seed's scenario kinds: a shared document, code base or instruction plus a varying part, unique
prompts (cold start), and conversations whose history grows each turn. Each is a function
`(Builder, its scenario config) -> Workload`, listed in `harness.workload.KINDS`."""

from __future__ import annotations

import random
from collections.abc import Callable

from harness.config import BatchProcessing, CodeGeneration, ColdStart, DocumentQA, MultiTurn
from harness.workload.base import Prompt, Session, Workload
from harness.workload.text import Builder, Style, static_sessions


def shared_prefix(
    b: Builder, n: int, prefix_len: int, prefix_style: Style, variants: list[str], label: str
) -> list[Session]:
    # The label belongs to what every request shares: counted in the shared prefix, a block it
    # completes is expected reuse, not a foreign hit.
    prefix = b.prefix_text.make(prefix_len, prefix_style, "prefix") + f"\n\n{label}:"
    prompts = [b.prompt(f"{b.scenario}-{i:04d}", prefix, f" {variants[i % len(variants)]}\n") for i in range(n)]
    return static_sessions(prompts)


def document_qa(b: Builder, c: DocumentQA) -> Workload:
    qs = [b.text.make(c.question_length, "question", f"q{i}") for i in range(c.num_questions)]
    return b.workload(shared_prefix(b, c.num_requests, c.context_length, "prose", qs, "Question"))


def code_generation(b: Builder, c: CodeGeneration) -> Workload:
    tasks = [b.text.make(c.task_length, "task", f"t{i}") for i in range(c.num_tasks)]
    return b.workload(shared_prefix(b, c.num_requests, c.context_length, "code", tasks, "Task"))


def batch(b: Builder, c: BatchProcessing) -> Workload:
    # Each text starts with its own number: texts drawn from one small vocabulary would otherwise
    # share their first words now and then, and a block they complete would look foreign.
    texts = []
    for i in range(c.num_requests):
        mark = f"#{i:04d}"
        texts.append(f"{mark} " + b.text.make(max(1, c.text_length - b.tok.count(f"{mark} ")), "prose", f"x{i}"))
    return b.workload(shared_prefix(b, c.num_requests, c.instruction_length, "instruction", texts, "Text"))


def cold_start(b: Builder, c: ColdStart) -> Workload:
    # A distinct first line per request: no two prompts share even a first block.
    prompts = []
    for i in range(c.num_requests):
        head = f"[{b.scenario} {i:04d}]\n"
        body = b.text.make(max(1, c.prompt_length - b.tok.count(head)), "prose", f"u{i}")
        prompts.append(b.prompt(f"{b.scenario}-{i:04d}", "", head + body))
    return b.workload(static_sessions(prompts))


def multi_turn(b: Builder, c: MultiTurn) -> Workload:
    sessions = []
    for conv in range(c.num_conversations):
        system = b.text.make(c.system_length, "instruction", f"sys{conv}")
        users = [b.text.make(c.user_length, "chat", f"c{conv}u{t}") for t in range(c.turns)]
        session = Session(f"{b.scenario}-c{conv:03d}", c.turns, _conversation(b, conv, system, users))
        session.think_s = _think_times(c, random.Random(f"{b.seed}:{b.scenario}:think:{conv}"))
        sessions.append(session)
    return b.workload(sessions)


def _think_times(c: MultiTurn, rng: random.Random) -> tuple[float, ...]:
    if not c.think_time_s:
        return ()
    if c.think_time == "fixed":
        return (c.think_time_s,) * (c.turns - 1)
    return tuple(rng.expovariate(1 / c.think_time_s) for _ in range(c.turns - 1))


def _conversation(b: Builder, conv: int, system: str, users: list[str]) -> Callable[[int, list[str]], Prompt]:
    def body(turn: int, replies: list[str]) -> str | list[dict]:
        msgs = [{"role": "system", "content": system}]
        for t in range(turn):
            msgs += [{"role": "user", "content": users[t]}, {"role": "assistant", "content": replies[t]}]
        msgs.append({"role": "user", "content": users[turn]})
        return msgs if b.api == "chat" else _render(msgs) + "Assistant:"

    def build(turn: int, replies: list[str]) -> Prompt:
        me = f"{b.scenario}-c{conv:03d}-t{turn:02d}"
        # The previous turn's whole prompt is this turn's prefix (its reply follows it).
        prev = b.tok.count_prompt(body(turn - 1, replies)) if turn else 0
        prev_key = f"{b.scenario}-c{conv:03d}-t{turn - 1:02d}" if turn else ""
        this = body(turn, replies)
        return Prompt(me, this, b.tok.count_prompt(this), prev, prev_key, me)

    return build


def _render(msgs: list[dict]) -> str:
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in msgs)
