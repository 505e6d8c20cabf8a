"""What every stack backend is: the `Stack` protocol the suite drives, its errors and teardown
record, and the registry that tears down at exit whatever skipped its `finally`.

Backends: `compose.ComposeStack` (a Docker Compose project on this host) and
`kubestack.KubeStack` (a Kubernetes namespace; its module imports the kubernetes client, so it
is imported only when a run uses that backend: see `harness.stack.open_stack`).
"""

from __future__ import annotations

import atexit
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from harness.stack.spec import StackSpec

OWNER_LABEL = "io.kvbench.owner"


class StackError(RuntimeError):
    """The stack could not be brought up (its logs are saved in the scenario's logs/)."""


@dataclass
class TeardownResult:
    verified: bool
    seconds: float
    leftovers: str = ""
    attempts: int = 0


class Stack(Protocol):
    """One fresh stack for one scenario run (or one shared run): up -> rounds -> down, verified."""

    UP_STEP: ClassVar[str]  # the bring-up step's name in the progress lines
    DOWN_STEP: ClassVar[str]  # the teardown step's name
    spec: StackSpec

    @property
    def where(self) -> str:
        """Where the stack runs, for the progress line (compose project, namespace)."""
        ...

    @property
    def engine_urls(self) -> list[str]: ...

    @property
    def master_metrics_url(self) -> str: ...

    @property
    def store_url(self) -> str | None:
        """The store node's HTTP server (/health, /metrics); None when the engines hold the store."""
        ...

    def up(self) -> None:
        """Create it and wait until every service is healthy; StackError (logs saved) if not."""
        ...

    def health(self) -> dict[str, str]:
        """Service -> its state ("healthy"/"ready", "starting", "exited", ...)."""
        ...

    def engine_container_ids(self) -> list[str]: ...

    def service_start_seconds(self) -> float | None: ...

    def restart_engines(self) -> float:
        """Restart the engines only (the master keeps running); the seconds it took."""
        ...

    def save_logs(self) -> Path: ...

    def down(self) -> TeardownResult:
        """Remove everything of it and verify that nothing is left; idempotent."""
        ...

    def kill_now(self) -> None:
        """Second Ctrl-C: kill instead of stop; down() still removes everything."""
        ...


def owner_dead(labels: dict) -> bool:
    host, _, pid = labels.get(OWNER_LABEL, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # unknown owner: a leftover
    try:
        os.kill(int(pid), 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False


class _Registry:
    """Live stacks (compose projects, Kubernetes namespaces), torn down at exit if anything skipped
    their `finally`."""

    def __init__(self) -> None:
        self.stacks: list[Stack] = []

    def add(self, s: Stack) -> None:
        if s not in self.stacks:
            self.stacks.append(s)

    def discard(self, s: Stack) -> None:
        if s in self.stacks:
            self.stacks.remove(s)

    def down_all(self) -> None:
        for s in list(self.stacks):
            s.down()


REGISTRY = _Registry()
atexit.register(REGISTRY.down_all)
