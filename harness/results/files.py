"""A cell's files: requests.csv (appended and flushed as each request finishes, so an interruption
never loses a completed request), rounds.csv and bench_serve.json."""

from __future__ import annotations

import csv
import json
import os
import platform
import secrets
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import __version__
from harness.analysis.connector import store_health, time_in_connector
from harness.analysis.reuse import lru_by_round, reuse_by_round, ttft_speedups
from harness.analysis.stats import rounds_table, ttft_gap
from harness.config import Config, check_name
from harness.config.console import say
from harness.records import REQUEST_COLUMNS, REQUEST_TEXT_DTYPES, Manifest, RequestRow, RoundSummary
from harness.records.metrics import bench_serve_record


class RequestLog:
    """Append-only requests.csv; one line per finished request, flushed to the kernel at once (a
    killed harness loses no row). The fsync waits for close(), outside the timed round."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists()
        self._fh = path.open("a", newline="")
        self._w = csv.DictWriter(self._fh, fieldnames=REQUEST_COLUMNS)
        if new:
            self._w.writeheader()
            self._fh.flush()

    def append(self, row: RequestRow) -> None:
        self._w.writerow(row.model_dump())
        self._fh.flush()

    def extend(self, part: Path) -> None:
        """Append the rows of another requests CSV (a client worker's part), as they are."""
        with part.open(newline="") as fh:
            for row in csv.DictReader(fh):
                self._w.writerow(row)
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()


def read_requests(path: Path, **kw: Any) -> pd.DataFrame:
    """requests.csv as a frame; text columns stay text (RequestRow's types)."""
    return pd.read_csv(path, dtype=REQUEST_TEXT_DTYPES, **kw)


def rounds_records(table: pd.DataFrame) -> pd.DataFrame:
    """The table's rows validated by RoundSummary (an undeclared column raises), in its column order."""
    if table.empty:
        return table
    cols = set(table.columns)
    rows = [RoundSummary.model_validate(r).model_dump(include=cols) for r in table.to_dict("records")]
    return pd.DataFrame(rows, columns=[c for c in RoundSummary.columns() if c in cols])


def write_rounds(path: Path, table: pd.DataFrame) -> None:
    """rounds.csv, each row a RoundSummary: a float column whose values are all whole numbers
    (counters, token counts: floats only because some rows miss them) is written as integers, empty
    where missing; other floats with 4 decimals."""
    write_table(path, rounds_records(table))


def read_rounds(path: Path, **kw: Any) -> pd.DataFrame:
    """rounds.csv read back through RoundSummary (pydantic.ValidationError for a column it does not declare)."""
    return rounds_records(pd.read_csv(path, **kw))


def write_table(path: Path, table: pd.DataFrame) -> None:
    """A CSV of figures (rounds.csv, the report's summary.csv): whole-number float columns as integers."""
    whole = {c: table[c].astype("Int64") for c in table.columns if _whole_numbers(table[c])}
    table.assign(**whole).to_csv(path, index=False, float_format="%.4f")


def _whole_numbers(col: pd.Series) -> bool:
    if not pd.api.types.is_float_dtype(col):
        return False
    v = col.dropna().to_numpy(dtype=float)
    return bool(np.isfinite(v).all() and (v == np.round(v)).all() and (np.abs(v) < 2**53).all())


def write_bench_serve(path: Path, table: pd.DataFrame, settings: dict) -> None:
    """Per round, a record in `vllm bench serve`'s result JSON shape (metrics.bench_serve_record)."""
    records = [bench_serve_record(r, {**settings, "round": int(r["round"])}) for r in table.to_dict("records")]
    path.write_text(json.dumps(records, indent=2, default=str))


def write_cell_rounds(out_dir: Path, table: pd.DataFrame, settings: dict) -> None:
    """A cell's rounds table -> rounds.csv, and bench_serve.json (`settings`: the run's shape, as
    `vllm bench serve` records it)."""
    write_rounds(out_dir / "rounds.csv", table)
    write_bench_serve(out_dir / "bench_serve.json", table, settings)
