"""Aggregate a run's per-scenario CSVs into one table and `report.md`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .stats import bootstrap_ci, bootstrap_mean_ci

SUMMARY_COLUMNS = [
    ("scenario", "scenario"),
    ("isolation", "isolation"),
    ("repeat", "rep"),
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
    ("ttft_speedup_p50", "speed-up p50"),
    ("reuse_achieved_ratio", "reuse achieved"),
]


IDENTITY = {"scenario": None, "isolation": "fresh", "repeat": 1}


def _load(run_dir: Path, name: str) -> pd.DataFrame:
    """Every `name` CSV under the run, with its identity columns (scenario, isolation, repeat)."""
    frames = []
    for path in sorted(run_dir.rglob(name)):
        df = pd.read_csv(path)
        for i, (col, default) in enumerate(IDENTITY.items()):
            if col not in df.columns:
                df.insert(i, col, path.parent.name if default is None else default)
        df["_dir"] = str(path.parent.relative_to(run_dir))
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_rounds(run_dir: Path) -> pd.DataFrame:
    return _load(run_dir, "rounds.csv")


def load_requests(run_dir: Path) -> pd.DataFrame:
    """requests.csv rows; identity from the rounds.csv beside each (same directory)."""
    rounds = load_rounds(run_dir)
    req = _load(run_dir, "requests.csv").drop(columns=["isolation", "repeat"], errors="ignore")
    if req.empty or rounds.empty:
        return req
    ident = rounds[["_dir", "isolation", "repeat"]].drop_duplicates("_dir")
    return req.merge(ident, on="_dir", how="left")


def _status_table(run_dir: Path) -> list[list[str]]:
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return []
    scen = json.loads(manifest.read_text()).get("scenarios", {})
    rows = []
    for key, s in scen.items():
        t = s.get("timings", {})
        rows.append([key, s.get("status", "?"), s.get("project", ""), _fmt_bool(s.get("cold_verified")),
                     s.get("foreign_hit_tokens_round1", ""), _fmt_bool(s.get("teardown_verified")),
                     _fmt_s(t.get("up_s")), _fmt_s(t.get("teardown_s")), (s.get("reason", "") or "")[:120]])
    return rows


def _fmt_s(v: object) -> str:
    return "" if v is None else f"{float(v):.1f}"


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
        headers = ["scenario", "status", "stack project", "cold verified", "foreign hits r1", "teardown verified",
                   "up s", "down s", "reason"]
        parts += ["## Scenarios", "", tabulate(status, headers=headers, tablefmt="github"), ""]
    if rounds.empty:
        parts.append("No completed rounds.")
    else:
        table = summary_table(rounds)
        parts += ["## Rounds", "", tabulate(table, headers="keys", tablefmt="github", showindex=False,
                                            floatfmt=".1f", missingval=""), ""]
        parts += _targets(rounds)
        parts += _isolation(rounds)
        parts += _confidence(run_dir, rounds)
    return "\n".join(parts) + "\n"


def _isolation(rounds: pd.DataFrame) -> list[str]:
    """Fresh vs shared stack, side by side: what pollution does to the cold round."""
    if rounds["isolation"].nunique() < 2:
        return []
    r1 = rounds[rounds["round"] == 1]
    cols = {"ttft_p50_ms": "r1 TTFT p50 ms", "cached_tokens": "r1 cached tokens",
            "external_hits": "r1 Mooncake hits", "foreign_hit_tokens": "r1 foreign hits",
            "master_key_count_start": "keys before r1"}
    cols = {k: v for k, v in cols.items() if k in r1.columns}
    wide = r1.pivot_table(index="scenario", columns="isolation", values=list(cols), aggfunc="mean")
    wide.columns = [f"{cols[m]} ({iso})" for m, iso in wide.columns]
    return ["## Isolation: fresh stack per scenario vs one shared stack", "",
            tabulate(wide.reset_index(), headers="keys", tablefmt="github", showindex=False, floatfmt=".1f"), ""]


def _confidence(run_dir: Path, rounds: pd.DataFrame) -> list[str]:
    """95 % bootstrap CIs: TTFT reduction (requests resampled), throughput gain (repeats resampled)."""
    req = load_requests(run_dir)
    if req.empty:
        return []
    req = req[req["ok"].astype(str).str.lower() == "true"]
    rows = []
    for (iso, scen), g in req.groupby(["isolation", "scenario"]):
        cold, warm = g[g["round"] == 1]["ttft_ms"], g[g["round"] == g["round"].max()]["ttft_ms"]
        if g["round"].max() < 2:
            continue
        lo, hi = bootstrap_ci(cold.dropna(), warm.dropna())
        rr = rounds[(rounds["isolation"] == iso) & (rounds["scenario"] == scen) & (rounds["round"] > 1)]
        gains = rr["throughput_improvement_pct"].dropna().tolist() if "throughput_improvement_pct" in rr else []
        tlo, thi = bootstrap_mean_ci(gains)
        rows.append([scen, iso, int(g["repeat"].nunique()), f"[{lo:.1f}, {hi:.1f}]",
                     "n/a (1 repeat)" if len(gains) < 2 else f"[{tlo:.1f}, {thi:.1f}]"])
    if not rows:
        return []
    return ["## 95 % confidence intervals (bootstrap)", "",
            tabulate(rows, headers=["scenario", "isolation", "repeats", "TTFT reduction %", "throughput gain %"],
                     tablefmt="github"), ""]


def _targets(rounds: pd.DataFrame) -> list[str]:
    if "ttft_target_met" not in rounds.columns:
        return []
    warm = rounds[rounds["round"] > 1]
    lines = ["## Targets (warm round vs cold round 1)", ""]
    for _, r in warm.iterrows():
        lines.append(f"- {r['scenario']} ({r['isolation']}) round {int(r['round'])}: TTFT {_pct(r.get('ttft_reduction_pct'), -1)} "
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
        rounds.drop(columns="_dir").to_csv(run_dir / "summary.csv", index=False, float_format="%.4f")
    return path, text
