"""End-to-end on the REAL CPU stack: vLLM (CPU) + MooncakeStoreConnector + mooncake_master.

Images are built on first use (minutes) and cached; each scenario brings up its
own stack (~30 s). These are the tests that show isolation really holds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from python_on_whales import docker

from harness.stack.compose import find_resources

from .conftest import REPO, bench_acting_mid_round, only_run, pinned, run_interruptibly, warm_beats_cold

pytestmark = [pytest.mark.docker, pytest.mark.stack]
E2E = REPO / "tests" / "configs" / "e2e.yaml"
E2E_CHAT = REPO / "tests" / "configs" / "e2e_chat.yaml"
KVBENCH = [sys.executable, "-m", "harness"]


HEALTHY = ("long_context_high_reuse",)  # cold_start's cold round: tests/test_isolation.py (no stack of its own)


def _service(run_dir: Path, key: str, service: str):
    project = json.loads((run_dir / "manifest.json").read_text())["scenarios"][key]["project"]
    labels = [("label", f"com.docker.compose.project={project}"), ("label", f"com.docker.compose.service={service}")]
    (container,) = docker.container.list(filters=labels)
    return container


@pytest.fixture(scope="module")
def bench_all(tmp_path_factory, stack_images):
    """One `bench-all --mode both` run that the tests below read, each cell on its own fresh stack.
    short_batch runs first and loses a component mid-round in each mode: its with-cache cell the
    Mooncake master (`docker kill`; vLLM keeps serving, only the stack watch can tell), its baseline
    cell the engine. Then a healthy scenario with and without the cache: four fresh stacks."""
    work = tmp_path_factory.mktemp("e2e")
    results = work / "results"
    master_failed_after: list[float] = []

    def kill_master(proc: subprocess.Popen, run_dir: Path) -> None:
        docker.container.kill(_service(run_dir, "short_batch", "mooncake-master"))
        t = time.monotonic()
        while json.loads((run_dir / "manifest.json").read_text())["scenarios"]["short_batch"]["status"] == "running":
            assert time.monotonic() - t < 120, "the with-cache cell still runs 2 minutes after its master died"
            time.sleep(0.2)  # polling the manifest, bounded above
        master_failed_after.append(time.monotonic() - t)

    def kill_engine(proc: subprocess.Popen, run_dir: Path) -> None:
        docker.container.kill(_service(run_dir, "baseline/short_batch", "vllm"))

    t = time.perf_counter()
    code, err, run_dir = bench_acting_mid_round(
        [*KVBENCH, "bench-all", "--config", str(pinned(E2E, work)), "--scenarios", "short_batch", *HEALTHY],
        results,
        [("short_batch", 3, kill_master), ("baseline/short_batch", 3, kill_engine)],
        timeout=900,
    )
    print(err[-3000:], f"\nbench-all wall time {time.perf_counter() - t:.1f} s", file=sys.stderr)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return code, err, run_dir, manifest, master_failed_after


def test_healthy_scenarios_succeed_and_write_csvs(bench_all):
    code, err, run_dir, manifest, _ = bench_all
    assert code == 1, err[-3000:]  # short_batch's two cells failed (below); the others are unaffected
    for name in HEALTHY:
        for key in (name, f"baseline/{name}"):
            assert manifest["scenarios"][key]["status"] == "ok", (key, err[-3000:])
        req = pd.read_csv(run_dir / name / "requests.csv")
        assert len(req) == 2 * 10
        assert req["ok"].all()
        # usage.prompt_tokens is what the workload measured with the server's tokenizer
        assert (req["prompt_tokens"] == req["expected_prompt_tokens"]).all()
        assert (run_dir / name / "rounds.csv").is_file()
    assert (run_dir / "report.md").is_file() and (run_dir / "summary.csv").is_file()


def test_each_cell_ran_on_its_own_fresh_stack(bench_all):
    _, _, _, manifest, _ = bench_all
    scen = manifest["scenarios"].values()
    # mode both (the default): every scenario with the cache and without it, each its own stack
    assert sorted(manifest["scenarios"]) == sorted(
        [*HEALTHY, "short_batch", *(f"baseline/{n}" for n in (*HEALTHY, "short_batch"))]
    )
    projects = [s["project"] for s in scen]
    engines = [tuple(s["engine_container_ids"]) for s in scen]
    assert len(set(projects)) == len(projects) == 4
    assert len(set(engines)) == 4 and all(engines)
    for s in scen:  # the failed cells too: proven cold before round 1, torn down after the fault
        assert s["cold_verified"] is True, s.get("cold_detail")
        assert s["teardown_verified"] is True
        assert not find_resources(f"com.docker.compose.project={s['project']}")
    assert not find_resources(f"io.kvbench.run={manifest['run_id']}")


def test_store_is_empty_before_every_cold_round(bench_all):
    _, _, run_dir, _, _ = bench_all
    for name in HEALTHY:
        r1 = pd.read_csv(run_dir / name / "rounds.csv").set_index("round").loc[1]
        assert r1["master_key_count_start"] == 0
        assert r1["master_key_count_end"] > 0  # round 1 did fill the store


def test_warm_round_is_served_from_mooncake(bench_all):
    _, _, run_dir, manifest, _ = bench_all
    bs = manifest["scenarios"]["long_context_high_reuse"]["block_size"]
    req = pd.read_csv(run_dir / "long_context_high_reuse" / "requests.csv")
    rounds = pd.read_csv(run_dir / "long_context_high_reuse" / "rounds.csv").set_index("round")
    r2 = req[req["round"] == 2]
    # Full blocks of each prompt; the block holding the last token is always recomputed.
    reusable = sum(((int(n) - 1) // bs) * bs for n in r2["prompt_tokens"])
    assert rounds.loc[2, "external_hits"] >= 0.9 * reusable
    assert rounds.loc[2, "local_hits"] == 0  # prefix caching is off: every hit is Mooncake's
    assert warm_beats_cold(req)
    # round 1 computes the document in full at least once; that costs more than a warm hit
    assert rounds.loc[1, "misses"] >= 1 and rounds.loc[2, "misses"] == 0
    assert rounds.loc[1, "ttft_miss_mean_ms"] > rounds.loc[2, "ttft_hit_mean_ms"]
    # the per-request view agrees with the engine's counters
    assert math.isclose(r2["cached_tokens"].sum(), rounds.loc[2, "external_hits"], rel_tol=0.01)


def test_baseline_reuses_nothing_and_the_headline_compares_it(bench_all):
    """Without the connector (prefix caching off) no round reuses anything: every round is cold,
    and the with-cache run of the same prompts is the comparison that says what reuse buys."""
    _, _, run_dir, manifest, _ = bench_all
    with_cache = manifest["scenarios"]["long_context_high_reuse"]
    baseline = manifest["scenarios"]["baseline/long_context_high_reuse"]
    assert with_cache["mode"] == "with-cache" and baseline["mode"] == "baseline"
    base = pd.read_csv(run_dir / "baseline" / "long_context_high_reuse" / "rounds.csv").set_index("round")
    assert (base["cached_tokens"] == 0).all() and (base["phase"] == "cold").all()
    assert base["master_key_count_end"].max() == 0  # no connector: the store never holds a key
    cache = pd.read_csv(run_dir / "long_context_high_reuse" / "rounds.csv").set_index("round")
    assert cache.loc[1, "phase"] != "cold"  # the document is reused within round 1: measured, not assumed
    assert cache.loc[2, "ttft_mean_ms"] < base.loc[2, "ttft_mean_ms"]
    assert cache.loc[2, "ttft_p50_ms"] < base.loc[2, "ttft_p50_ms"]
    # vLLM's own TTFT for the round's requests sits next to the client's, below it: ~7 ms alone; 36-78 ms
    # were seen while the other pytest worker's engine shared the 2 cores (the server's reply waits too)
    for r in (cache, base):
        assert (r["server_requests"] == r["requests"]).all()
        gap = r["client_server_ttft_gap_ms"]
        assert ((gap > 0) & (gap < 150) & (gap < 0.5 * r["ttft_mean_ms"])).all(), gap
    summary = pd.read_csv(run_dir / "summary.csv")
    assert {"mode", "server_ttft_mean_ms", "phase"} <= set(summary.columns)
    report = (run_dir / "report.md").read_text()  # the headline compares the two; both are in the evidence
    assert "## What reuse buys" in report and "| baseline/long_context_high_reuse " in report


def test_killed_master_fails_its_with_cache_cell_within_seconds(bench_all):
    """The master `docker kill`ed mid-round: vLLM keeps serving (every request then pays the
    connector's timeouts), so only the stack watch can tell. The cell fails within the watch's
    bound, naming the master, with every container's logs; the completed rows are kept."""
    _, _, run_dir, manifest, failed_after = bench_all
    failed = manifest["scenarios"]["short_batch"]
    assert failed["status"] == "failed" and "StoreDown" in failed["reason"], failed
    assert "Mooncake master unreachable: mooncake-master is exited" in failed["reason"], failed
    logs = Path(failed["logs"])
    ps = json.loads((logs / "ps.json").read_text())
    assert {c["name"].split("-")[-2] for c in ps} >= {"vllm", "master"}  # every container's state kept
    assert "mooncake-master" in (logs / "compose.log").read_text()
    # Within seconds of the kill (the watch polls every second; its logs are saved before the status
    # flips), not after every request had waited out the connector's timeouts (40 min on the seed run).
    print(f"master killed -> cell failed in {failed_after[0]:.1f} s", file=sys.stderr)
    assert failed_after[0] < 30
    rows = pd.read_csv(run_dir / "short_batch" / "requests.csv")
    assert set(rows["round"]) == {1} and len(rows) < 100  # nothing sent once the master was gone
    assert rows["ok"].sum() >= 3  # the rows completed before the kill are kept
    assert (
        "short_batch: status failed (StoreDown: round 1: Mooncake master unreachable"
        in (run_dir / "report.md").read_text()
    )


def test_killed_engine_fails_its_cell_and_the_next_ones_still_run(bench_all):
    """The engine `docker kill`ed mid-round: the cell is failed with its logs saved and no round 2
    sent; the next cells run on their own stacks and are ok (above); the run exits non-zero."""
    code, _, run_dir, manifest, _ = bench_all
    assert code == 1
    failed = manifest["scenarios"]["baseline/short_batch"]
    assert failed["status"] == "failed" and "engine unreachable" in failed["reason"], failed
    assert (Path(failed["logs"]) / "compose.log").is_file() and (Path(failed["logs"]) / "ps.json").is_file()
    rows = pd.read_csv(run_dir / "baseline" / "short_batch" / "requests.csv")
    assert set(rows["round"]) == {1} and len(rows) < 100  # nothing sent after the engine died
    rounds = pd.read_csv(run_dir / "baseline" / "short_batch" / "rounds.csv")
    assert list(rounds["round"]) == [1] and rounds["partial"].all()  # shown as partial, no verdict
    assert (
        "baseline/short_batch: status failed (EngineDown: round 1: engine unreachable"
        in (run_dir / "report.md").read_text()
    )


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory, stack_images):
    """A stack brought up directly, as someone else would run it, with vLLM's dev endpoints (the
    cache reset): the `kvbench run` tests below share it, each proving it cold again with --reset."""
    from harness.config import load_config
    from harness.stack.compose import ComposeStack
    from harness.stack.spec import prepare

    work = tmp_path_factory.mktemp("server")
    cfg = load_config(pinned(E2E, work))
    spec = prepare(cfg.stack, "t-external", "server", work / "stack", stack_images, dev_mode=True)
    with ComposeStack(spec, work / "stack", cfg.stack.ready_timeout, cfg.stack.teardown_timeout) as stack:
        stack.up()
        yield spec
    assert not find_resources(f"com.docker.compose.project={spec.project}")  # down -v left nothing


def _run(spec, tmp: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`kvbench run` against the dev server: its result and run directory."""
    argv = [*KVBENCH, "run", "--endpoint", spec.vllm_url, "--model", "tiny", "--results", str(tmp / name), *args]
    out = run_interruptibly(argv, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    return out, only_run(tmp / name)


def test_run_against_an_already_running_server(dev_server, tmp_path, tiny_tokenizer):
    """The users' old way: `kvbench run` against a server someone else started. No isolation of
    ours, but the same rows, rounds and counters; --reset proves the server cold before each
    scenario. And the local tokenizer (`--tokenizer`, for endpoints without /tokenize) counts what
    vLLM counts."""
    from harness.client.tokenizer import LocalTokenizer, ServerTokenizer
    from harness.observe.probes import Probe

    spec = dev_server
    metrics = ("--master-metrics", spec.master_metrics_url)
    out, run_dir = _run(spec, tmp_path, "results", *metrics, "--reset", "--config", str(E2E), "--scenarios",
                        "cold_start")  # fmt: skip
    probe = Probe(spec.vllm_url, spec.master_metrics_url)
    block = probe.snapshot().block_size
    probe.close()
    local = LocalTokenizer(str(tiny_tokenizer))
    text = "Mooncake keeps the KV cache; vLLM reads it back. " * 40
    chat_prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    with ServerTokenizer(spec.vllm_url, "tiny") as server:
        assert local.ids(text) == server.ids(text)
        assert local.count_prompt(text) == server.count_prompt(text)
        assert local.count_prompt(chat_prompt) == server.count_prompt(chat_prompt)
    chat, chat_dir = _run(spec, tmp_path, "chat", *metrics, "--reset", "--config", str(E2E_CHAT))
    assert out.returncode == 0, out.stderr[-2000:]
    assert chat.returncode == 0, chat.stderr[-2000:]
    _check_chat_run(chat_dir, block)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    entry = manifest["scenarios"]["cold_start"]
    assert manifest["driver"] == "external-endpoint" and entry["status"] == "ok"
    assert entry["reset"]["verified"] is True and entry["cold_verified"] is True
    rounds = pd.read_csv(run_dir / "cold_start" / "rounds.csv").set_index("round")
    assert rounds.loc[1, "master_key_count_start"] == 0 and rounds.loc[2, "external_hits"] > 0
    assert rounds.loc[1, "isolation"] == "external"
    assert (run_dir / "report.html").is_file()


def test_run_reset_proves_a_used_server_cold_where_its_lifetime_counters_cannot(dev_server, tmp_path):
    """A server that has served traffic: without --reset its store holds keys and its hit counters
    count its whole life, so `kvbench run` says contaminated (exit 0: an external server is measured
    as it is). With --reset each scenario starts after a proven reset: the store empty, the previous
    scenario's first prompt served nothing cached, the cold gate counting from there."""
    spec = dev_server
    metrics = ("--master-metrics", spec.master_metrics_url, "--config", str(E2E))
    _run(spec, tmp_path, "warm", *metrics, "--reset", "--scenarios", "cold_start")  # leaves cold_start's KV
    plain, plain_dir = _run(spec, tmp_path, "plain", *metrics, "--scenarios", "cold_start")
    assert plain.returncode == 0, plain.stderr[-2000:]
    entry = json.loads((plain_dir / "manifest.json").read_text())["scenarios"]["cold_start"]
    assert entry["status"] == "contaminated" and entry["cold_verified"] is False, entry
    assert entry.get("reset") is None
    reset, reset_dir = _run(spec, tmp_path, "reset", *metrics, "--reset", "--scenarios", "cold_start", "short_batch")
    assert reset.returncode == 0, reset.stderr[-3000:]
    cells = json.loads((reset_dir / "manifest.json").read_text())["scenarios"]
    for name in ("cold_start", "short_batch"):
        assert cells[name]["status"] == "ok" and cells[name]["cold_verified"] is True, cells[name]
        ev = cells[name]["reset"]
        assert ev["verified"] is True and ev["keys_at_start"] == 0 and ev["keys_after_reset"] == 0, ev
    assert cells["cold_start"]["reset"]["canary_prompt"] is None  # the first: nothing measured before it
    canary = cells["short_batch"]["reset"]
    assert canary["canary_prompt"].startswith("cold_start") and canary["canary_cached_tokens"] == 0, canary
    assert canary["canary_external_hits"] == 0 and canary["canary_local_hits"] == 0, canary
    assert "proven: store 0 keys, no canary" in (reset_dir / "report.md").read_text()


def test_peer_agreement_with_vllm_bench_serve_on_the_dev_server(dev_server, tmp_path):
    """benchmarks/peer_agreement.py at tiny sizes (its make-test smoke), on the shared dev server
    (--endpoint: no stack of its own): kvbench and `vllm bench serve` each time 3 requests; each
    server window holds exactly its tool's requests, of the same length in the served model's
    tokens, and both tools' gaps to vLLM's own TTFT are printed as measured."""
    spec, prompts, input_len = dev_server, 3, 200
    labels = [("label", f"com.docker.compose.project={spec.project}"), ("label", "com.docker.compose.service=vllm")]
    (engine,) = docker.container.list(filters=labels)
    out_json = tmp_path / "peer.json"
    argv = [sys.executable, str(REPO / "benchmarks" / "peer_agreement.py"), "--config", str(E2E),
            "--endpoint", spec.vllm_url, "--engine-container", engine.name, "--prompts", str(prompts),
            "--input-len", str(input_len), "--output-len", "4", "--pairs", "1", "--json", str(out_json)]  # fmt: skip
    proc = run_interruptibly(argv, capture_output=True, text=True, cwd=REPO, timeout=480)
    print(proc.stdout[-3000:], file=sys.stderr)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    # The runs table comes first (the summary repeats each tool once below it): its first row per tool.
    rows: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        for tool in ("kvbench", "vllm bench serve"):
            if line.startswith(tool + " "):
                rows.setdefault(tool, line)
    assert rows.keys() == {"kvbench", "vllm bench serve"}, proc.stdout
    assert f"on the server at {spec.vllm_url} (not started here)" in proc.stdout
    result = json.loads(out_json.read_text())
    assert result["failure"] is None and result["teardown_verified"] is None  # someone else's server
    assert sorted(r["tool"] for r in result["runs"]) == ["kvbench", "vllm bench serve"]
    for r in result["runs"]:
        assert r["requests"] == r["server_requests"] == prompts, r  # the window holds exactly the timed requests
        assert r["client_ttft_mean_ms"] > r["server_ttft_mean_ms"] > 0, r  # the client times more than the server
        assert f"{r['gap_ms']:.2f}" in rows[r["tool"]], (r, rows[r["tool"]])  # printed as measured
        # same prompt length in the served model's tokens (vllm bench serve's re-encoding may add one)
        assert abs(r["server_prompt_tokens_per_request"] - input_len) <= 1, r
    assert set(result["summary"]) == {"kvbench", "vllm bench serve"}


# Run inside the engine container: the start method of every vLLM engine-core process. A spawned
# process is exec'd with the environment vLLM's CPU platform set (VLLM_WORKER_MULTIPROC_METHOD=spawn);
# a forked one keeps the environment its API server was started with (/proc/PID/environ is the one
# at exec).
_START_METHODS = """
import os, pathlib
for p in pathlib.Path("/proc").glob("[0-9]*"):
    if p.name == str(os.getpid()):
        continue  # this script's own command line names EngineCore
    try:
        cmd, env = (p / "cmdline").read_bytes(), (p / "environ").read_bytes().split(b"\\0")
    except OSError:
        continue
    if b"EngineCore" in cmd:
        print("spawn" if b"VLLM_WORKER_MULTIPROC_METHOD=spawn" in env else "fork")
"""


def test_the_cpu_engine_core_is_forked_so_torch_and_vllm_are_imported_once(dev_server):
    """compose/kvbench_cpu_platform.py (KVBENCH_ENGINE_FORK=1 in compose/cpu.yaml): the engine-core
    process is forked from the API server, not spawned, so a start imports torch and vLLM once
    (healthy in 15-19 s instead of 24-28 s). A vLLM whose platform plugins stop loading it would
    start slower without failing anything else."""
    labels = [
        ("label", f"com.docker.compose.project={dev_server.project}"),
        ("label", "com.docker.compose.service=vllm"),
    ]
    (engine,) = docker.container.list(filters=labels)
    methods = engine.execute(["python", "-c", _START_METHODS]).split()
    assert methods == ["fork"], methods


def _check_chat_run(run_dir: Path, block: int) -> None:
    """Multi-turn over /v1/chat/completions on real vLLM: prompt lengths exact in the
    served tokenizer (chat template included), and every later turn re-uses its
    conversation's history from the prefix cache."""
    rows = pd.read_csv(run_dir / "chat_turns" / "requests.csv")
    assert len(rows) == 2 * 3 * 2 and rows["ok"].all() and set(rows["api"]) == {"chat"}
    assert (rows["prompt_tokens"] == rows["expected_prompt_tokens"]).all()
    assert rows["ttft_ms"].gt(0).all() and rows["completion_tokens"].eq(8).all()
    later = rows[(rows["round"] == 1) & (rows["turn"] > 0)]
    # vLLM caches full blocks only: at most one partial block of the history is recomputed.
    assert (later["cached_tokens"] > later["shared_prefix_tokens"] - block).all(), (
        block,
        later[["turn", "cached_tokens", "shared_prefix_tokens"]],
    )
