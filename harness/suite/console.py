"""Progress output on stderr (rich), so stdout stays for tables and paths."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.analysis.intervals import change_pct
from harness.analysis.stats import client_limit_warning, reused_text, saturation_warning, schedule_warning
from harness.config.console import console, say
from harness.records.metrics import fmt
from harness.report.fit import wrap
from harness.runner.rounds import RoundProgress

_SAID: set[str] = set()  # the client warnings already said in full during this run


def new_run() -> None:
    """A run starts: every client warning is said in full once more (once per run)."""
    _SAID.clear()


def _again(kind: str, r: pd.Series) -> str:
    """A client warning already said in full this run: this round's figures only."""
    if kind == "saturation":
        return (f"client again: {r['shared_stamp_pct']:.1f} % of tokens shared a read, reads up to "
                f"{r['read_delay_p99_ms']:.1f} ms (p99) late")  # fmt: skip
    if kind == "schedule":
        return f"trace replay again up to {r['send_lag_p99_ms']:,.0f} ms (p99) late"
    lag = max(r.get("read_delay_p99_ms", math.nan), r.get("client_lag_p99_ms", math.nan))
    inflight = f"{r['inflight_mean']:.1f} of {r['concurrency']:.0f}"
    return f"client-limited again: {inflight} in flight, reads {lag:.1f} ms late"


def warn_saturation(rounds: pd.DataFrame) -> None:
    """Say which rounds' times the client itself spoiled (stats.saturation_warning and the others):
    the paragraph once per run (new_run), then one line of figures per round it happens again."""
    for _, r in rounds.iterrows():
        for kind, warning in (("saturation", saturation_warning(r)), ("schedule", schedule_warning(r)),
                              ("client", client_limit_warning(r))):  # fmt: skip
            if not warning:
                continue
            text = warning if kind not in _SAID else _again(kind, r)
            _SAID.add(kind)
            say(f"  [yellow]round {int(r['round'])}: {text}[/yellow]")


# Parts of a round's line dropped (in this order) while it is wider than the console.
ROUND_DROP = ("client - server", "server TTFT", "in flight", "full prefills", "p50")


def _cell(v: object, nd: int = 1, signed: bool = False) -> str:
    return fmt(v, nd, signed) if pd.notna(v) else "n/a"


def _round_parts(r: pd.Series, first: pd.Series) -> dict[str, str]:
    """One round's figures as phrases, in print order (empty: not known). TTFT change vs round 1 is
    100 * (round / round 1 - 1): negative = faster; none for round 1 or a partial round."""
    partial = bool(r.get("partial"))
    base = not first.get("partial") and not partial and int(r["round"]) > 1
    flight, gap = (r.get("inflight_mean"), r.get("concurrency")), r.get("client_server_ttft_gap_ms")
    server = r.get("server_ttft_mean_ms")
    change = change_pct(first["ttft_mean_ms"], r["ttft_mean_ms"]) if base else None
    return {
        "warmth": "partial" if partial else str(r["phase"]),
        "reused": f"{reused_text(r['reused_token_pct'])} % reused",
        "mean": f"TTFT mean {_cell(r['ttft_mean_ms'])} ms" + (f" ({_cell(change, 1, True)} % vs r1)" if base else ""),
        "p50": f"p50 {_cell(r['ttft_p50_ms'])}",
        "ok": f"{int(r['successes'])}/{int(r['requests'])} ok",
        "full prefills": f"{_int(r.get('misses'))} full prefills" if pd.notna(r.get("misses")) else "",
        "in flight": f"in flight {flight[0]:.1f}/{int(flight[1])}" if pd.notna(list(flight)).all() else "",
        "server TTFT": f"vLLM TTFT {_cell(server)} ms" if pd.notna(server) else "",
        "client - server": f"client - vLLM {_cell(gap, 1, True)} ms" if pd.notna(gap) else "",
    }


def _round_line(n: int, parts: dict[str, str], width: int) -> str:
    """`round n:` and the parts; the optional ones dropped in ROUND_DROP order while the line is
    wider than `width`."""
    kept = {k: v for k, v in parts.items() if v}
    droppable = [k for k in ROUND_DROP if k in kept]
    line = f"  round {n}: " + ", ".join(kept.values())
    while len(line) > width and droppable:
        kept.pop(droppable.pop(0))
        line = f"  round {n}: " + ", ".join(kept.values())
    return line


def rounds_lines(table: pd.DataFrame, width: int) -> list[str]:
    """One line per round of one cell (warmth, reuse, TTFT, change vs round 1, ok), fitted to `width`
    by dropping the optional figures; then the notes that need more room (wrapped)."""
    if table.empty:
        return []
    first = table.iloc[0]
    lines, notes = [], []
    for _, r in table.iterrows():
        lines.append(_round_line(int(r["round"]), _round_parts(r, first), width))
        if bool(r.get("partial")):
            notes.append(
                f"  round {int(r['round'])}: partial, {int(r['requests'])} of {int(r['planned'])} requests sent, "
                f"{int(r['failures'])} failed: no change vs round 1 or target verdict"
            )
    return lines + [x for note in notes for x in wrap(note, width, indent="      ")]


def print_rounds(table: pd.DataFrame) -> None:
    """One row per round with its measured warmth, fitted to the console's width; partial rounds
    say so and get no change vs round 1."""
    for line in rounds_lines(table, console.width):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    warn_saturation(table)


def _int(v: float | None) -> str:
    return "?" if v is None or v != v else str(int(v))  # NaN: unknown


@contextmanager
def step(
    label: str, timings: dict[str, float | None] | None = None, key: str | None = None, transient: bool = False
) -> Iterator[None]:
    """Print a step with a spinner and record its duration in `timings[key]`. `transient`: on a
    terminal only the spinner (a later line reports it), in a log its line as always."""
    t = time.perf_counter()
    with console.status(f"{label} ..."):
        try:
            yield
        finally:
            dt = time.perf_counter() - t
            if timings is not None and key:
                timings[key] = round(dt, 3)
    if not (transient and console.is_terminal):
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
            transient=console.is_terminal,  # the round's line follows; a log keeps the bar's last state
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
