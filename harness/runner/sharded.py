"""One round over n client worker processes (harness/client/workers.py), for concurrency one
event loop cannot time honestly; their rows are merged into the round's requests.csv."""

from __future__ import annotations

import time

from harness.client.workers import Shared, run_workers, shares
from harness.config import Config
from harness.observe.watch import EngineWatch, StackWatch
from harness.results import RequestLog
from harness.runner.round import Endpoint, RoundProgress, run_in_loop, run_round
from harness.workload import Workload


def run_sharded(
    n: int,
    workload: Workload,
    rnd: int,
    cfg: Config,
    endpoint: Endpoint,
    log: RequestLog,
    t0: float,
    progress: RoundProgress,
    block: int | None,
    stack_watch: StackWatch | None = None,
) -> EngineWatch:
    """One round over n client worker processes (harness/client/workers.py); their rows are merged into
    `log`, and the returned watch sums what they saw. `stack_watch` starts once the workers are
    forked (a thread must not be forked with them) and stops them all when it finds a component gone."""
    concurrency = shares(cfg.concurrency, n)
    start = time.perf_counter() + 0.2  # the workers fork and start their loops before it
    parts = [log.path.with_name(f".{log.path.stem}.round{rnd}.worker{i}.csv") for i in range(n)]

    def worker(i: int, shared: Shared) -> dict:
        share = workload.share(i, n)
        rate = cfg.request_rate / n if cfg.request_rate else None
        mine = cfg.model_copy(update={"concurrency": concurrency[i], "request_rate": rate})
        part = RequestLog(parts[i])
        watch = EngineWatch(endpoint.base_url, shared=shared.down)
        try:
            ticks = RoundProgress(advance=shared.tick)
            run_in_loop(run_round(share, rnd, mine, endpoint, part, t0, ticks, watch, block,
                                  start=start, stop=shared.stop, worker=i))  # fmt: skip
        finally:
            part.close()
        return {"succeeded": watch.succeeded, "down": watch.found}

    try:
        results = run_workers(
            n,
            worker,
            progress.advance,
            started=lambda: _started(progress, rnd, workload.num_requests, stack_watch),
            stop_when=stack_watch.stopped.is_set if stack_watch else None,
        )
    finally:
        progress.stop()
        for part in parts:  # every completed row, also of an interrupted round
            if part.exists():
                log.extend(part)
                part.unlink()
    watch = EngineWatch(endpoint.base_url)
    watch.succeeded = sum(r.get("succeeded", 0) for r in results)
    watch.found = next((r["down"] for r in results if r.get("down")), None)
    if errors := [r["error"] for r in results if r.get("error")]:
        raise RuntimeError("; ".join(errors))
    return watch


def _started(progress: RoundProgress, rnd: int, total: int, stack_watch: StackWatch | None) -> None:
    """Once the client workers are forked: the progress display and the stack watch run threads,
    and a thread must not be forked (a lock it holds stays held in the child)."""
    progress.start(rnd, total)
    if stack_watch:
        stack_watch.start()
