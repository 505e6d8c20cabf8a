"""Ctrl-C / SIGTERM, delivered where it is safe to act on them.

Outside async code a signal raises `Interrupted` (a KeyboardInterrupt) at once,
so the usual `finally` blocks tear the stack down. Inside a round it must not
raise from the handler: the event loop (uvloop in particular) may be running a
transport callback, which would swallow the exception and kill one connection.
There the handler cancels the round's task instead, and the round re-raises
`Interrupted` once the loop has unwound. During teardown a signal never aborts
anything: it only asks for a faster stop (kill instead of stop).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised like Ctrl-C so the same `finally` blocks run."""


class _State:
    task: asyncio.Task | None = None
    loop: asyncio.AbstractEventLoop | None = None
    during_teardown: Callable[[], None] | None = None
    received: str | None = None


_STATE = _State()


def _on_signal(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    if _STATE.during_teardown is not None:
        _STATE.during_teardown()
        return
    if _STATE.task is not None and _STATE.loop is not None:
        _STATE.received = name
        _STATE.loop.call_soon_threadsafe(_STATE.task.cancel)
        return
    raise Interrupted(name)


def install() -> None:
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


@contextmanager
def shielded(on_signal: Callable[[], None]) -> Iterator[None]:
    """While the block runs, a signal calls `on_signal` instead of interrupting it."""
    _STATE.during_teardown = on_signal
    try:
        yield
    finally:
        _STATE.during_teardown = None


async def cancellable(coro) -> None:
    """Await `coro` in a task a signal may cancel; then raise `Interrupted` outside the loop's callbacks."""
    _STATE.task, _STATE.loop, _STATE.received = asyncio.current_task(), asyncio.get_running_loop(), None
    try:
        await coro
    except asyncio.CancelledError:
        if _STATE.received:
            raise Interrupted(_STATE.received) from None
        raise
    finally:
        _STATE.task = _STATE.loop = None
