"""Wire-time stamps for the client: when a request's bytes are handed to the kernel
and when each response read's bytes reached this host.

Why: one event loop parses every stream of a round. Under load a chunk can sit in
the socket buffer for milliseconds before Python gets to it, and a TTFT stamped
in user space would include that queueing (at 64 concurrent streams on 2 cores,
about 11 ms p50). Linux stamps each received segment (SO_TIMESTAMPNS); the client
times tokens with that stamp, and reports the client-side waits separately
(`first_token_lag_ms`, `read_delay_ms`) so a saturated client stays visible
instead of skewing TTFT.

Sockets are read in the event loop's I/O callback, as soon as they are readable,
so each chunk normally gets its own stamp. Chunks that arrive before the loop
gets to poll again are merged by the kernel under the stamp of the last one, so
a stamp is never earlier than the true arrival: at worst a token is stamped with
the arrival of a chunk that came right after it.

This is an httpcore network backend for plain-HTTP connections (what the harness
uses on loopback); https endpoints keep httpx's default transport and user-space
stamps. Off Linux the stamps are user-space times taken when the socket is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import select
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import httpcore
import httpx

# Linux asm-generic value (SO_TIMESTAMPNS_OLD): Python's socket module does not
# export it. The control message carries a struct timespec of two 64-bit longs.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
KERNEL_STAMPS = sys.platform == "linux" and struct.calcsize("l") == 8
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if KERNEL_STAMPS else 0
_READ_SIZE = 64 * 1024
_READ_AHEAD = 1024 * 1024  # stop reading ahead of the parser beyond this many bytes
# A stamp older than this (or from the future) means the wall clock was stepped
# between arrival and read: fall back to the read time rather than trust it.
_MAX_AGE_NS = 600 * 1_000_000_000


def arrival_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    """perf_counter() time at which the data of one recvmsg() reached the kernel.

    The kernel stamp is CLOCK_REALTIME; its age is measured against the wall clock
    right now and subtracted from the monotonic clock, so no offset is carried
    across time (a clock step can only spoil reads that straddle it)."""
    now = time.perf_counter()
    wall = time.time_ns()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            age = wall - (sec * 1_000_000_000 + nsec)
            if 0 <= age < _MAX_AGE_NS:
                return now - age / 1e9
    return now


@contextlib.contextmanager
def _mapped(timeout_error: type[Exception], os_error: type[Exception]) -> Iterator[None]:
    """Raise httpcore's exceptions, which httpx maps to its own (ReadError, ...)."""
    try:
        yield
    except TimeoutError as e:  # before OSError: TimeoutError is one
        raise timeout_error(str(e) or "timed out") from e
    except OSError as e:
        raise os_error(str(e) or type(e).__name__) from e


class StampedStream(httpcore.AsyncNetworkStream):
    """A non-blocking TCP socket read eagerly with recvmsg(), every read keeping its arrival stamp.

    Reads happen in the event loop's I/O callback as soon as the socket is readable,
    not when a busy task next asks: each chunk is then read (and stamped) on its
    own, instead of piling up behind the next one in the socket buffer, where the
    kernel merges them under the later stamp. read() hands the chunks out in order.

    `request_tx`: perf_counter() just before the first write of the current request.
    `last_rx`: arrival time of the bytes returned by the latest read(). httpcore reads
    only when its parser needs more bytes, so when an SSE event comes out of the
    parser, the latest read is the one that completed it.
    `max_read_delay`: longest time, in seconds, bytes of the current request's
    response sat in the kernel before being read: the client's polling delay."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self.request_tx: float | None = None
        self.last_rx: float | None = None
        self.max_read_delay = 0.0
        self._writing = False  # a write came after the last read: same request
        self._chunks: deque[tuple[bytes, float]] = deque()  # read ahead: (data, arrival)
        self._buffered = 0
        self._eof = False
        self._error: OSError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading = False
        self._resume_reading()

    def _resume_reading(self) -> None:
        if not self._reading and not self._eof and self._error is None and self._buffered < _READ_AHEAD:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data, ancillary, _, _ = self._sock.recvmsg(_READ_SIZE, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._error = e
        else:
            if data:
                arrived = arrival_time(ancillary)
                self.max_read_delay = max(self.max_read_delay, time.perf_counter() - arrived)
                self._chunks.append((data, arrived))
                self._buffered += len(data)
            else:
                self._eof = True
        if self._eof or self._error is not None or self._buffered >= _READ_AHEAD:
            self._pause_reading()  # resumed by read() once the buffer drains
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._writing = False
        if not self._chunks and not self._eof and self._error is None:
            with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
                async with asyncio.timeout(timeout):
                    self._waiter = self._loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
        if self._chunks:
            data, self.last_rx = self._chunks.popleft()
            if len(data) > max_bytes:
                self._chunks.appendleft((data[max_bytes:], self.last_rx))
                data = data[:max_bytes]
            self._buffered -= len(data)
            self._resume_reading()
            return data
        if self._error is not None:
            raise httpcore.ReadError(str(self._error) or type(self._error).__name__)
        return b""  # the peer closed the connection

    async def _ready(self, add: Callable[..., None], remove: Callable[[int], object]) -> None:
        ready = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add(self._fd, wake)
        try:
            await ready
        finally:
            remove(self._fd)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if not self._writing:
            self._writing = True
            self.request_tx = time.perf_counter()
            self.max_read_delay = 0.0
        view = memoryview(buffer)
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            async with asyncio.timeout(timeout):
                while view:
                    try:
                        view = view[self._sock.send(view) :]
                    except BlockingIOError:
                        await self._ready(self._loop.add_writer, self._loop.remove_writer)

    async def aclose(self) -> None:
        self._pause_reading()
        self._sock.close()
        if self._waiter is not None and not self._waiter.done():
            self._error = self._error or ConnectionAbortedError("connection closed")
            self._waiter.set_result(None)

    async def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("wire stamps are for plain HTTP; https uses httpx's default transport")

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":  # httpcore's check that an idle keep-alive connection is still usable
            if self._chunks or self._eof or self._error is not None:
                return True
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        return None


class StampingBackend(httpcore.AsyncNetworkBackend):
    """Opens StampedStreams: TCP_NODELAY, and kernel receive stamps switched on."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> StampedStream:
        loop = asyncio.get_running_loop()
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                error: OSError = OSError(f"no address found for {host}")
                for family, kind, proto, _, address in addresses:  # as create_connection does
                    sock = socket.socket(family, kind, proto)
                    try:
                        await self._connect(loop, sock, address, local_address, socket_options)
                    except OSError as e:
                        sock.close()
                        error = e
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    return StampedStream(sock)
                raise error

    @staticmethod
    async def _connect(
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        address: Any,
        local_address: str | None,
        socket_options: Any,
    ) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if KERNEL_STAMPS:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        for option in socket_options or ():
            sock.setsockopt(*option)
        if local_address:
            sock.bind((local_address, 0))
        await loop.sock_connect(sock, address)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("unix sockets are not used by the harness")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _PoolTransport(httpx.AsyncHTTPTransport):
    """httpx's HTTP transport over one small httpcore pool of StampedStreams."""

    def __init__(self, max_connections: int, keepalive_expiry: float | None) -> None:
        # httpx takes no network backend. Its transport uses nothing but `_pool`, so
        # build that pool directly instead of calling super().__init__, which would
        # also load a CA bundle (~70 ms) that plain HTTP never needs.
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            network_backend=StampingBackend(),
        )


class _Released(httpx.AsyncByteStream):
    """A response body that calls `release` once when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream, self._release = stream, release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, lambda: None
            release()


class StampedTransport(httpx.AsyncBaseTransport):
    """Plain-HTTP transport: StampedStreams in several small pools, each request
    sent through the least busy one.

    Why shards: httpcore 1.0's pool rescans all its connections for every idle one
    on each request start and end (quadratic). At 64 connections in one pool that
    bookkeeping took the whole client core and delayed every chunk by milliseconds
    (benchmarks/client_overhead.py); pools of SHARD_SIZE keep it negligible. The
    runner's semaphore keeps requests <= connections, so the least busy shard always
    has a free connection."""

    SHARD_SIZE = 4

    def __init__(self, limits: httpx.Limits) -> None:
        total = limits.max_connections or 100
        sizes = [min(self.SHARD_SIZE, total - i) for i in range(0, total, self.SHARD_SIZE)]
        self._shards = [_PoolTransport(n, limits.keepalive_expiry) for n in sizes]
        self._busy = [0] * len(sizes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = min(range(len(self._shards)), key=self._busy.__getitem__)
        self._busy[i] += 1
        try:
            response = await self._shards[i].handle_async_request(request)
        except BaseException:
            self._release(i)
            raise
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            extensions=response.extensions,
            stream=_Released(cast(httpx.AsyncByteStream, response.stream), functools.partial(self._release, i)),
        )

    def _release(self, shard: int) -> None:
        self._busy[shard] -= 1

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def stamped_client(base_url: str, limits: httpx.Limits, timeout: httpx.Timeout | float) -> httpx.AsyncClient:
    """The harness's HTTP client: plain-HTTP connections are wire-stamped and go
    direct (a benchmark must not time a proxy); https keeps httpx's default."""
    return httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=timeout, mounts={"http://": StampedTransport(limits)}
    )


def stamps_of(response: httpx.Response) -> StampedStream | None:
    """The wire stamps behind a response, when it came over a StampedStream."""
    stream = response.extensions.get("network_stream")
    return stream if isinstance(stream, StampedStream) else None
