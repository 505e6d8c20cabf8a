"""Cache counters from vLLM `/metrics` and the Mooncake master's `:9003/metrics`.

Scraped before and after every round with prometheus_client's text parser.
A metric the server does not expose stays missing (None), never 0: "no hits"
and "could not tell" must not look the same in a results file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.client.client import auth_headers
from harness.config.console import say
from harness.observe.health import check, unhealthy
from harness.records.metrics import MASTER_COUNTERS, MASTER_GAUGES, SERVER_HISTOGRAMS, VLLM_COUNTERS

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Sample:
    out: Sample = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def total(sample: Sample, name: str, match: dict[str, str] | None = None) -> float | None:
    """Sum of a metric over all label sets that contain `match`; None if absent.

    Counters are looked up under both `name_total` and `name` (the parser keeps
    the suffix on samples)."""
    match = match or {}
    found = False
    acc = 0.0
    for (n, labels), v in sample.items():
        if n not in (name, f"{name}_total"):
            continue
        ld = dict(labels)
        if all(ld.get(k) == want for k, want in match.items()):
            found = True
            acc += v
    return acc if found else None


def label_value(sample: Sample, name: str, label: str) -> str | None:
    for (n, labels), _ in sample.items():
        if n == name:
            return dict(labels).get(label)
    return None


@dataclass
class Snapshot:
    """One scrape of both servers. A server that could not be scraped is None: every
    counter of it is then unknown, never 0 (a delta from it would be the lifetime total)."""

    vllm: Sample | None
    master: Sample | None

    def counters(self) -> dict[str, float | None]:
        vllm = self.vllm or {}
        out = {k: total(vllm, n, m) for k, (n, m) in VLLM_COUNTERS.items()}
        for k, n in SERVER_HISTOGRAMS.items():
            out[f"{k}_sum"], out[f"{k}_count"] = total(vllm, f"{n}_sum"), total(vllm, f"{n}_count")
        for k, n in {**MASTER_GAUGES, **MASTER_COUNTERS}.items():
            out[k] = total(self.master, n) if self.master is not None else None
        return out

    @property
    def block_size(self) -> int | None:
        """The engine's KV block size, from `vllm:cache_config_info` (None when not exposed)."""
        v = label_value(self.vllm or {}, "vllm:cache_config_info", "block_size")
        return int(v) if v and v.isdigit() else None

    @property
    def pool_blocks(self) -> int | None:
        """The KV pool the engine allocated, in blocks: `num_gpu_blocks` of `vllm:cache_config_info`
        (on CPU too; None when not exposed). With `--num-gpu-blocks-override` it is the override."""
        v = label_value(self.vllm or {}, "vllm:cache_config_info", "num_gpu_blocks")
        return int(v) if v and v.isdigit() else None

    @property
    def prefix_caching(self) -> bool | None:
        """Whether the engine runs with its own prefix cache (`enable_prefix_caching` of cache_config_info)."""
        v = label_value(self.vllm or {}, "vllm:cache_config_info", "enable_prefix_caching")
        return None if v is None else v == "True"


class Probe:
    """Scrapes both servers of one stack."""

    def __init__(self, vllm_url: str, master_metrics_url: str | None, timeout: float = 10.0) -> None:
        self._c = httpx.Client(timeout=timeout)
        self._unparsable: set[str] = set()  # warned once each
        self.vllm_url = vllm_url.rstrip("/")
        self.master_url = master_metrics_url.rstrip("/") if master_metrics_url else None

    def close(self) -> None:
        self._c.close()

    def snapshot(self) -> Snapshot:
        master = self._scrape(f"{self.master_url}/metrics") if self.master_url else None
        return Snapshot(self._scrape(f"{self.vllm_url}/metrics"), master)

    def _scrape(self, url: str) -> Sample | None:
        """Parsed metrics, or None when the server answered none: its counters are then unknown."""
        try:
            r = self._c.get(url, headers=auth_headers(url))  # the endpoint's key goes to its server only
            r.raise_for_status()
        except httpx.HTTPError:
            return None
        try:
            return parse(r.text)
        except ValueError as e:  # an answer that is not Prometheus text (a gateway's HTML or JSON page)
            if url not in self._unparsable:
                self._unparsable.add(url)
                say(f"[yellow]{url} is not Prometheus text ({str(e)[:80]}): no server metrics from it[/yellow]")
            return None

    def healthy(self) -> bool:
        """The engine answers GET /health with 200."""
        return unhealthy(self._c, f"{self.vllm_url}/health") is None


STATS_WAIT_S = 5.0


def settled(probe: Probe, before: Snapshot, finished: int, timeout: float = STATS_WAIT_S) -> Snapshot:
    """The snapshot after a round, once the engine has recorded its `finished` requests: vLLM
    updates its request histograms after the response is sent, so a scrape right after the last
    response can miss the last requests. Bounded: a server without the histogram, or requests it
    never recorded (failures), end the wait at once or at `timeout`."""
    name = f"{SERVER_HISTOGRAMS['server_e2e']}_count"
    start = total(before.vllm or {}, name) or 0.0
    deadline = time.monotonic() + timeout
    while True:
        after = probe.snapshot()
        n = total(after.vllm or {}, name)
        if n is None or n - start >= finished or time.monotonic() >= deadline:
            return after
        time.sleep(0.05)  # polling the engine's own counters, bounded by the deadline


def deltas(before: Snapshot, after: Snapshot) -> dict[str, float | str | None]:
    """Per-round counter deltas, master gauges at round start and end, and the server-side
    means (ms) of vLLM's request histograms over the round. A counter that went down between the
    snapshots was reset (its server restarted during the round): its delta is unknown (None), never
    negative, and `counter_resets` names each one (None when none did)."""
    b, a = before.counters(), after.counters()
    out: dict[str, float | str | None] = {}
    resets: list[str] = []
    for k in a:
        server = before.master if k in MASTER_GAUGES or k in MASTER_COUNTERS else before.vllm
        if k in MASTER_GAUGES:
            out[f"{k}_start"], out[f"{k}_end"] = b[k], a[k]
        elif (now := a[k]) is None or server is None:
            out[k] = None  # not exposed, or the scrape before the round failed: unknown, not zero
        elif now < (was := b[k] or 0.0):  # labelled counters appear on first use: absent before = 0
            out[k] = None
            resets.append(f"{k} {was:g} -> {now:g}")
        else:
            out[k] = now - was
    for k in SERVER_HISTOGRAMS:
        s, n = out.pop(f"{k}_sum"), out.pop(f"{k}_count")
        out[f"{k}_mean_ms"] = s / n * 1e3 if isinstance(s, float) and isinstance(n, float) and n else None
        if k == "server_ttft":
            out["server_requests"] = n
    out["counter_resets"] = "counters went down (a server restarted?): " + ", ".join(resets) if resets else None
    return out


def cold_state(snap: Snapshot, since: Snapshot | None = None) -> tuple[bool, str]:
    """Before round 1: the store is empty and nothing has hit - ever on a fresh stack, or since
    `since` (the snapshot after a verified reset of a reused stack: hit counters count its whole
    life). Missing metrics fail the gate."""
    c = snap.counters()
    base = since.counters() if since is not None else {}
    hits = {k: None if (v := c[k]) is None else v - (base.get(k) or 0.0) for k in ("local_hits", "external_hits")}
    checks = {"master_key_count": c["master_key_count"], **hits}
    missing = [k for k, v in checks.items() if v is None]
    if missing:
        return False, f"cannot verify: missing {', '.join(missing)}"
    if c["master_allocated_bytes"]:  # keys gone but bytes held: something still occupies the store
        checks["master_allocated_bytes"] = c["master_allocated_bytes"]
    nonzero = {k: v for k, v in checks.items() if v}
    if nonzero:
        return False, "not cold: " + ", ".join(f"{k}={v:g}" for k, v in nonzero.items())
    how = " since the reset" if since is not None else ""
    return True, f"master_key_count=0, local_hits=0, external_hits=0{how}"


def segments(snap: Snapshot) -> dict[str, float]:
    """The master's segments (`segment_total_capacity_bytes{segment="host:port"}`): who contributes
    how many bytes to the store. Empty when the master does not expose them."""
    return {
        dict(labels).get("segment", ""): v
        for (n, labels), v in (snap.master or {}).items()
        if n == "segment_total_capacity_bytes"
    }


def store_node_state(
    snap: Snapshot, store_url: str, segment_bytes: int, host: str = "mooncake-store"
) -> tuple[bool, str]:
    """The store node before round 1: it serves (GET /health), and the master's whole capacity is its
    segment, so the engines contribute none (standalone-store in effect) and nothing else holds KV.
    A fresh store node holds nothing: `cold_state` has checked the master's keys and bytes."""
    if why := check(f"{store_url.rstrip('/')}/health", "store"):
        return False, f"store node not serving: {why}"
    others = {k: v for k, v in segments(snap).items() if k.split(":")[0] != host}
    if others:
        named = ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in sorted(others.items()))
        return False, f"store node: other processes contribute segments ({named})"
    cap = snap.counters()["master_capacity_bytes"]
    if cap is None:
        return False, "store node: cannot verify (no master_total_capacity_bytes)"
    if cap != segment_bytes:
        return False, (
            f"store node: the master's capacity is {cap / 2**20:,.0f} MiB, the store node's segment "
            f"{segment_bytes / 2**20:,.0f} MiB (do the engines still contribute memory?)"
        )
    return True, f"store node serving, its {segment_bytes / 2**20:,.0f} MiB segment the whole store"
