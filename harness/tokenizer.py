"""Exact token counts from the served model's own tokenizer (vLLM `POST /tokenize`).

Word-count estimates drift by tens of percent between tokenizers; the harness
asks the server instead and caches every answer.
"""

from __future__ import annotations

import json
from typing import Protocol

import httpx

from .client import auth_headers, redact


class Tokenizer(Protocol):
    def count(self, text: str) -> int:
        """Tokens of a text fragment, without special tokens."""

    def count_prompt(self, prompt: str | list[dict]) -> int:
        """Tokens the server will see for a whole request (special tokens / chat template included)."""

    def ids(self, text: str) -> list[int]:
        """The token ids of a text fragment, without special tokens."""


class TokenizerError(RuntimeError):
    pass


class ServerTokenizer:
    def __init__(self, base_url: str, model: str, *, timeout: float = 60.0) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=timeout, headers=auth_headers(base_url))
        self._model = model
        self._cache: dict[str, int] = {}

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ServerTokenizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self, text: str) -> int:
        return self._post({"prompt": text, "add_special_tokens": False})

    def count_prompt(self, prompt: str | list[dict]) -> int:
        if isinstance(prompt, str):
            return self._post({"prompt": prompt, "add_special_tokens": True})
        return self._post({"messages": prompt, "add_generation_prompt": True})

    def ids(self, text: str) -> list[int]:
        r = self._client.post("/tokenize", json={"model": self._model, "prompt": text, "add_special_tokens": False})
        if r.status_code != 200:
            raise TokenizerError(f"POST /tokenize -> {r.status_code}: {redact(r.text)[:200]}")
        return [int(t) for t in r.json()["tokens"]]

    def _post(self, body: dict) -> int:
        body = {"model": self._model, **body}
        key = json.dumps(body, sort_keys=True)
        if key not in self._cache:
            r = self._client.post("/tokenize", json=body)
            if r.status_code != 200:
                raise TokenizerError(f"POST /tokenize -> {r.status_code}: {redact(r.text)[:200]}")
            self._cache[key] = int(r.json()["count"])
        return self._cache[key]
