"""Results on disk: results/<run_id>/<scenario>/{requests,rounds}.csv + manifest.json.

Rows are appended and flushed as each request finishes, so an interruption
never loses a completed request. Nothing is ever overwritten: run ids are a UTC
timestamp plus a random suffix and directories are created exclusively.
"""

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


def new_run_id(name: str | None = None) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%Sz")
    rid = f"{stamp}-{secrets.token_hex(3)}"
    return f"{rid}-{check_name(name, 'run_name')}" if name else rid


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


@dataclass
class RunDir:
    root: Path
    run_id: str

    @classmethod
    def create(cls, results_root: Path, run_name: str | None = None) -> RunDir:
        results_root.mkdir(parents=True, exist_ok=True)
        run_id = new_run_id(run_name)
        root = results_root / run_id
        root.mkdir(exist_ok=False)
        return cls(root, run_id)

    def scenario_dir(self, scenario: str) -> Path:
        d = self.root / check_name(scenario, "scenario")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def write_manifest(self, manifest: Manifest) -> None:
        tmp = self.root / "manifest.json.tmp"
        tmp.write_text(manifest.model_dump_json(indent=2))
        tmp.replace(self.root / "manifest.json")


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


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def host_info() -> dict:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def base_manifest(run_id: str, config: dict, command: list[str]) -> Manifest:
    return Manifest(
        run_id=run_id,
        harness_version=__version__,
        git_commit=git_commit(),
        host=host_info(),
        command=command,
        started_at=utc_now(),
        config=config,
    )


def read_manifest(path: Path) -> Manifest:
    """OSError, or pydantic.ValidationError (a ValueError) when it is not a kvbench manifest."""
    return Manifest.model_validate_json(path.read_text())


def tabulate_rounds(
    out_dir: Path,
    cfg: Config,
    planned: int,
    block: int | None,
    counters: dict[int, dict],
    labels: dict | None,
    model: str,
) -> pd.DataFrame:
    """A cell's rounds table from its requests.csv -> rounds.csv and bench_serve.json; returns it.

    Per round: the client's figures (stats.rounds_table over `planned` requests), the expected
    reuse (reuse, `block` tokens per KV block), the server's counter deltas (`counters`: round ->
    probes.deltas, as the runner scraped them), the client - server TTFT gap, the time in the KV
    connector and the store's health; `labels` (scenario, mode, ...) as the first columns."""
    requests = read_requests(out_dir / "requests.csv")
    table = rounds_table(requests, cfg.targets, planned=planned, concurrency=cfg.concurrency)
    server = pd.DataFrame([{"round": r, **c} for r, c in counters.items()])
    for extra in (
        reuse_by_round(requests, block),
        ttft_speedups(requests),
        server,
        lru_by_round(requests, block, server),
    ):
        if not extra.empty and "round" in extra and not table.empty:
            table = table.merge(extra, on="round", how="left")
    if "server_ttft_mean_ms" in table:  # what the client adds to the server's own TTFT, same requests
        table["client_server_ttft_gap_ms"], table["ttft_gap_note"] = ttft_gap(table)
    for rnd, why in zip(table.get("round", []), table.get("counter_resets", [])):
        if isinstance(why, str) and why:
            say(f"[yellow]round {rnd}: {why}: their deltas are unknown for this round[/yellow]")
    if not table.empty:
        table = store_health(time_in_connector(table), cfg.watch.degraded_failed_keys_percent)
    for i, (k, v) in enumerate((labels or {}).items()):  # identity columns first
        table.insert(i, k, v)
    write_rounds(out_dir / "rounds.csv", table)
    write_bench_serve(
        out_dir / "bench_serve.json",
        table,
        {
            "backend": "kvbench",
            "model_id": model,
            "endpoint_type": f"openai-{cfg.api}",
            "max_concurrency": cfg.concurrency,
            "request_rate": cfg.request_rate or "inf",
            "num_prompts": planned,
        },
    )
    return table
