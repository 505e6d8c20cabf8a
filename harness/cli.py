"""`kvbench` command line: run, bench, bench-all, report, clean, images."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from harness.client.client import set_api_key
from harness.client.tokenizer import (
    EndpointAuthError,
    LocalTokenizer,
    TokenizerError,
    check_endpoint_auth,
    server_tokenize_error,
)
from harness.config import Config, ConfigError, check_name, load_config
from harness.progress import console, say
from harness.report import report_main
from harness.stack import interrupts
from harness.stack.compose import force_remove, leftovers
from harness.stack.images import ImageBuildError
from harness.stack.spec import COMPOSE_DIR, PortInUse, allocate_ports
from harness.suite import Suite, SuiteOptions

DEFAULT_CONFIG = "configs/test_config.yaml"
EXIT_USAGE = 2
API_KEY_ENV = "OPENAI_API_KEY"  # as `vllm bench serve`
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VLLM_FLAGS = (
    "`vllm bench serve` flags work where they mean the same: --base-url (= --endpoint), --max-concurrency "
    "(= --concurrency), --request-rate, --seed, --result-dir (= --results); `kvbench run` sends the API "
    f"key in ${API_KEY_ENV} (or --api-key-env NAME) as Authorization: Bearer."
)


class Refused(Exception):
    """The machine is not in a state to start a run (not a configuration fault); exit 2."""


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
    parser = argparse.ArgumentParser(prog="kvbench", description=__doc__, epilog=VLLM_FLAGS)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run scenarios against an already running OpenAI-compatible vLLM")
    run.add_argument(
        "--endpoint", "--base-url", dest="endpoint", required=True, help="base URL, e.g. http://127.0.0.1:8000"
    )
    run.add_argument("--model", required=True, help="served model name")
    run.add_argument("--master-metrics", help="Mooncake master metrics URL, e.g. http://127.0.0.1:9003 (optional)")
    run.add_argument("--scenarios", nargs="+", help="override default_scenarios")
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
    render.add_argument("--mode", choices=["with-cache", "baseline"], default="with-cache")
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
    p.add_argument("--repeats", type=int, default=1, help="run each scenario N times, each on its own fresh stack")
    p.add_argument(
        "--mode",
        choices=["both", "with-cache", "baseline"],
        help="both: each scenario with the KV connector and without it (baseline), each on its own fresh "
        "stack, same prompts - what reuse buys; with-cache / baseline: one of them (quicker). "
        "Default: the config's mode (both)",
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


def _load(args: argparse.Namespace, scenarios: list[str] | None, mode: str | None = None) -> Config:
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


def _api_key(name: str | None) -> tuple[str, str] | None:
    """(variable, key) for `kvbench run`: from --api-key-env NAME, else from $OPENAI_API_KEY when set.
    No message shows the key, nor a NAME that may be one."""
    var = name or API_KEY_ENV
    if not ENV_NAME.match(var):
        raise ConfigError(
            "--api-key-env: expects the name of an environment variable ([A-Za-z_][A-Za-z0-9_]*), not the key"
        )
    key = os.environ.get(var, "").strip()
    if not key:
        if name:
            raise ConfigError("--api-key-env: that environment variable is not set or empty")
        return None
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise ConfigError(f"--api-key-env: the key in ${var} holds whitespace or non-ASCII characters")
    return var, key


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args, args.scenarios)
    for flag, url in (("--endpoint", args.endpoint), ("--master-metrics", args.master_metrics)):
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise ConfigError(f"{flag}: expected an http:// or https:// URL, got {url!r}")
    auth = _api_key(args.api_key_env)
    interrupts.install()
    if auth:
        set_api_key(args.endpoint, auth[1])  # held in memory only: the manifest says where it came from
    local = _tokenizer(args, auth[0] if auth else None)
    suite = Suite(cfg, _images, SuiteOptions(Path(args.results)), sys.argv)
    suite.local_tokenizer = local
    if auth:
        suite.manifest.endpoint_auth = f"Authorization: Bearer from ${auth[0]} (the key is not recorded)"
        say(f"sending ${auth[0]} as the API key to {args.endpoint} only")
    return 0 if suite.run_external(args.endpoint, args.model, args.master_metrics) else 1


def _tokenizer(args: argparse.Namespace, key_var: str | None) -> LocalTokenizer | None:
    """None when the endpoint's POST /tokenize counts tokens; else the --tokenizer (exit 2 without one).
    An endpoint that refuses our credentials stops the run first (exit 2): a key is missing, not a tokenizer."""
    try:
        check_endpoint_auth(args.endpoint)
        why = server_tokenize_error(args.endpoint, args.model)
    except EndpointAuthError as e:
        raise ConfigError(_auth_failure(args.endpoint, e, key_var)) from None
    if why is None:
        return None
    if not args.tokenizer:
        raise ConfigError(
            f"--endpoint {args.endpoint}: {why}; pass --tokenizer PATH_OR_NAME (the model's Hugging Face "
            "tokenizer, loaded offline) to count prompt tokens locally"
        )
    try:
        tok = LocalTokenizer(args.tokenizer)
    except TokenizerError as e:
        raise ConfigError(str(e)) from None
    say(f"{why}: counting tokens with the {tok.source}")
    return tok


def _auth_failure(endpoint: str, e: EndpointAuthError, key_var: str | None) -> str:
    """The one line for an endpoint that refused us: which variable to set (never the key)."""
    if key_var:
        return f"--endpoint {endpoint}: {e}: it refused the key in ${key_var}; set ${key_var} to a key it accepts"
    return (
        f"--endpoint {endpoint}: {e}: it wants an API key; set ${API_KEY_ENV} to it (or name the variable that "
        "holds it with --api-key-env NAME)"
    )


def _images(overlay: str) -> dict[str, str]:
    """Locally built images for the CPU stack; other overlays name their own (public) images."""
    from harness.stack.images import STACKS, ensure_images

    if overlay not in STACKS:
        return {}
    return ensure_images(overlay, echo=lambda line: console.print(line, markup=False))


def _bench(args: argparse.Namespace, scenarios: list[str] | None) -> int:
    if args.resume:
        return _resume(args)
    cfg = _load(args, scenarios, mode=args.mode)
    if args.on_reset_failure:
        cfg = cfg.model_copy(update={"on_reset_failure": args.on_reset_failure})
    for f in args.compose_file:
        if not f.is_file():
            raise ConfigError(f"--compose-file: {f}: file not found")
    _preflight(cfg, args)
    if args.repeats < 1:
        raise ConfigError(f"--repeats: must be >= 1, got {args.repeats}")
    interrupts.install()
    opts = SuiteOptions(Path(args.results), args.compose_dir, tuple(args.compose_file))
    suite = Suite(cfg, _images, opts, sys.argv)
    suite.plan_cells(cfg.default_scenarios, args.isolation, args.repeats, cfg.modes)
    return 0 if suite.run_all() else 1


def _preflight(cfg: Config, args: argparse.Namespace) -> None:
    """What must hold before any container starts (ConfigError / PortInUse -> exit 2)."""
    for name in cfg.stack.overlays:
        if not (args.compose_dir / f"{name}.yaml").is_file():
            raise ConfigError(f"{args.config}: stack.overlay: no compose file {args.compose_dir / name}.yaml")
    if cfg.stack.backend == "kubernetes":
        _kube_preflight(cfg, args)
        return
    # Fixed ports must be free before anything starts.
    allocate_ports(
        cfg.stack.bind_address, {"vllm_port": cfg.stack.vllm_port, "master_metrics_port": cfg.stack.master_metrics_port}
    )
    left = leftovers()
    if left:
        raise Refused(
            f"leftovers of an earlier run are still present ({left.describe()}); "
            "remove them with `kvbench clean` (or `make clean`)"
        )


def _kube_preflight(cfg: Config, args: argparse.Namespace) -> None:
    """The cluster answers with these credentials, and no stale kvbench namespace is in the way."""
    from harness.stack.kubestack import StackError, cluster, stale_namespaces

    try:
        with cluster(cfg.stack.kubernetes) as api:
            stale = stale_namespaces(api)
    except StackError as e:
        raise ConfigError(f"{args.config}: {e}") from None
    except Exception as e:
        raise ConfigError(
            f"{args.config}: stack.kubernetes: the cluster could not be asked ({type(e).__name__}: {e})"[:300]
        ) from None
    if stale:
        raise Refused(
            f"namespaces of an earlier run are still present ({', '.join(stale)}); remove them with `kvbench clean`"
        )


RESUME_FIXED = {"rounds": "--rounds", "concurrency": "--concurrency", "request_rate": "--request-rate",
                "seed": "--seed", "mode": "--mode", "scenarios": "--scenarios",
                "client_workers": "--client-workers"}  # fmt: skip


def _resume(args: argparse.Namespace) -> int:
    """A resumed run continues with the configuration it started with: a flag that would change it
    is an error, not silently ignored (its cells would not compare with the finished ones)."""
    given = [flag for dest, flag in RESUME_FIXED.items() if getattr(args, dest, None) is not None]
    given += ["--repeats"] if args.repeats != 1 else []
    given += ["--isolation"] if args.isolation != ("fresh",) else []
    given += ["--on-reset-failure"] if args.on_reset_failure else []
    if given:
        raise ConfigError(
            f"{given[0]}: a resumed run keeps the settings it started with (drop {', '.join(given)}, "
            "or start a new run)"
        )
    opts = SuiteOptions(args.resume.parent, args.compose_dir, tuple(args.compose_file))
    suite = Suite.resume(args.resume, _images, opts, sys.argv)
    _preflight(suite.cfg, args)
    interrupts.install()
    return 0 if suite.run_all() else 1


def cmd_bench(args: argparse.Namespace) -> int:
    return _bench(args, [args.scenario])


def cmd_bench_all(args: argparse.Namespace) -> int:
    return _bench(args, args.scenarios)


def cmd_clean(args: argparse.Namespace) -> int:
    ok = _clean_namespaces(args) if _kube_wanted(args) else True
    found = leftovers(include_live=args.all)
    if not found:
        say("nothing to clean (containers, volumes, networks)")
        return 0 if ok else 1
    say(f"removing {found.describe()}")
    force_remove(found)
    rest = leftovers(include_live=args.all)
    if rest:
        print(f"kvbench: could not remove {rest.describe()}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def _kube_wanted(args: argparse.Namespace) -> bool:
    default = Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config")
    return bool(args.context or args.kubeconfig or default.is_file())


def _clean_namespaces(args: argparse.Namespace) -> bool:
    from harness.config import KubernetesConfig
    from harness.stack.kubestack import StackError, cluster, delete_namespaces, stale_namespaces

    cfg = KubernetesConfig(context=args.context, kubeconfig=args.kubeconfig)
    try:
        with cluster(cfg) as api:
            names = stale_namespaces(api, include_live=args.all)
            if not names:
                say("nothing to clean (kvbench namespaces)")
                return True
            say(f"deleting {len(names)} kvbench namespaces: {', '.join(names)}")
            left = delete_namespaces(api, names, cfg.delete_timeout)
    except StackError as e:
        print(f"kvbench: {e}", file=sys.stderr)
        return False
    except Exception as e:  # the API server refused or is unreachable
        print(f"kvbench: clean: the cluster could not be asked ({type(e).__name__}: {e})"[:300], file=sys.stderr)
        return False
    if left:
        print(f"kvbench: namespaces still terminating: {', '.join(left)}", file=sys.stderr)
    return not left


def cmd_report(args: argparse.Namespace) -> int:
    return report_main(args.run_dirs, args.out)


def cmd_render(args: argparse.Namespace) -> int:
    """The stack as it would start, written out: the compose files always (they are the source),
    and `kubernetes.yaml` translated from them. Images: the GPU config's, or the CPU stack's `:latest`
    tags (push them to a registry the cluster can pull from)."""
    from harness.results import new_run_id
    from harness.stack import kube
    from harness.stack.images import STACKS
    from harness.stack.spec import prepare

    cfg = load_config(args.config)
    check_name(args.scenario, "--scenario")
    if args.out.exists() and any(args.out.iterdir()):
        raise ConfigError(f"--out: {args.out} is not empty")
    overlay = cfg.stack.overlays[0]
    images = {s.role: f"{s.repository}:latest" for s in STACKS.get(overlay, ())}
    spec = prepare(cfg.stack, new_run_id(cfg.run_name), args.scenario, args.out, images, args.compose_dir,
                   with_connector=args.mode == "with-cache")  # fmt: skip
    if args.backend == "kubernetes":
        try:
            objs = kube.manifests(spec, args.out, host_network=args.host_network)
        except ValueError as e:
            raise ConfigError(f"--host-network: {e}") from None
        (args.out / "kubernetes.yaml").write_text(kube.dump(objs))
        say(f"{len(objs)} objects in namespace {objs[0]['metadata']['name']} -> {args.out / 'kubernetes.yaml'}")
    else:
        say(f"compose project {spec.project}: {', '.join(str(f) for f in spec.files)}; env {args.out / 'stack.env'}")
    return 0


COMMANDS = {
    "run": cmd_run,
    "bench": cmd_bench,
    "bench-all": cmd_bench_all,
    "clean": cmd_clean,
    "report": cmd_report,
    "render": cmd_render,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"kvbench: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (PortInUse, Refused) as e:
        print(f"kvbench: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ImageBuildError as e:  # its message holds the log's tail and path; no traceback over it
        print(f"kvbench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kvbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
