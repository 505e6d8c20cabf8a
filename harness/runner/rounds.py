"""All rounds of one cell: round 1 cold, rounds 2+ replaying the same sessions (warm), the server's
counters scraped around each round, the stack watched, and the cell's rounds table written."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from harness.analysis.rounds import cell_rounds, counter_reset_notes
from harness.client.workers import auto_workers
from harness.config import Config
from harness.config.console import say
from harness.observe.probes import Probe, deltas, settled
from harness.observe.watch import EngineWatch, StackWatch
from harness.results import RequestLog, read_requests, write_cell_rounds
from harness.runner.round import Endpoint, RoundProgress, run_in_loop, run_round
from harness.runner.sharded import run_sharded
from harness.workload import Workload


class StackDown(RuntimeError):
    """A component of the stack stopped serving during a round: the scenario's remaining requests
    were not sent, and no later round runs."""


class EngineDown(StackDown):
    """The engine stopped answering during a round."""


class StoreDown(StackDown):
    """The Mooncake master or the store node stopped answering during a with-cache round: what followed would have
    measured a stack without its cache."""


Route = tuple[Endpoint, Probe | None]


def _prebuild_first_turns(workload: Workload) -> None:
    """Tokenize every first turn before any timing starts (later turns depend on replies)."""
    for s in workload.sessions:
        s.build(0, [])


def run_rounds(
    workload: Workload,
    cfg: Config,
    routes: Endpoint | list[Route],
    out_dir: Path,
    progress: RoundProgress | None = None,
    labels: dict | None = None,
    stack_watch: StackWatch | None = None,
    before_round: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """All rounds of one scenario -> requests.csv (live) and rounds.csv; returns the rounds table.

    Round r goes to routes[min(r, len) - 1] (the users' `endpoints_per_round`).
    With a probe, that server's cache counters are scraped around the round and
    their deltas become columns of rounds.csv. rounds.csv is written even when a
    round is cut short (engine down, Ctrl-C): its rounds are then marked partial.
    `stack_watch` watches every component during each round (master included); `before_round(r)`
    runs before every round 2+ (topology engine-restart: the engine restarts there).
    Raises EngineDown when the engine stopped answering, StoreDown when the master or store node did; no later
    round is sent."""
    if isinstance(routes, Endpoint):
        routes = [(routes, None)]
    progress = progress or RoundProgress()
    _prebuild_first_turns(workload)
    log = RequestLog(out_dir / "requests.csv")
    t0 = time.perf_counter()
    counters: dict[int, dict] = {}
    block: int | None = None
    try:
        for rnd in range(1, cfg.rounds + 1):
            if rnd > 1 and cfg.wait_between_rounds:
                time.sleep(cfg.wait_between_rounds)  # configured pause, not a synchronisation
            if rnd > 1 and before_round:
                before_round(rnd)
            endpoint, probe = routes[min(rnd, len(routes)) - 1]
            before = probe.snapshot() if probe else None
            block = block or (before.block_size if before else None)
            n = min(cfg.client_workers or auto_workers(cfg.concurrency), cfg.concurrency, len(workload.sessions))
            try:
                if n > 1:
                    watch = run_sharded(n, workload, rnd, cfg, endpoint, log, t0, progress, block, stack_watch)
                else:
                    watch = EngineWatch(endpoint.base_url)
                    if stack_watch:
                        stack_watch.start()
                    stop = stack_watch.stopped if stack_watch else None
                    run_in_loop(run_round(workload, rnd, cfg, endpoint, log, t0, progress, watch, block, stop=stop))
            finally:
                if stack_watch:
                    stack_watch.stop()
            if stack_watch and (gone := stack_watch.down):
                raise (EngineDown if gone.component == "engine" else StoreDown)(f"round {rnd}: {gone.reason}")
            if probe and before:
                counters[rnd] = {
                    "engine_url": endpoint.base_url,
                    "engine_pool_blocks": before.pool_blocks,
                    **deltas(before, settled(probe, before, watch.succeeded)),
                }
            if watch.down:
                raise EngineDown(f"round {rnd}: {watch.down}")
    except BaseException:
        # rounds.csv of what was done, but the reason the round stopped (EngineDown, Ctrl-C) is what
        # the caller must see: a fault while tabulating a cut-short round must not replace it.
        log.close()
        try:
            tabulate(out_dir, cfg, workload.num_requests, block, counters, labels, routes[0][0].model)
        except Exception as e:
            say(f"[yellow]rounds.csv not written ({type(e).__name__}: {e}); requests.csv keeps every row[/yellow]")
        raise
    log.close()
    return tabulate(out_dir, cfg, workload.num_requests, block, counters, labels, routes[0][0].model)


def tabulate(
    out_dir: Path,
    cfg: Config,
    planned: int,
    block: int | None,
    counters: dict[int, dict],
    labels: dict | None,
    model: str,
) -> pd.DataFrame:
    """The cell's requests.csv -> its rounds table (analysis.rounds) -> rounds.csv and bench_serve.json."""
    table = cell_rounds(read_requests(out_dir / "requests.csv"), cfg, planned, block, counters, labels)
    for note in counter_reset_notes(table):
        say(f"[yellow]{note}[/yellow]")
    settings = {
        "backend": "kvbench",
        "model_id": model,
        "endpoint_type": f"openai-{cfg.api}",
        "max_concurrency": cfg.concurrency,
        "request_rate": cfg.request_rate or "inf",
        "num_prompts": planned,
    }
    write_cell_rounds(out_dir, table, settings)
    return table
