"""`kvbench bench` and `bench-all`: scenarios on fresh stacks of ours (or `--resume` an earlier run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.parser import default_repeats, load
from harness.config import ConfigError
from harness.stack import interrupts
from harness.stack.preflight import preflight
from harness.suite import Suite, SuiteOptions
from harness.suite.console import console


def images(overlay: str) -> dict[str, str]:
    """Locally built images for the CPU stack; other overlays name their own (public) images."""
    from harness.stack.images import STACKS, ensure_images  # the image builder: only where images are built

    if overlay not in STACKS:
        return {}
    return ensure_images(overlay, echo=lambda line: console.print(line, markup=False))


def _bench(args: argparse.Namespace, scenarios: list[str] | None) -> int:
    if args.resume:
        return _resume(args)
    cfg = load(args, scenarios, mode=args.mode)
    if args.on_reset_failure:
        cfg = cfg.model_copy(update={"on_reset_failure": args.on_reset_failure})
    for f in args.compose_file:
        if not f.is_file():
            raise ConfigError(f"--compose-file: {f}: file not found")
    preflight(cfg, args.compose_dir, args.config)
    repeats = default_repeats(args.isolation) if args.repeats is None else args.repeats
    if repeats < 1:
        raise ConfigError(f"--repeats: must be >= 1, got {repeats}")
    interrupts.install()
    opts = SuiteOptions(Path(args.results), args.compose_dir, tuple(args.compose_file))
    suite = Suite(cfg, images, opts, sys.argv)
    suite.plan_cells(cfg.default_scenarios, args.isolation, repeats, cfg.modes)
    return 0 if suite.run_all() else 1


RESUME_FIXED = {"rounds": "--rounds", "concurrency": "--concurrency", "request_rate": "--request-rate",
                "seed": "--seed", "mode": "--mode", "scenarios": "--scenarios",
                "client_workers": "--client-workers"}  # fmt: skip


def _resume(args: argparse.Namespace) -> int:
    """A resumed run continues with the configuration it started with: a flag that would change it
    is an error, not silently ignored (its cells would not compare with the finished ones)."""
    given = [flag for dest, flag in RESUME_FIXED.items() if getattr(args, dest, None) is not None]
    given += ["--repeats"] if args.repeats is not None else []
    given += ["--isolation"] if args.isolation != ("fresh",) else []
    given += ["--on-reset-failure"] if args.on_reset_failure else []
    if given:
        raise ConfigError(
            f"{given[0]}: a resumed run keeps the settings it started with (drop {', '.join(given)}, "
            "or start a new run)"
        )
    opts = SuiteOptions(args.resume.parent, args.compose_dir, tuple(args.compose_file))
    suite = Suite.resume(args.resume, images, opts, sys.argv)
    preflight(suite.cfg, args.compose_dir, args.config)
    interrupts.install()
    return 0 if suite.run_all() else 1


def cmd_bench(args: argparse.Namespace) -> int:
    return _bench(args, [args.scenario])


def cmd_bench_all(args: argparse.Namespace) -> int:
    return _bench(args, args.scenarios)
