"""Run one scenario's rounds against an endpoint and record every request.

Round 1 is cold, rounds 2+ replay the same sessions (warm). Each round gets its
own connection pool so no round inherits another's connections. Requests are
admitted by a semaphore (not fixed batches), optionally paced by Poisson
arrivals; conversations send their turns in order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from harness.analysis.reuse import block_chain
from harness.client.client import Client, RequestResult, RequestSettings, auth_headers, open_client, send
from harness.client.workers import Shared, auto_workers, run_workers, shares
from harness.config import Config
from harness.config.console import say
from harness.observe.probes import Probe, deltas, settled
from harness.observe.watch import StackWatch
from harness.records import RequestRow
from harness.results import RequestLog, tabulate_rounds
from harness.stack import interrupts
from harness.workload import Prompt, Session, Workload


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str


@dataclass
class RoundProgress:
    """Minimal progress sink; the CLI plugs a rich progress bar in."""

    start: Callable[[int, int], None] = lambda rnd, total: None
    advance: Callable[[bool], None] = lambda ok: None
    stop: Callable[[], None] = lambda: None


class Pacer:
    """Poisson arrivals at `rate` requests/s across the whole round (None = no pacing)."""

    def __init__(self, rate: float | None, seed: str) -> None:
        self._rate = rate
        self._rng = random.Random(seed)
        self._next = time.perf_counter()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._rate:
            return
        async with self._lock:
            self._next = max(self._next, time.perf_counter()) + self._rng.expovariate(self._rate)
            delay = self._next - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


# Failures that say the server may be gone (as opposed to a request it rejected).
SERVER_FAULTS = {
    "ConnectError",
    "ConnectTimeout",
    "RemoteProtocolError",
    "ReadError",
    "WriteError",
    "ReadTimeout",
    "PoolTimeout",
    "Timeout",
    "IncompleteStream",
    "StreamError",
}
HEALTH_TIMEOUT_S = 5.0


class StackDown(RuntimeError):
    """A component of the stack stopped serving during a round: the scenario's remaining requests
    were not sent, and no later round runs."""


class EngineDown(StackDown):
    """The engine stopped answering during a round."""


class StoreDown(StackDown):
    """The Mooncake master stopped answering during a with-cache round: what followed would have
    measured a stack without its cache."""


class EngineWatch:
    """Stops sending when the engine is gone. After `threshold` server-side faults (connection
    errors, 5xx, timeouts) the engine's GET /health decides: not 200 -> the round is aborted and
    nothing more is sent; healthy -> the count starts again (the faults were the requests' own)."""

    def __init__(self, base_url: str, threshold: int = 3, shared: Any = None) -> None:
        self.health_url = f"{base_url.rstrip('/')}/health"
        self.threshold = threshold
        self.shared = shared  # client workers: an Event set by whichever worker finds the engine gone
        self.found: str | None = None
        self.succeeded = 0  # requests of the round that completed (the server has recorded them)
        self._faults = 0
        self._lock = asyncio.Lock()

    @property
    def down(self) -> str | None:
        if self.found is None and self.shared is not None and self.shared.is_set():
            return "another client worker found the engine unreachable"
        return self.found

    async def record(self, res: RequestResult) -> None:
        self.succeeded += res.ok
        if res.ok or not (res.error_class in SERVER_FAULTS or (res.http_status or 0) >= 500):
            return
        self._faults += 1
        async with self._lock:  # one health probe at a time; others wait for its verdict
            if self.down or self._faults < self.threshold:
                return
            if await self._healthy():
                self._faults = 0
            else:
                self.found = (
                    f"engine unreachable after {self._faults} failed requests (last: {res.error_class}: "
                    f"{res.error_message[:120]}); GET /health failed"
                )
                if self.shared is not None:
                    self.shared.set()

    async def _healthy(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S, headers=auth_headers(self.health_url)) as c:
                return (await c.get(self.health_url)).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class RoundContext:
    scenario: str
    round: int
    settings: RequestSettings
    log: RequestLog
    t0: float
    sem: asyncio.Semaphore
    pacer: Pacer
    progress: RoundProgress
    watch: EngineWatch
    block: int | None  # the engine's KV block size: prompt ids become block keys
    start: float = 0.0  # perf_counter at the round's start: trace arrivals are scheduled from it

    def settings_for(self, prompt: Prompt) -> RequestSettings:
        return self.settings if prompt.max_tokens is None else replace(self.settings, max_tokens=prompt.max_tokens)

    def row(self, session: Session, turn: int, prompt: Prompt, res: RequestResult) -> RequestRow:
        return RequestRow(
            scenario=self.scenario,
            round=self.round,
            index=session.first_index + turn,
            prompt_id=prompt.prompt_id,
            prompt_hash=prompt.prompt_hash,
            session_id=session.session_id,
            turn=turn,
            api=self.settings.api,
            ok=res.ok,
            http_status=res.http_status,
            error_class=res.error_class,
            error_message=res.error_message,
            send_s=round(res.send_time - self.t0, 6) if res.send_time else None,
            scheduled_s=round(self.start + prompt.send_at_s - self.t0, 6) if prompt.send_at_s is not None else None,
            ttft_ms=_r(res.ttft_ms),
            first_token_lag_ms=_r(res.first_token_lag_ms),
            read_delay_ms=_r(res.read_delay_ms),
            tpot_ms=_r(res.tpot_ms),
            e2e_ms=_r(res.e2e_ms),
            itl_ms=" ".join(f"{x:.3f}" for x in res.itl_ms),
            n_itl=len(res.itl_ms),
            prompt_tokens=res.prompt_tokens,
            completion_tokens=res.completion_tokens,
            cached_tokens=res.cached_tokens,
            expected_prompt_tokens=prompt.prompt_tokens,
            shared_prefix_tokens=prompt.shared_prefix_tokens,
            prefix_key=prompt.prefix_key,
            provides_prefix_key=prompt.provides_prefix_key,
            output_chars=len(res.text),
            output_hash=res.output_hash,
            prefix_blocks=block_chain(res.prompt_ids, self.block),
        )


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


async def _run_session(ctx: RoundContext, client: Client, session: Session) -> None:
    replies: list[str] = []
    for turn in range(session.turns):
        if len(replies) < turn:  # an earlier turn failed: the history cannot be built honestly
            prompt = session.build(turn, replies + [""] * (turn - len(replies)))  # for the row only, never sent
            res = RequestResult(
                error_class="PreviousTurnFailed",
                error_message="an earlier turn of this session failed",
                send_time=time.perf_counter(),
                e2e_ms=0.0,
            )
        else:
            if turn and session.think_s:  # the user reads the answer and types; other sessions go on
                await asyncio.sleep(session.think_s[turn - 1])
            # Later turns tokenize their history: off the event loop, so that other
            # streams' chunks are still read (and timed) promptly.
            prompt = (
                session.build(turn, replies) if turn == 0 else await asyncio.to_thread(session.build, turn, replies)
            )
            if prompt.send_at_s is not None:  # trace replay: the recorded arrival (scaled)
                await asyncio.sleep(max(0.0, ctx.start + prompt.send_at_s - time.perf_counter()))
            await ctx.pacer.wait()
            async with ctx.sem:
                if ctx.watch.down:  # the engine is gone: what was not sent is not a request
                    return
                res = await send(client, prompt.body, ctx.settings_for(prompt))
                await ctx.watch.record(res)  # holding the slot: nothing new is sent while /health is asked
            if res.ok:
                replies.append(res.text)
        ctx.log.append(ctx.row(session, turn, prompt, res))
        ctx.progress.advance(res.ok)


async def run_round(
    workload: Workload,
    rnd: int,
    cfg: Config,
    endpoint: Endpoint,
    log: RequestLog,
    t0: float,
    progress: RoundProgress,
    watch: EngineWatch,
    block: int | None = None,
    start: float | None = None,
    stop: Any = None,
    worker: int | None = None,
) -> None:
    """One round in this process. `start`: the perf_counter instant the round begins (client workers
    share one); `stop`: an Event that ends the round early (the parent of client workers was
    interrupted); `worker`: this client worker's index (its own arrival process)."""
    settings = RequestSettings(
        model=endpoint.model,
        api=cfg.api,
        max_tokens=cfg.max_tokens,
        temperature=cfg.temperature,
        timeout=cfg.request_timeout,
    )
    ctx = RoundContext(
        workload.scenario,
        rnd,
        settings,
        log,
        t0,
        asyncio.Semaphore(cfg.concurrency),
        Pacer(cfg.request_rate, f"{cfg.seed}:{workload.scenario}:{rnd}" + (f":{worker}" if worker is not None else "")),
        progress,
        watch,
        block,
    )
    progress.start(rnd, workload.num_requests)
    headers = auth_headers(endpoint.base_url)  # the endpoint's API key, if any, with every request to it
    try:
        async with open_client(endpoint.base_url, cfg.concurrency, cfg.request_timeout, headers) as client:
            ctx.start = start if start is not None else time.perf_counter()
            await asyncio.sleep(max(0.0, ctx.start - time.perf_counter()))
            sessions = asyncio.gather(*(_run_session(ctx, client, s) for s in workload.sessions))
            watcher = asyncio.ensure_future(_cancel_on(stop, sessions)) if stop is not None else None
            try:
                await sessions
            except asyncio.CancelledError:
                if stop is None or not stop.is_set():
                    raise  # Ctrl-C in this process: interrupts.cancellable turns it into Interrupted
            finally:
                if watcher is not None:
                    watcher.cancel()
    finally:
        progress.stop()


async def _cancel_on(stop: Any, task: asyncio.Future, poll_s: float = 0.1) -> None:
    """Cancel `task` once the (cross-process) `stop` event is set."""
    while not stop.is_set():
        await asyncio.sleep(poll_s)  # an Event of another process cannot wake an event loop
    task.cancel()


def _run(coro) -> None:
    """uvloop where available: about 3x less client-side delay on a measured TTFT
    (benchmarks/client_overhead.py); plain asyncio otherwise. A Ctrl-C cancels the
    round and surfaces as `Interrupted` here (see interrupts.py)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(interrupts.cancellable(coro))
    else:
        uvloop.run(interrupts.cancellable(coro))


def _prebuild_first_turns(workload: Workload) -> None:
    """Tokenize every first turn before any timing starts (later turns depend on replies)."""
    for s in workload.sessions:
        s.build(0, [])


Route = tuple[Endpoint, Probe | None]


def _run_sharded(
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
            _run(run_round(share, rnd, mine, endpoint, part, t0, RoundProgress(advance=shared.tick), watch, block,
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
    Raises EngineDown when the engine stopped answering, StoreDown when the master did; no later
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
                    watch = _run_sharded(n, workload, rnd, cfg, endpoint, log, t0, progress, block, stack_watch)
                else:
                    watch = EngineWatch(endpoint.base_url)
                    if stack_watch:
                        stack_watch.start()
                    stop = stack_watch.stopped if stack_watch else None
                    _run(run_round(workload, rnd, cfg, endpoint, log, t0, progress, watch, block, stop=stop))
            finally:
                if stack_watch:
                    stack_watch.stop()
            if stack_watch and (gone := stack_watch.down):
                raise (StoreDown if gone.component == "master" else EngineDown)(f"round {rnd}: {gone.reason}")
            if probe and before:
                counters[rnd] = {
                    "engine_url": endpoint.base_url,
                    **deltas(before, settled(probe, before, watch.succeeded)),
                }
            if watch.down:
                raise EngineDown(f"round {rnd}: {watch.down}")
    except BaseException:
        # rounds.csv of what was done, but the reason the round stopped (EngineDown, Ctrl-C) is what
        # the caller must see: a fault while tabulating a cut-short round must not replace it.
        log.close()
        try:
            tabulate_rounds(out_dir, cfg, workload.num_requests, block, counters, labels, routes[0][0].model)
        except Exception as e:
            say(f"[yellow]rounds.csv not written ({type(e).__name__}: {e}); requests.csv keeps every row[/yellow]")
        raise
    log.close()
    return tabulate_rounds(out_dir, cfg, workload.num_requests, block, counters, labels, routes[0][0].model)
