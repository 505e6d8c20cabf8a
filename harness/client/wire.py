"""The timed path: a lean HTTP/1.1 streaming client on wire-stamped sockets.

Why wire stamps: one event loop serves every stream of a round. Under load a chunk can sit in
the socket buffer before Python gets to it, and a TTFT stamped in user space would include that
queueing. Linux stamps each received segment (SO_TIMESTAMPNS); the client times tokens with that
stamp and reports the client-side waits separately (`first_token_lag_ms`, `read_delay_ms`), so a
saturated client stays visible instead of skewing TTFT.

Why not httpx here: a profile of a round against an instant server (benchmarks/capacity.py)
put three quarters of the client's time in httpx, httpcore, h11 and httpx-sse bookkeeping per
request and per chunk. This module does only what a streaming completions request needs: write
one POST, parse the response with httptools (llhttp, C), split server-sent events, and hand
each event, with the arrival stamp of the read that completed it, to the request's `Listener`,
all inside the event loop's read callback: no task wakes up per chunk. Sockets are read as soon
as they are readable, so each chunk normally gets its own stamp; chunks that arrive before the
loop polls again are merged by the kernel under the later stamp (never an earlier one).

Plain http:// only (what the harness uses against its stacks and on loopback); https endpoints
use httpx in client.py, with user-space stamps. Off Linux the stamps are read times.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from collections import deque
from typing import Protocol
from urllib.parse import urlsplit

import httptools

# Linux asm-generic value (SO_TIMESTAMPNS_OLD): Python's socket module does not
# export it. The control message carries a struct timespec of two 64-bit longs.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
KERNEL_STAMPS = sys.platform == "linux" and struct.calcsize("l") == 8
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if KERNEL_STAMPS else 0
_READ_SIZE = 256 * 1024
# A stamp older than this (or from the future) means the wall clock was stepped
# between arrival and read: fall back to the read time rather than trust it.
_MAX_AGE_NS = 600 * 1_000_000_000
DRAIN_S = 1.0  # after [DONE], how long to wait for the body's end before dropping the connection


def arrival_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    """perf_counter() time at which the data of one recvmsg() reached the kernel.

    The kernel stamp is CLOCK_REALTIME; its age is measured against the wall clock
    right now and subtracted from the monotonic clock, so no offset is carried
    across time (a clock step can only spoil reads that straddle it)."""
    now = time.perf_counter()
    if not ancillary:
        return now
    wall = time.time_ns()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            age = wall - (sec * 1_000_000_000 + nsec)
            if 0 <= age < _MAX_AGE_NS:
                return now - age / 1e9
    return now


# Errors carry httpx's class names: they are what requests.csv's error_class records, and the
# runner's list of faults that may mean the server is gone is written in them.
class WireError(Exception):
    pass


class ConnectError(WireError):
    pass


class ReadError(WireError):
    pass


class WriteError(WireError):
    pass


class RemoteProtocolError(WireError):
    pass


class Listener(Protocol):
    """What a request's response is handed to, inside the read callback."""

    def on_sent(self, t: float) -> None:
        """perf_counter() just before the request's first byte was written."""
        ...

    def on_status(self, status: int) -> None: ...

    def on_event(self, data: str, arrived: float, seen: float) -> bool:
        """One server-sent event's data; True once it was the stream's end (`[DONE]`)."""
        ...

    def on_error_body(self, body: bytes) -> None:
        """The body of a non-200 response."""
        ...


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.loop = loop
        self.reusable = False
        self.request_tx = 0.0  # perf_counter() just before the request's first byte went out
        self.max_read_delay = 0.0  # longest time response bytes sat in the kernel before being read
        self._listener: Listener | None = None
        self._done: asyncio.Future[None] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._status = 0
        self._buffer = b""  # event bytes not yet terminated by a blank line
        self._error_body: list[bytes] = []
        self._arrived = 0.0
        self._seen = 0.0
        self._stream_done = False
        self._headers_done = False
        self._drain: asyncio.TimerHandle | None = None
        self._reading = False

    # ---------------------------------------------------------------- request

    async def request(self, head: bytes, body: bytes, listener: Listener) -> None:
        """Send the request and return once the response is complete (or has failed)."""
        self._listener, self._done = listener, self.loop.create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._status, self._buffer, self._error_body = 0, b"", []
        self._stream_done = self._headers_done = False
        self.max_read_delay = 0.0
        self.reusable = False
        self.request_tx = time.perf_counter()
        listener.on_sent(self.request_tx)
        await self._write(head + body)
        self._start_reading()
        try:
            await self._done
        finally:
            self._stop_reading()
            if self._drain is not None:
                self._drain.cancel()
                self._drain = None
            self._listener = self._done = self._parser = None

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[self.sock.send(view) :]
                except BlockingIOError:
                    ready = self.loop.create_future()
                    self.loop.add_writer(self.sock.fileno(), ready.set_result, None)
                    try:
                        await ready
                    finally:
                        self.loop.remove_writer(self.sock.fileno())
        except OSError as e:
            raise WriteError(str(e) or type(e).__name__) from None

    def _start_reading(self) -> None:
        if not self._reading:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.sock.fileno())
            self._reading = False

    # ---------------------------------------------------------------- the read callback

    def _on_readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(_READ_SIZE, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._fail(ReadError(str(e) or type(e).__name__))
            return
        if not data:
            self._fail(self._eof_error())
            return
        self._arrived = arrival_time(ancillary)
        self._seen = time.perf_counter()
        self.max_read_delay = max(self.max_read_delay, self._seen - self._arrived)
        try:
            assert self._parser is not None
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as e:
            self._fail(RemoteProtocolError(f"malformed HTTP response: {e}"))

    def _eof_error(self) -> WireError:
        if not self._headers_done:
            return RemoteProtocolError("Server disconnected without sending a response.")
        return RemoteProtocolError("peer closed connection without sending complete message body")

    def _fail(self, error: BaseException) -> None:
        self.reusable = False
        self._stop_reading()
        if self._done is not None and not self._done.done():
            self._done.set_exception(error)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        assert self._parser is not None and self._listener is not None
        self._headers_done = True
        self._status = self._parser.get_status_code()
        self._listener.on_status(self._status)

    def on_body(self, body: bytes) -> None:
        if self._status != 200:
            self._error_body.append(body)
            return
        if self._stream_done or self._done is None or self._done.done():
            return  # after [DONE] (the body's end is all that should come), or after a failure
        buffer = self._buffer + body
        if b"\r" in buffer:  # SSE allows CRLF line ends; vLLM sends LF
            buffer = buffer.replace(b"\r\n", b"\n")
        *events, self._buffer = buffer.split(b"\n\n")
        assert self._listener is not None
        for event in events:
            data = _event_data(event)
            try:
                end = data is not None and self._listener.on_event(data, self._arrived, self._seen)
            except Exception as e:  # the listener's verdict on an event (an error event, bad JSON)
                self._fail(e)
                return
            if end:
                self._stream_done = True
                # The request is complete; wait a little for the body's end so the connection
                # can be reused, then drop it (a server may hold the stream open after [DONE]).
                self._drain = self.loop.call_later(DRAIN_S, self._finish, False)
                return

    def on_message_complete(self) -> None:
        assert self._parser is not None and self._listener is not None
        if self._status != 200:
            self._listener.on_error_body(b"".join(self._error_body))
        self._finish(self._parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        self.reusable = keep_alive and self._status == 200 and self._stream_done
        self._stop_reading()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def close(self) -> None:
        self._stop_reading()
        self.sock.close()


def _event_data(event: bytes) -> str | None:
    """The `data:` of one server-sent event (several data lines join with a newline)."""
    if event.startswith(b"data:") and b"\n" not in event:  # the common case: one data line
        return event[5:].lstrip(b" ").decode()
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines).decode() if lines else None


class WireClient:
    """Plain-HTTP connections to one server, at most `max_connections`, kept alive between
    requests. The caller bounds its requests in flight (the runner's semaphore); a request that
    finds every connection busy waits for one."""

    def __init__(
        self, base_url: str, max_connections: int, connect_timeout: float, headers: dict[str, str] | None = None
    ) -> None:
        u = urlsplit(base_url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"WireClient is for http:// URLs, got {base_url!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        host = self.host if self.port == 80 else f"{self.host}:{self.port}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._headers = (
            f"Host: {host}\r\nUser-Agent: kvbench\r\nAccept: text/event-stream\r\n"
            f"Content-Type: application/json\r\n{extra}"
        )
        self._idle: deque[Connection] = deque()
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def head(self, path: str, body: bytes) -> bytes:
        return f"POST {self.prefix}{path} HTTP/1.1\r\n{self._headers}Content-Length: {len(body)}\r\n\r\n".encode()

    async def connection(self) -> Connection:
        """An idle connection, a new one, or the next one released."""
        while True:
            while self._idle:
                conn = self._idle.pop()  # the most recently used: warm, least likely closed by the server
                if _still_open(conn.sock):
                    return conn
                conn.close()
                self._open -= 1
            if self._open < self.max_connections:
                self._open += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._open -= 1
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def release(self, conn: Connection) -> None:
        if conn.reusable:
            self._idle.append(conn)
        else:
            conn.close()
            self._open -= 1
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                break

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
                error: OSError = OSError(f"no address found for {self.host}")
                for family, kind, proto, _, address in infos:
                    sock = socket.socket(family, kind, proto)
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if KERNEL_STAMPS:
                        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    try:
                        await loop.sock_connect(sock, address)
                    except OSError as e:
                        sock.close()
                        error = e
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    return Connection(sock, loop)
                raise error
        except TimeoutError:
            raise ConnectError(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as e:
            raise ConnectError(str(e) or type(e).__name__) from None

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()
        self._open = 0

    async def __aenter__(self) -> WireClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _still_open(sock: socket.socket) -> bool:
    """An idle keep-alive connection the server has not closed (nothing readable while idle)."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # end of stream, or bytes nobody asked for
