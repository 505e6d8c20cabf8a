"""kvbench vs `vllm bench serve`, side by side, each against vLLM's own server-side histograms.

One fresh CPU stack (vLLM + MooncakeStoreConnector + Mooncake master, brought up the
way the harness does), or with `--endpoint URL --engine-container NAME` a vLLM that is
already running in a local container (measured as it is: unique prompts keep the windows
cold, and nothing is torn down), serves both tools, interleaved `--pairs` times:

    kvbench, vllm bench serve, kvbench, vllm bench serve, ...

Every run sends the same shape: `--prompts` unique prompts of `--input-len` tokens in
the served model's tokenizer (BOS included), `--output-len` tokens out (ignore_eos),
at most `--concurrency` in flight. Around each run vLLM's `/metrics` is scraped and the
deltas of its own per-request histograms (`_sum` / `_count` of TTFT, prefill, queue and
e2e latency) give the server-side means over exactly that run's requests. The gap

    client TTFT mean - server TTFT mean   (same requests, same window)

is what the tool's client side adds on top of what the engine itself measured.

  kvbench           the harness's own client path, in-process: a cold_start workload
                    (harness.workload, exact lengths via the server's /tokenize) run by
                    harness.runner.run_rounds (1 round); client TTFT from requests.csv.
  vllm bench serve  run inside the engine container (`docker exec`, loopback to :8000),
                    random dataset with --random-range-ratio 0 (exact lengths); client
                    TTFT from its --save-detailed result JSON.

Windows and warm caches
  * Unique prompts everywhere: each kvbench run has its own workload name and seed (the
    name is also in every prompt's first line); each vllm bench serve run its own
    --seed (its random dataset is seeded, default 0: repeats would be identical, i.e.
    warm via Mooncake). Reuse that still happens is measured, not assumed: the
    "cached tok" column is the server's local + external prefix-hit delta per window.
    (vllm bench serve's random prompts start at a random vocabulary offset, so two of
    its prompts can coincide by chance; the gap is unaffected, both sides time the
    same requests, but a nonzero value is flagged.)
  * vllm bench serve's pre-run "initial test run" (ready check) sends the first prompt
    once before timing. In vLLM 0.32 it only runs with --ready-check-timeout-sec > 0;
    this script passes 0 (and --num-warmups 0), so the window holds exactly the timed
    requests. That is checked, not assumed: each window's server TTFT count must equal
    the number of requests the tool timed, otherwise the run fails (a ready check would
    show up as one extra, cold request, and its prompt would then be served warm).
  * One untimed warm-up request (unique prompt, same length) goes to the fresh engine
    before the first window, so the first run does not pay first-request costs alone.

Usage (needs Docker; the CPU images are built when missing):

    .venv/bin/python benchmarks/peer_agreement.py [--prompts 30] [--input-len 2000]
        [--output-len 16] [--concurrency 1] [--pairs 2] [--seed 1] [--json out.json]
        [--endpoint http://127.0.0.1:8000 --engine-container NAME]
    make peer-bench ARGS='--pairs 3'

Exit status: 0 when every run of both tools succeeded and every window matched; 1 when
a tool failed or a window did not hold exactly its requests; a stack it brought up is
always torn down (and its removal verified). Only one vLLM stack should run on a small machine at
a time: run it under `flock` when others share the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runnable as a plain script from anywhere

from harness.analysis.frames import truthy  # noqa: E402
from harness.client.tokenizer import ServerTokenizer  # noqa: E402
from harness.config import ColdStart, Config, load_config  # noqa: E402
from harness.observe.probes import Probe, Snapshot, deltas, settled  # noqa: E402
from harness.records.metrics import SERVER_HISTOGRAMS  # noqa: E402
from harness.runner import Endpoint, run_rounds  # noqa: E402
from harness.stack import interrupts  # noqa: E402
from harness.stack.compose import ComposeStack  # noqa: E402
from harness.stack.spec import prepare  # noqa: E402
from harness.workload import build_workload  # noqa: E402

KVBENCH, VLLM_BENCH = "kvbench", "vllm bench serve"
ENGINE_PORT = 8000  # what vLLM listens on inside its container (compose/base.yaml)


class ToolFailed(RuntimeError):
    pass


@dataclass
class Run:
    tool: str
    run: int
    seed: int
    requests: int  # client side: requests timed (all ok)
    client_ttft_p50_ms: float
    client_ttft_mean_ms: float
    client_e2e_mean_ms: float | None
    server_requests: int
    server_ttft_mean_ms: float | None
    server_prefill_mean_ms: float | None
    server_queue_mean_ms: float | None
    server_e2e_mean_ms: float | None
    server_prompt_tokens_per_request: float | None
    cached_tokens: float | None
    wall_s: float
    gap_ms: float | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.server_ttft_mean_ms is not None:
            self.gap_ms = self.client_ttft_mean_ms - self.server_ttft_mean_ms


# ---------------------------------------------------------------- server windows


def window(probe: Probe, before: Snapshot, expected: int) -> dict:
    """The harness's own per-round server view (probes.deltas) over this run's window, once the
    engine has recorded all `expected` requests."""
    d = deltas(before, settled(probe, before, expected))
    hits = [d["local_hits"], d["external_hits"]]
    d["cached_tokens"] = None if all(h is None for h in hits) else sum(h or 0.0 for h in hits)
    n = d["server_requests"]
    d["prompt_tokens_per_request"] = d["vllm_prompt_tokens"] / n if d["vllm_prompt_tokens"] is not None and n else None
    return d


def make_run(
    tool: str, k: int, seed: int, ttft_ms: list[float], e2e_ms: list[float] | None, win: dict, wall: float
) -> Run:
    ttft = np.asarray(ttft_ms, dtype=float)
    run = Run(
        tool,
        k,
        seed,
        len(ttft),
        float(np.median(ttft)),
        float(ttft.mean()),
        float(np.mean(e2e_ms)) if e2e_ms else None,
        int(win["server_requests"] or 0),
        win["server_ttft_mean_ms"],
        win["server_prefill_mean_ms"],
        win["server_queue_mean_ms"],
        win["server_e2e_mean_ms"],
        win["prompt_tokens_per_request"],
        win["cached_tokens"],
        round(wall, 1),
    )
    if win["cached_tokens"]:
        run.notes.append(f"{win['cached_tokens']:.0f} prompt tokens were prefix-cache hits (reused prompt)")
    return run


def check_window(run: Run) -> None:
    """The server window must hold exactly the requests the tool timed."""
    if run.server_ttft_mean_ms is None:
        raise ToolFailed(f"{run.tool} run {run.run}: vLLM exposes no {SERVER_HISTOGRAMS['server_ttft']} histogram")
    if run.server_requests != run.requests:
        raise ToolFailed(
            f"{run.tool} run {run.run}: the server saw {run.server_requests} requests in the "
            f"window, the client timed {run.requests}: client and server means are not comparable"
        )


# ---------------------------------------------------------------- the two tools


def run_kvbench(cfg: Config, url: str, probe: Probe, args: argparse.Namespace, k: int, seed: int, out: Path) -> Run:
    name = f"peer-kvbench-{k}"  # also each prompt's first line: unique across runs
    run_cfg = cfg.model_copy(
        update={
            "rounds": 1,
            "concurrency": args.concurrency,
            "max_tokens": args.output_len,
            "request_rate": None,
            "api": "completions",
            "temperature": 0.0,
            "seed": seed,
            "wait_between_rounds": 0.0,
        }
    )
    endpoint = Endpoint(url, cfg.stack.served_model_name)
    with ServerTokenizer(url, endpoint.model) as tok:
        wl = build_workload(name, _cold_start(tok, args.prompts, args.input_len), tok, api="completions", seed=seed)
    lengths = sorted({s.build(0, []).prompt_tokens for s in wl.sessions})
    before = probe.snapshot()
    t = time.perf_counter()
    try:
        run_rounds(wl, run_cfg, endpoint, out)
    except interrupts.Interrupted:
        raise
    except Exception as e:
        raise ToolFailed(f"kvbench run {k}: {type(e).__name__}: {e}") from None
    wall = time.perf_counter() - t
    win = window(probe, before, args.prompts)
    req = pd.read_csv(out / "requests.csv")
    bad = req[~truthy(req["ok"])]
    if len(req) != args.prompts or len(bad):
        why = "; ".join(f"{r.error_class}: {r.error_message}" for r in bad.head(3).itertuples())
        raise ToolFailed(f"kvbench run {k}: {len(req) - len(bad)}/{args.prompts} requests ok ({why})")
    run = make_run(KVBENCH, k, seed, req["ttft_ms"].tolist(), req["e2e_ms"].tolist(), win, wall)
    if lengths != [args.input_len]:
        run.notes.append(f"prompt lengths {lengths} tokens, wanted {args.input_len}")
    if (req["completion_tokens"] != args.output_len).any():
        run.notes.append("some responses did not have --output-len tokens")
    return run


def _cold_start(tok: ServerTokenizer, n: int, input_len: int) -> ColdStart:
    """A cold_start scenario whose prompts are `input_len` tokens as the server counts them:
    its prompt_length is the text alone, the tokenizer's special tokens (BOS) come on top."""
    special = tok.count_prompt("a") - tok.count("a")
    return ColdStart(
        kind="cold_start",
        num_requests=n,
        prompt_length=input_len - special,
        description="peer agreement: unique prompts",
    )


def vllm_bench_argv(container: str, cfg: Config, args: argparse.Namespace, seed: int, result: str) -> list[str]:
    return [
        "docker",
        "exec",
        container,
        "vllm",
        "bench",
        "serve",
        "--backend",
        "vllm",
        "--base-url",
        f"http://127.0.0.1:{ENGINE_PORT}",
        "--endpoint",
        "/v1/completions",
        "--model",
        cfg.stack.served_model_name,
        "--tokenizer",
        cfg.stack.model,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--random-range-ratio",
        "0",
        "--ignore-eos",
        "--num-prompts",
        str(args.prompts),
        "--max-concurrency",
        str(args.concurrency),
        "--request-rate",
        "inf",
        "--seed",
        str(seed),
        "--temperature",
        "0",  # greedy, as kvbench sends
        "--ready-check-timeout-sec",
        "0",
        "--num-warmups",
        "0",  # the window holds only timed requests
        "--disable-tqdm",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        "/tmp",
        "--result-filename",
        result,
    ]


def run_vllm_bench(
    container: str, cfg: Config, probe: Probe, args: argparse.Namespace, k: int, seed: int, out: Path
) -> Run:
    result = f"peer-vllm-bench-{k}.json"
    argv = vllm_bench_argv(container, cfg, args, seed, result)
    before = probe.snapshot()
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.tool_timeout)
    wall = time.perf_counter() - t
    (out / "vllm-bench.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ToolFailed(f"vllm bench serve run {k} exited with {proc.returncode}:\n{tail}")
    win = window(probe, before, args.prompts)
    cat = subprocess.run(
        ["docker", "exec", container, "cat", f"/tmp/{result}"], capture_output=True, text=True, timeout=60
    )
    if cat.returncode != 0:
        raise ToolFailed(f"vllm bench serve run {k}: no result file: {cat.stderr.strip()}")
    (out / result).write_text(cat.stdout)
    res = json.loads(cat.stdout)
    errors = res.get("errors") or [""] * len(res.get("ttfts", []))
    ttfts = [x * 1e3 for x, err in zip(res.get("ttfts", []), errors) if not err]
    if res.get("completed") != args.prompts or len(ttfts) != args.prompts:
        first = next((e for e in errors if e), "")
        raise ToolFailed(
            f"vllm bench serve run {k}: {res.get('completed')}/{args.prompts} requests completed {first[:300]}"
        )
    run = make_run(VLLM_BENCH, k, seed, ttfts, None, win, wall)
    # Its own summary must agree with the per-request list it saved.
    if not math.isclose(res["mean_ttft_ms"], run.client_ttft_mean_ms, rel_tol=1e-6, abs_tol=1e-6):
        run.notes.append(f"its summary mean TTFT {res['mean_ttft_ms']:.3f} ms differs from its per-request list")
    if res.get("total_output_tokens") != args.prompts * args.output_len:
        run.notes.append(f"output tokens {res.get('total_output_tokens')}, expected {args.prompts * args.output_len}")
    return run


def warm_up(cfg: Config, url: str, args: argparse.Namespace, out: Path) -> None:
    """One untimed request (unique prompt, same length) so that no window pays first-request costs."""
    run_cfg = cfg.model_copy(
        update={
            "rounds": 1,
            "concurrency": 1,
            "max_tokens": args.output_len,
            "request_rate": None,
            "api": "completions",
            "wait_between_rounds": 0.0,
        }
    )
    endpoint = Endpoint(url, cfg.stack.served_model_name)
    out.mkdir(parents=True, exist_ok=True)
    with ServerTokenizer(url, endpoint.model) as tok:
        wl = build_workload("peer-warmup", _cold_start(tok, 1, args.input_len), tok, api="completions", seed=args.seed)
    run_rounds(wl, run_cfg, endpoint, out)
    if not pd.read_csv(out / "requests.csv")["ok"].all():
        raise ToolFailed("the warm-up request failed")


# ---------------------------------------------------------------- output


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _range(xs: list[float], fmt: str = ".2f") -> str:
    return f"{min(xs):{fmt}}-{max(xs):{fmt}}" if xs else "n/a"


def runs_table(runs: list[Run]) -> str:
    rows = [
        [
            r.tool,
            r.run,
            f"{r.requests}/{r.server_requests}",
            _f(r.server_prompt_tokens_per_request, ".1f"),
            _f(r.client_ttft_p50_ms),
            _f(r.client_ttft_mean_ms),
            _f(r.server_ttft_mean_ms),
            _f(r.gap_ms),
            _f(r.server_prefill_mean_ms),
            _f(r.server_queue_mean_ms),
            _f(r.server_e2e_mean_ms),
            _f(r.cached_tokens, ".0f"),
            r.seed,
            _f(r.wall_s, ".1f"),
        ]
        for r in runs
    ]
    return tabulate(
        rows,
        disable_numparse=True,
        colalign=("left", "right", *["right"] * 12),
        headers=[
            "tool",
            "run",
            "requests\nclient/server",
            "prompt tok\n/req (server)",
            "client TTFT\np50 ms",
            "client TTFT\nmean ms",
            "server TTFT\nmean ms",
            "gap ms\n(client-server)",
            "server prefill\nmean ms",
            "server queue\nmean ms",
            "server e2e\nmean ms",
            "cached\ntok",
            "seed",
            "wall s",
        ],
    )


def summary(runs: list[Run]) -> dict[str, dict]:
    out = {}
    for tool in (KVBENCH, VLLM_BENCH):
        rs = [r for r in runs if r.tool == tool and r.gap_ms is not None]
        if not rs:
            continue
        gaps = [r.gap_ms for r in rs]
        out[tool] = {
            "runs": len(rs),
            "gap_mean_ms": float(np.mean(gaps)),
            "gap_min_ms": min(gaps),
            "gap_max_ms": max(gaps),
            "client_ttft_mean_ms": [r.client_ttft_mean_ms for r in rs],
            "server_ttft_mean_ms": [r.server_ttft_mean_ms for r in rs],
            "client_over_server": [r.client_ttft_mean_ms / r.server_ttft_mean_ms for r in rs],
            "server_prefill_mean_ms": [r.server_prefill_mean_ms for r in rs if r.server_prefill_mean_ms is not None],
        }
    return out


def summary_table(summ: dict[str, dict]) -> str:
    rows = [
        [
            tool,
            s["runs"],
            f"{s['gap_mean_ms']:.2f}",
            _range([s["gap_min_ms"], s["gap_max_ms"]]),
            _range(s["client_ttft_mean_ms"]),
            _range(s["server_ttft_mean_ms"]),
            _range(s["client_over_server"], ".3f"),
            _range(s["server_prefill_mean_ms"]),
        ]
        for tool, s in summ.items()
    ]
    return tabulate(
        rows,
        disable_numparse=True,
        colalign=("left", *["right"] * 7),
        headers=[
            "tool",
            "runs",
            "gap mean ms",
            "gap range ms",
            "client TTFT mean\nrange ms",
            "server TTFT mean\nrange ms",
            "client/server\nTTFT ratio",
            "server prefill\nmean range ms",
        ],
    )


def pair_line(runs: list[Run]) -> str | None:
    """vllm bench serve's gap minus kvbench's, per pair (same engine, adjacent in time)."""
    by = {(r.tool, r.run): r.gap_ms for r in runs if r.gap_ms is not None}
    diffs = [by[(VLLM_BENCH, k)] - by[(KVBENCH, k)] for (t, k) in by if t == KVBENCH and (VLLM_BENCH, k) in by]
    if not diffs:
        return None
    return (
        f"per pair, vllm bench serve's gap minus kvbench's: {_range(diffs)} ms over {len(diffs)} pair(s) "
        f"(mean {np.mean(diffs):.2f} ms)"
    )


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=30, help="requests per run (default: %(default)s)")
    ap.add_argument("--input-len", type=int, default=2000, help="prompt tokens incl. BOS (default: %(default)s)")
    ap.add_argument("--output-len", type=int, default=16, help="output tokens, ignore_eos (default: %(default)s)")
    ap.add_argument("--concurrency", type=int, default=1, help="requests in flight (default: %(default)s)")
    ap.add_argument("--pairs", type=int, default=2, help="kvbench + vllm bench serve runs (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="base seed; every run derives its own (default: %(default)s)")
    ap.add_argument(
        "--config",
        type=Path,
        default=REPO / "configs" / "test_config.yaml",
        help="suite YAML whose `stack:` is brought up (default: configs/test_config.yaml)",
    )
    ap.add_argument(
        "--endpoint",
        metavar="URL",
        help="measure an already running vLLM (base URL) instead of bringing a stack up; needs --engine-container",
    )
    ap.add_argument(
        "--engine-container",
        metavar="NAME",
        help="with --endpoint: the Docker container serving it, where `vllm bench serve` runs (port 8000 inside)",
    )
    ap.add_argument("--tool-timeout", type=float, default=900, help="seconds per vllm bench serve run")
    ap.add_argument("--json", type=Path, help="also write rows and summary to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (raw results, stack files)")
    args = ap.parse_args(argv)
    for name in ("prompts", "input_len", "output_len", "concurrency", "pairs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if (args.endpoint is None) != (args.engine_container is None):
        ap.error("--endpoint and --engine-container go together (vllm bench serve runs in that container)")
    if args.input_len < 16:
        ap.error("--input-len must be >= 16 (each kvbench prompt starts with a unique line)")
    return args


def _images(overlay: list[str]) -> dict[str, str]:
    from harness.stack.images import STACKS, ensure_images

    found = [o for o in overlay if o in STACKS]
    return ensure_images(found[0], echo=lambda line: print(line, file=sys.stderr)) if found else {}


def measure(cfg: Config, url: str, container: str, args: argparse.Namespace, work: Path, runs: list[Run]) -> None:
    """The warm-up, then the interleaved pairs against `url`; each run is appended as it ends."""
    probe = Probe(url, None)
    try:
        warm_up(cfg, url, args, work / "warmup")
        for k in range(1, args.pairs + 1):
            for tool in (KVBENCH, VLLM_BENCH):
                out = work / f"{'kvbench' if tool == KVBENCH else 'vllm-bench'}-{k}"
                out.mkdir(parents=True)
                print(f"  {tool} run {k} ...", file=sys.stderr)
                if tool == KVBENCH:
                    run = run_kvbench(cfg, url, probe, args, k, args.seed * 1000 + k, out)
                else:
                    run = run_vllm_bench(container, cfg, probe, args, k, args.seed * 1000 + 500 + k, out)
                runs.append(run)
                check_window(run)
                print(
                    f"    client TTFT mean {run.client_ttft_mean_ms:.2f} ms, server "
                    f"{_f(run.server_ttft_mean_ms)} ms, gap {_f(run.gap_ms)} ms ({run.wall_s:.1f} s)",
                    file=sys.stderr,
                )
    finally:
        probe.close()


def _fresh_stack(cfg: Config, work: Path) -> ComposeStack:
    images = _images(cfg.stack.overlays)
    spec = prepare(cfg.stack, f"peer-{time.strftime('%Y%m%d-%H%M%S')}", "peer", work / "stack", images)
    return ComposeStack(spec, work / "stack", cfg.stack.ready_timeout, cfg.stack.teardown_timeout)


def _up(stack: ComposeStack) -> str:
    """Bring the stack up; its engine container."""
    t = time.perf_counter()
    print(f"bringing up {stack.spec.project} ...", file=sys.stderr)
    stack.up()
    print(f"  stack healthy in {time.perf_counter() - t:.1f} s; engine {stack.spec.vllm_url}", file=sys.stderr)
    (container,) = stack.engine_container_ids()
    return container


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    if cfg.stack.topology != "single":
        print("peer_agreement: needs a single-engine stack (stack.topology: single)", file=sys.stderr)
        return 2
    interrupts.install()
    work = Path(tempfile.mkdtemp(prefix="kvbench-peer-"))
    runs: list[Run] = []
    failure: str | None = None
    teardown = None
    t0 = time.perf_counter()
    try:
        if args.endpoint:  # someone else's server: measured as it is, never torn down
            measure(cfg, args.endpoint, args.engine_container, args, work, runs)
        else:
            stack = _fresh_stack(cfg, work)
            try:
                measure(cfg, stack.spec.vllm_url, _up(stack), args, work, runs)
            finally:  # also when a tool failed: its teardown line and JSON field still report it
                teardown = stack.down()
    except ToolFailed as e:
        failure = str(e)
    except interrupts.Interrupted:
        failure = "interrupted"
    except Exception as e:  # the stack, images, config: still report what was measured
        traceback.print_exc()
        failure = f"{type(e).__name__}: {e}"
    sys.stderr.flush()

    print(
        "peer agreement, kvbench vs vllm bench serve, "
        + (
            f"on the server at {args.endpoint} (not started here): "
            if args.endpoint
            else "on one fresh vLLM + Mooncake stack: "
        )
        + f"{args.prompts} unique prompts x "
        f"{args.input_len} tokens, {args.output_len} output tokens (ignore_eos), concurrency {args.concurrency}, "
        f"{args.pairs} interleaved pair(s)"
    )
    print("server columns: deltas of vLLM's own histograms (_sum/_count) over each run's window\n")
    if runs:
        print(runs_table(runs))
        for r in runs:
            for note in r.notes:
                print(f"  note: {r.tool} run {r.run}: {note}")
        summ = summary(runs)
        if summ:
            print()
            print(summary_table(summ))
            if line := pair_line(runs):
                print(line)
    if teardown is not None:
        print(
            f"\nstack torn down in {teardown.seconds:.1f} s, "
            f"{'nothing left' if teardown.verified else 'LEFTOVERS: ' + teardown.leftovers}"
        )
        if not teardown.verified and failure is None:
            failure = f"teardown left {teardown.leftovers}"
    print(f"total wall time {time.perf_counter() - t0:.1f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "runs": [asdict(r) for r in runs],
                    "summary": summary(runs) if runs else {},
                    "failure": failure,
                    "teardown_verified": teardown.verified if teardown else None,
                },
                indent=2,
            )
        )
    sys.stdout.flush()
    if failure:
        print(f"\nFAILED: {failure}", file=sys.stderr)
    if failure or args.keep:
        print(f"work directory kept: {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
