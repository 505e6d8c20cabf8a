"""Reset audit: is a cell after kvbench's verified reset measured like a cell on a fresh stack?
And what does the peers' reset (local prefix cache only) leave behind?

Per scenario and pair, one CPU stack (vLLM + MooncakeStoreConnector + Mooncake master, dev
endpoints on, brought up the way the harness does):

  1. round 1 of the scenario on the fresh stack                       -> "fresh" TTFT per prompt
  2. the peers' reset: POST /reset_prefix_cache (no reset_external), as `vllm bench sweep`
     sends it, then kvbench's proof (store keys and bytes, canary)     -> what stayed warm
  3. kvbench's verified reset (reset_external=true, store empty, canary, reset again)
  4. the cold gate since that reset, then round 1 again               -> "reset" TTFT per prompt

Round-1 TTFT is paired per prompt (and pair): the change of the mean, reset vs fresh, with its
95 % interval (BCa over prompts). The verdict "reset equivalent to a fresh stack" is given only
when the whole interval lies within +-`--tolerance` %. The reset cell always follows the fresh
one on the same engine process (warmed up: allocator, page cache): a difference of that kind is
what the audit is there to show, not hide.

Usage (needs Docker; the CPU images are built when missing):

    .venv/bin/python benchmarks/reset_audit.py [--config configs/test_config.yaml]
        [--scenarios a b] [--pairs 1] [--tolerance 10]
    make reset-audit ARGS='--pairs 2'

Exit status: 0 when every stack came up and went away clean and every proof behaved as
expected (the peers' reset caught, kvbench's proven); 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.analysis.frames import truthy  # noqa: E402
from harness.analysis.intervals import Interval, paired_mean_change_pct  # noqa: E402
from harness.client.tokenizer import ServerTokenizer  # noqa: E402
from harness.config import Config, load_config  # noqa: E402
from harness.observe.probes import Probe, cold_state  # noqa: E402
from harness.records import ResetEvidence  # noqa: E402
from harness.results import read_requests  # noqa: E402
from harness.runner import Endpoint, ResetSettings, run_rounds, verified_reset  # noqa: E402  # noqa: E402
from harness.stack.compose import ComposeStack  # noqa: E402
from harness.stack.images import ensure_images  # noqa: E402
from harness.stack.spec import prepare  # noqa: E402
from harness.workload import build_workload  # noqa: E402


@dataclass
class PairResult:
    scenario: str
    pair: int
    fresh: pd.DataFrame  # round-1 rows on the fresh stack
    reset: pd.DataFrame  # round-1 rows after the verified reset
    peers: ResetEvidence  # the local-only reset, as kvbench's proof saw it
    ours: ResetEvidence
    gate_after_reset: str
    teardown_verified: bool


def _round1(cfg: Config, wl, url: str, probe: Probe, out: Path) -> pd.DataFrame:
    one = cfg.model_copy(update={"rounds": 1})
    out.mkdir(parents=True)  # new: requests.csv is appended to, and must hold this run's rows only
    run_rounds(wl, one, [(Endpoint(url, cfg.stack.served_model_name), probe)], out)
    rows = read_requests(out / "requests.csv")
    return rows[truthy(rows["ok"])]


def audit_pair(cfg: Config, name: str, pair: int, images: dict[str, str], work: Path) -> PairResult:
    label = f"audit-{name}-{pair}".replace("_", "-")
    workdir = work / label
    spec = prepare(cfg.stack, "reset-audit", label, workdir, images, dev_mode=True)
    model, api = cfg.stack.served_model_name, cfg.api
    with ComposeStack(spec, workdir, cfg.stack.ready_timeout, cfg.stack.teardown_timeout) as stack:
        stack.up()
        url = stack.engine_urls[0]
        probe = Probe(url, stack.master_metrics_url)
        try:  # the tokenizer stays open: multi-turn sessions tokenize their history during a round
            with ServerTokenizer(url, model) as tok:
                wl = build_workload(name, cfg.scenarios[name], tok, api=api, seed=cfg.seed,
                                    max_model_len=cfg.stack.max_model_len)  # fmt: skip
                fresh = _round1(cfg, wl, url, probe, workdir / "fresh")
                canary = wl.sessions[0].build(0, [])
                # the peers' reset leaves the keys for good: no need to wait the proof's full bound for them
                peers, _ = verified_reset(probe, model, api, canary, ResetSettings(external=False, store_empty_s=3.0))
                ours, since = verified_reset(probe, model, api, canary)
                cold, gate = cold_state(probe.snapshot(), since)
                reset = _round1(cfg, wl, url, probe, workdir / "reset")
        finally:
            probe.close()
    td = stack.teardown
    return PairResult(name, pair, fresh, reset, peers, ours, gate if cold else f"NOT COLD: {gate}",
                      bool(td and td.verified))  # fmt: skip


def compare(results: list[PairResult], tolerance: float) -> pd.DataFrame:
    """Per scenario: round-1 TTFT mean fresh vs after the reset, paired by (pair, prompt)."""
    rows = []
    for name in dict.fromkeys(r.scenario for r in results):
        frames = []
        for r in (x for x in results if x.scenario == name):
            f = r.fresh.groupby("prompt_id")["ttft_ms"].mean()
            z = r.reset.groupby("prompt_id")["ttft_ms"].mean()
            frames.append(pd.concat({"fresh": f, "reset": z}, axis=1).dropna())
        both = pd.concat(frames)
        iv: Interval = paired_mean_change_pct(both["fresh"].to_numpy(float), both["reset"].to_numpy(float))
        within = abs(iv.lo) <= tolerance and abs(iv.hi) <= tolerance
        rows.append(
            {
                "scenario": name,
                "prompts": len(both),
                "fresh TTFT ms": f"{both['fresh'].mean():,.1f}",
                "reset TTFT ms": f"{both['reset'].mean():,.1f}",
                "change % [95 % CI]": f"{iv.estimate:+.1f} [{iv.lo:+.1f}, {iv.hi:+.1f}]",
                "verdict": f"equivalent (within +-{tolerance:g} %)"
                if within
                else f"NOT shown equivalent (+-{tolerance:g} %)",
            }
        )
    return pd.DataFrame(rows)


def peers_table(results: list[PairResult]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "scenario": r.scenario,
                "pair": r.pair,
                "peers' reset (local only)": f"success={r.peers.reset_ok}; store {r.peers.keys_after_reset or 0:,.0f} "
                f"keys left; canary {r.peers.canary_external_hits or 0:,.0f} external hit tokens",
                "caught": "yes" if not r.peers.verified else "NO",
                "kvbench's reset": "proven cold" if r.ours.verified else f"NOT proven: {r.ours.warm}",
                "gate": r.gate_after_reset,
            }
            for r in results
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "test_config.yaml")
    ap.add_argument("--scenarios", nargs="+")
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=10.0, help="equivalence margin, %% of the fresh mean")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "reset-audit")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    names = args.scenarios or cfg.default_scenarios
    if unknown := [n for n in names if n not in cfg.scenarios]:
        print(f"--scenarios: not in {args.config}: {', '.join(unknown)}", file=sys.stderr)
        return 2
    images = ensure_images(cfg.stack.overlays[0], echo=print)
    work = args.work / time.strftime("%Y%m%dt%H%M%S")  # each audit its own directories
    t = time.perf_counter()
    results = []
    for pair in range(1, args.pairs + 1):
        for name in names:
            print(f"[audit] {name}, pair {pair}: fresh round 1, peers' reset, verified reset, round 1", flush=True)
            results.append(audit_pair(cfg, name, pair, images, work))
    print()
    print("Round-1 TTFT after kvbench's verified reset vs on a fresh stack (same engine, same prompts):")
    print(tabulate(compare(results, args.tolerance), headers="keys", tablefmt="simple", showindex=False))
    print()
    print("What each reset left (kvbench's proof: store keys and bytes, the previous cell's first prompt as canary):")
    print(tabulate(peers_table(results), headers="keys", tablefmt="simple", showindex=False))
    print(f"\n{len(results)} stack(s), {time.perf_counter() - t:.0f} s")
    good = all(
        not r.peers.verified and r.ours.verified and r.teardown_verified and not r.gate_after_reset.startswith("NOT")
        for r in results
    )
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
