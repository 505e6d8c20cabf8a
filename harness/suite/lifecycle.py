"""A stack's life around the cells it serves: prepare, bring up, run them, tear down with volumes,
verify that nothing is left; faults land in the cells' entries, never in the run's other cells."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.config import Config
from harness.observe.probes import Probe, Snapshot
from harness.records import CellEntry, ResetEvidence, StackInfo
from harness.runner import ResetSettings, verified_reset
from harness.stack import Stack, StackError
from harness.stack.spec import prepare
from harness.suite.cell import Cell, Target
from harness.suite.console import console, say, step
from harness.suite.run import Run, fail
from harness.workload import Prompt


class Batch:
    """The cells one stack serves, in order. A reused stack may hand the rest on to a new stack
    (a reset it cannot prove, a stack that broke): they go back to pending and leave the batch, so
    this stack's faults and teardown are not theirs."""

    def __init__(self, cells: list[Cell]) -> None:
        self.cells = list(cells)
        self.handed_on: list[Cell] = []
        self.started = False  # the body ran: the stack came up

    @property
    def entries(self) -> list[CellEntry]:
        return [c.entry for c in self.cells]

    def hand_on(self, first: Cell) -> None:
        i = self.cells.index(first)
        self.handed_on = self.cells[i:]
        for c in self.handed_on:
            c.entry.status = "pending"
        del self.cells[i:]


def on_fresh_stack(
    run: Run,
    cfg: Config,
    label: str,
    workdir: Path,
    batch: Batch,
    mode: str,
    body: Callable[[Stack], object],
    dev_mode: bool = False,
) -> StackInfo:
    """Fresh stack -> body -> teardown with volumes -> verify. `dev_mode`: the engine's reset endpoint."""
    t_all = time.perf_counter()
    info = StackInfo()
    timings = info.timings
    for e in batch.entries:
        e.status = "running"
    console.rule(label)
    try:  # a preparation fault (port clash, compose files) fails these cells, not the run
        spec = prepare(
            cfg.stack,
            run.dir.run_id,
            label,
            workdir,
            run.image_tags,
            run.opts.compose_dir,
            list(run.opts.extra_compose_files),
            mode=mode,  # the arm: vLLM's prefix cache and the KV connector on or off
            dev_mode=dev_mode,
        )
        ports = {**spec.engine_ports, "master_metrics": spec.master_metrics_port}
        if spec.store_metrics_port:
            ports["store_http"] = spec.store_metrics_port
        info.set(project=spec.project, ports=ports)
        for entry in batch.entries:
            entry.set(project=spec.project, ports=info.ports)
        run.save()
        stack = run.steps.open_stack(spec, workdir, cfg.stack)
    except Exception as e:
        fail(batch.entries, f"stack preparation failed: {type(e).__name__}: {e}"[:500], logs=None)
        run.save()
        return info
    try:
        with step(f"bring-up ({stack.UP_STEP})", timings, "up_s", transient=True):
            stack.up()
        timings["service_start_s"] = stack.service_start_seconds()
        info.engine_container_ids = stack.engine_container_ids()
        for entry in batch.entries:
            entry.engine_container_ids = info.engine_container_ids
        body(stack)
    except StackError as e:
        fail(batch.entries, str(e), logs=str(workdir / "logs"))
    except (KeyboardInterrupt, SystemExit):
        stack.save_logs()
        for entry in batch.entries:
            if entry.status == "running":
                entry.set(status="interrupted", reason="interrupted during the scenario")
        raise
    except Exception as e:  # any fault: keep the rows, save logs, tear down, go on
        fail(batch.entries, f"{type(e).__name__}: {e}"[:500], logs=str(stack.save_logs()))
    finally:
        _teardown(run, stack, batch.entries, info, timings, t_all)
    return info


def _teardown(run: Run, stack: Stack, entries: list[CellEntry], info: StackInfo, timings: dict, t_all: float) -> None:
    with step(f"teardown ({stack.DOWN_STEP})", timings, "teardown_s", transient=True):
        td = stack.down()
    timings["total_s"] = round(time.perf_counter() - t_all, 3)
    if timings.get("service_start_s") is not None:
        timings["harness_overhead_s"] = round(timings["up_s"] + timings["teardown_s"] - timings["service_start_s"], 3)
    info.set(teardown_verified=td.verified, teardown_leftovers=td.leftovers, timings=timings)
    for e in entries:
        e.set(teardown_verified=td.verified, teardown_leftovers=td.leftovers, timings={**timings, **e.timings})
        if not td.verified:
            e.set(status="failed", reason=(e.reason or "") + f"; teardown left {td.leftovers}")
    run.save()
    up = f"up in {timings['up_s']:.1f} s" if info.engine_container_ids else "bring-up failed"
    done = "nothing left" if td.verified else f"[red]NOT verified: left {td.leftovers}[/red]"
    say(f"  stack {up}; teardown ({stack.DOWN_STEP}) {td.seconds:.1f} s: {done}")


def prove_reset(run: Run, cfg: Config, target: Target, canary: Prompt | None) -> tuple[ResetEvidence, list[Snapshot]]:
    """A verified reset on every engine of the target (runner/reset.py): a stack of ours, or the server
    of `kvbench run --reset`. The evidence of all engines in one record (the first failure's figures),
    and the snapshots the next cell's gate starts from."""
    with step("verified reset (reset, store empty, canary, reset)"):
        results = []
        for url in target.urls:
            probe = Probe(url, target.master_url)
            try:
                results.append(verified_reset(probe, run.model, cfg.api, canary, ResetSettings()))
            finally:
                probe.close()
    # The first engine whose proof failed speaks for the stack (its verdict is then the stack's).
    evidence = next((ev for ev, _ in results if not ev.verified), results[-1][0])
    ok = "[green]proven cold[/green]" if evidence.verified else f"[yellow]NOT proven: {evidence.warm}[/yellow]"
    canary_said = "no canary" if canary is None else f"canary {evidence.canary_cached_tokens} cached tokens"
    say(f"  reset: {ok} (store {evidence.keys_at_start or 0:,.0f} keys, {canary_said}, {evidence.seconds:.1f} s)")
    return evidence, [snap for _, snap in results]
