"""The isolation modes: how a run's cells get their stacks.

- fresh: one new stack per cell, torn down with its volumes after it;
- reset: the cells of one mode (and sweep point) on as few stacks as the proofs allow, a verified
  reset before every cell after the first;
- shared: all scenarios back to back on one stack, as the users' old script did (pollution on purpose);
- external: a server someone else runs (`kvbench run`): no isolation, the cold gate still looks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from harness.config import point_label
from harness.observe.probes import Snapshot
from harness.records import CellEntry
from harness.runner import StackDown
from harness.stack import Stack
from harness.suite.cell import Cell, Target
from harness.suite.console import console, say
from harness.suite.lifecycle import Batch, on_fresh_stack
from harness.suite.plan import set_aside
from harness.suite.run import Run, fail
from harness.workload import Prompt


def fresh(run: Run, cell: Cell, point: int | None) -> None:
    if cell.entry.point:
        say(f"  sweep point {point}: {point_label(cell.entry.point)}")

    def body(stack: Stack) -> None:
        run.steps.measure(run, cell, Target.of(stack), None)

    on_fresh_stack(run, cell.cfg, cell.key.replace("/", "-"), cell.out, Batch([cell]), cell.entry.mode, body)


def reset(run: Run, cells: list[Cell], mode: str, point: int | None, repeat: int | None = None) -> None:
    """The first cell of a stack runs on it fresh; every next one after a verified reset. A reset
    that cannot be proven sends its cell, and those after it, to a new stack (or fails the cell:
    on_reset_failure: fail); so does a stack that broke."""
    todo = [c for c in cells if run.todo(c.key) is not None]
    stacks = 0
    while todo:
        stacks += 1
        rep = [f"r{repeat}"] if repeat else []
        label = "-".join(
            [*([f"point-{point:02d}"] if point else []), mode.replace("+", "-"), *rep, "reset", str(stacks)]
        )
        batch = Batch(todo)
        on_fresh_stack(
            run,
            todo[0].cfg,
            label,
            run.root / ".stacks" / label,
            batch,
            mode,
            functools.partial(_on_reused_stack, run, batch=batch),
            dev_mode=True,
        )
        if not batch.started:
            return  # the stack never came up: its cells failed with it
        todo = batch.handed_on


def _on_reused_stack(run: Run, stack: Stack, batch: Batch) -> None:
    """Measure the batch's cells on this stack in order; hand the rest on when a proof fails or the
    stack breaks."""
    batch.started = True
    canary: Prompt | None = None
    since: list[Snapshot] | None = None
    for i, cell in enumerate(list(batch.cells)):
        entry = cell.entry
        if i:
            entry.reset, since = run.steps.prove_reset(run, cell.cfg, Target.of(stack), canary)
            run.save()
            if not entry.reset.verified:
                if cell.cfg.on_reset_failure == "fresh":
                    entry.reset.fallback = "fresh stack"
                    batch.hand_on(cell)
                    return
                entry.reset.fallback = "failed (on_reset_failure: fail)"
                entry.set(status="failed", reason=f"reset not proven: {entry.reset.warm}")
                continue
        try:
            canary = run.steps.measure(run, cell, Target.of(stack), since) or canary
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # this cell failed; the next one's proof says whether the stack is usable
            entry.set(status="failed", reason=f"{type(e).__name__}: {e}"[:500], logs=str(stack.save_logs()))
            console.print(f"[red]{cell.key} failed: {entry.reason}[/red]")
            rest = batch.cells[batch.cells.index(cell) + 1 :]
            if isinstance(e, StackDown) and rest:  # a broken stack: the rest on a new one
                batch.hand_on(rest[0])
                return
        finally:
            run.save()


def shared(run: Run, cells: list[Cell], mode: str) -> None:
    """All scenarios back to back on one stack. One stack: a resumed shared run measures all its
    scenarios again, a finished cell's rows set aside, never appended to."""
    if all(c.entry.status == "ok" for c in cells):
        return
    for c in cells:
        if c.out.exists():
            c.entry.previous_attempts = [
                *c.entry.previous_attempts,
                c.entry.model_copy(update={"previous_attempts": []}),
            ]
            set_aside(run, c.key, len(c.entry.previous_attempts))
        c.entry.status = "pending"
    shared_dir = run.root / Path(cells[0].key).parent

    def body(stack: Stack) -> None:
        for c in cells:
            try:
                run.steps.measure(run, c, Target.of(stack), None)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # the shared stack goes on with the next scenario
                c.entry.set(status="failed", reason=f"{type(e).__name__}: {e}"[:500])
                console.print(f"[red]{c.key} failed: {c.entry.reason}[/red]")
                if isinstance(e, StackDown):
                    raise

    label = str(shared_dir.relative_to(run.root)).replace("/", "-")
    run.manifest.shared_stacks[mode] = on_fresh_stack(run, run.cfg, label, shared_dir, Batch(cells), mode, body)


def external(run: Run, cell: Cell, measure: Callable[[str, CellEntry], object]) -> None:
    if run.todo(cell.key) is None:
        return
    console.rule(f"{cell.name} (external server: {'a verified reset first' if run.external_reset else 'no isolation'})")
    try:
        measure(cell.name, cell.entry)
    except (KeyboardInterrupt, SystemExit):
        cell.entry.set(status="interrupted", reason="interrupted during the scenario")
        raise
    except Exception as e:  # one scenario's failure must not stop the others
        fail([cell.entry], f"{type(e).__name__}: {e}"[:500], logs=None)
    finally:
        run.save()


def cell_for(run: Run, key: str, point: int | None) -> Cell:
    """The cell of `key`, with its sweep point's configuration."""
    cfg = run.cfg.at(run.manifest.plan.points[point - 1]) if point and run.manifest.plan else run.cfg
    return Cell(key, run.manifest.scenarios[key], cfg, run.root / key)
