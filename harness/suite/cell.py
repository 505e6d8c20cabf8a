"""One cell on its target: prove it cold, build the workload, run the rounds while the stack is
watched, judge the cell, and show its rounds on the console."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.analysis.shortfall import cell_shortfalls
from harness.analysis.status import cell_status, engine_mismatch, misconfigured
from harness.client.tokenizer import ServerTokenizer
from harness.config import ARM_FLAGS, Config
from harness.observe.probes import Probe, Snapshot, cold_state, store_node_state
from harness.observe.watch import StackWatch
from harness.records import CellEntry
from harness.runner import Endpoint, Route, run_rounds
from harness.runner.warmup import warm_up
from harness.stack import Stack
from harness.stack.spec import size_bytes
from harness.suite.console import print_rounds, round_progress, say, step
from harness.suite.run import Run
from harness.workload import Prompt, Tokenizer, Workload, build_workload


@dataclass
class Cell:
    """One cell as it runs: its manifest entry, its own configuration (its sweep point's), its directory."""

    key: str
    entry: CellEntry
    cfg: Config
    out: Path

    @property
    def name(self) -> str:
        return self.entry.scenario


@dataclass
class Target:
    """Where a cell's requests go: the engines (round 1 to the first, rounds 2+ to the last), the
    master's metrics, the stack when it is one of ours (None: an external server), and the store
    node's HTTP server when the stack has one."""

    urls: list[str]
    master_url: str | None
    stack: Stack | None = None
    store_url: str | None = None

    @classmethod
    def of(cls, stack: Stack) -> Target:
        return cls(stack.engine_urls, stack.master_metrics_url, stack, stack.store_url)


def measure(run: Run, cell: Cell, target: Target, since: list[Snapshot] | None = None) -> Prompt | None:
    """Cold-state gate, workload, rounds, verdict. The whole stack is watched during every round;
    with the cache, its master too. `since`: per engine, the snapshot after a verified reset
    (isolation reset). Returns the workload's first prompt (the canary of the next cell's reset)."""
    cell.out.mkdir(parents=True, exist_ok=True)
    cell.entry.status = "running"
    probes = [Probe(u, target.master_url) for u in target.urls]
    try:
        if target.stack is not None:  # an external server is measured as it is
            _warm_up(run, cell, target, probes)
        cold, detail = _prove_cold(cell, probes, since, target.store_url)
        if target.stack is not None and (mismatch := "; ".join(engine_mismatch(cell.entry, cell.cfg.stack))):
            # the arm's engine runs another prefix cache or pool than asked: its rounds would measure
            # something else, so none is run (an external server's flags are its operator's)
            cell.entry.set(status="misconfigured", reason=mismatch, misconfigured=mismatch)
            say(f"  [red]MISCONFIGURED (no round run): {mismatch}[/red]")
            return None
        routes: list[Route] = [(Endpoint(u, run.model), p) for u, p in zip(target.urls, probes)]
        with run.local_tokenizer or ServerTokenizer(routes[0][0].base_url, run.model) as tok:
            run.manifest.tokenizer = tok.source
            wl = _workload(run, cell, tok)
            table = _rounds(cell, wl, routes, probes[0], target)
        cell.entry.set(**cell_status(table, cold, cell.cfg.max_failed_percent, detail))
        # the controls judge our stacks' arms; an external server's flags are its operator's
        ours = target.stack is not None
        judged = cell.entry.status not in ("failed", "degraded")  # a broken store is said as such
        if ours and judged and (why := misconfigured(table, cell.entry, cell.cfg.stack)):
            cell.entry.set(status="misconfigured", reason=why, misconfigured=why)
        print_rounds(table)
        if cell.entry.status == "misconfigured":
            say(f"  [red]MISCONFIGURED: {cell.entry.reason}[/red]")
        for why in cell_shortfalls(table):
            say(f"  [yellow]{why}[/yellow]")
        return wl.sessions[0].build(0, []) if wl.sessions else None
    finally:
        for p in probes:
            p.close()


def _warm_up(run: Run, cell: Cell, target: Target, probes: list[Probe]) -> None:
    """Warm every engine of the stack before the cold proof (runner/warmup.py): requests that share
    nothing with the workload and store nothing, so round 1 no longer carries the process's own
    cold start; the proof that follows shows the warm-up left nothing. Evidence in the manifest."""
    with step("engine warm-up (requests below one KV block)", cell.entry.timings, "warmup_s", transient=True):
        evidence = [warm_up(u, run.model, p.snapshot().block_size, cell.cfg.request_timeout)
                    for u, p in zip(target.urls, probes)]  # fmt: skip
    cell.entry.warmup = evidence[0] if len(evidence) == 1 else {"engines": evidence}
    first = [e["ttft_ms"][0] for e in evidence if e["ttft_ms"]]
    later = [t for e in evidence for t in e["ttft_ms"][1:]]
    span = f"{min(later):,.0f}-{max(later):,.0f}" if later else "n/a"
    firsts = ", ".join(f"{t:,.0f}" for t in first)
    say(f"  engine warm-up: {sum(e['requests'] for e in evidence)} requests, first TTFT {firsts} ms, then {span} ms")


def _prove_cold(
    cell: Cell, probes: list[Probe], since: list[Snapshot] | None, store_url: str | None = None
) -> tuple[bool, str]:
    snapshots = [p.snapshot() for p in probes]
    results = [cold_state(s, since[i] if since else None) for i, s in enumerate(snapshots)]
    if len(results) == 1:
        cold, detail = results[0]
    else:
        cold = all(ok for ok, _ in results)
        detail = "; ".join(f"engine {i + 1}: {d}" for i, (_, d) in enumerate(results))
    if store_url and ARM_FLAGS.get(cell.entry.mode, (False, True))[1]:  # with the connector: the store node's pool
        ok, why = store_node_state(snapshots[0], store_url, size_bytes(cell.cfg.stack.global_segment_size))
        cold, detail = cold and ok, f"{detail}; {why}"
    first = snapshots[0]
    cell.entry.set(
        cold_verified=cold,
        cold_detail=detail,
        block_size=first.block_size,
        engine_pool_blocks=first.pool_blocks,
        engine_pool_tokens=cell.cfg.stack.pool_tokens,
        engine_prefix_caching=first.prefix_caching,
    )
    say(f"  cold state {'verified' if cold else '[yellow]NOT verified[/yellow]'} ({detail})")
    if first.pool_blocks is not None and first.block_size:
        asked = f"; asked {cell.cfg.stack.pool_blocks}" if cell.cfg.stack.pool_blocks is not None else ""
        say(f"  engine KV pool: {first.pool_blocks:,} x {first.block_size} tokens = "
            f"{first.pool_blocks * first.block_size:,}{asked}; prefix caching "
            f"{'on' if first.prefix_caching else 'off'}")  # fmt: skip
    if not cold and "not cold" in detail and cell.cfg.on_contamination == "fail":
        raise RuntimeError(f"cold-state gate failed: {detail}")
    return cold, detail


def _workload(run: Run, cell: Cell, tok: Tokenizer) -> Workload:
    how = "local tokenizer" if run.local_tokenizer else "/tokenize"
    cfg = cell.cfg
    with step(f"workload (exact token lengths via {how})", cell.entry.timings, "workload_s", transient=True):
        wl = build_workload(
            cell.name, cfg.scenarios[cell.name], tok, api=cfg.api, seed=cfg.seed, max_model_len=cfg.stack.max_model_len
        )
    if wl.skipped:
        cell.entry.skipped_requests = wl.skipped
        say(
            f"  {cell.name}: {wl.skipped} trace requests skipped (longer than max_input_length, or input + "
            f"output over max_model_len {cfg.stack.max_model_len}); {wl.num_requests} replayed"
        )
    return wl


def _rounds(cell: Cell, wl: Workload, routes: list[Route], probe: Probe, target: Target) -> pd.DataFrame:
    cfg, stack = cell.cfg, target.stack
    watch = StackWatch.for_stack(
        target.urls,
        target.master_url if ARM_FLAGS.get(cell.entry.mode, (False, True))[1] else None,  # arms with the connector
        stack.health if stack else None,
        cfg.watch.poll_s,
        cfg.watch.down_after_s,
        stack.spec.engines if stack else None,
        target.store_url,
    )

    def restart(rnd: int) -> None:
        assert stack is not None
        restart_engines(stack, probe, cell.entry, rnd)

    t = time.perf_counter()
    table = run_rounds(
        wl,
        cfg,
        routes,
        cell.out,
        progress=round_progress(cell.name),
        labels=cell.entry.model_dump(include={"scenario", "mode", "isolation", "repeat"}),
        stack_watch=watch,
        # topology engine-restart (compose only: the config says so) restarts the engine before round 2+
        before_round=restart if stack is not None and cfg.stack.topology == "engine-restart" else None,
    )
    cell.entry.timings["rounds_s"] = round(time.perf_counter() - t, 3)
    return table


def restart_engines(stack: Stack, probe: Probe, entry: CellEntry, rnd: int) -> None:
    """topology engine-restart: the engine starts again before round `rnd`, the master (and a store
    node) keep running. Recorded: what the store held before and after, and that the new engine is cold
    (its own counters start at 0: no local hit, no external hit yet)."""
    before = probe.snapshot().counters()
    keeps = "master and store node keep" if stack.store_url else "the master keeps"
    with step(f"engine restart before round {rnd} ({keeps} running)"):
        seconds = stack.restart_engines()
    c = probe.snapshot().counters()
    hits = {k: c[k] for k in ("local_hits", "external_hits")}  # a new process: its counters start at 0
    entry.engine_restarts = [
        *entry.engine_restarts,
        {
            "round": rnd,
            "seconds": seconds,
            "master_keys_before": before["master_key_count"],
            "master_keys_after": c["master_key_count"],
            "master_bytes_after": c["master_allocated_bytes"],
            "engine_cold": all(v == 0 for v in hits.values()),
            **{f"engine_{k}": v for k, v in hits.items()},
        },
    ]
    r = entry.engine_restarts[-1]
    say(f"  engine restarted in {seconds:.1f} s; the store holds {r['master_keys_after']} keys "
        f"(before: {r['master_keys_before']})")  # fmt: skip
