"""The `kvbench` command line's parser: its commands and flags, and the config they load."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from harness.config import Config, load_config
from harness.stack.spec import COMPOSE_DIR

DESCRIPTION = "kvbench: isolated KV-cache reuse benchmarks (vLLM + Mooncake), one fresh stack per scenario."
DEFAULT_CONFIG = "configs/test_config.yaml"
EXIT_USAGE = 2
API_KEY_ENV = "OPENAI_API_KEY"  # as `vllm bench serve`
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VLLM_FLAGS = (
    "`vllm bench serve` flags work where they mean the same: --base-url (= --endpoint), --max-concurrency "
    "(= --concurrency), --request-rate, --seed, --result-dir (= --results); `kvbench run` sends the API "
    f"key in ${API_KEY_ENV} (or --api-key-env NAME) as Authorization: Bearer."
)


class _Typed(argparse.Action):
    """Stores the value and which of the option's names was typed: an error names the flag the user typed."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.typed = {**getattr(namespace, "typed", {}), self.dest: option_string}


def _add_suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help="suite YAML (default: %(default)s)")
    p.add_argument("--rounds", type=int, help="override rounds")
    p.add_argument(
        "--concurrency",
        "--max-concurrency",
        dest="concurrency",
        type=int,
        action=_Typed,
        help="override concurrency: requests in flight",
    )
    p.add_argument(
        "--request-rate",
        type=float,
        metavar="RPS",
        help="override request_rate: requests/s with Poisson arrivals; inf: no pacing",
    )
    p.add_argument("--seed", type=int, help="override seed (workload texts, arrival times)")
    p.add_argument(
        "--client-workers",
        type=int,
        metavar="N",
        help="client processes sharing each round (concurrency and request rate stay the totals; default: "
        "one per 128 of concurrency, on all cores but one)",
    )
    p.add_argument(
        "--results",
        "--result-dir",
        dest="results",
        default="results",
        help="results root directory (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvbench",
        description=DESCRIPTION,
        epilog=VLLM_FLAGS,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run scenarios against an already running OpenAI-compatible vLLM")
    run.add_argument(
        "--endpoint", "--base-url", dest="endpoint", required=True, help="base URL, e.g. http://127.0.0.1:8000"
    )
    run.add_argument("--model", required=True, help="served model name")
    run.add_argument("--master-metrics", help="Mooncake master metrics URL, e.g. http://127.0.0.1:9003 (optional)")
    run.add_argument("--scenarios", nargs="+", help="override default_scenarios")
    run.add_argument(
        "--reset",
        action="store_true",
        help="before every scenario, vLLM's cache reset (POST /reset_prefix_cache?reset_external=true: the "
        "server needs VLLM_SERVER_DEV_MODE=1), proven (the store empty per --master-metrics, which it "
        "needs; the previous scenario's first prompt served nothing cached); each scenario's cold gate "
        "then counts from the reset, so a server that served traffic before can be proven cold",
    )
    run.add_argument(
        "--tokenizer",
        metavar="PATH_OR_NAME",
        help="the served model's Hugging Face tokenizer (a directory, or a name in the local Hugging Face "
        "cache; never downloaded), for endpoints without vLLM's POST /tokenize: prompts stay exact in "
        "the model's tokens. Used only when the endpoint's /tokenize does not answer",
    )
    run.add_argument(
        "--api-key-env",
        metavar="NAME",
        help=f"environment variable holding the endpoint's API key (default: {API_KEY_ENV}, when "
        "set), sent as 'Authorization: Bearer' to that server only. Give the name, never the "
        "key: the command line is recorded in manifest.json",
    )
    _add_suite_args(run)

    bench = sub.add_parser("bench", help="one scenario on a fresh vLLM + Mooncake stack")
    bench.add_argument("--scenario", required=True)
    _add_suite_args(bench)
    _add_stack_args(bench)

    bench_all = sub.add_parser("bench-all", help="every default scenario, each on its own fresh stack")
    bench_all.add_argument("--scenarios", nargs="+", help="override default_scenarios")
    _add_suite_args(bench_all)
    _add_stack_args(bench_all)

    clean = sub.add_parser(
        "clean",
        help="remove leftovers of crashed runs: containers, volumes, networks by label; kvbench namespaces on a "
        "cluster when a kube context is given or a kubeconfig exists",
    )
    clean.add_argument("--all", action="store_true", help="also remove stacks of harness runs that are still alive")
    clean.add_argument("--context", help="kube context whose kvbench namespaces to remove (default: the current one)")
    clean.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")

    render = sub.add_parser(
        "render", help="write one scenario's stack for review or GitOps: compose files, or Kubernetes manifests"
    )
    render.add_argument("--config", type=Path, default=Path("configs/test_config.yaml"))
    render.add_argument("--scenario", default="stack", help="names the stack (namespace / project); default: stack")
    render.add_argument(
        "--mode",
        choices=["none", "local", "store", "local+store", "with-cache", "baseline"],
        help="the arm to render (with-cache = store, baseline = none); default: local+store on GPU overlays "
        "(prefix caching on the GPU pool + Mooncake, how production runs), store on the CPU stack",
    )
    render.add_argument("--backend", choices=["compose", "kubernetes"], default="kubernetes")
    render.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    render.add_argument(
        "--host-network",
        action="store_true",
        help="kubernetes: pods on the node's network, service names via hostAliases (one-node players "
        "without cluster DNS, e.g. podman kube play; single-engine stacks)",
    )
    render.add_argument("--compose-dir", type=Path, default=COMPOSE_DIR, help=argparse.SUPPRESS)

    rep = sub.add_parser("report", help="report.md + self-contained report.html for a run; several runs: a comparison")
    rep.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    rep.add_argument("--out", type=Path, help="where to write (default: the (first) run directory)")
    return parser


ISOLATIONS = ("fresh", "shared", "reset")
# --repeats when not given: with verified resets a repeat costs a reset (0.2-2 s on the CPU stack), not a
# bring-up (30-110 s), and repeats are what puts the run-to-run noise into the headline's interval
# (docs/statistics.md: repeats after resets varied as much as fresh stacks did).
REPEATS_RESET = 3


def default_repeats(isolation: tuple[str, ...]) -> int:
    """--repeats when not given: REPEATS_RESET when every cell is isolated by verified reset, else 1."""
    return REPEATS_RESET if tuple(isolation) == ("reset",) else 1


def _isolations(value: str) -> tuple[str, ...]:
    """--isolation's comma list, in the given order without repeats ("both" = fresh,shared)."""
    names = [n.strip() for n in value.split(",")]
    names = [x for n in names for x in (("fresh", "shared") if n == "both" else (n,))]
    bad = [n for n in names if n not in ISOLATIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{bad[0] if bad else value!r}: choose from {', '.join(ISOLATIONS)}, both")
    return tuple(dict.fromkeys(names))


def _add_stack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--isolation",
        type=_isolations,
        default=("fresh",),
        metavar="{fresh,shared,reset,both}[,...]",
        help="fresh: one stack per scenario (default); shared: one stack for all scenarios, as an "
        "unisolated script would (shows the pollution); reset: one stack per mode, a verified cache reset "
        "(reset, store empty, canary) between scenarios; both = fresh,shared. A comma list runs each, "
        "reported side by side (e.g. shared,reset)",
    )
    p.add_argument(
        "--on-reset-failure",
        choices=["fresh", "fail"],
        help="isolation reset: a reset that cannot be proven runs its scenario on a fresh stack (default) or fails it",
    )
    p.add_argument(
        "--repeats",
        type=int,
        help="run each scenario N times: fresh isolation, each on its own fresh stack (a repeat costs a "
        "bring-up per mode); reset isolation, after a verified reset (a repeat costs a reset). Intervals over "
        f"repeats span the noise between them, a one-repeat interval only the prompts of one stack. Default: "
        f"{REPEATS_RESET} with --isolation reset alone, else 1",
    )
    p.add_argument(
        "--mode",
        metavar="ARM[,ARM...]",
        help="the arms, each scenario on its own isolated stack per arm, same prompts: none (no prefix cache, "
        "no connector), local (vLLM's own prefix cache), store (the KV connector, no local prefix cache), "
        "local+store (both). Aliases: both = store,none (what reuse buys), with-cache = store, baseline = "
        "none. With --repeats the order alternates (ABBA). Default: the config's mode (both)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="finish an earlier run in its own directory: only the cells not finished ok run again, "
        "with the configuration that run started with",
    )
    p.add_argument("--compose-dir", type=Path, default=COMPOSE_DIR, help="compose files (default: %(default)s)")
    p.add_argument(
        "--compose-file", type=Path, action="append", default=[], help="extra compose overlay applied last (repeatable)"
    )


def load(args: argparse.Namespace, scenarios: list[str] | None, mode: str | None = None) -> Config:
    flags = {
        "default_scenarios": "--scenario" if args.command == "bench" else "--scenarios",
        **getattr(args, "typed", {}),
    }
    return load_config(
        args.config,
        scenarios=scenarios,
        rounds=args.rounds,
        concurrency=args.concurrency,
        request_rate=args.request_rate,
        seed=args.seed,
        mode=mode,
        client_workers=args.client_workers,
        flags=flags,
    )
