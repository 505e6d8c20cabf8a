"""A verified cache reset between two cells on one stack (`isolation: reset`).

A fresh stack per cell is isolation by construction, but costs an engine start (~17 s on the
CPU stack, minutes on a GPU with a real model). The peers reset instead and trust the answer;
kvbench resets and then proves it:

1. wait until the engine runs and queues no request (a reset fails while blocks are held);
2. `POST /reset_prefix_cache?reset_external=true` (vLLM dev endpoint: the local prefix cache,
   and through the MooncakeStoreConnector `remove_all(force=True)` on the store), retried while
   it answers `{"success": false}`, bounded;
3. the store is empty: the master counts 0 keys and 0 allocated bytes;
4. canary: the previous cell's first prompt again, which a warm tier would serve: it must get 0
   cached tokens and 0 local / external hits;
5. reset again (the canary stored its blocks), the store empty again.

The last snapshot is the cell's starting point: its cold gate compares hit counters with it
(they count the stack's whole life). Every step's figures go to the manifest (`ResetEvidence`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from harness.client.client import RequestSettings, auth_headers, open_client, send
from harness.observe.probes import Probe, Snapshot, total
from harness.records import ResetEvidence
from harness.workload import Prompt

RESET_PATH = "/reset_prefix_cache"
RETRY_S = 0.5  # between attempts while the engine still holds blocks (async saves finishing)


class ResetRefused(RuntimeError):
    """The engine has no usable reset endpoint (not a dev-mode vLLM): nothing to prove."""


@dataclass(frozen=True)
class ResetSettings:
    timeout_s: float = 60.0  # per phase: idle, reset retries
    # The master drops every key within the reset call (remove_all, force); 0.2-2 s per whole proof
    # measured on the CPU stack. A store still holding keys after this long is a warm store, not a
    # slow one (the peers' local-only reset keeps them for good: 2 x 60 s waited in vain before).
    store_empty_s: float = 15.0
    external: bool = True  # False: the peers' reset (local prefix cache only), for the audit


def _gauge(snap: Snapshot, name: str) -> float:
    return total(snap.vllm or {}, name) or 0.0


def wait_idle(probe: Probe, timeout_s: float) -> bool:
    """True once the engine neither runs nor queues a request (its own gauges), within the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        snap = probe.snapshot()
        if snap.vllm is not None and not (
            _gauge(snap, "vllm:num_requests_running") or _gauge(snap, "vllm:num_requests_waiting")
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)  # polling the engine's gauges, bounded by the deadline


def _reset_url(engine_url: str) -> str:
    return f"{engine_url.rstrip('/')}{RESET_PATH}"


def post_reset(engine_url: str, settings: ResetSettings) -> tuple[bool, int]:
    """POST the reset until it reports success or the timeout passes: (success, attempts)."""
    url = _reset_url(engine_url)
    params = {"reset_external": "true"} if settings.external else {}
    deadline = time.monotonic() + settings.timeout_s
    attempts = 0
    with httpx.Client(timeout=30.0, headers=auth_headers(url)) as c:
        while True:
            attempts += 1
            try:
                r = c.post(url, params=params)
            except httpx.HTTPError as e:
                raise ResetRefused(f"POST {url}: {type(e).__name__}: {e}") from None
            if r.status_code in (404, 405):
                raise ResetRefused(
                    f"POST {url}: HTTP {r.status_code}: the engine has no reset endpoint (vLLM needs "
                    "VLLM_SERVER_DEV_MODE=1, which kvbench sets only on stacks it starts with isolation reset)"
                )
            ok = r.status_code == 200 and _success(r)
            if ok or time.monotonic() >= deadline:
                return ok, attempts
            time.sleep(RETRY_S)  # blocks still held: the endpoint's documented answer is to retry


def reset_endpoint_error(engine_url: str) -> str | None:
    """Why the engine cannot be reset (None: it has the endpoint), asked without resetting anything:
    vLLM registers POST /reset_prefix_cache only in dev mode, so a GET is 405 with it and 404 without."""
    url = _reset_url(engine_url)
    try:
        r = httpx.get(url, timeout=10.0, headers=auth_headers(url))
    except httpx.HTTPError as e:
        return f"GET {url}: {type(e).__name__}: {e}"
    if r.status_code == 404:
        return f"{url}: HTTP 404: the server has no reset endpoint (vLLM needs VLLM_SERVER_DEV_MODE=1)"
    return None


def _success(r: httpx.Response) -> bool:
    try:
        body = r.json()
    except ValueError:
        return False
    return bool(body.get("success")) if isinstance(body, dict) else bool(body)


def wait_store_empty(probe: Probe, timeout_s: float) -> Snapshot:
    """The first snapshot whose master counts no key and no allocated byte, or the last one taken."""
    deadline = time.monotonic() + timeout_s
    while True:
        snap = probe.snapshot()
        c = snap.counters()
        if (c["master_key_count"] == 0 and not c["master_allocated_bytes"]) or time.monotonic() >= deadline:
            return snap
        time.sleep(0.1)  # polling the master's gauges, bounded by the deadline


def _canary(engine_url: str, model: str, api: str, prompt: Prompt, timeout_s: float) -> int | None:
    """The canary's cached tokens as the server reported them (None: not reported, or it failed)."""
    settings = RequestSettings(model=model, api=api, max_tokens=1, timeout=timeout_s)  # type: ignore[arg-type]

    async def go() -> int | None:
        async with open_client(engine_url, 1, timeout_s, auth_headers(engine_url)) as client:
            res = await send(client, prompt.body, settings)
        if not res.ok:
            raise RuntimeError(f"canary request failed: {res.error_class}: {res.error_message}")
        return res.cached_tokens

    return asyncio.run(go())


def _hits(before: Snapshot, after: Snapshot) -> tuple[float | None, float | None]:
    """Local and external hit tokens between two snapshots (None: not exposed)."""
    b, a = before.counters(), after.counters()

    def delta(k: str) -> float | None:
        now, then = a[k], b[k]
        return None if now is None or then is None else now - then

    return delta("local_hits"), delta("external_hits")


def verified_reset(
    probe: Probe, model: str, api: str, canary: Prompt | None, settings: ResetSettings = ResetSettings()
) -> tuple[ResetEvidence, Snapshot]:
    """Reset, prove, reset again. Returns the evidence and the snapshot the next cell starts from."""
    t = time.perf_counter()
    ev = ResetEvidence(external=settings.external)
    ev.idle = wait_idle(probe, settings.timeout_s)
    ok1, n1 = post_reset(probe.vllm_url, settings)
    empty = wait_store_empty(probe, settings.store_empty_s)
    c = empty.counters()
    ev.set(keys_after_reset=c["master_key_count"], bytes_after_reset=c["master_allocated_bytes"])
    if canary is not None:
        cached = _canary(probe.vllm_url, model, api, canary, settings.timeout_s)
        after = probe.snapshot()
        local, external = _hits(empty, after)
        ev.set(canary_prompt=canary.prompt_id, canary_cached_tokens=cached, canary_local_hits=local,
               canary_external_hits=external)  # fmt: skip
        wait_idle(probe, settings.timeout_s)
    ok2, n2 = post_reset(probe.vllm_url, settings)
    final = wait_store_empty(probe, settings.store_empty_s)
    f = final.counters()
    ev.set(
        reset_ok=ok1 and ok2,
        attempts=n1 + n2,
        keys_at_start=f["master_key_count"],
        bytes_at_start=f["master_allocated_bytes"],
        seconds=round(time.perf_counter() - t, 3),
    )
    warm = warm_tiers(ev)
    ev.set(warm=warm, verified=ev.reset_ok and warm is None)
    return ev, final


def warm_tiers(ev: ResetEvidence) -> str | None:
    """What stayed warm, with its numbers; None when every check says cold. A figure that could
    not be read counts as warm: an unproven reset is not a reset."""
    found = []
    if not ev.reset_ok:
        found.append(f"reset not confirmed after {ev.attempts} attempts")
    for when, keys, size in (
        ("after the reset", ev.keys_after_reset, ev.bytes_after_reset),
        ("at the cell's start", ev.keys_at_start, ev.bytes_at_start),
    ):
        if keys is None:
            found.append(f"store: key count unknown {when} (master metrics missing)")
        elif keys or size:
            found.append(f"store: {keys:,.0f} keys, {size or 0:,.0f} bytes {when}")
    if ev.canary_prompt is not None:
        if ev.canary_external_hits is None or ev.canary_external_hits > 0:
            found.append(f"store: the canary got {_n(ev.canary_external_hits)} external hit tokens")
        if ev.canary_local_hits is None or ev.canary_local_hits > 0:
            found.append(f"engine prefix cache: the canary got {_n(ev.canary_local_hits)} local hit tokens")
        if ev.canary_cached_tokens is None or ev.canary_cached_tokens > 0:
            found.append(f"the canary was served {_n(ev.canary_cached_tokens)} cached tokens")
    return "; ".join(found) or None


def _n(v: float | None) -> str:
    return "an unknown number of" if v is None else f"{v:,.0f}"
