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

ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}


def _chunk(text: str, chat: bool, **extra: object) -> dict:
    choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
    return {"choices": [choice], **extra}


def _usage(prompt_tokens: int, completion: int) -> dict:
    return {
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


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


async def _respond(mode: str, body: dict, c: _Conn, tokens: int, recv_t: float = 0.0) -> bool:
    """Write one response; return False when the connection must close."""
    chat = "messages" in body
    n = int(body.get("max_tokens") or tokens)
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


def _header(lines: list[str], name: str) -> str | None:
    return next((x.split(":", 1)[1].strip() for x in lines if x.lower().startswith(f"{name}:")), None)


async def _json(c: _Conn, status: int, obj: dict) -> None:
    await c.head(status, "application/json")
    await c.raw(json.dumps(obj).encode())
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
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tokens: int, seen: list | None = None
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
            if path.endswith("/metrics"):
                await _json(_Conn(writer), 404, {"detail": "Not Found"})
                continue
            INFLIGHT.change(+1)
            try:
                keep = await _respond(mode, body, _Conn(writer), tokens, recv_t)
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

    def __init__(self, tokens: int = 4) -> None:
        self.tokens = tokens
        self.connections = 0  # TCP connections accepted so far
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        return _handle(reader, writer, self.tokens, self.requests)

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}"

    def __enter__(self) -> StubServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stub server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        def shutdown() -> None:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()  # e.g. a "hang" response still sleeping
            self._loop.call_later(0.1, self._loop.stop)

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(5)


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
