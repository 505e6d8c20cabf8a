"""Reset audit: is a cell after kvbench's verified reset measured like a cell on a fresh stack?
And what does the peers' reset (local prefix cache only) leave behind?

The question is an equivalence, stated before the data: per scenario and round (1: cold, 2:
warm), the ratio of the mean TTFT after a verified reset to the mean TTFT on the fresh stack lies
within +-`--margin` % (10 %). Each stack pair gives one ratio; the prompts of one stack are not
independent evidence (they share its engine process), so they are averaged inside the pair, never
pooled. TOST (two one-sided t tests at alpha 0.05) on the pairs' log ratios: equivalence is shown
when the 90 % t interval lies inside log(0.9)..log(1.1) (intervals.tost_log_ratio).

Per pair, one CPU stack (vLLM + MooncakeStoreConnector + Mooncake master, dev endpoints on,
brought up the way the harness does):

  0. the engine warm-up (runner/warmup.py), then the cold proof       -> a fresh cell's start
  1. rounds 1 and 2 of the scenario                                    -> "fresh" TTFT mean per round
  2. the peers' reset: POST /reset_prefix_cache (no reset_external), as `vllm bench sweep`
     sends it, then kvbench's proof (store keys and bytes, canary)     -> what stayed warm
  3. kvbench's verified reset (reset_external=true, store empty, canary, reset again)
  4. the cold gate since that reset, then rounds 1 and 2 again         -> "reset" TTFT mean per round

Order: within a pair the fresh cell comes first by construction (a reset needs a used stack: that
is the situation being tested). Across pairs the scenarios alternate (ABBA: A B, B A, A B, ...), so
no scenario always runs at the same point of the machine's day.

Usage (needs Docker; the CPU images are built when missing; run under the shared stack lock):

    .venv/bin/python benchmarks/reset_audit.py [--config configs/test_config.yaml]
        [--scenarios a b] [--pairs 8] [--margin 10] [--alpha 0.05]
    make reset-audit ARGS='--scenarios long_context_high_reuse'

Exit status: 0 when equivalence is shown for every scenario and round, and every stack came up
and went away clean and every proof behaved as expected (the peers' reset caught, kvbench's
proven); 1 when a stack or a proof misbehaved; 3 when equivalence was not shown.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.analysis.frames import truthy  # noqa: E402
from harness.analysis.intervals import tost_log_ratio  # noqa: E402
from harness.client.tokenizer import ServerTokenizer  # noqa: E402
from harness.config import Config, load_config  # noqa: E402
from harness.observe.probes import Probe, cold_state  # noqa: E402
from harness.records import ResetEvidence  # noqa: E402
from harness.results import read_requests  # noqa: E402
from harness.runner import Endpoint, ResetSettings, run_rounds, verified_reset  # noqa: E402
from harness.runner.warmup import warm_up  # noqa: E402
from harness.stack.compose import ComposeStack  # noqa: E402
from harness.stack.images import ensure_images  # noqa: E402
from harness.stack.spec import prepare  # noqa: E402
from harness.workload import build_workload  # noqa: E402

ROUNDS = (1, 2)
EXIT_PROOF, EXIT_NOT_SHOWN = 1, 3


@dataclass
class PairResult:
    scenario: str
    pair: int
    fresh: pd.DataFrame  # rows of rounds 1 and 2 on the fresh stack (after the warm-up)
    reset: pd.DataFrame  # rows of rounds 1 and 2 after the verified reset
    peers: ResetEvidence  # the local-only reset, as kvbench's proof saw it
    ours: ResetEvidence
    gate_after_reset: str
    teardown_verified: bool
    gate_fresh: str = ""
    warmup: dict = field(default_factory=dict)


def _rounds(cfg: Config, wl, url: str, probe: Probe, out: Path) -> pd.DataFrame:
    two = cfg.model_copy(update={"rounds": max(ROUNDS)})
    out.mkdir(parents=True)  # new: requests.csv is appended to, and must hold this run's rows only
    run_rounds(wl, two, [(Endpoint(url, cfg.stack.served_model_name), probe)], out)
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
            warm = warm_up(url, model, probe.snapshot().block_size, cfg.request_timeout)
            cold0, gate0 = cold_state(probe.snapshot())
            with ServerTokenizer(url, model) as tok:
                wl = build_workload(name, cfg.scenarios[name], tok, api=api, seed=cfg.seed,
                                    max_model_len=cfg.stack.max_model_len)  # fmt: skip
                fresh = _rounds(cfg, wl, url, probe, workdir / "fresh")
                canary = wl.sessions[0].build(0, [])
                # the peers' reset leaves the keys for good: no need to wait the proof's full bound for them
                peers, _ = verified_reset(probe, model, api, canary, ResetSettings(external=False, store_empty_s=3.0))
                ours, since = verified_reset(probe, model, api, canary)
                cold, gate = cold_state(probe.snapshot(), since)
                reset = _rounds(cfg, wl, url, probe, workdir / "reset")
        finally:
            probe.close()
    td = stack.teardown
    return PairResult(name, pair, fresh, reset, peers, ours, gate if cold else f"NOT COLD: {gate}",
                      bool(td and td.verified), gate0 if cold0 else f"NOT COLD: {gate0}", warm)  # fmt: skip


def pair_ratios(results: list[PairResult], name: str, rnd: int) -> pd.DataFrame:
    """One row per stack pair: the mean TTFT of round `rnd` on the fresh stack and after the reset,
    over the prompts answered in both (the same prompts on both sides), and their ratio."""
    rows = []
    for r in (x for x in results if x.scenario == name):
        f = r.fresh[r.fresh["round"] == rnd].groupby("prompt_id")["ttft_ms"].mean()
        z = r.reset[r.reset["round"] == rnd].groupby("prompt_id")["ttft_ms"].mean()
        both = pd.concat({"fresh": f, "reset": z}, axis=1).dropna()
        fm, zm = float(both["fresh"].mean()), float(both["reset"].mean())
        rows.append({"pair": r.pair, "prompts": len(both), "fresh": fm, "reset": zm, "ratio": zm / fm})
    return pd.DataFrame(rows)


def compare(results: list[PairResult], margin: float, alpha: float = 0.05) -> pd.DataFrame:
    """Per scenario and round: TOST over the stack pairs' log ratios (reset / fresh mean TTFT)."""
    rows = []
    level = f"{100 * (1 - 2 * alpha):g} %"
    for name in dict.fromkeys(r.scenario for r in results):
        for rnd in ROUNDS:
            p = pair_ratios(results, name, rnd)
            e = tost_log_ratio(p["ratio"].to_numpy(float) if len(p) else [], margin, alpha)
            ci = "n/a" if math.isnan(e.lo) else f"[{e.lo:+.1f}, {e.hi:+.1f}]"
            rows.append(
                {
                    "scenario": name,
                    "round": rnd,
                    "pairs": e.n,
                    "fresh TTFT ms": f"{p['fresh'].mean():,.1f}" if len(p) else "n/a",
                    "reset TTFT ms": f"{p['reset'].mean():,.1f}" if len(p) else "n/a",
                    f"reset/fresh % [{level} CI]": f"{e.estimate:+.1f} {ci}",
                    "TOST p": "n/a" if math.isnan(e.p) else f"{e.p:.3f}",
                    "verdict": f"equivalent (within +-{margin:g} %)"
                    if e.equivalent
                    else f"NOT shown equivalent (+-{margin:g} %)",
                    "equivalent": e.equivalent,
                }
            )
    return pd.DataFrame(rows)


def peers_table(results: list[PairResult]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "scenario": r.scenario,
                "pair": r.pair,
                "warm-up": f"{r.warmup.get('requests', 0)} req, TTFT {r.warmup.get('ttft_ms')} ms",
                "fresh gate": r.gate_fresh,
                "peers' reset (local only)": f"success={r.peers.reset_ok}; store {r.peers.keys_after_reset or 0:,.0f} "
                f"keys left; canary {r.peers.canary_external_hits or 0:,.0f} external hit tokens",
                "caught": "yes" if not r.peers.verified else "NO",
                "kvbench's reset": "proven cold" if r.ours.verified else f"NOT proven: {r.ours.warm}",
                "gate": r.gate_after_reset,
            }
            for r in results
        ]
    )


def abba(names: list[str], pairs: int) -> list[tuple[int, str]]:
    """(pair, scenario) in the order they run: the scenarios' order reversed every other pair."""
    return [(p, n) for p in range(1, pairs + 1) for n in (names if p % 2 else names[::-1])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "test_config.yaml")
    ap.add_argument("--scenarios", nargs="+")
    ap.add_argument("--pairs", type=int, default=8, help="stack pairs per scenario (default: %(default)s)")
    ap.add_argument("--margin", type=float, default=10.0, help="equivalence margin, %% of the fresh mean")
    ap.add_argument("--alpha", type=float, default=0.05, help="TOST level (the %(default)s -> a 90 %% interval)")
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
    for pair, name in abba(names, args.pairs):
        print(f"[audit] {name}, pair {pair}: warm-up, fresh rounds 1-2, peers' reset, verified reset, rounds 1-2",
              flush=True)  # fmt: skip
        results.append(audit_pair(cfg, name, pair, images, work))
    table = compare(results, args.margin, args.alpha)
    print()
    print(
        f"Mean TTFT after kvbench's verified reset vs on a fresh stack, per round: one ratio per stack pair, "
        f"TOST at alpha {args.alpha:g} against +-{args.margin:g} % (equivalent when the whole interval is inside):"
    )
    print(tabulate(table.drop(columns="equivalent"), headers="keys", tablefmt="simple", showindex=False))
    print()
    print("What each reset left (kvbench's proof: store keys and bytes, the previous cell's first prompt as canary):")
    print(tabulate(peers_table(results), headers="keys", tablefmt="simple", showindex=False))
    print(f"\n{len(results)} stack(s), {time.perf_counter() - t:.0f} s")
    good = all(
        not r.peers.verified
        and r.ours.verified
        and r.teardown_verified
        and not r.gate_after_reset.startswith("NOT")
        and not r.gate_fresh.startswith("NOT")
        for r in results
    )
    if not good:
        return EXIT_PROOF
    return 0 if bool(table["equivalent"].all()) else EXIT_NOT_SHOWN


if __name__ == "__main__":
    sys.exit(main())
