"""Several runs side by side (with-cache vs baseline, fresh vs shared, two configs): tables of display strings
and figures; `report.write_comparison` writes them out.

Rows are matched by scenario and round (and by isolation too when a run holds both
modes); repeats are averaged. Deltas are against the first run ("A"). Round-over-round figures are
changes, 100 * (round 2 / round 1 - 1): negative = faster TTFT, positive = more throughput; their
differences between runs are in percentage points.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.analysis.frames import num
from harness.records.metrics import COMPARISON, fmt, pick
from harness.report import plots as P
from harness.report.analysis import round_over_round
from harness.report.data import RunData, evidence, ok_requests
from harness.report.fit import fit_table

METRICS = pick(COMPARISON)
PLOT_NAMES = ("compare_ttft", "compare_ttft_reduction", "compare_throughput_gain", "compare_ttft_cdf")


@dataclass
class Comparison:
    datas: list[RunData]
    labels: list[str]
    key: list[str]  # columns that match rows across runs
    runs: pd.DataFrame
    config_diff: pd.DataFrame
    metrics: pd.DataFrame
    reductions: pd.DataFrame
    evidence: pd.DataFrame
    raw_means: pd.DataFrame  # numeric: key + run + metric columns
    raw_red: pd.DataFrame  # numeric round-over-round changes (analysis.round_over_round) with a run column
    notes: list[str] = field(default_factory=list)


def _flatten(d: object, prefix: str = "") -> dict[str, str]:
    if isinstance(d, dict):
        out: dict[str, str] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(d, default=str)}


def _config_diff(datas: list[RunData], labels: list[str]) -> pd.DataFrame:
    flat = [
        _flatten(
            {
                "config": d.manifest.config if d.manifest else None,
                "images": d.manifest.images if d.manifest else None,
                **{c: sorted(d.dirs[c].unique().tolist()) if len(d.dirs) else [] for c in ("mode", "isolation")},
            }
        )
        for d in datas
    ]
    keys = sorted(set().union(*flat))
    rows = [
        {"key": k, **{lab: f.get(k, "(absent)") for lab, f in zip(labels, flat)}}
        for k in keys
        if len({f.get(k, "(absent)") for f in flat}) > 1
    ]
    return pd.DataFrame(rows, columns=["key", *labels])


def _runs(datas: list[RunData], labels: list[str]) -> pd.DataFrame:
    rows = []
    for lab, d in zip(labels, datas):
        st = d.dirs["status"].value_counts().to_dict() if len(d.dirs) else {}
        rows.append(
            {
                "run": lab,
                "run id": d.name,
                "path": str(d.run_dir),
                "mode": ", ".join(sorted(d.dirs["mode"].unique())) if len(d.dirs) else "n/a",
                "isolation": ", ".join(sorted(d.dirs["isolation"].unique())) if len(d.dirs) else "n/a",
                "scenarios": ", ".join(dict.fromkeys(d.dirs["scenario"])) if len(d.dirs) else "none",
                "status": ", ".join(f"{k} {v}" for k, v in st.items()) or "n/a",
            }
        )
    return pd.DataFrame(rows)


def build(datas: list[RunData]) -> Comparison:
    labels = [string.ascii_uppercase[i] if i < 26 else f"R{i + 1}" for i in range(len(datas))]
    dims = [c for c in ("mode", "isolation") if any(not d.rounds.empty and d.rounds[c].nunique() > 1 for d in datas)]
    key = ["scenario", *dims, "round"]  # a dimension that varies inside a run must match, else runs pair up
    means = []
    for lab, d in zip(labels, datas):
        if d.rounds.empty:
            continue
        vals = pd.DataFrame({m.column: num(d.rounds, m.column) for m in METRICS})
        vals[key] = d.rounds[key]
        means.append(vals.groupby(key, sort=False).mean().reset_index().assign(run=lab))
    raw = pd.concat(means, ignore_index=True) if means else pd.DataFrame(columns=[*key, "run"])
    reds = []
    for lab, d in zip(labels, datas):
        r = round_over_round(d, ok_requests(d))
        if not r.empty and "ttft_change" in r.columns:
            reds.append(r.assign(run=lab))
    raw_red = pd.concat(reds, ignore_index=True) if reds else pd.DataFrame()
    ev = [evidence(d).assign(run=lab) for lab, d in zip(labels, datas)]
    ev_df = pd.concat(ev, ignore_index=True) if ev else pd.DataFrame()
    if not ev_df.empty:
        ev_df = ev_df[["run", *[c for c in ev_df.columns if c != "run"]]]
    notes = [f"{lab} ({d.name}): {n}" for lab, d in zip(labels, datas) for n in d.notes]
    present = [set(d.dirs["scenario"]) if len(d.dirs) else set() for d in datas]
    for scen in dict.fromkeys(x for p in present for x in sorted(p)):
        missing = [lab for lab, p in zip(labels, present) if scen not in p]
        if missing:
            notes.append(f"scenario {scen} is not in run(s) {', '.join(missing)}: no side-by-side values there.")
    return Comparison(
        datas,
        labels,
        key,
        _runs(datas, labels),
        _config_diff(datas, labels),
        _metrics(raw, key, labels),
        _reductions(raw_red, key, labels),
        ev_df,
        raw,
        raw_red,
        notes,
    )


def _metrics(raw: pd.DataFrame, key: list[str], labels: list[str]) -> pd.DataFrame:
    if raw.empty:
        return pd.DataFrame()
    rows = []
    base = labels[0]
    for k, g in raw.groupby(key, sort=False):
        by_run = g.set_index("run")
        for m in METRICS:
            c = m.column
            row = dict(zip(key, (str(x) for x in k)))
            row["metric"] = m.header
            ref = by_run[c].get(base, math.nan) if c in by_run else math.nan
            for lab in labels:
                v = float(by_run[c].get(lab, math.nan)) if c in by_run else math.nan
                row[lab] = m.show(v)
                if lab != base:
                    row[f"{lab} vs {base}"] = (
                        fmt((v / ref - 1) * 100, 1, True) + " %"
                        if ref and math.isfinite(ref) and math.isfinite(v)
                        else "n/a"
                    )
            rows.append(row)
    return pd.DataFrame(rows)


def _reductions(raw_red: pd.DataFrame, key: list[str], labels: list[str]) -> pd.DataFrame:
    """Round 2 vs round 1 per run, side by side: TTFT mean change and throughput change (with the
    seed's verdicts), and each run's difference from run A in percentage points."""
    if raw_red.empty or "ttft_change" not in raw_red.columns:
        return pd.DataFrame()
    r2 = raw_red[raw_red["round"] == 2]
    k = [c for c in key if c != "round"]
    base = labels[0]
    rows = []
    for kv, g in r2.groupby(k, sort=False):
        by = g.set_index("run")
        row = dict(zip(k, (str(x) for x in (kv if isinstance(kv, tuple) else (kv,)))))
        for lab in labels:
            if lab not in by.index:
                row[f"{lab} TTFT chg %"] = row[f"{lab} thrpt chg %"] = "n/a"
                continue
            x = by.loc[lab]
            row[f"{lab} TTFT chg %"] = f"{fmt(x['ttft_change'], 1, True)} ({x['ttft_verdict']})"
            row[f"{lab} thrpt chg %"] = f"{fmt(x['tput_change'], 1, True)} ({x['tput_verdict']})"
            if lab != base and base in by.index:
                row[f"{lab} vs {base} TTFT pp"] = fmt(x["ttft_change"] - by.loc[base, "ttft_change"], 1, True)
                row[f"{lab} vs {base} thrpt pp"] = fmt(x["tput_change"] - by.loc[base, "tput_change"], 1, True)
        rows.append(row)
    return pd.DataFrame(rows).fillna("n/a")


def _group_name(row: pd.Series | dict, key: list[str]) -> str:
    tags = [str(row[c]) for c in ("mode", "isolation") if c in key and row[c] not in ("with-cache", "fresh")]
    name = f"{row['scenario']} [{', '.join(tags)}]" if tags else str(row["scenario"])
    return name + (f"\nr{int(row['round'])}" if "round" in key else "")


def plots(cmp: Comparison) -> list[P.Plot]:
    try:
        return _plots(cmp)
    except Exception as e:  # noqa: BLE001 - a figure fault must not cost the comparison its tables
        return [P.Plot("compare_ttft", "Figures", "", None, f"could not be drawn ({type(e).__name__}: {e})")]


def _plots(cmp: Comparison) -> list[P.Plot]:
    labels, key = cmp.labels, cmp.key
    out = []
    raw = cmp.raw_means
    if raw.empty:
        wide = pd.DataFrame()
    else:
        wide = raw.assign(group=raw.apply(_group_name, axis=1, key=key)).pivot_table(
            index="group", columns="run", values="ttft_mean_ms", sort=False, dropna=False
        )
    out.append(
        P.compare_bars(wide, labels, "TTFT", "Mean TTFT per scenario and round", "TTFT mean (ms)", "compare_ttft")
    )
    red = cmp.raw_red
    red2 = red[red["round"] == 2] if not red.empty and "round" in red.columns else pd.DataFrame()
    for c, title, ylabel, name in (
        (
            "ttft_change",
            "TTFT mean change, round 2 vs round 1",
            "TTFT mean change % (negative = faster)",
            "compare_ttft_reduction",
        ),
        (
            "tput_change",
            "Throughput change, round 2 vs round 1",
            "throughput change % (positive = more)",
            "compare_throughput_gain",
        ),
    ):
        w = (
            red2.assign(group=red2.apply(_group_name, axis=1, key=[k for k in key if k != "round"])).pivot_table(
                index="group", columns="run", values=c, sort=False, dropna=False
            )
            if not red2.empty
            else pd.DataFrame()
        )
        out.append(P.compare_bars(w, labels, c, title, ylabel, name))
    reqs = []
    for lab, d in zip(labels, cmp.datas):
        rq = ok_requests(d)
        if len(rq):
            lbl = np.array([_group_name(x, key[:-1]) for x in d.dirs.to_dict("records")], dtype=object)
            reqs.append(
                pd.DataFrame(
                    {
                        "run": lab,
                        "label": lbl[rq["dir"].to_numpy(dtype=int)],
                        "round": rq["round"].to_numpy(),
                        "ttft_ms": rq["ttft_ms"].to_numpy(),
                    }
                )
            )
    out.append(
        P.compare_cdf(
            pd.concat(reqs, ignore_index=True) if reqs else pd.DataFrame(columns=["run", "label", "round", "ttft_ms"]),
            labels,
        )
    )
    return out


def console(cmp: Comparison, width: int = 80) -> str:
    """Compact side-by-side table for the terminal, fitted to `width`: round-2 TTFT mean and the
    TTFT mean change vs round 1 per run."""
    raw, labels, key = cmp.raw_means, cmp.labels, cmp.key
    if raw.empty:
        return "no scenario results in any run"
    k = [c for c in key if c != "round"]
    rows = []
    red = cmp.raw_red
    for kv, g in raw[raw["round"] == 2].groupby(k, sort=False):
        kv = kv if isinstance(kv, tuple) else (kv,)
        row = dict(zip(k, kv))
        by = g.set_index("run")["ttft_mean_ms"]
        for lab in labels:
            row[f"{lab} r2 TTFT ms"] = fmt(float(by.get(lab, np.nan)))
            m = red[(red["run"] == lab) & (red["round"] == 2)] if not red.empty else red
            for c, v in zip(k, kv):
                m = m[m[c] == v] if len(m) else m
            row[f"{lab} TTFT chg %"] = fmt(float(m["ttft_change"].iloc[0]), 1, True) if len(m) else "n/a"
        rows.append(row)
    runs = "  ".join(f"{lab} = {d.name}" for lab, d in zip(labels, cmp.datas))
    lines = fit_table(pd.DataFrame(rows), width, drop=[c for c in k if c != "scenario"], shrink="scenario")
    return f"{runs}\n" + ("\n".join(lines) if rows else "no scenario has a round 2 in any run")
