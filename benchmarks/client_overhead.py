"""Harness client overhead: measured TTFT minus the server's own first-token send time.

A loopback STUB server (tests/stub_server.py, `stamp` mode, in its own process)
writes time.perf_counter() into each chunk just before sending it. On Linux
perf_counter is CLOCK_MONOTONIC, shared by all processes, so

    overhead = (client send time + client TTFT) - server first-chunk time

is what the harness adds to a TTFT: loopback delivery, HTTP/SSE parsing and
event-loop scheduling under load. Printed per concurrency as p50 / p99 / max.

    .venv/bin/python benchmarks/client_overhead.py [--requests 400] [--concurrency 1 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from tabulate import tabulate

from harness.client import RequestSettings, send

REPO = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"<(\d+\.\d+)>")


async def _measure(url: str, concurrency: int, n: int, tokens: int) -> list[float]:
    settings = RequestSettings(model="stub", max_tokens=tokens, timeout=30)
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    out: list[float] = []

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def one() -> None:
            async with sem:
                r = await send(client, "x", settings)
            if r.ok and r.ttft_ms is not None:
                server_t = float(STAMP.search(r.text).group(1))
                out.append((r.send_time + r.ttft_ms / 1e3 - server_t) * 1e3)

        await asyncio.gather(*(one() for _ in range(min(n, concurrency * 2))))  # warm the pool
        out.clear()
        await asyncio.gather(*(one() for _ in range(n)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--tokens", type=int, default=8, help="chunks per response")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--first-ms", type=float, default=0, help="server delay before the first chunk")
    ap.add_argument("--itl-ms", type=float, default=0, help="server delay between chunks")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = ap.parse_args()
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "stub_server.py"), str(args.tokens)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/stamp_{args.first_ms:g}_{args.itl_ms:g}"
        rows = []
        for c in args.concurrency:
            if args.loop == "uvloop":
                import uvloop
                d = np.array(uvloop.run(_measure(url, c, args.requests, args.tokens)))
            else:
                d = np.array(asyncio.run(_measure(url, c, args.requests, args.tokens)))
            rows.append([c, len(d), np.percentile(d, 50), np.percentile(d, 99), d.max()])
        print(tabulate(rows, headers=["concurrency", "requests", "p50 ms", "p99 ms", "max ms"], floatfmt=".3f"))
        print("targets at 64: p50 <= 0.3 ms, p99 <= 2 ms")
    finally:
        server.terminate()
        server.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
