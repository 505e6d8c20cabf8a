"""Find or build the stack's Docker images, tagged by a hash of their inputs.

``ensure_images("cpu")`` returns ``{"engine": "kvbench/engine-cpu:<hash>",
"master": "kvbench/master-cpu:<hash>"}``. The hash (12 hex digits of sha256)
covers the Dockerfile, the lock file, the tiny-model script (engine) and the base
image's id, so an unchanged image is found at once and never rebuilt.
A missing image is built from the repo root with the legacy-builder-compatible
``docker build`` after making, when missing, the local base image
(``scripts/make_base_image.sh``) and the wheelhouse (``scripts/make_wheelhouse.sh``).

Environment: ``KVB_BASE_IMAGE`` (default ``kvbench/base:bookworm``; any Debian
bookworm image with Python 3.11 works, e.g. ``python:3.11-slim``, which is then
pulled).

``python -m harness.images [--stack cpu]`` builds both and prints
``KVB_ENGINE_IMAGE=...`` / ``KVB_MASTER_IMAGE=...`` lines (progress on stderr).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = REPO_ROOT / "scripts"
DEFAULT_BASE_IMAGE = "kvbench/base:bookworm"
HASH_LEN = 12
LABEL_INPUTS = "io.kvbench.inputs"  # digest of the files only (no base id)
LABEL_IMAGE = "io.kvbench.image"

Echo = Callable[[str], object]


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


STACKS: dict[str, tuple[ImageSpec, ...]] = {
    "cpu": (
        ImageSpec("engine", "kvbench/engine-cpu", "compose/engine.Dockerfile",
                  "compose/requirements/engine.lock", "engine",
                  ("scripts/make_tiny_model.py",)),
        ImageSpec("master", "kvbench/master-cpu", "compose/master.Dockerfile",
                  "compose/requirements/master.lock", "master"),
    ),
}


class ImageBuildError(RuntimeError):
    """A build step (script or docker build) failed; the message holds its last lines."""


# --- docker helpers ---------------------------------------------------------

def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


def image_id(ref: str) -> str | None:
    """The image id of ``ref`` if present locally, else None."""
    proc = _docker("image", "inspect", "--format", "{{.Id}}", ref)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def _find_by_label(repository: str, files_digest: str) -> str | None:
    """A local ``repository:tag`` built from the same files (any base id)."""
    proc = _docker("images", repository, "--filter", f"label={LABEL_INPUTS}={files_digest}",
                   "--format", "{{.Repository}}:{{.Tag}}")
    tags = [t for t in proc.stdout.split() if not t.endswith((":latest", ":<none>"))]
    return tags[0] if tags else None


def _run_streamed(argv: list[str], prefix: str, echo: Echo, env: dict[str, str] | None = None) -> float:
    """Run argv, echo each output line with a prefix; return seconds taken."""
    start = time.monotonic()
    tail: deque[str] = deque(maxlen=30)
    with subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            echo(f"{prefix} {line}")
    if proc.returncode != 0:
        raise ImageBuildError(f"{' '.join(argv)} exited with {proc.returncode}:\n" + "\n".join(tail))
    return time.monotonic() - start


def _ensure_engine(echo: Echo) -> None:
    if _docker("info", "--format", "{{.ServerVersion}}").returncode != 0:
        _run_streamed(["bash", str(SCRIPTS / "ensure_docker.sh")], "[docker]", echo)


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


def ensure_base_image(base: str, echo: Echo) -> str:
    """Make (local default) or pull (other names) the base image; return its id."""
    found = image_id(base)
    if found:
        return found
    if base == DEFAULT_BASE_IMAGE:
        secs = _run_streamed(["bash", str(SCRIPTS / "make_base_image.sh")], "[base]", echo)
    else:
        secs = _run_streamed(["docker", "pull", base], "[base]", echo)
    echo(f"[images] base image {base} ready in {secs:.1f} s")
    found = image_id(base)
    if not found:
        raise ImageBuildError(f"base image {base} still missing after creating it")
    return found


# --- building ---------------------------------------------------------------

def ensure_wheelhouse(specs: list[ImageSpec], echo: Echo) -> None:
    names = [s.wheelhouse for s in specs]
    secs = _run_streamed(["bash", str(SCRIPTS / "make_wheelhouse.sh"), *names], "[wheelhouse]", echo)
    echo(f"[images] wheelhouse ({', '.join(names)}) ready in {secs:.1f} s")


def build_image(spec: ImageSpec, tag: str, base: str, echo: Echo) -> float:
    """docker build one image from the repo root; return seconds taken."""
    latest = f"{spec.repository}:latest"
    argv = ["docker", "build", "--file", str(REPO_ROOT / spec.dockerfile),
            "--build-arg", f"BASE_IMAGE={base}",
            "--label", f"{LABEL_INPUTS}={files_digest(spec)}",
            "--label", f"{LABEL_IMAGE}={spec.repository.rsplit('/', 1)[-1]}",
            "--tag", tag, "--tag", latest, str(REPO_ROOT)]
    env = {**os.environ, "BUILDKIT_PROGRESS": "plain"}  # only read if BuildKit is used
    echo(f"[images] building {tag} (base {base}) ...")
    secs = _run_streamed(argv, f"[build {spec.role}]", echo, env=env)
    echo(f"[images] built {tag} in {secs:.1f} s")
    return secs


def _existing_without_base(specs: tuple[ImageSpec, ...]) -> dict[str, str] | None:
    """With the base image gone, reuse images built from the same files."""
    found = {s.role: _find_by_label(s.repository, files_digest(s)) for s in specs}
    return found if all(found.values()) else None  # type: ignore[return-value]


def ensure_images(stack: str = "cpu", *, echo: Echo = print) -> dict[str, str]:
    """Return {"engine": tag, "master": tag}, building what is missing."""
    if stack not in STACKS:
        raise ValueError(f"unknown stack {stack!r}; known: {', '.join(STACKS)}")
    specs = STACKS[stack]
    _ensure_engine(echo)
    base = base_image_ref()
    base_id = image_id(base)
    if base_id is None and (reuse := _existing_without_base(specs)):
        return reuse
    base_id = base_id or ensure_base_image(base, echo)
    tags = {s.role: image_tag(s, base_id) for s in specs}
    missing = [s for s in specs if image_id(tags[s.role]) is None]
    if not missing:
        return tags
    ensure_wheelhouse(missing, echo)
    for spec in missing:
        build_image(spec, tags[spec.role], base, echo)
    return tags


def image_env(tags: dict[str, str]) -> dict[str, str]:
    """Compose variables selecting these images (see compose/base.yaml)."""
    return {"KVB_ENGINE_IMAGE": tags["engine"], "KVB_MASTER_IMAGE": tags["master"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.images",
                                 description="Build (if needed) the stack images and print their tags.")
    ap.add_argument("--stack", default="cpu", choices=sorted(STACKS))
    args = ap.parse_args(argv)
    start = time.monotonic()
    try:
        tags = ensure_images(args.stack, echo=lambda s: print(s, file=sys.stderr, flush=True))
    except (ImageBuildError, OSError) as exc:
        print(f"[images] ERROR: {exc}", file=sys.stderr)
        return 1
    print(f"[images] ready in {time.monotonic() - start:.1f} s", file=sys.stderr)
    for key, value in image_env(tags).items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
