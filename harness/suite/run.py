"""What every cell of one run shares: the run's directory and manifest, its base configuration, the
images, and the steps that open, reset and measure stacks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.client.tokenizer import LocalTokenizer
from harness.config import Config, StackConfig
from harness.observe.probes import Snapshot
from harness.records import CellEntry, Manifest, ResetEvidence
from harness.results import RunDir
from harness.stack import Stack
from harness.stack.spec import COMPOSE_DIR, StackSpec
from harness.suite.console import console, say
from harness.workload import Prompt

ImageProvider = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class Steps:
    """The three things a run does with stacks, as one replaceable set: open a stack, prove a used
    stack cold again, measure a cell on a target. The suite uses the real ones (suite/steps.py);
    tests of the plan (which cells run where, resume, fallbacks) pass their own through
    `SuiteOptions.steps`."""

    open_stack: Callable[[StackSpec, Path, StackConfig], Stack]
    measure: Callable[..., Prompt | None]  # (run, cell, target, since): cell.measure
    # (run, cfg, target, canary): lifecycle.prove_reset
    prove_reset: Callable[..., tuple[ResetEvidence, list[Snapshot]]]


@dataclass
class SuiteOptions:
    results_root: Path = Path("results")
    compose_dir: Path = COMPOSE_DIR
    extra_compose_files: tuple[Path, ...] = ()
    steps: Steps | None = None  # None: the real ones (suite/steps.py); tests run the plan with their own


@dataclass
class Run:
    """One run's shared state. `cfg` is the run's base configuration; a cell of a sweep point runs
    with its own (`Cell.cfg`), never by changing this one."""

    cfg: Config
    dir: RunDir
    manifest: Manifest
    opts: SuiteOptions
    steps: Steps
    images: ImageProvider
    model: str
    image_tags: dict[str, str] = field(default_factory=dict)
    # `kvbench run --tokenizer`: the endpoint has no usable POST /tokenize (not vLLM)
    local_tokenizer: LocalTokenizer | None = None
    external_reset: bool = False  # `kvbench run --reset`: a verified reset before every scenario

    @property
    def root(self) -> Path:
        return self.dir.root

    def save(self) -> None:
        self.dir.write_manifest(self.manifest)

    def todo(self, key: str) -> CellEntry | None:
        """The cell's entry, or None when an earlier attempt finished it ok (a resumed run)."""
        entry = self.manifest.scenarios[key]
        if entry.status == "ok":
            say(f"{key}: ok in an earlier attempt, not run again")
            return None
        return entry


def fail(entries: list[CellEntry], reason: str, logs: str | None) -> None:
    """Every entry not finished yet fails with `reason` (and where its stack's logs are)."""
    for e in entries:
        if e.status in ("running", "pending"):
            e.set(status="failed", reason=reason, logs=logs)
    console.print(f"[red]{reason}[/red]" + (f" (logs: {logs})" if logs else ""))
