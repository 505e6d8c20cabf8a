"""Streaming OpenAI-compatible client that times one request on a monotonic clock.

TTFT is send -> first chunk carrying non-empty generated text. vLLM's first chat
chunk holds only `{"role": "assistant", "content": ""}`: it is not a token and
does not stop the TTFT clock. Token counts come from the server's `usage`.

Over plain HTTP the clock points are wire times (see wire.py): send is the first
write of the request, each chunk is timed by its kernel arrival stamp. Without
them (https, a non-stamping transport) they are user-space perf_counter() times.

An endpoint's API key (`kvbench run`, from the environment) is kept here, in memory
only, by server origin: `auth_headers(url)` gives `Authorization: Bearer ...` for
that server (completions, /tokenize, /metrics, /health) and nothing for another one
(the Mooncake master). `redact()` keeps it out of every recorded message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from httpx_sse import SSEError, aconnect_sse

from harness.client.wire import DRAIN_S, WireClient, WireError
from harness.config import Api

_API_KEYS: dict[str, str] = {}  # server origin -> API key; never written anywhere


def _origin(url: str) -> str:
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}:{u.port or {'http': 80, 'https': 443}.get(u.scheme)}"


def set_api_key(url: str, key: str | None) -> None:
    """Send `Authorization: Bearer <key>` with every request to the server of `url` (None: stop)."""
    if key:
        _API_KEYS[_origin(url)] = key
    else:
        _API_KEYS.pop(_origin(url), None)


def auth_headers(url: str) -> dict[str, str]:
    """Headers for a request to `url`: the Authorization of its server's key, if one was set."""
    key = _API_KEYS.get(_origin(url)) if _API_KEYS else None
    return {"Authorization": f"Bearer {key}"} if key else {}


def redact(text: str) -> str:
    """`text` without any API key in it (a server may echo the header back in an error body).
    Redact before truncating: a cut key would no longer match."""
    for key in _API_KEYS.values():
        text = text.replace(key, "<redacted>")
    return text


@dataclass(frozen=True)
class RequestSettings:
    model: str
    api: Api = "completions"
    max_tokens: int = 16
    temperature: float = 0.0
    timeout: float = 120.0
    ignore_eos: bool = True  # fixed output length, so rounds compare like with like


@dataclass
class RequestResult:
    """One request as it went; becomes one `requests.csv` row."""

    ok: bool = False
    http_status: int | None = None
    error_class: str = ""
    error_message: str = ""
    send_time: float = 0.0  # perf_counter seconds
    ttft_ms: float | None = None
    # How long the first token waited in this host before the harness parsed it:
    # near zero unless the client itself is saturated.
    first_token_lag_ms: float | None = None
    # Longest time response bytes sat in the kernel before the client read them
    # (wire-stamped connections only). Small unless the client cannot keep up.
    read_delay_ms: float | None = None
    e2e_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    text: str = ""
    output_ids: list[int] = field(default_factory=list)  # generated token ids, as the server reports them
    prompt_ids: list[int] | None = None  # the prompt as the server tokenized it (vLLM, first chunk)

    @property
    def output_hash(self) -> str:
        """Short fingerprint of the generated tokens (of the text when the server sent no ids):
        equal outputs of the same prompt cold/warm and with/without the cache show the reused
        KV gave the same result."""
        payload = " ".join(map(str, self.output_ids)) if self.output_ids else "text:" + self.text
        return hashlib.blake2b(payload.encode(), digest_size=8).hexdigest() if self.ok else ""

    @property
    def tpot_ms(self) -> float | None:
        """Time per output token after the first."""
        if self.ttft_ms is None or self.e2e_ms is None or not self.completion_tokens:
            return None
        if self.completion_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.completion_tokens - 1)


class StreamError(Exception):
    """The server reported an error inside an otherwise 200 stream."""


class IncompleteStream(Exception):
    """The stream ended without its final `[DONE]` event."""


def request_body(prompt: str | list[dict] | list[int], s: RequestSettings) -> tuple[str, dict]:
    body: dict = {
        "model": s.model,
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        # vLLM then streams each chunk's generated token ids (they fingerprint the output for the
        # reuse-fidelity check) and the prompt's ids once (what exact expected reuse is computed
        # from); other servers ignore it.
        "return_token_ids": True,
    }
    if s.ignore_eos:
        body["ignore_eos"] = True
    if s.api == "chat":
        return "/v1/chat/completions", {**body, "messages": prompt}
    return "/v1/completions", {**body, "prompt": prompt}


def _chunk_ids(chunk: dict, key: str) -> list[int]:
    choices = chunk.get("choices") or []
    ids = chunk.get(key) or (choices[0].get(key) if choices else None)  # chat: on the chunk; completions: choice
    return ids if isinstance(ids, list) else []


Client = WireClient | httpx.AsyncClient


def open_client(base_url: str, max_connections: int, timeout: float, headers: dict[str, str]) -> Client:
    """The harness's HTTP client for one round: the wire-stamped one for plain HTTP (its own
    connections, no proxy: a benchmark must not time one), httpx for https."""
    connect = min(10.0, timeout)
    if base_url.startswith("http://"):
        return WireClient(base_url, max_connections, connect, headers)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=httpx.Timeout(timeout, connect=connect), headers=headers
    )


class HTTPStatusError(Exception):
    """A non-200 answer (the wire path; httpx's own on the https path: the same class name)."""


class _Events:
    """One response's events -> its RequestResult: TTFT, inter-token times, text, ids, usage."""

    def __init__(self, res: RequestResult) -> None:
        self.res = res
        self.t0 = res.send_time
        self.last_token_t: float | None = None
        self.done_t: float | None = None
        self.error_body = b""

    def on_sent(self, t: float) -> None:
        """The wire's send time: just before the request's first byte went to the kernel."""
        self.res.send_time = self.t0 = t

    def on_status(self, status: int) -> None:
        self.res.http_status = status

    def on_error_body(self, body: bytes) -> None:
        self.error_body = body

    def on_event(self, data: str, arrived: float, seen: float) -> bool:
        res = self.res
        now = arrived if arrived >= self.t0 else seen
        if data.strip() == "[DONE]":
            self.done_t = now
            return True
        chunk = json.loads(data)
        if "error" in chunk:
            raise StreamError(redact(json.dumps(chunk["error"]))[:300])
        choices = chunk.get("choices")
        if choices:
            c = choices[0]
            if "text" in c:
                text = c.get("text") or ""
            else:
                delta = c.get("delta") or {}
                text = (delta.get("content") or "") + (delta.get("reasoning_content") or "")
            if text:
                if self.last_token_t is None:
                    res.ttft_ms = (now - self.t0) * 1e3
                    res.first_token_lag_ms = (seen - now) * 1e3
                else:
                    res.itl_ms.append((now - self.last_token_t) * 1e3)
                self.last_token_t = now
                res.text += text
        res.output_ids.extend(_chunk_ids(chunk, "token_ids"))
        if res.prompt_ids is None:
            res.prompt_ids = _chunk_ids(chunk, "prompt_token_ids") or None
        if chunk.get("usage"):
            _read_usage(chunk["usage"], res)
        return False

    def finish(self) -> None:
        if self.res.http_status != 200:
            detail = redact(self.error_body.decode(errors="replace"))[:300]
            raise HTTPStatusError(f"HTTP {self.res.http_status}: {detail}")
        if self.done_t is None:
            raise IncompleteStream("stream closed before [DONE]")
        self.res.e2e_ms = (self.done_t - self.t0) * 1e3


FAULTS = (httpx.HTTPError, SSEError, StreamError, IncompleteStream, HTTPStatusError, WireError, json.JSONDecodeError)


async def send(client: Client, prompt: str | list[dict] | list[int], s: RequestSettings) -> RequestResult:
    """Send one streaming request; never raises for server or network faults."""
    res = RequestResult()
    path, body = request_body(prompt, s)
    res.send_time = time.perf_counter()
    try:
        async with asyncio.timeout(s.timeout):
            if isinstance(client, WireClient):
                await _stream_wire(client, path, json.dumps(body).encode(), res)
            else:
                await _stream_httpx(client, path, body, res)
        res.ok = True
    except TimeoutError:
        res.error_class, res.error_message = "Timeout", f"no complete response within {s.timeout:g} s"
    except FAULTS as e:
        res.error_class, res.error_message = type(e).__name__, redact(str(e) or repr(e))[:300]
    if res.e2e_ms is None:  # failed: time until the failure
        res.e2e_ms = (time.perf_counter() - res.send_time) * 1e3
    return res


async def _stream_wire(client: WireClient, path: str, body: bytes, res: RequestResult) -> None:
    events = _Events(res)
    conn = await client.connection()
    try:
        await conn.request(client.head(path, body), body, events)
    finally:
        client.release(conn)
    res.read_delay_ms = conn.max_read_delay * 1e3
    events.finish()


async def _stream_httpx(client: httpx.AsyncClient, path: str, body: dict, res: RequestResult) -> None:
    """https: httpx, events timed in user space when Python reads them."""
    events = _Events(res)
    async with aconnect_sse(client, "POST", path, json=body) as source:
        events.on_status(source.response.status_code)
        if source.response.status_code != 200:
            events.on_error_body(await source.response.aread())
            events.finish()
        stream = source.aiter_sse()
        async for event in stream:
            seen = time.perf_counter()
            if events.on_event(event.data, seen, seen):
                break
        if events.done_t is not None:
            await _drain(stream)
    events.finish()


async def _drain(events: AsyncIterator) -> None:
    """Read what follows [DONE] (the body's end) so the connection goes back to the
    pool instead of being closed; the request is complete, so nothing here fails it."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError, SSEError):
        async with asyncio.timeout(DRAIN_S):
            async for _ in events:
                pass


def _read_usage(usage: dict, res: RequestResult) -> None:
    res.prompt_tokens = usage.get("prompt_tokens")
    res.completion_tokens = usage.get("completion_tokens")
    details = usage.get("prompt_tokens_details") or {}
    res.cached_tokens = details.get("cached_tokens")
