"""Find or build the stack's Docker images, tagged by a hash of their inputs.

``ensure_images("cpu")`` returns ``{"engine": "kvbench/engine-cpu:<hash>",
"master": "kvbench/master-cpu:<hash>"}``. The hash (12 hex digits of sha256)
covers exactly what the build reads besides the wheelhouse (which the lock pins):
the Dockerfile, the lock files (the image's and the installer's), the tiny-model and
engine-cache scripts (engine) and the base image's id, so an unchanged image is
found at once (one line, ~0.1 s) and never rebuilt. A missing image is built from
the repo root with the legacy-builder-compatible ``docker build`` (python-on-whales
``docker.legacy_build``: Docker 20.10 has no buildx; where ``docker build`` is
BuildKit it works the same) after making, when missing, the local base image
(``scripts/make_base_image.sh``) and the wheelhouse (``scripts/make_wheelhouse.sh``).
Every Docker call goes through python-on-whales (but ``--missing``'s, below); the
shell scripts are for what needs root and apt.

Quiet: each long step prints one line with its time when done, e.g.
``[images] engine image kvbench/engine-cpu:abc: built in 117.7 s (log: build/logs/engine-image.log)``;
its whole output goes to a log under ``build/logs/`` (``KVB_LOG_DIR``); on a
terminal a spinner with the elapsed time shows it is alive. A failed step raises
``ImageBuildError`` with the last 20 lines of its log and the log's path.

Environment: ``KVB_BASE_IMAGE`` (default ``kvbench/base:bookworm``; a ``kvbench/...`` name is
made locally like the default, any other Debian bookworm image with Python 3.11 is pulled, e.g.
``python:3.11-slim``), ``KVB_LOG_DIR`` (default ``build/logs``).

``python -m harness.stack.images [--stack cpu] [--env-file FILE]`` builds both and prints
``KVB_ENGINE_IMAGE=...`` / ``KVB_MASTER_IMAGE=...`` lines on stdout (or writes them
to FILE); progress goes to stderr.

``python3 harness/stack/images.py --missing`` (stdlib only: it runs before the venv exists) prints
what a build would have to make first, ``base`` and ``wheelhouse:<name>`` words, so that
``scripts/setup.sh`` makes them while the venv and the Docker engine are being installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

try:
    from python_on_whales import ClientNotFoundError, DockerException, docker
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
except ModuleNotFoundError:  # `python3 harness/stack/images.py --missing` before the venv exists: stdlib only
    if __name__ != "__main__":
        raise

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
DEFAULT_BASE_IMAGE = "kvbench/base:bookworm"
HASH_LEN = 12
LABEL_INPUTS = "io.kvbench.inputs"  # digest of the files only (no base id)
LABEL_IMAGE = "io.kvbench.image"
TAIL_LINES = 20

Echo = Callable[[str], object]


def _status() -> Console:
    """The terminal's stderr, for spinners only; the one-line results go to `echo`."""
    global _STATUS
    if _STATUS is None:
        _STATUS = Console(stderr=True, highlight=False)
    return _STATUS


_STATUS: Console | None = None


@dataclass(frozen=True)
class ImageSpec:
    role: str  # key in the result: "engine" | "master"
    repository: str  # e.g. kvbench/engine-cpu
    dockerfile: str  # paths relative to the repo root
    lock: str
    wheelhouse: str  # name for scripts/make_wheelhouse.sh
    extra_inputs: tuple[str, ...] = ()

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.dockerfile, self.lock, *self.extra_inputs)


# The installer the builds take from the wheelhouse (uv), in every image's inputs.
INSTALLER_LOCK = "compose/requirements/installer.lock"

STACKS: dict[str, tuple[ImageSpec, ...]] = {
    "cpu": (
        ImageSpec(
            "engine",
            "kvbench/engine-cpu",
            "compose/engine.Dockerfile",
            "compose/requirements/engine.lock",
            "engine",
            (
                INSTALLER_LOCK,
                "scripts/make_tiny_model.py",
                "scripts/engine_caches.py",
                "harness/stack/version_probe.py",
                "compose/kvbench_cpu_platform.py",
            ),
        ),
        ImageSpec(
            "master",
            "kvbench/master-cpu",
            "compose/master.Dockerfile",
            "compose/requirements/master.lock",
            "master",
            (INSTALLER_LOCK,),
        ),
    ),
}


class ImageBuildError(RuntimeError):
    """A build step (script or docker build) failed; the message holds its log's last lines and path."""


# --- quiet steps ------------------------------------------------------------


def log_dir() -> Path:
    return Path(os.environ.get("KVB_LOG_DIR") or REPO_ROOT / "build" / "logs")


def _shown(path: Path) -> str:
    """A path as short as it is unambiguous: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    try:
        with path.open(errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=n)]
    except OSError:
        return []


@contextmanager
def _spinner(label: str) -> Iterator[None]:
    """A spinner with the elapsed time on a terminal; nothing otherwise."""
    if not _status().is_terminal:
        yield
        return
    with Progress(
        SpinnerColumn(),
        TextColumn(escape(label)),  # "[images]" is not rich markup
        TimeElapsedColumn(),
        console=_status(),
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as progress:
        progress.add_task(label, total=None)
        yield


@contextmanager
def _step(label: str, verb: str, log_name: str, echo: Echo) -> Iterator[TextIO]:
    """One long step: its output into build/logs/<log_name>, one line with its time when done.

    The body writes the step's output to the yielded file. An exception from the body
    (DockerException, ImageBuildError) becomes an ImageBuildError with the log's tail.
    """
    log = log_dir() / log_name
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    failure: Exception | None = None
    with log.open("w", errors="replace") as f, _spinner(f"{label} ..."):
        f.write(f"# {label}\n# started {time.strftime('%F %T')}\n")
        f.flush()
        try:
            yield f
        except Exception as exc:  # noqa: BLE001 - reported with the log's tail below
            failure = exc
            # A DockerException's text repeats the command and its stderr, already streamed above.
            why = f"exit code {exc.return_code}" if isinstance(exc, DockerException) else str(exc)
            f.write(f"\n# failed: {why}\n")
    secs = time.monotonic() - start
    if failure is None:
        done = f"{label}: {verb} in {secs:.1f} s"
        with_log = f"{done} (log: {_shown(log)})"
        echo(with_log if len(with_log) <= 80 else done)  # a wrapped line is two on the screen
        return
    tail = "\n".join(f"  | {line}" for line in _tail(log))
    raise ImageBuildError(
        f"{label}: FAILED after {secs:.1f} s; last {TAIL_LINES} lines of {_shown(log)}:\n"
        f"{tail}\n(full log: {_shown(log)})"
    ) from failure


def _run_script(name: str, *args: str, env: dict[str, str] | None = None) -> None:
    """Run one of scripts/*.sh on the terminal's stderr: each prints its own one-line
    progress and keeps its full output in build/logs/ (scripts/logged.sh). `env`: added variables."""
    try:
        out: int | None = sys.stderr.fileno()  # keep stdout for the KVB_* lines
    except (AttributeError, OSError, ValueError):
        out = None
    rc = subprocess.run(
        ["bash", str(SCRIPTS / name), *args],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=out,
        check=False,
        env={**os.environ, **env} if env else None,
    ).returncode
    if rc != 0:
        raise ImageBuildError(f"[images] scripts/{name} {' '.join(args)} failed (exit {rc}); its log is named above")


# --- docker helpers ---------------------------------------------------------


def image_id(ref: str) -> str | None:
    """The image id of ``ref`` if present locally, else None."""
    try:
        return docker.image.inspect(ref).id
    except DockerException:  # NoSuchImage, or a name docker rejects
        return None


def _find_by_label(repository: str, files_digest: str) -> str | None:
    """A local ``repository:tag`` built from the same files (any base id)."""
    for image in docker.image.list(repository, filters=[("label", f"{LABEL_INPUTS}={files_digest}")]):
        if tag := _content_tag(repository, image.repo_tags):
            return tag
    return None


def _content_tag(repository: str, tags: list[str]) -> str | None:
    return next((t for t in tags if t.startswith(f"{repository}:") and not t.endswith((":latest", ":<none>"))), None)


# The same two look-ups with the docker CLI and the standard library only, for `--missing`.


def _cli_image_id(ref: str) -> str | None:
    try:
        out = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):  # no docker CLI, or an engine that does not answer
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _cli_find_by_label(repository: str, files_digest: str) -> str | None:
    try:
        out = subprocess.run(
            ["docker", "image", "ls", "--filter", f"label={LABEL_INPUTS}={files_digest}"]
            + ["--format", "{{.Repository}}:{{.Tag}}", repository],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _content_tag(repository, out.stdout.split()) if out.returncode == 0 else None


def _ensure_engine() -> None:
    # `docker version` is the cheapest call that needs the engine (docker info takes ~0.1-0.2 s).
    try:
        if docker.version().server is not None:
            return
    except (DockerException, ClientNotFoundError):
        pass
    _run_script("ensure_docker.sh")


# --- inputs and tags --------------------------------------------------------


def files_digest(spec: ImageSpec) -> str:
    """sha256 over the spec's input files (path and content)."""
    h = hashlib.sha256()
    for rel in spec.inputs:
        h.update(rel.encode() + b"\0" + (REPO_ROOT / rel).read_bytes() + b"\0")
    return h.hexdigest()


def image_tag(spec: ImageSpec, base_id: str) -> str:
    digest = hashlib.sha256(f"{files_digest(spec)}\0{base_id}".encode()).hexdigest()
    return f"{spec.repository}:{digest[:HASH_LEN]}"


def base_image_ref() -> str:
    return os.environ.get("KVB_BASE_IMAGE") or DEFAULT_BASE_IMAGE


def made_locally(base: str) -> bool:
    """kvbench's own base images (the default and other ``kvbench/...`` names) are made here, not pulled."""
    return base == DEFAULT_BASE_IMAGE or base.startswith("kvbench/")


def ensure_base_image(base: str, echo: Echo = print) -> str:
    """Make (kvbench/...: scripts/make_base_image.sh) or pull (other names) the base image; return its id."""
    found = image_id(base)
    if found:
        return found
    if made_locally(base):
        # one line, log build/logs/base-image.log
        _run_script("make_base_image.sh", env={"KVB_BASE_IMAGE": base})
    else:
        with _step(f"[images] base image {base}", "pulled", "base-pull.log", echo) as log:
            for _, line in docker.pull(base, stream_logs=True):  # type: ignore[union-attr,misc]
                log.write(line.decode(errors="replace"))
    found = image_id(base)
    if not found:
        raise ImageBuildError(f"[images] base image {base} still missing after creating it")
    return found


# --- building ---------------------------------------------------------------


def ensure_wheelhouse(specs: list[ImageSpec], echo: Echo = print) -> None:
    """One line per wheelhouse (fetched, or complete already); logs build/logs/wheelhouse-<name>.log."""
    _run_script("make_wheelhouse.sh", *dict.fromkeys(s.wheelhouse for s in specs))


def build_image(spec: ImageSpec, tag: str, base: str, echo: Echo = print) -> float:
    """docker build one image from the repo root (output: build/logs/<role>-image.log); return seconds."""
    start = time.monotonic()
    with _step(f"[images] {spec.role} {tag}", "built", f"{spec.role}-image.log", echo) as log:
        log.write(f"# base {base}\n")
        log.flush()
        # legacy_build(quiet=False) prints the build's output (stdout and stderr) line by line:
        # into the log. Nothing else writes to stdout while the build blocks this thread.
        with redirect_stdout(log):
            try:
                docker.legacy_build(
                    REPO_ROOT,
                    file=REPO_ROOT / spec.dockerfile,
                    build_args={"BASE_IMAGE": base},  # FROM ${BASE_IMAGE}
                    labels={LABEL_INPUTS: files_digest(spec), LABEL_IMAGE: spec.repository.rsplit("/", 1)[-1]},
                    tags=[tag, f"{spec.repository}:latest"],
                    quiet=False,
                )
            except UnboundLocalError:
                # python-on-whales takes the id from the legacy builder's "Successfully built <id>";
                # where `docker build` is BuildKit (buildx installed) there is no such line.
                pass  # the build itself succeeded (a failure raises DockerException); checked below
        if image_id(tag) is None:
            raise ImageBuildError(f"[images] {tag} is missing after its build")
    return time.monotonic() - start


@dataclass(frozen=True)
class Plan:
    """What a stack's images need, from two look-ups (by reference, by label)."""

    base: str
    base_id: str | None  # None: the base image is missing
    tags: dict[str, str]  # role -> tag: the images to use (all roles), or {} when the base must be made first
    missing: tuple[ImageSpec, ...]  # to build (all of them when the base is missing)
    reused: bool = False  # base gone, images from the same files found by label (tags holds them)

    def needs(self) -> list[str]:
        """What must exist before a build: ``base`` and ``wheelhouse:<name>`` (none when nothing is built)."""
        first = ["base"] if self.base_id is None and not self.reused else []
        return first + [f"wheelhouse:{name}" for name in dict.fromkeys(s.wheelhouse for s in self.missing)]


def plan_images(
    stack: str,
    inspect: Callable[[str], str | None] | None = None,
    find: Callable[[str, str], str | None] | None = None,
) -> Plan:
    """Which images of `stack` are present and which must be built (base and wheelhouse first).

    With the base image gone, images built from the same files are reused (found by label)."""
    inspect = inspect or image_id
    find = find or _find_by_label
    specs = STACKS[stack]
    base = base_image_ref()
    base_id = inspect(base)
    if base_id is None:
        found = {s.role: find(s.repository, files_digest(s)) for s in specs}
        if all(found.values()):
            return Plan(base, None, {role: tag for role, tag in found.items() if tag}, (), reused=True)
        return Plan(base, None, {}, specs)
    tags = {s.role: image_tag(s, base_id) for s in specs}
    return Plan(base, base_id, tags, tuple(s for s in specs if inspect(tags[s.role]) is None))


def _present(tags: dict[str, str], start: float) -> str:
    names = ", ".join(tag.removeprefix("kvbench/") for tag in tags.values())  # the repository names the role
    return f"[images] {names}: present ({time.monotonic() - start:.1f} s)"


def ensure_images(stack: str = "cpu", *, echo: Echo = print) -> dict[str, str]:
    """Return {"engine": tag, "master": tag}, building what is missing.

    Images present: one line. Otherwise one line per step (docker, base, wheelhouse, each build)."""
    if stack not in STACKS:
        raise ValueError(f"unknown stack {stack!r}; known: {', '.join(STACKS)}")
    start = time.monotonic()
    specs = STACKS[stack]
    _ensure_engine()
    plan = plan_images(stack)
    if not plan.missing:
        echo(_present(plan.tags, start))
        return plan.tags
    base, base_id = plan.base, plan.base_id or ensure_base_image(plan.base, echo)
    tags = {s.role: image_tag(s, base_id) for s in specs}
    missing = [s for s in specs if image_id(tags[s.role]) is None]
    ensure_wheelhouse(missing, echo)
    for spec in missing:
        build_image(spec, tags[spec.role], base, echo)
    return tags


def image_env(tags: dict[str, str]) -> dict[str, str]:
    """Compose variables selecting these images (see compose/base.yaml)."""
    return {"KVB_ENGINE_IMAGE": tags["engine"], "KVB_MASTER_IMAGE": tags["master"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.stack.images", description="Build (if needed) the stack images and print their tags."
    )
    ap.add_argument("--stack", default="cpu", choices=sorted(STACKS))
    ap.add_argument("--env-file", type=Path, help="write the KVB_*_IMAGE=... lines to this file instead of stdout")
    ap.add_argument(
        "--missing",
        action="store_true",
        help="only print what a build would make first ('base', 'wheelhouse:<name>'; nothing when the images are "
        "present); standard library and docker CLI only, an engine that does not answer counts as no images",
    )
    args = ap.parse_args(argv)
    if args.missing:
        print(" ".join(plan_images(args.stack, _cli_image_id, _cli_find_by_label).needs()))
        return 0
    try:
        tags = ensure_images(args.stack, echo=lambda s: print(s, file=sys.stderr, flush=True))
    except ImageBuildError as exc:  # names the step, the log's last lines and its path
        print(exc, file=sys.stderr)
        return 1
    except (DockerException, OSError) as exc:
        print(f"[images] ERROR: {exc}", file=sys.stderr)
        return 1
    lines = "".join(f"{key}={value}\n" for key, value in image_env(tags).items())
    if args.env_file:
        args.env_file.parent.mkdir(parents=True, exist_ok=True)
        args.env_file.write_text(lines)
    else:
        sys.stdout.write(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
