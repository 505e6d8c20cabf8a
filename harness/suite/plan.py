"""A run's plan: every cell registered as `pending` before the first stack starts (so an interrupted
run shows what it never reached), in the order they run; on resume, the cells not finished ok again,
an earlier attempt's files set aside with its verdict on record."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from harness.records import CellEntry, Plan, cell_key
from harness.suite.run import Run


@dataclass(frozen=True)
class PlannedCell:
    scenario: str
    mode: str
    isolation: str
    repeat: int
    point: int | None  # 1-based sweep point, None without a sweep

    @property
    def key(self) -> str:
        return cell_key(self.scenario, self.mode, self.isolation, self.repeat, self.point)


def arm_order(modes: list[str], repeat: int) -> list[str]:
    """The arms' order in a repeat: as given in odd repeats, reversed in even ones (ABBA): an arm run
    later inherits a warmer machine, so no arm is always second."""
    return list(modes) if repeat % 2 else list(reversed(modes))


def cells_of(plan: Plan) -> list[PlannedCell]:
    """Point-major, then isolation (fresh, external, reset), then scenario-major with every mode of
    a scenario back to back, their order alternating by repeat (ABBA); shared cells last, one stack
    per mode."""
    points: list[int | None] = list(range(1, len(plan.points) + 1)) or [None]
    reps = range(1, plan.repeats + 1)
    isolated = [
        PlannedCell(n, m, iso, r, p)
        for p in points
        for iso in ("fresh", "external", "reset")
        if iso in plan.isolation
        for n in plan.scenarios
        for r in reps
        for m in arm_order(plan.modes, r)
    ]
    shared = [
        PlannedCell(n, m, "shared", 1, None) for m in plan.modes if "shared" in plan.isolation for n in plan.scenarios
    ]
    return isolated + shared


def register(run: Run, c: PlannedCell) -> None:
    old = run.manifest.scenarios.get(c.key)
    if old and old.status == "ok":
        return
    values = run.manifest.plan.points[c.point - 1] if c.point and run.manifest.plan else None
    entry = CellEntry(scenario=c.scenario, mode=c.mode, isolation=c.isolation, repeat=c.repeat, point=values)
    if old:  # an earlier attempt of a resumed run: its files move aside, its verdict stays on record
        entry.previous_attempts = [*old.previous_attempts, old.model_copy(update={"previous_attempts": []})]
        set_aside(run, c.key, len(entry.previous_attempts))
    run.manifest.scenarios[c.key] = entry


def set_aside(run: Run, key: str, attempt: int) -> None:
    d = run.root / key
    if d.exists():
        dest = run.root / ".attempts" / f"{key.replace('/', '-')}-{attempt}"
        dest.parent.mkdir(exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        d.rename(dest)
