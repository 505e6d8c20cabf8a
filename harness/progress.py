"""Progress output on stderr (rich), so stdout stays for tables and paths."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .console import console, say
from .runner import RoundProgress
from .stats import client_limit_warning, round1_caveat, saturation_warning, schedule_warning


def warn_saturation(rounds: pd.DataFrame) -> None:
    """Say which rounds' times the client itself spoiled (stats.saturation_warning)."""
    for _, r in rounds.iterrows():
        for warning in (saturation_warning(r), schedule_warning(r), client_limit_warning(r)):
            if warning:
                say(f"  [yellow]round {int(r['round'])}: {warning}[/yellow]")


def print_rounds(table: pd.DataFrame) -> None:
    """One line per round with its measured warmth; partial rounds say so and nothing more."""
    for _, r in table.iterrows():
        n = int(r["round"])
        if r.get("partial"):
            say(
                f"  [yellow]round {n}: partial, {int(r['requests'])} of {int(r['planned'])} requests sent, "
                f"{int(r['failures'])} failed: no reduction or target verdict[/yellow]"
            )
            continue
        say(
            f"  round {n} ({r['phase']}, {r['reused_token_pct']:.0f} % of prompt tokens reused, "
            f"{_int(r.get('misses'))} full prefills): TTFT p50 {r['ttft_p50_ms']:.1f} ms, "
            f"mean {r['ttft_mean_ms']:.1f} ms, "
            f"ok {int(r['successes'])}/{int(r['requests'])}"
            + (
                f", {r['inflight_mean']:.1f} of {int(r['concurrency'])} in flight"
                if pd.notna(r.get("inflight_mean")) and pd.notna(r.get("concurrency"))
                else ""
            )
        )
        if pd.notna(r.get("server_ttft_mean_ms")):
            say(
                f"    server-side TTFT mean {r['server_ttft_mean_ms']:.1f} ms (client - server "
                f"{r['client_server_ttft_gap_ms']:+.1f} ms)"
            )
        if r.get("misses", 0) > 0 and r["misses"] < r["successes"]:  # both kinds (NaN: no usage)
            say(
                f"    TTFT mean {r['ttft_miss_mean_ms']:.0f} ms for {int(r['misses'])} full prefill(s), "
                f"{r['ttft_hit_mean_ms']:.0f} ms for the {int(r['successes'] - r['misses'])} hits"
            )
        if n == 1 and (caveat := round1_caveat(r["reused_token_pct"])):
            say(f"    [yellow]{caveat}[/yellow]")
    warn_saturation(table)


def _int(v: float | None) -> str:
    return "?" if v is None or v != v else str(int(v))  # NaN: unknown


@contextmanager
def step(label: str, timings: dict[str, float | None] | None = None, key: str | None = None) -> Iterator[None]:
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
        p = Progress(
            TextColumn(f"  {scenario} round {rnd}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
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
