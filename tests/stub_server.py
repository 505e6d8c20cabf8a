"""STUB OpenAI-style streaming server - a test double, not vLLM.

It exists only to provoke what a real server will not do on demand: an empty
role chunk long before the first token, an error event mid-stream, a dropped
connection, a stall past the client's timeout. The behaviour is chosen by the
first path segment of the base URL (`http://127.0.0.1:PORT/<mode>`):

  ok        role chunk, then `tokens` text chunks, usage, [DONE]
  role200   empty role chunk at once, first content 200 ms later
  http500   HTTP 500 with a JSON error body (GET .../health stays 200: the engine lives)
  dead      HTTP 500 for every request and 503 on GET .../health: an engine that is gone
  error500  one token, then `data: {"error": {"code": 500, ...}}`, then close
  drop      one token, then the TCP connection is closed mid-body
  hang      role chunk, then silence (the client must time out)
  stamp     like ok, but each chunk's text is `<server_t>`: time.perf_counter()
            just before the write (CLOCK_MONOTONIC: comparable across processes), the
            first one followed by `[recv_t]`, when the request had been read;
            `stamp_F_I` waits F ms before the first chunk and I ms between chunks
  vllm      a vLLM-like engine for the FAKE STACK (tests/fake_stack.py), when the server was given a
            `FakeEngine`: `/tokenize` answers `count` and `tokens` (one id per word), completions
            carry `usage.prompt_tokens` (words) and `prompt_tokens_details.cached_tokens` (full
            blocks found in its `FakeStore`), and `/metrics` is Prometheus text with vLLM's counter
            and histogram names (prefix-cache and external hits, prompt tokens, TTFT/E2E, block size)
  master    a Mooncake master stand-in, when the server was given a `FakeStore`: `GET .../health`
            answers JSON `{"service_ready": true}`, `/metrics` the master's gauges and counters
            (`master_key_count`, `master_allocated_bytes`, ...)

In every mode `POST .../tokenize` answers `{"count": <whitespace-separated words>}` and
`GET .../metrics` 404 (a server without metrics), so `kvbench run` can be pointed at it; except
`gateway` (streams as `ok`), an OpenAI-compatible endpoint that is not vLLM: `/tokenize` is an HTML
404 page and `/metrics` a 200 JSON page, neither of them what kvbench can use.
`StubServer.requests` records (method, path, Authorization header) of each request.
`GET /stats` answers the completions served since the last `GET /stats?reset=1` and how many were
in flight on average (time-weighted, from the first one's arrival to the last one's end).

Runs in a thread (`StubServer`) for tests or as a process for benchmarks:
`python tests/stub_server.py` prints its port on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import zlib

ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}


def _chunk(text: str, chat: bool, **extra: object) -> dict:
    choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
    return {"choices": [choice], **extra}


def _usage(prompt_tokens: int, completion: int, cached: int = 0) -> dict:
    return {
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


class FakeStore:
    """The Mooncake store of the fake stack: block keys, and what the master's /metrics shows."""

    def __init__(self, block_bytes: int = 16 * 1024, capacity_bytes: int = 1 << 30) -> None:
        self.keys: set[int] = set()
        self.block_bytes = block_bytes
        self.capacity_bytes = capacity_bytes
        self.put_requests = 0
        self.get_requests = 0
        self.ready = True  # what GET /health's service_ready says

    def metrics(self) -> str:
        gauges = {
            "master_key_count": len(self.keys),
            "master_allocated_bytes": len(self.keys) * self.block_bytes,
            "master_total_capacity_bytes": self.capacity_bytes,
        }
        counters = {
            "master_put_start_requests": self.put_requests,
            "master_get_replica_list_requests": self.get_requests,
            "master_evicted_key_count": 0,
            "master_evicted_size_bytes": 0,
            "master_put_start_alloc_failures": 0,
            "master_batch_put_start_failed_items": 0,
        }
        lines = [f"# TYPE {k} gauge\n{k} {v}" for k, v in gauges.items()]
        lines += [f"# TYPE {k} counter\n{k}_total {v}" for k, v in counters.items()]
        return "\n".join(lines) + "\n"


class FakeEngine:
    """The vLLM-like engine of the fake stack (mode `vllm`). Tokens are whitespace-separated words;
    local prefix caching is off, so every hit is an external one: the longest run of the prompt's
    full blocks (the block of its last token excluded, as vLLM) already in `store`. With a
    connector (`store` given) it saves every full block of a prompt it served; without one
    (baseline) it reuses nothing. `first_ms`: the wait before the first token of every request."""

    HISTOGRAMS = ("time_to_first_token_seconds", "e2e_request_latency_seconds", "request_prefill_time_seconds",
                  "request_queue_time_seconds")  # fmt: skip

    def __init__(self, store: FakeStore | None, block_size: int = 16, first_ms: float = 0.0, model: str = "tiny"):
        self.store = store
        self.block_size = block_size
        self.first_ms = first_ms
        self.model = model
        self.counters = dict.fromkeys(
            ("prompt_tokens", "prefix_cache_queries", "prefix_cache_hits", "external_prefix_cache_queries",
             "external_prefix_cache_hits", "prompt_tokens_cached", "request_success"),
            0,
        )  # fmt: skip
        self.hist = {h: [0.0, 0] for h in self.HISTOGRAMS}  # name -> [sum, count]

    @staticmethod
    def ids(body: dict) -> list[int]:
        if isinstance(body.get("prompt"), list):  # token ids (trace replay)
            return [int(t) for t in body["prompt"]]
        texts = [body.get("prompt") or ""] + [m.get("content") or "" for m in body.get("messages") or []]
        return [zlib.crc32(w.encode()) % 50_000 for t in texts for w in t.split()]

    def _keys(self, ids: list[int]) -> list[int]:
        keys, h, bs = [], 0, self.block_size
        for i in range(len(ids) // bs):
            h = zlib.crc32(json.dumps([h, ids[i * bs : (i + 1) * bs]]).encode())
            keys.append(h)
        return keys

    def admit(self, body: dict) -> tuple[int, int]:
        """A request arrives: (prompt tokens, cached tokens); the counters move as vLLM's do."""
        ids = self.ids(body)
        n, keys = len(ids), self._keys(ids)
        cached = 0
        if self.store is not None:
            self.store.get_requests += 1
            for k in keys[: max(n - 1, 0) // self.block_size]:
                if k not in self.store.keys:
                    break
                cached += self.block_size
        c = self.counters
        c["prompt_tokens"] += n
        c["prefix_cache_queries"] += n
        c["external_prefix_cache_queries"] += n
        c["external_prefix_cache_hits"] += cached
        c["prompt_tokens_cached"] += cached
        return n, cached

    def finish(self, body: dict, ttft_s: float, e2e_s: float) -> None:
        """A request was served: its blocks saved to the store (with a connector), histograms observed."""
        if self.store is not None:
            self.store.put_requests += 1
            self.store.keys.update(self._keys(self.ids(body)))
        self.counters["request_success"] += 1
        for name, v in (("time_to_first_token_seconds", ttft_s), ("e2e_request_latency_seconds", e2e_s),
                        ("request_prefill_time_seconds", ttft_s), ("request_queue_time_seconds", 0.0)):  # fmt: skip
            self.hist[name][0] += v
            self.hist[name][1] += 1

    def metrics(self) -> str:
        m = f'model_name="{self.model}"'
        lines = [f'# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{block_size="{self.block_size}"}} 1.0']
        lines += [f"# TYPE vllm:{k} counter\nvllm:{k}_total{{{m}}} {v}" for k, v in self.counters.items()]
        for name, (total, count) in self.hist.items():
            lines.append(
                f"# TYPE vllm:{name} histogram\n"
                f'vllm:{name}_bucket{{{m},le="+Inf"}} {count}\n'
                f"vllm:{name}_sum{{{m}}} {total}\nvllm:{name}_count{{{m}}} {count}"
            )
        return "\n".join(lines) + "\n"


class _Conn:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.w = writer

    async def head(self, status: int = 200, ctype: str = "text/event-stream") -> None:
        self.w.write(f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ntransfer-encoding: chunked\r\n\r\n".encode())
        await self.w.drain()

    async def raw(self, data: bytes) -> None:
        self.w.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self.w.drain()

    async def event(self, obj: dict | str) -> None:
        await self.raw(f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode())

    async def end(self) -> None:
        self.w.write(b"0\r\n\r\n")
        await self.w.drain()


async def _health(ok: bool, c: _Conn) -> None:
    await c.head(200 if ok else 503, "application/json")
    await c.raw(b"{}")
    await c.end()


class InFlight:
    """Completions in flight at the server, time-weighted (what a client keeps the server busy with)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ttft_ms: list[float] = []  # request read -> first content chunk written, per request
        self.now = self.served = self.peak = 0
        self.area = 0.0
        self.first: float | None = None
        self.last = 0.0

    def change(self, d: int) -> None:
        t = time.perf_counter()
        if self.first is None:
            self.first = t
        else:
            self.area += self.now * (t - self.last)
        self.now += d
        self.last = t
        self.peak = max(self.peak, self.now)
        self.served += d < 0

    def report(self) -> dict:
        span = self.last - self.first if self.first is not None else 0.0
        return {"served": self.served, "inflight_avg": self.area / span if span else 0.0, "inflight_peak": self.peak,
                "span_s": span, "server_ttft_ms": self.ttft_ms}  # fmt: skip


INFLIGHT = InFlight()  # per process: the benchmark runs one stub process


async def _respond(
    mode: str, body: dict, c: _Conn, tokens: int, recv_t: float = 0.0, engine: FakeEngine | None = None
) -> bool:
    """Write one response; return False when the connection must close."""
    chat = "messages" in body
    n = int(body.get("max_tokens") or tokens)
    if mode == "vllm" and engine is not None:
        await _engine_respond(engine, body, c, n, recv_t)
        return True
    if mode in ("http500", "dead"):
        await c.head(500, "application/json")
        await c.raw(json.dumps({"error": {"message": "stub internal error", "code": 500}}).encode())
        await c.end()
        return True
    await c.head()
    if mode.startswith("stamp"):  # stamp[_<first ms>_<inter-token ms>]
        first_ms, itl_ms = (mode.split("_") + ["0", "0"])[1:3]
        first_s, itl_s = float(first_ms) / 1e3, float(itl_ms) / 1e3
        for i in range(n):
            await asyncio.sleep(first_s if i == 0 else itl_s)
            t = time.perf_counter()
            await c.event(_chunk(f"<{t:.9f}>" + (f"[{recv_t:.9f}]" if i == 0 else ""), chat))
            if i == 0:
                INFLIGHT.ttft_ms.append((t - recv_t) * 1e3)
    else:
        if chat or mode in ("role200", "hang"):
            await c.event(ROLE)
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "role200":
            await asyncio.sleep(0.2)
        await c.event(_chunk("Hello", chat))
        INFLIGHT.ttft_ms.append((time.perf_counter() - recv_t) * 1e3)
        if mode == "error500":
            await c.event({"error": {"object": "error", "message": "stub: engine died", "code": 500}})
            return False
        if mode == "drop":
            return False
        for i in range(1, n):
            await c.event(_chunk(f" w{i}", chat))
    await c.event(_usage(int(body.get("_prompt_tokens", 10)), n))
    await c.event("[DONE]")
    await c.end()
    return True


async def _engine_respond(engine: FakeEngine, body: dict, c: _Conn, n: int, recv_t: float) -> None:
    chat = "messages" in body
    prompt_tokens, cached = engine.admit(body)
    await c.head()
    if chat:
        await c.event(ROLE)
    await asyncio.sleep(engine.first_ms / 1e3)
    await c.event(_chunk("Hello", chat))
    ttft = time.perf_counter() - recv_t
    for i in range(1, n):
        await c.event(_chunk(f" w{i}", chat))
    engine.finish(body, ttft, time.perf_counter() - recv_t)
    await c.event(_usage(prompt_tokens, n, cached))
    await c.event("[DONE]")
    await c.end()


async def _fake_stack_page(mode: str, path: str, body: dict, c: _Conn, engine: FakeEngine | None,
                           store: FakeStore | None) -> bool:  # fmt: skip
    """The fake stack's non-completion pages (modes `vllm` and `master`); False: not one of them."""
    if mode == "master" and store is not None:
        if path.endswith("/health"):
            await _json(c, 200, {"service_ready": store.ready})
            return True
        if path.endswith("/metrics"):
            await _text(c, 200, store.metrics())
            return True
    if mode == "vllm" and engine is not None:
        if path.endswith("/tokenize"):
            ids = engine.ids(body)
            await _json(c, 200, {"count": len(ids), "tokens": ids, "max_model_len": 32768})
            return True
        if path.endswith("/metrics"):
            await _text(c, 200, engine.metrics())
            return True
    return False


def _header(lines: list[str], name: str) -> str | None:
    return next((x.split(":", 1)[1].strip() for x in lines if x.lower().startswith(f"{name}:")), None)


async def _json(c: _Conn, status: int, obj: dict) -> None:
    await c.head(status, "application/json")
    await c.raw(json.dumps(obj).encode())
    await c.end()


async def _text(c: _Conn, status: int, page: str) -> None:
    await c.head(status, "text/plain; version=0.0.4")
    await c.raw(page.encode())
    await c.end()


async def _html(c: _Conn, status: int, page: str) -> None:
    await c.head(status, "text/html")
    await c.raw(page.encode())
    await c.end()


def _words(body: dict) -> int:
    if isinstance(body.get("prompt"), list):  # token ids (trace replay)
        return len(body["prompt"])
    texts = [body.get("prompt") or ""] + [m.get("content") or "" for m in body.get("messages") or []]
    return sum(len(t.split()) for t in texts)


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tokens: int,
    seen: list | None = None,
    engine: FakeEngine | None = None,
    store: FakeStore | None = None,
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            recv_t = time.perf_counter()
            lines = head.decode().split("\r\n")
            method, path = lines[0].split()[:2]
            length = int(_header(lines, "content-length") or 0)
            body = json.loads(await reader.readexactly(length)) if length else {}
            if seen is not None:
                seen.append((method, path, _header(lines, "authorization")))
            mode = path.strip("/").split("/")[0] or "ok"
            if (engine or store) and await _fake_stack_page(mode, path, body, _Conn(writer), engine, store):
                continue
            if path.endswith("/health"):  # healthy, except the engine of `dead` (every request 500 too)
                await _health(mode != "dead", _Conn(writer))
                continue
            if path.split("?")[0].endswith("/stats"):
                await _json(_Conn(writer), 200, INFLIGHT.report())
                if path.endswith("reset=1"):
                    INFLIGHT.reset()
                continue
            if path.endswith("/tokenize") and mode == "gateway":
                await _html(_Conn(writer), 404, "<html><body><h1>404 Not Found</h1></body></html>")
                continue
            if path.endswith("/metrics") and mode == "gateway":
                await _json(_Conn(writer), 200, {"detail": "metrics are behind the gateway"})
                continue
            if path.endswith("/tokenize"):
                await _json(_Conn(writer), 200, {"count": _words(body)})
                continue
            # /metrics: a server without metrics; the reset: vLLM without VLLM_SERVER_DEV_MODE
            if path.endswith("/metrics") or path.split("?")[0].endswith("/reset_prefix_cache"):
                await _json(_Conn(writer), 404, {"detail": "Not Found"})
                continue
            INFLIGHT.change(+1)
            try:
                keep = await _respond(mode, body, _Conn(writer), tokens, recv_t, engine)
            finally:
                INFLIGHT.change(-1)
            if not keep:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


class StubServer:
    """Run the stub on 127.0.0.1 in a background thread: `with StubServer() as s: s.url('drop')`."""

    def __init__(
        self, tokens: int = 4, engine: FakeEngine | None = None, store: FakeStore | None = None, port: int = 0
    ) -> None:
        self.tokens = tokens
        self.engine = engine  # mode `vllm` (the fake stack's engine)
        self.store = store  # mode `master` (the fake stack's master)
        self.connections = 0  # TCP connections accepted so far
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self.port = port  # 0: any free one
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        return _handle(reader, writer, self.tokens, self.requests, self.engine, self.store)

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}"

    def __enter__(self) -> StubServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stub server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        def shutdown() -> None:
            if self._server is not None:
                self._server.close()  # the port stops accepting at once
            for task in asyncio.all_tasks(self._loop):
                task.cancel()  # e.g. a "hang" response still sleeping
            self._loop.call_later(0.1, self._loop.stop)

        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(shutdown)
            self._thread.join(5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


async def _serve_forever(tokens: int) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(r, w, tokens), "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    # `python tests/stub_server.py [TOKENS] [--uvloop]`: prints its port; uvloop raises its ceiling
    # (benchmarks/capacity.py: the server must outrun the clients it measures)
    tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.run(_serve_forever(tokens))
    else:
        asyncio.run(_serve_forever(tokens))
