"""`kvbench` command line: run, bench, bench-all, report, clean, images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import Config, ConfigError, load_config
from .progress import console, round_progress, say
from .report import write_report
from .results import RunDir, base_manifest, utc_now, write_json
from .runner import Endpoint, run_rounds
from .tokenizer import ServerTokenizer
from .workload import build_workload

DEFAULT_CONFIG = "configs/test_config.yaml"
EXIT_USAGE = 2


def _add_suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, help="suite YAML (default: %(default)s)")
    p.add_argument("--rounds", type=int, help="override rounds")
    p.add_argument("--concurrency", type=int, help="override concurrency")
    p.add_argument("--results", default="results", help="results root directory (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run scenarios against an already running OpenAI-compatible vLLM")
    run.add_argument("--endpoint", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    run.add_argument("--model", required=True, help="served model name")
    run.add_argument("--scenarios", nargs="+", help="override default_scenarios")
    _add_suite_args(run)

    rep = sub.add_parser("report", help="aggregate a run directory into report.md and print it")
    rep.add_argument("run_dir", type=Path)
    return parser


def _load(args: argparse.Namespace, scenarios: list[str] | None) -> Config:
    return load_config(args.config, scenarios=scenarios, rounds=args.rounds, concurrency=args.concurrency)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args, args.scenarios)
    run = RunDir.create(Path(args.results), cfg.run_name)
    manifest = base_manifest(run.run_id, cfg.model_dump(mode="json"), sys.argv)
    manifest.update(mode="external-endpoint", endpoint=args.endpoint)
    run.write_manifest(manifest)
    say(f"run {run.run_id} -> {run.root}")
    endpoint = Endpoint(args.endpoint.rstrip("/"), args.model)
    failed = False
    for name, scen in cfg.selected().items():
        out = run.scenario_dir(name)
        entry = manifest["scenarios"].setdefault(name, {"status": "running"})
        try:
            with ServerTokenizer(endpoint.base_url, endpoint.model) as tok:
                say(f"[bold]{name}[/bold]: building workload (exact token lengths via /tokenize)")
                wl = build_workload(name, scen, tok, api=cfg.api, seed=cfg.seed)
                table = run_rounds(wl, cfg, endpoint, out, progress=round_progress(name))
            entry["status"] = "ok"
            say(_round_line(name, table))
        except Exception as e:  # one scenario's failure must not stop the others
            failed = True
            entry.update(status="failed", reason=f"{type(e).__name__}: {e}"[:500])
            console.print(f"[red]{name} failed: {entry['reason']}[/red]")
        run.write_manifest(manifest)
    manifest["finished_at"] = utc_now()
    run.write_manifest(manifest)
    path, text = write_report(run.root)
    print(text)
    say(f"report: {path}")
    return 1 if failed else 0


def _round_line(name: str, table) -> str:
    parts = [f"r{int(r['round'])} TTFT p50 {r['ttft_p50_ms']:.1f} ms cached {r['cached_token_ratio']:.2f}"
             for _, r in table.iterrows()]
    return f"  {name}: " + " | ".join(parts)


def cmd_report(args: argparse.Namespace) -> int:
    if not args.run_dir.is_dir():
        print(f"kvbench: run_dir: {args.run_dir} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    path, text = write_report(args.run_dir)
    print(text)
    say(f"report: {path}")
    return 0


COMMANDS = {"run": cmd_run, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"kvbench: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kvbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
