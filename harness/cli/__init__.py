"""Stage 12, cli: `kvbench` run, bench, bench-all, report, clean, render: one module per command."""

from __future__ import annotations

import sys

from harness.cli.bench import cmd_bench, cmd_bench_all
from harness.cli.clean import cmd_clean
from harness.cli.parser import build_parser
from harness.cli.render import cmd_render
from harness.cli.report import cmd_report
from harness.cli.run import cmd_run
from harness.config import ConfigError
from harness.stack.images import ImageBuildError
from harness.stack.preflight import Refused
from harness.stack.spec import PortInUse

EXIT_USAGE = 2  # bad input: one line naming its source, before any container starts

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
