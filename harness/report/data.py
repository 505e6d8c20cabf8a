"""What a report is made of, loaded defensively: a run's manifest, rounds.csv and requests.csv.

Per-round statistics come from rounds.csv (written by the runner); requests.csv is
read only for what needs single requests - TTFT distributions, per-prompt changes,
request-level bootstrap CIs, failure counts - and only four of its columns, so a
run of a million requests loads in seconds. Anything missing (no manifest, a
failed scenario without CSVs, an interrupted one without rounds.csv, no round 2,
empty counter columns) becomes a note in `RunData.notes`, never an exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from harness.analysis.frames import num, truthy
from harness.analysis.stats import rounds_table
from harness.config import ARM_FLAGS, Targets, point_label
from harness.records import REQUEST_COLUMNS, CellEntry, Manifest, parse_cell_key
from harness.results import read_manifest, read_requests, read_rounds

# What the report needs of a request (a million rows stay small: no text columns but two codes).
LOADED_COLUMNS = ("round", "prompt_id", "ok", "ttft_ms", "output_hash", "turn", "prompt_tokens", "cached_tokens")
assert set(LOADED_COLUMNS) <= set(REQUEST_COLUMNS)
TOKEN_SOURCES = ("tokens_local_compute", "tokens_local_cache_hit", "tokens_external_kv_transfer")
READ_ERRORS = (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError)


@dataclass
class RunData:
    run_dir: Path
    manifest: Manifest | None
    dirs: pd.DataFrame  # one row per scenario directory, index = dir id used by `requests["dir"]`
    rounds: pd.DataFrame  # rounds.csv rows + identity (dir, scenario, isolation, repeat, label)
    requests: pd.DataFrame  # dir, round, pid (prompt id code, the same across dirs), ok, ttft_ms, out (output hash)
    targets: Targets
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run_dir.name


IDENTITY = ("scenario", "mode", "isolation", "repeat", "point")
_NO_ENTRY = CellEntry(
    scenario="", mode="", isolation="", repeat=1, status="pending"
)  # no manifest entry: nothing known


def _label(scenario: str, mode: str, isolation: str, point: str = "") -> str:
    tags = [t for t in (mode if mode != "with-cache" else "", isolation if isolation != "fresh" else "", point) if t]
    return f"{scenario} [{', '.join(tags)}]" if tags else scenario


def _read_manifest(run_dir: Path, notes: list[str]) -> Manifest | None:
    path = run_dir / "manifest.json"
    if not path.exists():
        notes.append(
            "manifest.json is missing: no stack project, container ids, cold or teardown "
            "verification for any scenario (evidence columns say 'unknown')."
        )
        return None
    try:
        return read_manifest(path)
    except (OSError, ValueError) as e:
        why = " ".join(str(e).split())[:300]
        notes.append(f"manifest.json could not be read ({type(e).__name__}: {why}); evidence columns say 'unknown'.")
        return None


def _targets(manifest: Manifest | None) -> Targets:
    raw = (manifest.config.get("targets") if manifest else None) or {}
    try:
        return Targets(**raw)
    except (TypeError, ValueError):
        return Targets()


def _read_csv(
    path: Path, notes: list[str], rel: str, read: Callable[..., pd.DataFrame] = pd.read_csv, **kw: object
) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        # A torn last line of a killed run is skipped - and counted: rows never vanish silently.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            df = read(path, on_bad_lines="warn", **kw)
        skipped = sum(str(w.message).count("Skipping line") for w in caught)
        if skipped:
            notes.append(f"{rel}: {path.name}: {skipped} malformed line(s) skipped (a torn write of a killed run?).")
        return df
    except pd.errors.EmptyDataError:
        notes.append(f"{rel}: {path.name} is empty.")
    except READ_ERRORS as e:
        notes.append(f"{rel}: {path.name} could not be read ({type(e).__name__}: {str(e)[:120]}).")
    return None


def _discover(run_dir: Path, manifest: Manifest | None) -> list[str]:
    rels = list(manifest.scenarios) if manifest else []
    for name in ("rounds.csv", "requests.csv"):
        for p in sorted(run_dir.rglob(name)):
            rel = p.parent.relative_to(run_dir).as_posix()
            if rel.startswith("."):  # .attempts/: earlier attempts of resumed cells, not results
                continue
            if rel not in rels and rel != ".":
                rels.append(rel)
    return rels


def _load_requests(path: Path, rel: str, notes: list[str]) -> pd.DataFrame | None:
    df = _read_csv(
        path,
        notes,
        rel,
        usecols=lambda c: c in LOADED_COLUMNS,
        dtype={"prompt_id": "category", "ok": "category", "output_hash": "category"},
    )
    if df is None:
        return None
    missing = [c for c in ("round", "ttft_ms") if c not in df.columns]
    if missing:
        notes.append(f"{rel}: requests.csv has no {', '.join(missing)} column: request rows ignored.")
        return None
    no_id = pd.Categorical([f"{rel}#{i}" for i in range(len(df))])  # without prompt ids nothing pairs up
    out = pd.DataFrame(
        {
            "round": num(df, "round"),
            "pid": df["prompt_id"] if "prompt_id" in df.columns else no_id,
            "ok": truthy(df["ok"]) if "ok" in df.columns else True,
            "ttft_ms": num(df, "ttft_ms"),
            "out": df["output_hash"] if "output_hash" in df.columns else pd.Categorical([None] * len(df)),
            "turn": num(df, "turn").fillna(0).astype(np.int16),
            "prompt_tokens": num(df, "prompt_tokens").astype(np.float32),
            "cached_tokens": num(df, "cached_tokens").astype(np.float32),
        }
    )
    if torn := int(out["round"].isna().sum()):  # a line cut short: no round to put it in
        notes.append(f"{rel}: requests.csv: {torn} row(s) without a round skipped (a torn write of a killed run?).")
    out = out[out["round"].notna()]
    return out.astype({"round": np.int16})


def _recompute_rounds(path: Path, rel: str, targets: Targets, notes: list[str]) -> pd.DataFrame | None:
    """An interrupted scenario has request rows but no rounds.csv: compute its statistics from them."""
    df = _read_csv(path, notes, rel, read_requests)
    if df is None or df.empty or "round" not in df.columns:
        return None
    try:
        table = rounds_table(df[num(df, "round").notna()], targets)
    except (KeyError, ValueError, TypeError) as e:
        notes.append(f"{rel}: rounds.csv is missing and its statistics could not be recomputed ({e}).")
        return None
    notes.append(
        f"{rel}: rounds.csv is missing (interrupted?): statistics recomputed from its "
        f"{len(df)} request rows; no server counters, expected-reuse or speed-up columns."
    )
    return table


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    notes: list[str] = []
    manifest = _read_manifest(run_dir, notes)
    targets = _targets(manifest)
    entries = manifest.scenarios if manifest else {}
    dir_rows, rounds_frames, req_frames = [], [], []
    for i, rel in enumerate(_discover(run_dir, manifest)):
        entry = entries.get(rel)
        ident = parse_cell_key(rel)
        d = run_dir / rel
        rounds = _read_csv(d / "rounds.csv", notes, rel, read_rounds)
        if rounds is None and (d / "requests.csv").exists():
            rounds = _recompute_rounds(d / "requests.csv", rel, targets, notes)
        if rounds is not None and not rounds.empty:
            ident.update({k: rounds[k].iloc[0] for k in ident if k in rounds.columns and pd.notna(rounds[k].iloc[0])})
        if entry:
            ident.update(entry.model_dump(include=set(ident) - {"point"}))
            ident["point"] = point_label(entry.point) if entry.point else ident["point"]
        ident["repeat"] = int(ident["repeat"])
        status = entry.status if entry else ("unknown" if manifest is not None or rounds is None else "no manifest")
        row = {
            "dir": rel,
            **ident,
            "label": _label(ident["scenario"], ident["mode"], ident["isolation"], ident["point"]),
            "status": status,
            "reason": (entry.reason if entry else None) or "",
            "entry": entry or _NO_ENTRY,
            "has_rounds": (d / "rounds.csv").exists(),
            "has_requests": (d / "requests.csv").exists(),
        }
        dir_rows.append(row)
        if rounds is not None and not rounds.empty and "round" not in rounds.columns:
            notes.append(f"{rel}: rounds.csv has no round column: its rows are ignored.")
        if rounds is not None and not rounds.empty and "round" in rounds.columns:
            rounds = rounds.drop(columns=[c for c in IDENTITY if c in rounds.columns])
            rounds["round"] = num(rounds, "round")
            rounds = rounds[rounds["round"].notna()].astype({"round": int})
            ident = pd.DataFrame({k: row[k] for k in (*IDENTITY, "label")}, index=rounds.index)
            # one concat, not an insert per column: rounds.csv has ~150 columns
            rounds_frames.append(pd.concat([pd.Series(i, index=rounds.index, name="dir"), rounds, ident], axis=1))
        req = _load_requests(d / "requests.csv", rel, notes)
        if req is not None:
            req_frames.append(req.assign(dir=np.int16(i)))
        _note_gaps(rel, row, rounds, req, notes)
    dirs = pd.DataFrame(
        dir_rows, columns=["dir", *IDENTITY, "label", "status", "reason", "entry", "has_rounds", "has_requests"]
    )
    # .copy() consolidates the ~150 columns into a few blocks (pandas warns on every later assign otherwise)
    rounds_df = pd.concat(rounds_frames, ignore_index=True).copy() if rounds_frames else pd.DataFrame()
    req_df = (
        _concat_requests(req_frames)
        if req_frames
        else pd.DataFrame(
            {c: [] for c in ("round", "pid", "ok", "ttft_ms", "out", "turn", "prompt_tokens", "cached_tokens", "dir")}
        )
    )
    never = manifest.not_reached if manifest else []
    if never:
        notes.append(
            f"never reached (the run stopped first): {', '.join(never)}; `kvbench bench-all --resume "
            f"{run_dir}` runs them."
        )
    if dirs.empty:
        notes.append("no scenario results in this directory (no manifest entries, no rounds.csv or requests.csv).")
    return RunData(run_dir, manifest, dirs, rounds_df, req_df, targets, notes)


def _str_categories(s: pd.Series) -> pd.Categorical:
    """The column as a categorical of strings (missing stays missing): an all-empty column reads as
    floats, and categoricals of different dtypes do not combine."""
    cat = s.astype("category")
    names = pd.Index([str(c) for c in cat.cat.categories], dtype=object)
    return pd.Categorical.from_codes(cat.cat.codes, categories=names)


def _concat_requests(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One frame; prompt ids and output hashes become integer codes shared by every directory, so
    the same prompt pairs up across rounds, modes and repeats (-1: none)."""
    codes = {}
    for c in ("pid", "out"):
        union = union_categoricals([_str_categories(f[c]) for f in frames], ignore_order=True)
        codes[c] = union.codes.astype(np.int32)
    df = pd.concat([f.drop(columns=["pid", "out"]) for f in frames], ignore_index=True)
    return df.assign(**codes)


def _note_gaps(rel: str, row: dict, rounds: pd.DataFrame | None, req: pd.DataFrame | None, notes: list[str]) -> None:
    status, reason = row["status"], row["reason"]
    if status not in ("ok", "contaminated", "unknown", "no manifest"):
        notes.append(f"{rel}: status {status}" + (f" ({reason})" if reason else "") + ": results are partial.")
    if rounds is None and req is None:
        notes.append(f"{rel}: no requests.csv and no rounds.csv: nothing measured.")
        return
    if req is None:
        notes.append(f"{rel}: requests.csv is missing: no TTFT distribution or per-prompt changes.")
    rnds = set(rounds["round"].dropna().astype(int)) if rounds is not None and "round" in rounds.columns else set()
    if req is not None:
        rnds |= set(req["round"].unique().tolist())
    if 1 not in rnds:
        notes.append(f"{rel}: round 1 is missing: no round-over-round changes.")
    elif not any(r > 1 for r in rnds):
        notes.append(f"{rel}: round 2 is missing: no round-over-round or per-prompt changes.")


# ---------------------------------------------------------------- derived tables


def ok_requests(data: RunData) -> pd.DataFrame:
    """Successful requests with a TTFT, with their scenario label."""
    req = data.requests
    req = req[req["ok"].astype(bool) & np.isfinite(req["ttft_ms"].to_numpy(dtype=float))]
    return (
        req.assign(label=data.dirs["label"].to_numpy()[req["dir"].to_numpy(dtype=int)])
        if len(req)
        else req.assign(label=pd.Series(dtype=str))
    )


def per_prompt_ratios(req: pd.DataFrame) -> pd.DataFrame:
    """Per warm request (`req`: ok_requests): its TTFT over the same prompt's round-1 TTFT in the
    same scenario directory (`ratio` < 1: faster than cold)."""
    first = req.drop_duplicates(["dir", "round", "pid"])
    cold = first[first["round"] == 1][["dir", "pid", "ttft_ms"]]
    warm = first[first["round"] > 1][["dir", "pid", "round", "label", "ttft_ms"]]
    pairs = warm.merge(cold, on=["dir", "pid"], suffixes=("_warm", "_cold"))
    pairs["ratio"] = pairs["ttft_ms_warm"] / pairs["ttft_ms_cold"]
    return pairs[np.isfinite(pairs["ratio"]) & (pairs["ratio"] > 0)]


def _fmt_tokens(v: float) -> str:
    return "?" if math.isnan(v) else f"{int(v):,}"


def evidence(data: RunData) -> pd.DataFrame:
    """One row per scenario directory: where it ran and what proves it was isolated and clean."""
    rounds, req = data.rounds, data.requests
    fails = req[~req["ok"].astype(bool)].groupby("dir").size() if len(req) else pd.Series(dtype=int)
    rows = []
    for i, d in data.dirs.iterrows():
        e: CellEntry = d["entry"]
        r = rounds[rounds["dir"] == i] if not rounds.empty else rounds
        foreign = [
            x
            for x in [e.foreign_hit_tokens_round1, *num(r, "foreign_hit_tokens").dropna()]
            if x is not None and not (isinstance(x, float) and math.isnan(x))
        ]
        contaminated = d["status"] == "contaminated" or any(float(x) > 0 for x in foreign)
        hits = "; ".join(
            f"r{int(x['round'])} {_fmt_tokens(x['achieved'])}/{_fmt_tokens(x['expected'])}"
            for x in r.assign(
                achieved=num(r, "achieved_reuse_tokens"), expected=num(r, "expected_reuse_tokens")
            ).to_dict("records")
            if not (math.isnan(x["achieved"]) and math.isnan(x["expected"]))
        )
        n_fail = (
            int(fails.get(i, 0))
            if d["has_requests"]
            else (int(num(r, "failures").sum()) if "failures" in r.columns and len(r) else None)
        )
        ids = e.engine_container_ids or []
        rows.append(
            {
                "scenario": d["dir"],
                "mode": d["mode"],
                "isolation": d["isolation"],
                "repeat": d["repeat"],
                "status": d["status"],
                "stack project": e.project or "unknown",
                "engine container": ", ".join(str(x)[:12] for x in ids) or "unknown",
                "engine warm-up": _warmup(e),
                "cold verified": _yes_no(e.cold_verified),
                "reset proof": _reset_proof(e),
                "engine restarts": "; ".join(_restart(x) for x in e.engine_restarts) or "n/a",
                "teardown verified": _yes_no(e.teardown_verified),
                "contamination": ("CONTAMINATED" if contaminated else ("no" if foreign else "unknown"))
                + (f" ({int(max(float(x) for x in foreign)):,} foreign tokens)" if contaminated and foreign else ""),
                "reuse achieved/expected tokens": hits or "n/a",
                "failures": "n/a" if n_fail is None else str(n_fail),
                "reason": (str(d["reason"]) or "")[:160],
            }
        )
    return pd.DataFrame(rows)


def _warmup(e: CellEntry) -> str:
    """The engine warm-up before the cold proof, in a few words: requests, their first and later TTFTs."""
    w = e.warmup
    if not w:
        return "none"
    engines = w.get("engines", [w])
    ttfts = [t for x in engines for t in x.get("ttft_ms", [])]
    n = sum(x.get("requests", 0) for x in engines)
    if not ttfts:
        return f"{n} req"
    return f"{n} req, TTFT {ttfts[0]:,.0f} ms first, max {max(ttfts[1:] or [0]):,.0f} after"


def _restart(x: dict) -> str:
    """topology engine-restart: one restart, in a few words (what the store held across it)."""

    def keys(v: object) -> str:
        return "?" if v is None else f"{float(v):,.0f}"  # type: ignore[arg-type]

    cold = "engine cold" if x.get("engine_cold") else "engine NOT cold"
    return (
        f"before r{x.get('round')}: {x.get('seconds', math.nan):.1f} s, store keys "
        f"{keys(x.get('master_keys_before'))} -> {keys(x.get('master_keys_after'))}, {cold}"
    )


def _reset_proof(e: CellEntry) -> str:
    """isolation reset: what made the cell cold on a reused stack, in a few words."""
    ev = e.reset
    if ev is None:
        return "first on its stack" if e.isolation == "reset" else "n/a"
    if not ev.verified:
        return f"NOT proven ({ev.warm}); {ev.fallback or 'measured anyway'}"
    canary = (
        "no canary (nothing measured before it)"
        if ev.canary_prompt is None
        else f"canary {ev.canary_cached_tokens} cached / {ev.canary_external_hits or 0:,.0f} external hits"
    )
    return f"proven: store {ev.keys_at_start or 0:,.0f} keys, {canary}, {ev.attempts} resets, {ev.seconds:.1f} s"


def _yes_no(v: object) -> str:
    return "unknown" if v is None else ("yes" if v else "NO")


def token_sources(data: RunData) -> pd.DataFrame:
    """Prompt tokens by source per scenario label and round (mean over repeats); empty when not exposed."""
    r = data.rounds
    if r.empty or not any(c in r.columns for c in TOKEN_SOURCES):
        return pd.DataFrame()
    vals = pd.DataFrame({c: num(r, c) for c in TOKEN_SOURCES}).assign(label=r["label"], round=r["round"])
    out = vals.groupby(["label", "round"], sort=False)[list(TOKEN_SOURCES)].mean()
    return out[out.notna().any(axis=1)].reset_index()


def cache_cliff(data: RunData) -> pd.DataFrame:
    """A sweep's with-cache cells, their last (warm) round, per scenario and point (repeats averaged):
    the store size, hits as a share of what an infinite cache would give the same requests (expected
    reuse), the same for a simulated LRU store of that size, TTFT, throughput and the master's
    eviction and allocation-failure counters. Empty without sweep points."""
    r = data.rounds
    if r.empty or "point" not in r.columns or not (r["point"] != "").any():
        return pd.DataFrame()
    warm = r[(r["mode"] == "with-cache") & (r["round"] == r.groupby("dir")["round"].transform("max"))]
    expected = num(warm, "expected_reuse_tokens").replace(0, np.nan)
    per = pd.DataFrame(
        {
            "scenario": warm["scenario"],
            "point": warm["point"],
            "round": warm["round"],
            "store_mib": num(warm, "master_capacity_bytes_start") / 2**20,
            "hit_pct": 100 * num(warm, "achieved_reuse_tokens") / expected,
            "lru_pct": 100 * num(warm, "lru_reuse_tokens") / expected,
            "ttft_mean_ms": num(warm, "ttft_mean_ms"),
            "req_per_s": num(warm, "req_per_s"),
            "evicted_keys": num(warm, "master_evicted_keys"),
            "alloc_failures": num(warm, "master_alloc_failures"),
            "kv_bytes_per_block": num(warm, "kv_bytes_per_block"),
            "store_blocks": num(warm, "store_capacity_blocks"),
        }
    )
    out = per.groupby(["scenario", "point"], sort=False).mean(numeric_only=True).reset_index()
    out["unexplained_pp"] = out["lru_pct"] - out["hit_pct"]
    return out.sort_values(["scenario", "store_mib"], kind="stable", ignore_index=True)


def working_sets(data: RunData) -> dict[str, tuple[int, int]]:
    """Working-set scenarios of the run's configuration: name -> (documents, document tokens)."""
    scenarios = (data.manifest.config.get("scenarios") if data.manifest else None) or {}
    out = {}
    for name, sc in scenarios.items():
        if isinstance(sc, dict) and sc.get("kind") == "working_set" and sc.get("documents"):
            out[str(name)] = (int(sc["documents"]), int(sc["document_tokens"]))
    return out


def kv_block(data: RunData) -> int:
    """Tokens per KV block as the engines reported it (the first cell that knows), else vLLM's CPU default."""
    for e in data.dirs["entry"] if not data.dirs.empty else []:
        if getattr(e, "block_size", None):
            return int(e.block_size)
    return 128


def _stack_setting(data: RunData, d: int, name: str, default: object) -> object:
    """A stack setting of the cell in directory `d`: its sweep point's value, else the run's config."""
    entry = data.dirs["entry"].iloc[d]
    point = getattr(entry, "point", None) or {}
    if f"stack.{name}" in point:
        return point[f"stack.{name}"]
    stack = ((data.manifest.config if data.manifest else None) or {}).get("stack") or {}
    return stack.get(name, default)


def store_sizing(data: RunData) -> pd.DataFrame:
    """Per cell with the KV connector (with-cache, local+store) and round: where the store lived (the
    engines' own segments, or a store node), its capacity as the master counts it, keys at round start
    and end, bytes held at the end, the master's eviction watermark, and what the round evicted or
    could not place. Empty when the master's counters are missing (cells without the connector,
    `kvbench run` without the master's metrics)."""
    r = data.rounds
    if r.empty or "master_capacity_bytes_start" not in r.columns:
        return pd.DataFrame()
    store_arm = r["mode"].map(lambda m: ARM_FLAGS.get(str(m), (False, True))[1]).astype(bool)  # with the connector
    r = r[store_arm & num(r, "master_capacity_bytes_start").notna()]
    if r.empty:
        return pd.DataFrame()
    d = r["dir"].astype(int).tolist()
    mark = [_stack_setting(data, i, "eviction_high_watermark_ratio", 0.9) for i in d]
    cap = num(r, "master_capacity_bytes_start")
    return pd.DataFrame(
        {
            "label": r["label"],
            "repeat": r["repeat"],
            "round": r["round"],
            "store": [str(_stack_setting(data, i, "store", "embedded")) for i in d],
            "capacity_bytes": cap,
            "keys_start": num(r, "master_key_count_start"),
            "keys_end": num(r, "master_key_count_end"),
            "allocated_bytes_end": num(r, "master_allocated_bytes_end"),
            "used_pct_end": 100 * num(r, "master_allocated_bytes_end") / cap.replace(0, np.nan),
            "watermark_pct": [100 * float(m) if isinstance(m, int | float) else math.nan for m in mark],
            "evicted_keys": num(r, "master_evicted_keys"),
            "alloc_failures": num(r, "master_alloc_failures"),
            "put_failed_items": num(r, "master_put_failed_items"),
        }
    ).reset_index(drop=True)
