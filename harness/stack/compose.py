"""One fresh Docker Compose stack (vLLM + Mooncake master) per scenario run.

Isolation is a property of container lifetime: a stack is created for one
scenario, torn down with its volumes, and then checked by label until nothing
of it is left. Teardown runs from `finally`, from SIGINT/SIGTERM and from
`atexit`; a second Ctrl-C makes it kill instead of stop, never skip.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from python_on_whales import DockerClient, DockerException, docker
from python_on_whales.exceptions import NoSuchContainer, NoSuchNetwork, NoSuchVolume

from harness.stack import interrupts
from harness.stack.base import REGISTRY, StackError, TeardownResult, owner_dead
from harness.stack.spec import StackSpec, write_env_file

MANAGED_LABEL = "io.kvbench.managed=true"
PROJECT_LABEL = "com.docker.compose.project"


@dataclass
class Leftovers:
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.containers or self.volumes or self.networks)

    def describe(self) -> str:
        return f"{len(self.containers)} containers, {len(self.volumes)} volumes, {len(self.networks)} networks"


def _kept(listed: list[Any], labels_of: Callable[[Any], dict | None], keep: Callable[[dict], bool]) -> list[str]:
    """Names of the listed objects whose labels `keep` accepts. Each attribute is an inspect of its
    own: an object removed after the list (another run's teardown in between) is gone, not left
    over, and must not fail the check (seen with three pytest workers: NoSuchContainer)."""
    names = []
    for obj in listed:
        try:
            if keep(labels_of(obj) or {}):
                names.append(obj.name)
        except (NoSuchContainer, NoSuchVolume, NoSuchNetwork):
            continue
    return names


def find_resources(label: str, keep: Callable[[dict], bool] = lambda labels: True) -> Leftovers:
    f: Any = [("label", label)]  # the CLI's filter literal types name each key; this one is "label"
    lookups = (
        lambda: _kept(docker.container.list(all=True, filters=f), lambda c: c.config.labels, keep),
        lambda: _kept(docker.volume.list(filters=f), lambda v: v.labels, keep),
        lambda: _kept(docker.network.list(filters=f), lambda n: n.labels, keep),
    )
    # Three docker CLI round trips: in parallel they cost one (teardown time is measured).
    with ThreadPoolExecutor(3) as pool:
        containers, volumes, networks = pool.map(lambda fn: fn(), lookups)
    return Leftovers(containers, volumes, networks)


def leftovers(include_live: bool = False) -> Leftovers:
    """Harness resources whose owning process is gone (or all of them)."""
    return find_resources(MANAGED_LABEL, (lambda labels: True) if include_live else owner_dead)


def force_remove(found: Leftovers) -> None:
    """Last resort when compose down could not finish: remove by name, one by one, so that
    one that is already gone (or still busy) does not keep the others; what stays is found
    by the caller's check by label."""
    steps: list[tuple[Callable[[str], object], list[str]]] = [
        (lambda name: docker.container.remove(name, force=True, volumes=True), found.containers),  # rm -f -v
        (docker.volume.remove, found.volumes),
        (docker.network.remove, found.networks),
    ]
    for remove, names in steps:
        for name in names:
            try:
                remove(name)
            except DockerException:
                pass


class ComposeStack:
    """A compose project for one scenario run (the `Stack` of backend compose); use as a context manager."""

    UP_STEP: ClassVar[str] = "compose up --wait"
    DOWN_STEP: ClassVar[str] = "down -v, verify"

    def __init__(self, spec: StackSpec, workdir: Path, ready_timeout: int, stop_timeout: int) -> None:
        self.spec = spec
        self.workdir = workdir
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.client = DockerClient(
            compose_files=list[str | Path](spec.files),
            compose_project_name=spec.project,
            compose_env_files=[write_env_file(spec, workdir / "stack.env")],
            compose_project_directory=spec.files[0].parent,
        )
        self.teardown: TeardownResult | None = None
        self._fast = False

    @property
    def label(self) -> str:
        return f"{PROJECT_LABEL}={self.spec.project}"

    @property
    def where(self) -> str:
        return self.spec.project

    def up(self) -> None:
        REGISTRY.add(self)
        deadline = time.monotonic() + self.ready_timeout
        try:
            self.client.compose.up(detach=True, wait=True, wait_timeout=self.ready_timeout, quiet=True, pull="never")
            # Seen on compose 2.40: `up --wait` returning while a service was still
            # "starting". Readiness is checked here too, on the containers' own health.
            self._wait_healthy(deadline)
        except (DockerException, StackError) as e:
            logs = self.save_logs()
            why = _last_line(e) if isinstance(e, DockerException) else str(e)
            raise StackError(
                f"stack {self.spec.project} did not become healthy within {self.ready_timeout} s: {why}"
                + self._exit_reasons(logs)
            ) from None

    def _exit_reasons(self, logs: Path) -> str:
        """For every service that exited during bring-up, its own last error line (from the saved logs)."""
        try:
            exited = [s for s, st in self.health().items() if st in ("exited", "dead")]
            text = (logs / "compose.log").read_text()
        except (DockerException, OSError):
            return ""
        lines = [f"{s} said: {line}" for s in exited if (line := last_error_line(text, s))]
        return "".join(f"; {x}" for x in lines)

    def health(self) -> dict[str, str]:
        """Service -> "healthy" / "starting" / "unhealthy" / "running" (no healthcheck) / "exited" ..."""
        out: dict[str, str] = {}
        for c in self.client.compose.ps(all=True):
            service = (c.config.labels or {}).get("com.docker.compose.service") or c.name
            status = c.state.health.status if c.state.running and c.state.health else c.state.status
            out[service] = status or "unknown"
        return out

    def _wait_healthy(self, deadline: float) -> None:
        while True:
            states = self.health()
            bad = {s: st for s, st in states.items() if st not in ("healthy", "running")}
            if states and not bad:
                return
            if time.monotonic() >= deadline or any(st in ("unhealthy", "exited", "dead") for st in bad.values()):
                raise StackError(", ".join(f"{s} is {st}" for s, st in sorted(bad.items())) or "no containers")
            time.sleep(0.5)  # polling container health until the readiness deadline

    def restart_engines(self) -> float:
        """Restart the engine services only (the master keeps running and keeps what it holds) and
        wait until they are healthy again; the seconds it took."""
        t = time.perf_counter()
        deadline = time.monotonic() + self.ready_timeout
        try:
            self.client.compose.restart(services=self.spec.engines, timeout=self.stop_timeout)
            self._wait_healthy(deadline)
        except (DockerException, StackError) as e:
            self.save_logs()
            why = _last_line(e) if isinstance(e, DockerException) else str(e)
            raise StackError(f"stack {self.spec.project}: the engine did not come back from a restart: {why}") from None
        return round(time.perf_counter() - t, 3)

    def engine_container_ids(self) -> list[str]:
        return sorted(c.id for c in self.client.compose.ps(services=self.spec.engines))

    @property
    def engine_urls(self) -> list[str]:
        return [self.spec.engine_url(e) for e in self.spec.engines]

    @property
    def master_metrics_url(self) -> str:
        return self.spec.master_metrics_url

    @property
    def store_url(self) -> str | None:
        return self.spec.store_url

    def service_start_seconds(self) -> float | None:
        """The services' own start: master container start -> vLLM's "Application startup complete".

        Harness overhead is bring-up + teardown minus this; healthcheck polling and
        compose's own work are the harness's share."""
        try:
            ps = self.client.compose.ps(all=True)
            by_service = {(c.config.labels or {}).get("com.docker.compose.service"): c for c in ps}
            master, engine = by_service.get("mooncake-master"), by_service.get("vllm")
            if not master or not engine or master.state.started_at is None:
                return None
            for line in str(docker.container.logs(engine, timestamps=True)).splitlines():
                if "Application startup complete" in line:
                    ready = _parse_ts(line.split(" ", 1)[0])
                    return round((ready - master.state.started_at).total_seconds(), 3)
        except Exception:  # evidence only: never a reason to fail a scenario
            return None
        return None

    def save_logs(self) -> Path:
        d = self.workdir / "logs"
        d.mkdir(parents=True, exist_ok=True)
        try:
            (d / "compose.log").write_text(self.client.compose.logs(timestamps=True))
            ps = [
                {
                    "name": c.name,
                    "image": c.config.image,
                    "status": c.state.status,
                    "health": c.state.health.status if c.state.health else None,
                    "exit_code": c.state.exit_code,
                }
                for c in self.client.compose.ps(all=True)
            ]
            (d / "ps.json").write_text(json.dumps(ps, indent=2))
        except DockerException as e:
            (d / "logs-error.txt").write_text(str(e))
        return d

    def down(self) -> TeardownResult:
        """Stop engines, then everything; remove volumes and networks; verify by label."""
        if self.teardown is not None:
            return self.teardown
        t = time.perf_counter()
        attempts = 0
        with interrupts.shielded(self.kill_now):  # a second Ctrl-C: kill, but still remove everything
            for attempts in range(1, 4):  # noqa: B007 - read after the loop
                try:
                    timeout = 0 if self._fast else self.stop_timeout
                    # down stops dependents first (depends_on), so the engines stop before
                    # the master they depend on: killing the master first garbles vLLM.
                    self.client.compose.down(volumes=True, remove_orphans=True, timeout=timeout, quiet=True)
                except DockerException:
                    pass  # e.g. the compose call itself was hit by a Ctrl-C; check and retry
                if not find_resources(self.label):
                    break
            left = find_resources(self.label)
            if left:
                force_remove(left)
                left = find_resources(self.label)
        self.teardown = TeardownResult(
            not left, round(time.perf_counter() - t, 3), left.describe() if left else "", attempts
        )
        REGISTRY.discard(self)
        return self.teardown

    def kill_now(self) -> None:
        """Second Ctrl-C: SIGKILL the containers; down() still removes everything."""
        self._fast = True
        # The one Docker call not made through python-on-whales: this runs inside a signal
        # handler while down() is blocked in `compose down`, so it must fire and return at
        # once; python-on-whales' compose.kill() waits for the CLI to finish. Fire-and-forget
        # in its own session (a further Ctrl-C does not reach it); down() verifies by label.
        subprocess.Popen(
            ["docker", "compose", "-p", self.spec.project, "kill"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def __enter__(self) -> ComposeStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _parse_ts(ts: str) -> datetime:
    # Docker prints RFC 3339 with nanoseconds; Python takes microseconds.
    head, _, frac = ts.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def _last_line(e: DockerException) -> str:
    text = (e.stderr or e.stdout or str(e)).strip().splitlines()
    return text[-1] if text else str(e)


_LOG_PREFIX = re.compile(r"^(?P<svc>[A-Za-z0-9_.-]+?)(-\d+)?\s+\|\s?(\d{4}-\d\d-\d\dT\S+\s)?(?P<text>.*)$")
_PY_ERROR = re.compile(r"\b[A-Za-z_.]*(Error|Exception|Exit)\b: \S")
_VALIDATION = re.compile(r"\d+ validation errors? for \S+$")  # e.g. vLLM's ModelConfig refusing a flag


def last_error_line(compose_log: str, service: str, width: int = 400) -> str | None:
    """A service's own last error line in `docker compose logs` output: the last Python exception
    line (`ValueError: ...`) that is not a wrapper pointing at an earlier one, else the last line with
    ERROR, else its last line; None when it logged nothing. Cut to `width` characters."""
    own = []
    for raw in compose_log.splitlines():
        m = _LOG_PREFIX.match(raw)
        if m and m.group("svc") == service and m.group("text").strip():
            own.append(m.group("text").strip())
    if not own:
        return None
    errors = [x for x in own if _PY_ERROR.search(x)]
    # a wrapper that points back at the cause ("Engine core initialization failed. See root cause above.")
    # is not the cause: the last error before it is
    causes = [x for x in errors if "above" not in x.lower()]
    pick = (causes or errors or [None])[-1]
    pick = pick or next((x for x in reversed(own) if "ERROR" in x), own[-1])
    i = len(own) - 1 - own[::-1].index(pick)
    if _VALIDATION.search(pick) and i + 1 < len(own):  # pydantic's header; what failed is on the next line
        pick = f"{pick}: {own[i + 1]}"
    return pick[:width]
