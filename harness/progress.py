"""Progress output on stderr (rich), so stdout stays for tables and paths."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .console import console, say
from .fit import fit_table, wrap
from .intervals import change_pct
from .metrics import fmt
from .runner import RoundProgress
from .stats import client_limit_warning, round1_caveat, saturation_warning, schedule_warning


def warn_saturation(rounds: pd.DataFrame) -> None:
    """Say which rounds' times the client itself spoiled (stats.saturation_warning)."""
    for _, r in rounds.iterrows():
        for warning in (saturation_warning(r), schedule_warning(r), client_limit_warning(r)):
            if warning:
                say(f"  [yellow]round {int(r['round'])}: {warning}[/yellow]")


ROUND_DROP = ("client - server ms", "server TTFT ms", "in flight", "full prefills", "TTFT p50 ms")  # first dropped


def _cell(v: object, nd: int = 1, signed: bool = False) -> str:
    return fmt(v, nd, signed) if pd.notna(v) else "n/a"


def rounds_lines(table: pd.DataFrame, width: int) -> list[str]:
    """The per-round table of one cell, fitted to `width` (columns dropped, never wrapped), then the
    sentences that need more room (wrapped). TTFT change vs round 1 is 100 * (round / round 1 - 1):
    negative = faster."""
    rows, notes = [], []
    if table.empty:
        return []
    first = table.iloc[0]
    for _, r in table.iterrows():
        n, partial = int(r["round"]), bool(r.get("partial"))
        base = not first.get("partial") and not partial and n > 1
        flight = r.get("inflight_mean"), r.get("concurrency")
        rows.append(
            {
                "round": str(n),
                "warmth": "partial" if partial else str(r["phase"]),
                "reused %": _cell(r["reused_token_pct"], 0),
                "full prefills": _int(r.get("misses")),
                "TTFT p50 ms": _cell(r["ttft_p50_ms"]),
                "TTFT mean ms": _cell(r["ttft_mean_ms"]),
                "vs r1 %": _cell(change_pct(first["ttft_mean_ms"], r["ttft_mean_ms"]), 1, True) if base else "",
                "ok": f"{int(r['successes'])}/{int(r['requests'])}",
                "in flight": f"{flight[0]:.1f}/{int(flight[1])}" if pd.notna(flight[0]) and pd.notna(flight[1]) else "",
                "server TTFT ms": _cell(r.get("server_ttft_mean_ms")),
                "client - server ms": _cell(r.get("client_server_ttft_gap_ms"), 1, True),
            }
        )
        notes += _round_notes(r, n, partial)
    df = pd.DataFrame(rows)
    df = df.drop(columns=[c for c in ("server TTFT ms", "client - server ms") if (df[c] == "n/a").all()])
    lines = [f"  {x}" for x in fit_table(df, width - 2, drop=ROUND_DROP)]
    return lines + [x for note in notes for x in wrap(note, width, indent="      ")]


def _round_notes(r: pd.Series, n: int, partial: bool) -> list[str]:
    if partial:
        return [
            f"  round {n}: partial, {int(r['requests'])} of {int(r['planned'])} requests sent, "
            f"{int(r['failures'])} failed: no change vs round 1 or target verdict"
        ]
    out = []
    if r.get("misses", 0) > 0 and r["misses"] < r["successes"]:  # both kinds (NaN: no usage)
        out.append(
            f"  round {n}: TTFT mean {r['ttft_miss_mean_ms']:.0f} ms for {int(r['misses'])} full prefill(s), "
            f"{r['ttft_hit_mean_ms']:.0f} ms for the {int(r['successes'] - r['misses'])} hits"
        )
    if n == 1 and (caveat := round1_caveat(r["reused_token_pct"])):
        out.append(f"  {caveat}")
    return out


def print_rounds(table: pd.DataFrame) -> None:
    """One row per round with its measured warmth, fitted to the console's width; partial rounds
    say so and get no change vs round 1."""
    for line in rounds_lines(table, console.width):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
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
