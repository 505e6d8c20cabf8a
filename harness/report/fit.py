"""Console text that fits the terminal: tables lose columns (never wrap), prose wraps.

A wrapped table row is unreadable (its cells land under the wrong headers), so a table
too wide for the terminal drops its least important columns first, then shortens its
label column; sentences are wrapped at word boundaries. 80 columns is the floor every
caller is tested at.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

import pandas as pd
from tabulate import tabulate

MIN_LABEL = 12  # a label column is never cut shorter than this


def terminal_width(default: int = 80) -> int:
    """Columns of the terminal on stdout ($COLUMNS, else the tty's size, else `default`)."""
    return shutil.get_terminal_size((default, 24)).columns


def _render(df: pd.DataFrame) -> list[str]:
    return tabulate(df, headers="keys", tablefmt="simple", showindex=False, disable_numparse=True).splitlines()


def _widest(lines: list[str]) -> int:
    return max((len(x) for x in lines), default=0)


def _cut(text: str, n: int) -> str:
    """`text` in at most `n` characters, elided in the middle ("~"): a label's tail tells cells
    apart ("cold_start [baseline]"), so its bracketed tags are kept whole when they fit."""
    if len(text) <= n:
        return text
    tail = text[text.rindex(" [") :] if " [" in text else text[-(n // 2) :]
    if len(tail) > n - 4:
        tail = tail[-(n // 2) :]
    return text[: n - len(tail) - 1] + "~" + tail


def _shrink(df: pd.DataFrame, col: str, over: int, floor: int) -> pd.DataFrame:
    """The label column `col`'s cells shortened by `over` characters, to no fewer than `floor`
    (its header stays: floor >= MIN_LABEL is longer than a label's header)."""
    keep = max(int(df[col].str.len().max()) - over, floor, len(col))
    return df.assign(**{col: df[col].map(lambda v: _cut(v, keep))})


def fit_table(
    df: pd.DataFrame, width: int, drop: Sequence[str] = (), shrink: str | None = None, label_floor: int = 24
) -> list[str]:
    """`df` (display strings) as table lines no wider than `width`. While too wide: the `shrink`
    column (a label) is first shortened to `label_floor` characters, then the columns in `drop` are
    removed one by one in that order, then the label is shortened to MIN_LABEL. Empty frame: no lines."""
    if df.empty:
        return []
    df = df.astype(str)
    lines = _render(df)
    if _widest(lines) > width and shrink in df.columns:
        df = _shrink(df, str(shrink), _widest(lines) - width, label_floor)
        lines = _render(df)
    for c in drop:
        if _widest(lines) <= width:
            return lines
        if c in df.columns and len(df.columns) > 1:
            df = df.drop(columns=c)
            lines = _render(df)
    if _widest(lines) > width and shrink in df.columns:
        lines = _render(_shrink(df, str(shrink), _widest(lines) - width, MIN_LABEL))
    return [line[:width] for line in lines]  # the last resort: a cut row still lines up with its header


def wrap(text: str, width: int, indent: str = "") -> list[str]:
    """A sentence as lines of at most `width` columns, continuation lines indented; a word longer
    than a line (a path) keeps its own line rather than being split."""
    return textwrap.wrap(text, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False) or [""]
