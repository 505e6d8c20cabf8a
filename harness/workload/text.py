"""Seeded text of exact token lengths, and the `Builder` every scenario kind makes its prompts with."""

from __future__ import annotations

import functools
import random
from typing import Literal

from harness.config import Api, Scenario
from harness.workload.base import Prompt, Session, Tokenizer, Workload

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


class Builder:
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

    def workload(self, sessions: list[Session], skipped: int = 0) -> Workload:
        return Workload(self.scenario, sessions, skipped)

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


def static_sessions(prompts: list[Prompt]) -> list[Session]:
    return [Session(p.prompt_id, 1, functools.partial(_same_prompt, p)) for p in prompts]


def _same_prompt(p: Prompt, turn: int, replies: list[str]) -> Prompt:
    return p
