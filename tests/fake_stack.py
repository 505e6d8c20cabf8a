"""FAKE STACK - a test double, not vLLM/Mooncake.

A `Stack` (harness/stack/base.py) for the suite's failure-HANDLING paths: an interrupted round,
a resumed run, a bring-up that fails. What those tests check is what the harness does (rows
kept, statuses, teardown, exit codes), not what vLLM or Mooncake do, so they need no container:

- the engine is the stub server (tests/stub_server.py) in mode `vllm`: `/health`, `/tokenize`,
  streaming completions whose usage carries `cached_tokens`, and a vLLM-like Prometheus
  `/metrics` (prefix-cache and external hits, prompt tokens, request histograms, block size);
- the master is a stand-in (mode `master`) serving `/health` JSON (`service_ready`) and
  `/metrics` (`master_key_count`, `master_allocated_bytes`, ...) of a store the engine fills
  with its prompts' full blocks when the stack has the KV connector (not in baseline mode).

Both run as threads of the process that opened the stack, on the ports the spec allocated.
`down()` stops both and verifies that nothing is left (their threads ended, their ports refuse
connections): trivially true, but recorded as honestly as a real teardown.

Everything a real stack does to show isolation and reuse (cold proof on a fresh stack, Mooncake
hits, teardown by label, kill handling) is tested on the REAL stack (docs/testing.md).

Injected at the suite's stack factory, never through a hook in production code: in-process with
`install(monkeypatch.setattr)`, in a child process (tests that signal it) through
`tests/fake_stack_cli.py`, which installs it and then runs `harness.cli.main(argv)`.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from harness.config import StackConfig
from harness.stack.base import REGISTRY, StackError, TeardownResult
from harness.stack.compose import Leftovers
from harness.stack.spec import CONNECTORS, MASTER, StackSpec

from .stub_server import FakeEngine, FakeStore, StubServer

FAKE_IMAGES = {"engine": "kvbench-fake/stub-engine:test", "master": "kvbench-fake/master-standin:test"}
FAKE_VERSIONS = {
    "vllm": "0.0+fake-stub",
    "mooncake": "0.0+fake-standin",
    "lmcache": None,
    "torch": None,
    "connectors": sorted(CONNECTORS.values()),
}
OPENED: list[FakeStack] = []  # every fake stack opened in this process, in order (tests read them)
_ids = itertools.count(1)


class FakeStack:
    """FAKE STACK - a test double, not vLLM/Mooncake: the stub server as the engine(s), a master
    stand-in, one store between them. `first_ms`: each request's wait before its first token
    (a round long enough to interrupt). `fail_up`: up() fails as an engine that never became
    healthy does (StackError, logs saved), with that as the engine's state."""

    UP_STEP: ClassVar[str] = "fake: start stub engine + master stand-in"
    DOWN_STEP: ClassVar[str] = "fake: stop both, verify their ports are closed"

    def __init__(
        self, spec: StackSpec, workdir: Path, ready_timeout: int = 60, first_ms: float = 0.0, fail_up: str | None = None
    ) -> None:
        self.spec = spec
        self.workdir = workdir
        self.ready_timeout = ready_timeout
        self.first_ms = first_ms
        self.fail_up = fail_up
        # The engine command prepare() rendered says whether this stack has the KV connector (baseline: none).
        self.with_connector = "--kv-transfer-config" in (workdir / "compose.generated.yaml").read_text()
        self.store = FakeStore()
        self.engines: dict[str, StubServer] = {}
        self.master: StubServer | None = None
        self.events: list[str] = []
        self.teardown: TeardownResult | None = None
        self._started: float | None = None
        self._ready_s: float | None = None
        self._ids: dict[str, str] = {}

    # --- the Stack protocol ---------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"{self.spec.project} (FAKE STACK: stub servers in pid-local threads)"

    @property
    def engine_urls(self) -> list[str]:
        return [f"{self.spec.engine_url(e)}/vllm" for e in self.spec.engines]

    @property
    def master_metrics_url(self) -> str:
        return f"{self.spec.master_metrics_url}/master"

    @property
    def store_url(self) -> str | None:
        return None  # the fake store lives in the stub engine (an embedded store)

    def up(self) -> None:
        REGISTRY.add(self)
        self._started = time.perf_counter()
        self._log("up")
        if self.fail_up:
            self.save_logs()
            raise StackError(
                f"stack {self.spec.project} did not become healthy within {self.ready_timeout} s: "
                f"vllm is {self.fail_up}"
            )
        self.master = self._serve(self.spec.master_metrics_port, store=self.store)
        for e in self.spec.engines:
            self._start_engine(e)
        self._ready_s = round(time.perf_counter() - self._started, 3)
        self._log(f"healthy in {self._ready_s} s")

    def health(self) -> dict[str, str]:
        out = {e: "healthy" if s.alive else "exited" for e, s in self.engines.items()}
        if self.master is not None:
            out[MASTER] = "healthy" if self.master.alive else "exited"
        return out

    def engine_container_ids(self) -> list[str]:
        return sorted(self._ids[e] for e in self.engines)

    def service_start_seconds(self) -> float | None:
        return self._ready_s

    def restart_engines(self) -> float:
        """New engine processes (counters from 0) on the same ports; the store keeps what it holds."""
        t = time.perf_counter()
        for e, server in list(self.engines.items()):
            server.__exit__(None, None, None)
            self._start_engine(e)
        return round(time.perf_counter() - t, 3)

    def save_logs(self) -> Path:
        d = self.workdir / "logs"
        d.mkdir(parents=True, exist_ok=True)
        servers = {**self.engines, **({MASTER: self.master} if self.master else {})}
        lines = [*self.events, *(f"{name}: {m} {p}" for name, s in servers.items() for m, p, _ in s.requests[-50:])]
        (d / "fake-stack.log").write_text("FAKE STACK - a test double, not vLLM/Mooncake\n" + "\n".join(lines) + "\n")
        ps = [{"name": f"{self.spec.project}-{name}-1", "status": "running" if s.alive else "exited"}
              for name, s in servers.items()]  # fmt: skip
        (d / "ps.json").write_text(json.dumps(ps, indent=2))
        return d

    def down(self) -> TeardownResult:
        """Stop both servers; verified when their threads ended and their ports refuse connections."""
        if self.teardown is not None:
            return self.teardown
        t = time.perf_counter()
        servers = [*self.engines.values(), *([self.master] if self.master else [])]
        for s in servers:
            s.__exit__(None, None, None)
        left = [f"127.0.0.1:{s.port}" for s in servers if s.alive or _accepts(s.port)]
        self.teardown = TeardownResult(
            not left, round(time.perf_counter() - t, 3), f"still serving: {', '.join(left)}" if left else "", 1
        )
        self._log(f"down: verified={self.teardown.verified}")
        REGISTRY.discard(self)
        return self.teardown

    def kill_now(self) -> None:
        self._log("kill_now")
        for s in [*self.engines.values(), *([self.master] if self.master else [])]:
            s.__exit__(None, None, None)

    def __enter__(self) -> FakeStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- helpers --------------------------------------------------------------------------
    def _serve(self, port: int, **kw: object) -> StubServer:
        return StubServer(port=port, **kw).__enter__()  # type: ignore[arg-type]

    def _start_engine(self, name: str) -> None:
        engine = FakeEngine(self.store if self.with_connector else None, first_ms=self.first_ms)
        self.engines[name] = self._serve(self.spec.engine_ports[name], engine=engine)
        self._ids[name] = f"fake-{self.spec.project}-{name}-{next(_ids)}"

    def _log(self, what: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {what}")

    def leftovers(self) -> Leftovers:
        """Its servers still running, in the shape of the compose backend's leftovers."""
        servers = [*self.engines.values(), *([self.master] if self.master else [])]
        return Leftovers(containers=[f"127.0.0.1:{s.port}" for s in servers if s.alive])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def fake_open_stack(first_ms: float = 0.0, fail_up: str | None = None) -> Callable[..., FakeStack]:
    """A stand-in for `harness.stack.open_stack`: every stack the suite opens is a FakeStack."""

    def open_stack(spec: StackSpec, workdir: Path, s: StackConfig) -> FakeStack:
        stack = FakeStack(spec, workdir, s.ready_timeout, first_ms, fail_up)
        OPENED.append(stack)
        return stack

    return open_stack


def live_leftovers(include_live: bool = False) -> Leftovers:
    """The fake stacks' leftovers: servers of a stack of this process that is still running."""
    found = [stack.leftovers() for stack in OPENED]
    return Leftovers(containers=[c for f in found for c in f.containers])


def install(setattr_: Callable[[str, object], object], first_ms: float = 0.0, fail_up: str | None = None) -> None:
    """Make the suite's stacks fake ones: its stack factory, the images it asks for, the preflight's
    look inside them, and the CLI's check for leftovers. `setattr_`: monkeypatch.setattr, or a plain
    setattr by dotted name (tests/fake_stack_cli.py)."""
    setattr_("harness.suite.steps.open_stack", fake_open_stack(first_ms, fail_up))
    setattr_("harness.cli.bench.images", lambda overlay: dict(FAKE_IMAGES))
    setattr_("harness.stack.versions.image_versions", lambda image: dict(FAKE_VERSIONS))
    setattr_("harness.stack.preflight.leftovers", live_leftovers)
