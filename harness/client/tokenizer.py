"""Exact token counts from the served model's own tokenizer.

Word-count estimates drift by tens of percent between tokenizers; the harness asks the server
(vLLM's `POST /tokenize`) and caches every answer. An OpenAI-compatible endpoint without it (a
router, a gateway, another server) gets the same exact counts from the model's Hugging Face
tokenizer loaded locally and offline (`kvbench run --tokenizer PATH_OR_NAME`). Both are the
`Tokenizer` the workload stage asks for (harness/workload/).
"""

from __future__ import annotations

import json
import os
import weakref

import httpx

from harness.client.client import auth_headers, redact


class TokenizerError(RuntimeError):
    pass


AUTH_STATUSES = (401, 403)  # the server wants other credentials: a key, not a tokenizer


class EndpointAuthError(TokenizerError):
    """The endpoint refused the request's credentials (HTTP 401 / 403)."""

    def __init__(self, what: str, status: int) -> None:
        super().__init__(f"{what} -> HTTP {status}: authentication failed")
        self.status = status


def _refuse_auth(what: str, r: httpx.Response) -> None:
    if r.status_code in AUTH_STATUSES:
        raise EndpointAuthError(what, r.status_code)


def check_endpoint_auth(base_url: str, timeout: float = 10.0) -> None:
    """Raise EndpointAuthError when `GET /v1/models` refuses our credentials. vLLM's --api-key guards
    /v1 (and a few other prefixes), not /tokenize, /metrics or /health, so this is what shows a
    missing key before any request; any other answer is left to the checks that follow."""
    url = f"{base_url.rstrip('/')}/v1/models"
    try:
        r = httpx.get(url, headers=auth_headers(base_url), timeout=timeout)
    except httpx.HTTPError:
        return
    _refuse_auth("GET /v1/models", r)


def server_tokenize_error(base_url: str, model: str, timeout: float = 10.0) -> str | None:
    """Why `POST /tokenize` of this server cannot count tokens (None: it can). Raises
    EndpointAuthError when it refuses our credentials: a tokenizer would not help then."""
    try:
        r = httpx.post(f"{base_url.rstrip('/')}/tokenize", json={"model": model, "prompt": "kvbench"},
                       headers=auth_headers(base_url), timeout=timeout)  # fmt: skip
        _refuse_auth("POST /tokenize", r)
        if r.status_code != 200:
            return f"POST /tokenize -> HTTP {r.status_code}"
        count = r.json().get("count")
        return None if isinstance(count, int) else "POST /tokenize answered without a token count"
    except (ValueError, AttributeError):
        return "POST /tokenize answered something that is not JSON"
    except httpx.HTTPError as e:
        return f"POST /tokenize failed ({type(e).__name__}: {redact(str(e))[:120]})"


class LocalTokenizer:
    """The model's Hugging Face tokenizer, from a directory or the local Hugging Face cache only
    (never downloaded mid-run). Counts as vLLM's /tokenize does: text without special tokens;
    a completions prompt with them; chat messages through the tokenizer's chat template."""

    def __init__(self, name_or_path: str) -> None:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no "PyTorch was not found" banner
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise TokenizerError("--tokenizer needs transformers: pip install 'kvbench[hf]'") from None
        try:
            self._tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TokenizerError(f"--tokenizer: {name_or_path}: no tokenizer found offline ({first[:200]})") from None
        self.source = f"local Hugging Face tokenizer {name_or_path}"

    def __enter__(self) -> LocalTokenizer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def count(self, text: str) -> int:
        return len(self.ids(text))

    def count_prompt(self, prompt: str | list[dict]) -> int:
        if isinstance(prompt, str):
            return len(self._tok.encode(prompt, add_special_tokens=True))
        return len(self._tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False))  # fmt: skip

    def ids(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))


_LIVE: weakref.WeakSet[ServerTokenizer] = weakref.WeakSet()


class ServerTokenizer:
    source = "the server's POST /tokenize"

    def __init__(self, base_url: str, model: str, *, timeout: float = 60.0) -> None:
        self._base_url, self._timeout = base_url, timeout
        self._client = self._open()
        self._model = model
        self._cache: dict[str, int] = {}
        _LIVE.add(self)

    def _reopen(self) -> None:
        """In a forked client worker: connections of its own (the parent's sockets are not shared).
        Multi-turn sessions tokenize their history there, during the round."""
        self._client = self._open()

    def _open(self) -> httpx.Client:
        return httpx.Client(base_url=self._base_url, timeout=self._timeout, headers=auth_headers(self._base_url))

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
        _refuse_auth("POST /tokenize", r)
        if r.status_code != 200:
            raise TokenizerError(f"POST /tokenize -> {r.status_code}: {redact(r.text)[:200]}")
        return [int(t) for t in r.json()["tokens"]]

    def _post(self, body: dict) -> int:
        body = {"model": self._model, **body}
        key = json.dumps(body, sort_keys=True)
        if key not in self._cache:
            r = self._client.post("/tokenize", json=body)
            _refuse_auth("POST /tokenize", r)
            if r.status_code != 200:
                raise TokenizerError(f"POST /tokenize -> {r.status_code}: {redact(r.text)[:200]}")
            self._cache[key] = int(r.json()["count"])
        return self._cache[key]


def _after_fork() -> None:
    for tok in list(_LIVE):
        tok._reopen()


os.register_at_fork(after_in_child=_after_fork)
