"""What a workload is: sessions of prompts, each prompt's length exact in the served model's tokens.

A workload is a list of sessions. A session is a sequence of turns sent one
after the other (a conversation); independent requests are one-turn sessions.
Sessions run concurrently. Every round replays the same sessions, so a prompt
keeps its `prompt_id` across rounds and round 2+ can reuse round 1's KV blocks.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class Tokenizer(Protocol):
    """Exact token counts of the served model (harness/client/tokenizer.py: the server's /tokenize or a
    local Hugging Face tokenizer); the workload asks for nothing else of the client stage."""

    def count(self, text: str) -> int:
        """Tokens of a text fragment, without special tokens."""

    def count_prompt(self, prompt: str | list[dict]) -> int:
        """Tokens the server will see for a whole request (special tokens / chat template included)."""

    def ids(self, text: str) -> list[int]:
        """The token ids of a text fragment, without special tokens."""


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
