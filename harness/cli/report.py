"""`kvbench report`: report.md and report.html for a run; several runs: a comparison."""

from __future__ import annotations

import argparse


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import report_main  # matplotlib loads for this command only

    return report_main(args.run_dirs, args.out)
