"""Progress output on stderr (rich), so stdout stays for tables and paths."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .runner import RoundProgress
from .stats import saturation_warning

console = Console(stderr=True, highlight=False)


def say(msg: str) -> None:
    console.print(msg)


def warn_saturation(rounds: pd.DataFrame) -> None:
    """Say which rounds' times the client itself spoiled (stats.saturation_warning)."""
    for _, r in rounds.iterrows():
        if warning := saturation_warning(r):
            say(f"  [yellow]round {int(r['round'])}: {warning}[/yellow]")


@contextmanager
def step(label: str, timings: dict[str, float] | None = None, key: str | None = None) -> Iterator[None]:
    """Print a step with a spinner and record its duration in `timings[key]`."""
    t = time.perf_counter()
    with console.status(f"{label} ..."):
        try:
            yield
        finally:
            dt = time.perf_counter() - t
            if timings is not None and key:
                timings[key] = round(dt, 3)
    console.print(f"  {label}: {dt:.1f} s")


def round_progress(scenario: str) -> RoundProgress:
    state: dict = {}

    def start(rnd: int, total: int) -> None:
        p = Progress(TextColumn(f"  {scenario} round {rnd}"), BarColumn(), MofNCompleteColumn(),
                     TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), console=console,
                     transient=False)
        p.start()
        state.update(p=p, task=p.add_task("round", total=total, failed=0), failed=0)

    def advance(ok: bool) -> None:
        if not ok:
            state["failed"] += 1
        state["p"].update(state["task"], advance=1, failed=state["failed"])

    def stop() -> None:
        if "p" in state:
            state.pop("p").stop()

    return RoundProgress(start, advance, stop)
