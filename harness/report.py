"""Aggregate a run's per-scenario CSVs into one table and `report.md`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

SUMMARY_COLUMNS = [
    ("scenario", "scenario"),
    ("round", "round"),
    ("phase", "phase"),
    ("successes", "ok"),
    ("failures", "failed"),
    ("ttft_p50_ms", "TTFT p50 ms"),
    ("ttft_p90_ms", "TTFT p90 ms"),
    ("ttft_mean_ms", "TTFT mean ms"),
    ("tpot_p50_ms", "TPOT p50 ms"),
    ("e2e_mean_ms", "E2E mean ms"),
    ("req_per_s", "req/s"),
    ("total_tok_per_s", "tok/s"),
    ("cached_token_ratio", "cached ratio"),
    ("ttft_reduction_pct", "TTFT -%"),
    ("throughput_improvement_pct", "thrpt +%"),
]


def load_rounds(run_dir: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(run_dir.glob("*/rounds.csv")):
        df = pd.read_csv(path)
        df.insert(0, "scenario", path.parent.name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _status_table(run_dir: Path) -> list[list[str]]:
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return []
    scen = json.loads(manifest.read_text()).get("scenarios", {})
    rows = []
    for name, s in scen.items():
        rows.append([name, s.get("status", "?"), s.get("project", ""), _fmt_bool(s.get("cold_verified")),
                     _fmt_bool(s.get("teardown_verified")), s.get("reason", "") or ""])
    return rows


def _fmt_bool(v: object) -> str:
    return "" if v is None else ("yes" if v else "NO")


def summary_table(rounds: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c, _ in SUMMARY_COLUMNS if c in rounds.columns]
    out = rounds[cols].rename(columns=dict(SUMMARY_COLUMNS))
    return out


def render(run_dir: Path) -> str:
    """The report as Markdown (also what `kvbench report` prints)."""
    rounds = load_rounds(run_dir)
    parts = [f"# kvbench report: {run_dir.name}", ""]
    status = _status_table(run_dir)
    if status:
        parts += ["## Scenarios", "", tabulate(status, headers=["scenario", "status", "stack project", "cold verified",
                                                              "teardown verified", "reason"], tablefmt="github"), ""]
    if rounds.empty:
        parts.append("No completed rounds.")
    else:
        table = summary_table(rounds)
        parts += ["## Rounds", "", tabulate(table, headers="keys", tablefmt="github", showindex=False,
                                            floatfmt=".1f", missingval=""), ""]
        parts += _targets(rounds)
    return "\n".join(parts) + "\n"


def _targets(rounds: pd.DataFrame) -> list[str]:
    if "ttft_target_met" not in rounds.columns:
        return []
    warm = rounds[rounds["round"] > 1]
    lines = ["## Targets (warm round vs cold round 1)", ""]
    for _, r in warm.iterrows():
        lines.append(f"- {r['scenario']} round {int(r['round'])}: TTFT {_pct(r.get('ttft_reduction_pct'), -1)} "
                     f"({_met(r.get('ttft_target_met'))}), throughput "
                     f"{_pct(r.get('throughput_improvement_pct'))} ({_met(r.get('throughput_target_met'))})")
    return lines + [""]


def _pct(v: object, factor: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{factor * float(v):+.1f} %"


def _met(v: object) -> str:
    return "target met" if str(v).lower() == "true" else "target missed"


def write_report(run_dir: Path) -> tuple[Path, str]:
    text = render(run_dir)
    path = run_dir / "report.md"
    path.write_text(text)
    rounds = load_rounds(run_dir)
    if not rounds.empty:
        rounds.to_csv(run_dir / "summary.csv", index=False, float_format="%.4f")
    return path, text
