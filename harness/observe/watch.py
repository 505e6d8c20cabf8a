"""Watch the whole stack while a round runs: the Mooncake master as well as the engine.

With the master gone, vLLM keeps serving: every request pays the connector's timeouts
(TTFT 30 ms -> 4-9 s measured) and nothing is reused, so a with-cache round would quietly
become a slow no-cache round. A background thread asks the master (`GET /health`, whose
JSON says `service_ready`) and the engines (`GET /health`) every `poll_s`; when one does not
answer, the stack's own view of its services (container or Deployment state) says whether it
is gone (at once) or only slow (gone after `down_after_s` without an answer). The round then
stops: the runner cancels what is in flight and raises, so the cell fails within seconds
instead of running its requests into timeouts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from harness.client.client import RequestResult
from harness.observe.health import check, unhealthy
from harness.stack.spec import MASTER, STORE

# Service states of a stack that still serves (compose: health or plain running; kube: ready).
LIVE_STATES = ("healthy", "running", "ready")

Services = Callable[[], dict[str, str]]


@dataclass(frozen=True)
class Down:
    """A component of the stack that stopped serving during a round."""

    component: str  # "engine", "master" or "store"
    reason: str


@dataclass(frozen=True)
class Target:
    component: str  # "engine", "master" or "store" (the store node)
    service: str | None  # its name in the stack's services() (None: not ours, e.g. an external server)
    health_url: str


class StackWatch:
    """Polls every component in a thread between start() and stop(); `down` names the first one
    found gone, and `stopped` (a threading.Event) is set at that moment so a round can end."""

    def __init__(
        self,
        targets: list[Target],
        services: Services | None = None,
        poll_s: float = 1.0,
        down_after_s: float = 10.0,
    ) -> None:
        self.targets = targets
        self.services = services
        self.poll_s = poll_s
        self.down_after_s = down_after_s
        self.stopped = threading.Event()
        self.found: Down | None = None
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._silent_since: dict[str, float] = {}

    @classmethod
    def for_stack(
        cls,
        engine_urls: list[str],
        master_metrics_url: str | None,
        services: Services | None,
        poll_s: float,
        down_after_s: float,
        engine_services: list[str] | None = None,
        store_url: str | None = None,
    ) -> StackWatch:
        """Watch the engines, and the master when a URL for it is given (with-cache cells: a
        baseline cell does not use the store, so its master is not a reason to fail), and the store
        node when the stack has one (`store_url`: its HTTP server; with the cache only, as the master)."""
        names: list[str | None] = [*engine_services] if engine_services else [None] * len(engine_urls)
        targets = [
            Target("engine", s if services else None, f"{u.rstrip('/')}/health") for u, s in zip(engine_urls, names)
        ]
        if master_metrics_url:
            targets.append(Target("master", MASTER if services else None, f"{master_metrics_url.rstrip('/')}/health"))
            if store_url:
                targets.append(Target("store", STORE if services else None, f"{store_url.rstrip('/')}/health"))
        return cls(targets, services, poll_s, down_after_s)

    @property
    def down(self) -> Down | None:
        return self.found

    def start(self) -> None:
        """Idempotent: a round over client worker processes starts it after they are forked."""
        if self._thread is not None or not self.targets:
            return
        self._quit.clear()
        self._thread = threading.Thread(target=self._loop, name="kvbench-stack-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._quit.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None
        self._silent_since.clear()

    def __enter__(self) -> StackWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        with httpx.Client(timeout=max(1.0, self.poll_s)) as client:
            while not self._quit.is_set() and self.found is None:
                self.check(client)
                self._quit.wait(self.poll_s)  # the polling interval, ended early by stop()

    def check(self, client: httpx.Client) -> Down | None:
        """One pass over every component; sets `found` (and `stopped`) on the first one gone."""
        now = time.monotonic()
        states: dict[str, str] | None = None
        for t in self.targets:
            why = unhealthy(client, t.health_url, t.component)
            if why is None:
                self._silent_since.pop(t.health_url, None)
                continue
            since = self._silent_since.setdefault(t.health_url, now)
            if states is None and self.services is not None:
                states = _states(self.services)
            state = (states or {}).get(t.service or "")
            if t.service and state is not None and state not in LIVE_STATES:
                return self._found(t, f"{t.service} is {state} ({why})")
            if t.service and states is not None and state is None:
                return self._found(t, f"{t.service} is gone from the stack ({why})")
            if now - since >= self.down_after_s:
                return self._found(t, f"{why} for {now - since:.0f} s")
        return None

    def _found(self, t: Target, reason: str) -> Down:
        what = {"master": "Mooncake master", "store": "Mooncake store node"}.get(t.component, "engine")
        self.found = Down(t.component, f"{what} unreachable: {reason}")
        self.stopped.set()
        return self.found


def _states(services: Services) -> dict[str, str] | None:
    """The stack's view of its services; None when it cannot be asked (the HTTP check decides)."""
    try:
        return services()
    except Exception:  # a Docker or API server hiccup is no evidence about the services
        return None


# Failures that say the server may be gone (as opposed to a request it rejected).
SERVER_FAULTS = {
    "ConnectError",
    "ConnectTimeout",
    "RemoteProtocolError",
    "ReadError",
    "WriteError",
    "ReadTimeout",
    "PoolTimeout",
    "Timeout",
    "IncompleteStream",
    "StreamError",
}


class EngineWatch:
    """Stops sending when the engine is gone. After `threshold` server-side faults (connection
    errors, 5xx, timeouts) the engine's GET /health decides: not 200 -> the round is aborted and
    nothing more is sent; healthy -> the count starts again (the faults were the requests' own)."""

    def __init__(self, base_url: str, threshold: int = 3, shared: Any = None) -> None:
        self.health_url = f"{base_url.rstrip('/')}/health"
        self.threshold = threshold
        self.shared = shared  # client workers: an Event set by whichever worker finds the engine gone
        self.found: str | None = None
        self.succeeded = 0  # requests of the round that completed (the server has recorded them)
        self._faults = 0
        self._lock = asyncio.Lock()

    @property
    def down(self) -> str | None:
        if self.found is None and self.shared is not None and self.shared.is_set():
            return "another client worker found the engine unreachable"
        return self.found

    async def record(self, res: RequestResult) -> None:
        self.succeeded += res.ok
        if res.ok or not (res.error_class in SERVER_FAULTS or (res.http_status or 0) >= 500):
            return
        self._faults += 1
        async with self._lock:  # one health probe at a time; others wait for its verdict
            if self.down or self._faults < self.threshold:
                return
            if await self._healthy():
                self._faults = 0
            else:
                self.found = (
                    f"engine unreachable after {self._faults} failed requests (last: {res.error_class}: "
                    f"{res.error_message[:120]}); GET /health failed"
                )
                if self.shared is not None:
                    self.shared.set()

    async def _healthy(self) -> bool:
        return await asyncio.to_thread(check, self.health_url) is None
