"""One round in this process: every session of the workload against one endpoint, each request
recorded as it finishes.

Each round gets its own connection pool so no round inherits another's connections. Requests are
admitted by a semaphore (not fixed batches), optionally paced by Poisson arrivals; conversations
send their turns in order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from harness.analysis.reuse import block_chain
from harness.client.client import Client, RequestResult, RequestSettings, auth_headers, open_client, send
from harness.config import Config
from harness.observe.watch import EngineWatch
from harness.records import RequestRow
from harness.results import RequestLog
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


def run_in_loop(coro) -> None:
    """uvloop where available: about 3x less client-side delay on a measured TTFT
    (benchmarks/client_overhead.py); plain asyncio otherwise. A Ctrl-C cancels the
    round and surfaces as `Interrupted` here (see interrupts.py)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(interrupts.cancellable(coro))
    else:
        uvloop.run(interrupts.cancellable(coro))
