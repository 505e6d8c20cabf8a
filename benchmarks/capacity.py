"""Client capacity: kvbench (1 and N client workers) and `vllm bench serve` side by side, one run.

Both tools stream completions from the same loopback STUB server (tests/stub_server.py, its own
process, uvloop), one run at a time, for each server profile and concurrency:

  instant  every chunk as fast as the server can write it: the client is the limit;
  paced    first chunk after 50 ms, then one every 20 ms (a fast GPU decode): can the client
           keep the requested concurrency in flight, and what does it add to TTFT?

Figures per run, all from the server's side except TTFT:
  requests/s      completions the server finished / the time from the first one's arrival to the
                  last one's end;
  in flight       completions in flight at the server, time-weighted average over that span;
  TTFT overhead   client TTFT percentile minus the server's own TTFT percentile (request read ->
                  first chunk written, recorded by the stub), p50 and p99. The client's TTFT is
                  when the tool's Python saw the first token: for kvbench its wire-stamped TTFT
                  plus its first_token_lag_ms (its own event-loop lag), for vllm bench serve its
                  reported TTFT. "kvbench TTFT" also shows kvbench's recorded (kernel-stamped) one.

`vllm bench serve` runs from the engine image (`docker run --network host`); it is skipped, with
the reason printed, when Docker or the image is not there. Sizes: `--requests` per run (paced: at
most 16 x concurrency; always at least 4 x concurrency).

    .venv/bin/python benchmarks/capacity.py [--concurrency 1 16 64 256] [--profile instant paced]
        [--requests 2000] [--workers N] [--tools kvbench vllm] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from harness.stack.base import OWNER_LABEL  # noqa: E402  (the repo root on the path first)
from harness.stack.spec import owner_id  # noqa: E402

PROFILES = {"instant": "ok", "paced": "stamp_50_20"}  # ok: every chunk written at once
TOKENS = 16
ENGINE_IMAGE = os.environ.get("KVB_ENGINE_IMAGE", "kvbench/engine-cpu:latest")


class Stub:
    """The stub server in its own process; /stats gives the server's side of each run."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "stub_server.py"), str(TOKENS), "--uvloop"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"

    def stats(self, reset: bool = True) -> dict:
        return httpx.get(f"{self.base}/stats" + ("?reset=1" if reset else ""), timeout=10).json()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ---------------------------------------------------------------- the two tools


def run_kvbench(url: str, n: int, concurrency: int, workers: int, out: Path) -> list[float]:
    """One round through kvbench's own runner (rows, CSV and all) in a fresh process; client TTFTs
    in ms as its Python saw them (wire TTFT + its own lag), and its recorded TTFTs."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from benchmarks.capacity import _kvbench_child; _kvbench_child(*sys.argv[2:])"
    )
    args = [str(REPO), url, str(n), str(concurrency), str(workers), str(out)]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"kvbench run failed: {done.stderr.strip()[-1500:]}")
    rows = pd.read_csv(out / "requests.csv")
    ok = rows[rows["ok"]]
    if len(ok) != n:
        raise RuntimeError(f"kvbench: {len(ok)}/{n} requests ok: {rows['error_message'].dropna().head(3).tolist()}")
    return list(ok["ttft_ms"] + ok["first_token_lag_ms"]), list(ok["ttft_ms"])


def _kvbench_child(url: str, n: str, concurrency: str, workers: str, out: str) -> None:
    from harness.config import Config
    from harness.runner import Endpoint, run_rounds
    from harness.workload import Prompt, Session, Workload

    prompts = [Prompt(f"p{i}", f"prompt {i}", 3, 0) for i in range(int(n))]
    wl = Workload("capacity", [Session(p.prompt_id, 1, lambda t, r, p=p: p) for p in prompts])
    cfg = Config.model_validate(
        {"default_scenarios": ["x"], "rounds": 1, "concurrency": int(concurrency), "max_tokens": TOKENS,
         "request_timeout": 120, "client_workers": int(workers),
         "scenarios": {"x": {"kind": "cold_start", "num_requests": 1, "prompt_length": 5}}}
    )  # fmt: skip
    Path(out).mkdir(parents=True, exist_ok=True)
    run_rounds(wl, cfg, Endpoint(url, "stub"), Path(out))


def vllm_bench_available() -> str | None:
    """Why `vllm bench serve` cannot run here (None: it can)."""
    try:
        found = subprocess.run(["docker", "image", "inspect", ENGINE_IMAGE], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker: {e}"
    return None if found.returncode == 0 else f"image {ENGINE_IMAGE} not present (make images)"


def run_vllm_bench(url: str, n: int, concurrency: int, out: Path) -> tuple[list[float], dict]:
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        "docker", "run", "--rm", "--network", "host", "--entrypoint", "", "-v", f"{out}:/out",
        # managed (`make clean` finds it if this process dies) and owned by this live process, so that a
        # kvbench run started meanwhile does not take it for a crashed run's leftover
        "--label", "io.kvbench.managed=true", "--label", f"{OWNER_LABEL}={owner_id()}", ENGINE_IMAGE,
        "/opt/venv/bin/vllm", "bench", "serve", "--backend", "openai", "--base-url", url,
        "--endpoint", "/v1/completions", "--model", "stub", "--tokenizer", "/models/tiny",
        "--dataset-name", "random", "--random-input-len", "8", "--random-output-len", str(TOKENS),
        "--random-range-ratio", "0", "--ignore-eos", "--num-prompts", str(n),
        "--max-concurrency", str(concurrency), "--request-rate", "inf", "--ready-check-timeout-sec", "0",
        "--num-warmups", "0", "--disable-tqdm", "--save-result", "--save-detailed",
        "--result-dir", "/out", "--result-filename", "result.json",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"vllm bench serve exited {done.returncode}: {done.stderr.strip()[-1500:]}")
    res = json.loads((out / "result.json").read_text())
    errors = res.get("errors") or [""] * len(res["ttfts"])
    ttfts = [t * 1e3 for t, e in zip(res["ttfts"], errors) if not e]
    if len(ttfts) != n:
        raise RuntimeError(f"vllm bench serve: {len(ttfts)}/{n} requests ok: {[e for e in errors if e][:3]}")
    return ttfts, res


# ---------------------------------------------------------------- one table


def measure(stub: Stub, tool: str, profile: str, c: int, n: int, workers: int, work: Path) -> list:
    url = f"{stub.base}/{PROFILES[profile]}"
    stub.stats(reset=True)
    recorded: list[float] | None = None
    if tool == "vllm bench serve":
        seen, _ = run_vllm_bench(url, n, c, work / f"vllm-{profile}-{c}")
    else:
        seen, recorded = run_kvbench(url, n, c, workers, work / f"kvbench-{workers}-{profile}-{c}")
    server = stub.stats(reset=True)
    s50, s99 = np.percentile(server["server_ttft_ms"], [50, 99])
    c50, c99 = np.percentile(seen, [50, 99])
    row = [tool, profile, c, n, server["served"] / server["span_s"], server["inflight_avg"], c50 - s50, c99 - s99]
    if recorded is not None:
        r50, r99 = np.percentile(recorded, [50, 99])
        row += [r50 - s50, r99 - s99]
    else:
        row += [None, None]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", help="default: 1 16 64 256 (--smoke: 1 4)")
    ap.add_argument("--profile", nargs="+", choices=list(PROFILES), default=list(PROFILES))
    ap.add_argument(
        "--requests",
        type=int,
        help="per run (default: 4000; --smoke: 20); paced runs send at most 16 x concurrency (each request "
        "takes 350 ms there), every run at least 4 x concurrency",
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="kvbench's N client workers")
    ap.add_argument("--tools", nargs="+", choices=["kvbench", "vllm"], default=["kvbench", "vllm"])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: concurrency 1 and 4, 20 requests")
    args = ap.parse_args()
    args.concurrency = args.concurrency or ([1, 4] if args.smoke else [1, 16, 64, 256])
    args.requests = args.requests or (20 if args.smoke else 4000)
    runs: list[tuple[str, int]] = []
    if "kvbench" in args.tools:
        runs += [("kvbench", 1)] + ([("kvbench", args.workers)] if args.workers > 1 else [])
    skipped = None
    if "vllm" in args.tools:
        skipped = vllm_bench_available()
        runs += [] if skipped else [("vllm bench serve", 1)]
    stub = Stub()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="kvb-capacity-") as tmp:
            for profile in args.profile:
                for c in args.concurrency:
                    n = max(4 * c, min(args.requests, 16 * c) if profile == "paced" else args.requests)
                    done: set[tuple[str, int]] = set()
                    for tool, wanted in runs:
                        workers = min(wanted, c)  # kvbench never runs more workers than requests in flight
                        if (tool, workers) in done:
                            continue
                        done.add((tool, workers))
                        label = f"kvbench ({workers} worker{'s' * (workers > 1)})" if tool == "kvbench" else tool
                        t = time.perf_counter()
                        row = measure(stub, tool, profile, c, n, workers, Path(tmp))
                        rows.append([label, *row[1:]])
                        print(f"  {label}, {profile}, c={c}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    finally:
        stub.close()
    headers = ["client", "server", "concurrency", "requests", "requests/s", "in flight (avg)",
               "TTFT overhead p50 ms", "p99 ms", "kvbench TTFT overhead p50 ms", "p99 ms"]  # fmt: skip
    print(tabulate(rows, headers=headers, floatfmt=".1f", missingval="-"))
    if skipped:
        print(f"vllm bench serve skipped: {skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
