"""Client worker processes: a round's requests shared over N processes, each with its own event
loop and connections, so that a fast engine at high concurrency measures the engine, not one
client core.

How the round's semantics stay global: sessions are dealt round-robin; worker i keeps its share
of the concurrency in flight (C // N, the remainder to the first ones) and paces its arrivals as
a Poisson process at rate / N (N independent Poisson processes at rate r / N are one at rate r);
trace arrivals keep their recorded times, all measured from one shared start instant
(perf_counter is CLOCK_MONOTONIC, one clock for every process). Each worker appends its rows to
its own part file as they complete (nothing is lost if it dies); the parent merges them into
requests.csv after the round. A worker that finds the engine gone tells the others (`down`);
Ctrl-C in the parent stops every worker, which keeps its rows.

Workers are forked (Linux): they inherit the round's workload as built, prompts included.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

# What one process keeps in flight with margin (benchmarks/capacity.py: 2,600-4,600 requests/s from
# an instant server at concurrency 64, 256 in flight at a paced one, on one core): one more worker
# per this much concurrency.
CONCURRENCY_PER_WORKER = 128


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_workers(concurrency: int) -> int:
    """One worker per CONCURRENCY_PER_WORKER requests in flight, on all cores but one (the parent,
    the OS, and on a small host maybe the server itself: on 2 cores with a local server, 2 workers
    made p99 worse, not better)."""
    return max(1, min(available_cores() - 1, -(-concurrency // CONCURRENCY_PER_WORKER)))


def shares(total: int, n: int) -> list[int]:
    """`total` split over n workers as evenly as integers allow."""
    return [total // n + (i < total % n) for i in range(n)]


@dataclass
class Shared:
    """What the workers and the parent share during a round."""

    ok: Any  # mp.Value: requests completed ok, by all workers (progress)
    failed: Any  # mp.Value: requests failed
    stop: Any  # mp.Event: the parent was interrupted; stop sending, keep the rows
    down: Any  # mp.Event: a worker found the engine gone; the others stop sending

    def tick(self, ok: bool) -> None:
        counter = self.ok if ok else self.failed
        with counter.get_lock():
            counter.value += 1


def run_workers(
    n: int,
    target: Callable[[int, Shared], dict],
    on_progress: Callable[[bool], None],
    poll_s: float = 0.1,
    started: Callable[[], None] | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> list[dict]:
    """Run target(i, shared) in n forked processes; each result in worker order. Progress is relayed
    to `on_progress` while they run. `started` is called once all are forked; when `stop_when()`
    turns true every worker stops sending (as on Ctrl-C) and keeps its rows. A worker that dies
    without a result gives {"error": ...}."""
    ctx = mp.get_context("fork")
    shared = Shared(ctx.Value("q", 0), ctx.Value("q", 0), ctx.Event(), ctx.Event())
    results = ctx.SimpleQueue()
    procs = [ctx.Process(target=_child, args=(i, target, shared, results), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    if started:
        started()
    relayed = [0, 0]
    out: dict[int, dict] = {}
    try:
        while any(p.is_alive() for p in procs):
            wait([p.sentinel for p in procs if p.is_alive()], timeout=poll_s)
            _relay(shared, relayed, on_progress)
            _collect(results, out)  # while they run: a result larger than the pipe's buffer blocks its sender
            if stop_when and stop_when():
                shared.stop.set()
        _relay(shared, relayed, on_progress)
    except BaseException:  # Ctrl-C: every worker stops sending and writes what it has
        shared.stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        raise
    _collect(results, out)
    return [out.get(i, {"error": f"client worker {i} exited with code {p.exitcode}"}) for i, p in enumerate(procs)]


def _collect(results: Any, out: dict[int, dict]) -> None:
    while not results.empty():
        i, res = results.get()
        out[i] = res


def _relay(shared: Shared, relayed: list[int], on_progress: Callable[[bool], None]) -> None:
    """Pass the workers' new completions to the parent's progress; `relayed` counts what was passed."""
    while relayed[0] < shared.ok.value:
        relayed[0] += 1
        on_progress(True)
    while relayed[1] < shared.failed.value:
        relayed[1] += 1
        on_progress(False)


def _child(i: int, target: Callable[[int, Shared], dict], shared: Shared, results: Any) -> None:
    # Ctrl-C reaches the whole process group: the parent decides (it sets `stop`), not the worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        res = target(i, shared)
    except BaseException as e:  # reported to the parent as this worker's result
        res = {"error": f"client worker {i}: {type(e).__name__}: {e}"[:500]}
    results.put((i, res))
