"""Deterministic workloads with lengths exact in the served model's tokens.

A workload is a list of sessions. A session is a sequence of turns sent one
after the other (a conversation); independent requests are one-turn sessions.
Sessions run concurrently. Every round replays the same sessions, so a prompt
keeps its `prompt_id` across rounds and round 2+ can reuse round 1's KV blocks.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from harness.config import Api, BatchProcessing, CodeGeneration, ColdStart, DocumentQA, MultiTurn, Scenario, Trace
from harness.config.trace import TRACE_BLOCK, BlockMaker, read_trace, select, shared_prefix_blocks


class Tokenizer(Protocol):
    """Exact token counts of the served model (harness/client/tokenizer.py: the server's /tokenize or a
    local Hugging Face tokenizer); the workload asks for nothing else of the client stage."""

    def count(self, text: str) -> int:
        """Tokens of a text fragment, without special tokens."""

    def count_prompt(self, prompt: str | list[dict]) -> int:
        """Tokens the server will see for a whole request (special tokens / chat template included)."""

    def ids(self, text: str) -> list[int]:
        """The token ids of a text fragment, without special tokens."""


Style = Literal["prose", "code", "instruction", "question", "task", "chat"]

_WORDS = {
    "prose": (
        "the report market growth quarter revenue analysis customer region model policy data "
        "system results increase decrease forecast team product service value risk cost impact "
        "strategy section figure table summary review notes annual plan supply demand price "
        "of and to in for with on by from at as is was are were be this that which"
    ).split(),
    "code": (
        "def class return self import from if else elif for while in not and or None True False "
        "try except raise with as yield lambda async await config value result items key list "
        "dict int str len range print append update get set data index count name path node"
    ).split(),
    "instruction": (
        "classify summarize extract label each item text following output format json field "
        "category sentiment positive negative neutral reason short answer must should only "
        "include exclude rules example input note keep concise language tone entity date"
    ).split(),
}
_WORDS["question"] = _WORDS["prose"]
_WORDS["task"] = _WORDS["code"]
_WORDS["chat"] = _WORDS["prose"] + _WORDS["instruction"]


@dataclass(frozen=True)
class Prompt:
    """One request body's prompt, with its exact size in the server's tokens."""

    prompt_id: str
    body: str | list[dict] | list[int]  # completions: text (or token ids: trace replay); chat: messages
    prompt_tokens: int
    # Leading tokens another request of the same scenario also sends (document,
    # instruction, conversation history): reusable even in round 1 ...
    shared_prefix_tokens: int
    # ... once a request that provides `prefix_key` has been prefilled.
    prefix_key: str = ""
    provides_prefix_key: str = ""
    max_tokens: int | None = None  # this request's output length, in place of the suite's max_tokens
    send_at_s: float | None = None  # scheduled send, seconds after the round's start (trace replay)

    @property
    def prompt_hash(self) -> str:
        """Identifies the exact prompt text: identical prompts can reuse each other whole."""
        return hashlib.sha256(json.dumps(self.body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Session:
    """Turns sent sequentially. `build(turn, replies)` makes turn `turn` from the replies so far."""

    session_id: str
    turns: int
    build: Callable[[int, list[str]], Prompt]
    first_index: int = 0  # position of turn 0 in the workload (request index in every round)
    think_s: tuple[float, ...] = ()  # the user's pause after answer t before turn t + 1


@dataclass
class Workload:
    scenario: str
    sessions: list[Session]
    skipped: int = 0  # trace requests left out: longer than the model's context
    num_requests: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_requests = 0
        for s in self.sessions:
            s.first_index = self.num_requests
            self.num_requests += s.turns

    def share(self, i: int, n: int) -> Workload:
        """Client worker i's sessions of n, dealt round-robin; request indices stay the round's."""
        part = copy.copy(self)
        part.sessions = self.sessions[i::n]
        part.num_requests = sum(s.turns for s in part.sessions)
        return part


def vocabulary(tok: Tokenizer) -> list[int]:
    """Ordinary token ids of the served model to draw token-id prompts from: every word of the
    word lists, also capitalised, and punctuation and digits (never a special token)."""
    words = sorted({w for ws in _WORDS.values() for w in ws})
    text = " ".join(words + [w.capitalize() for w in words]) + " . , : ; ( ) 0 1 2 3 4 5 6 7 8 9"
    return sorted(set(tok.ids(text)))


class TextMaker:
    """Seeded text of an exact token length (as the server tokenizes it standalone)."""

    def __init__(self, tokenizer: Tokenizer, seed: str) -> None:
        self._tok = tokenizer
        self._seed = seed

    def make(self, n_tokens: int, style: Style, key: str) -> str:
        rng = random.Random(f"{self._seed}:{style}:{key}")
        words = self._words(rng, style, n_tokens * 2 + 16)
        # Byte-level BPE does not merge across word boundaries, so the count
        # grows monotonically with the number of words: binary search it.
        lo, hi = 0, len(words)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._tok.count(" ".join(words[:mid])) <= n_tokens:
                lo = mid
            else:
                hi = mid - 1
        text = " ".join(words[:lo])
        return self._pad(text, n_tokens)

    def _pad(self, text: str, n_tokens: int) -> str:
        # Close the last 0-3 token gap with one-token fillers where possible.
        for _ in range(8):
            have = self._tok.count(text)
            if have >= n_tokens:
                break
            for filler in (" .", ".", " a", "a"):
                if self._tok.count(text + filler) <= n_tokens:
                    text += filler
                    break
            else:
                break
        return text

    @staticmethod
    def _words(rng: random.Random, style: Style, n: int) -> list[str]:
        vocab = _WORDS[style]
        out: list[str] = []
        for i in range(n):
            w = rng.choice(vocab)
            if style == "code" and i % 9 == 8:
                w += ":\n   "
            elif i % 13 == 12:
                w += "."
            out.append(w)
        return out


class _Builder:
    def __init__(
        self, scenario: str, cfg: Scenario, tok: Tokenizer, api: Api, seed: int, max_model_len: int | None = None
    ) -> None:
        self.scenario = scenario
        self.cfg = cfg
        self.tok = tok
        self.api = api
        self.seed = seed
        self.max_model_len = max_model_len
        self.text = TextMaker(tok, f"{seed}:{scenario}")
        # A shared prefix_seed makes scenarios share their prefix on purpose.
        prefix_seed = f"prefix:{cfg.prefix_seed}" if cfg.prefix_seed is not None else f"{seed}:{scenario}"
        self.prefix_text = TextMaker(tok, prefix_seed)

    def prompt(self, pid: str, prefix: str, rest: str) -> Prompt:
        """prefix + rest as one user turn; `prefix` is what the scenario's requests share."""
        if self.api == "chat":
            body: str | list[dict] = [{"role": "user", "content": prefix + rest}]
        else:
            body = prefix + rest
        if not prefix:
            return Prompt(pid, body, self.tok.count_prompt(body), 0)
        # Completions: as the request starts (BOS included). Chat: the text alone,
        # a few header tokens short - conservative, and only whole blocks count.
        shared = self.tok.count_prompt(prefix) if self.api == "completions" else self.tok.count(prefix)
        key = f"{self.scenario}:prefix"
        return Prompt(pid, body, self.tok.count_prompt(body), shared, key, key)


def _static(prompts: list[Prompt]) -> list[Session]:
    return [Session(p.prompt_id, 1, functools.partial(_same_prompt, p)) for p in prompts]


def _same_prompt(p: Prompt, turn: int, replies: list[str]) -> Prompt:
    return p


def _shared_prefix(
    b: _Builder, n: int, prefix_len: int, prefix_style: Style, variants: list[str], label: str
) -> list[Session]:
    # The label belongs to what every request shares: counted in the shared prefix, a block it
    # completes is expected reuse, not a foreign hit.
    prefix = b.prefix_text.make(prefix_len, prefix_style, "prefix") + f"\n\n{label}:"
    prompts = [b.prompt(f"{b.scenario}-{i:04d}", prefix, f" {variants[i % len(variants)]}\n") for i in range(n)]
    return _static(prompts)


def _document_qa(b: _Builder, c: DocumentQA) -> list[Session]:
    qs = [b.text.make(c.question_length, "question", f"q{i}") for i in range(c.num_questions)]
    return _shared_prefix(b, c.num_requests, c.context_length, "prose", qs, "Question")


def _code_generation(b: _Builder, c: CodeGeneration) -> list[Session]:
    tasks = [b.text.make(c.task_length, "task", f"t{i}") for i in range(c.num_tasks)]
    return _shared_prefix(b, c.num_requests, c.context_length, "code", tasks, "Task")


def _batch(b: _Builder, c: BatchProcessing) -> list[Session]:
    # Each text starts with its own number: texts drawn from one small vocabulary would otherwise
    # share their first words now and then, and a block they complete would look foreign.
    texts = []
    for i in range(c.num_requests):
        mark = f"#{i:04d}"
        texts.append(f"{mark} " + b.text.make(max(1, c.text_length - b.tok.count(f"{mark} ")), "prose", f"x{i}"))
    return _shared_prefix(b, c.num_requests, c.instruction_length, "instruction", texts, "Text")


def _cold_start(b: _Builder, c: ColdStart) -> list[Session]:
    # A distinct first line per request: no two prompts share even a first block.
    prompts = []
    for i in range(c.num_requests):
        head = f"[{b.scenario} {i:04d}]\n"
        body = b.text.make(max(1, c.prompt_length - b.tok.count(head)), "prose", f"u{i}")
        prompts.append(b.prompt(f"{b.scenario}-{i:04d}", "", head + body))
    return _static(prompts)


def _multi_turn(b: _Builder, c: MultiTurn) -> list[Session]:
    sessions = []
    for conv in range(c.num_conversations):
        system = b.text.make(c.system_length, "instruction", f"sys{conv}")
        users = [b.text.make(c.user_length, "chat", f"c{conv}u{t}") for t in range(c.turns)]
        session = Session(f"{b.scenario}-c{conv:03d}", c.turns, _conversation(b, conv, system, users))
        session.think_s = _think_times(c, random.Random(f"{b.seed}:{b.scenario}:think:{conv}"))
        sessions.append(session)
    return sessions


def _think_times(c: MultiTurn, rng: random.Random) -> tuple[float, ...]:
    if not c.think_time_s:
        return ()
    if c.think_time == "fixed":
        return (c.think_time_s,) * (c.turns - 1)
    return tuple(rng.expovariate(1 / c.think_time_s) for _ in range(c.turns - 1))


def _trace(b: _Builder, c: Trace) -> tuple[list[Session], int]:
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
    return _static(prompts), sel.skipped_too_long


def _conversation(b: _Builder, conv: int, system: str, users: list[str]) -> Callable[[int, list[str]], Prompt]:
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


_KINDS: dict[type, Callable[[_Builder, Any], list[Session]]] = {
    DocumentQA: _document_qa,
    CodeGeneration: _code_generation,
    BatchProcessing: _batch,
    ColdStart: _cold_start,
    MultiTurn: _multi_turn,
}


def build_workload(
    scenario: str, cfg: Scenario, tokenizer: Tokenizer, *, api: Api, seed: int, max_model_len: int | None = None
) -> Workload:
    """The scenario's sessions; `max_model_len` (the served context) decides which trace requests fit."""
    b = _Builder(scenario, cfg, tokenizer, api, seed, max_model_len)
    if isinstance(cfg, Trace):
        sessions, skipped = _trace(b, cfg)
        return Workload(scenario, sessions, skipped)
    return Workload(scenario, _KINDS[type(cfg)](b, cfg))
