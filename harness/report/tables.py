"""The report's tables as display strings (pandas frames of text), built from a loaded run: the
headline (with cache vs baseline), evidence, round-over-round figures, statistics, server-side
times, timings, isolation and reuse fidelity; and the rows of summary.csv."""

from __future__ import annotations

import math

import pandas as pd

from ..metrics import CONNECTOR_TABLE, HEADLINE, ROUND_TABLE, SERVER_TABLE, fmt, pick
from ..stats import round1_caveat
from .data import RunData, cache_cliff, col
from .verdict import fidelity, headline_round, reuse_buys, targets_vs_baseline

TIMINGS = [
    ("up_s", "up s"),
    ("service_start_s", "vLLM start s"),
    ("workload_s", "workload s"),
    ("rounds_s", "rounds s"),
    ("teardown_s", "teardown s"),
    ("harness_overhead_s", "overhead s"),
    ("total_s", "total s"),
]


STATUS_RANK = ["failed", "interrupted", "contaminated", "running", "pending", "unknown", "no manifest", "ok"]


def _ci(lo: float, hi: float) -> str:
    return "n/a" if math.isnan(lo) or math.isnan(hi) else f"[{lo:+.1f}, {hi:+.1f}]"


def _change_ci(v: float, lo: float, hi: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:+.1f} % " + ("(no CI: 1 repeat)" if math.isnan(lo) else _ci(lo, hi))


def reuse_table(data: RunData) -> pd.DataFrame:
    """The headline: per scenario and round, with cache vs without (baseline), same prompts."""
    t = targets_vs_baseline(
        reuse_buys(data), data.targets.ttft_reduction_percent, data.targets.throughput_increase_percent
    )
    rows = []
    for x in t.to_dict("records"):
        row = {
            "scenario": x["label"],
            "round": str(x["round"]),
            "with cache": x["phase with cache"],
            "repeats": str(x["repeats"]),
        }
        for m in pick(HEADLINE):
            c = m.column
            row[f"{m.header} with / without"] = f"{m.show(x[f'{c}_cache'])} / {m.show(x[f'{c}_base'])}"
            row[f"{m.header} change"] = _change_ci(x[f"{c}_change"], x[f"{c}_lo"], x[f"{c}_hi"])
        row["per-prompt TTFT change"] = (
            _change_ci(x["paired_change"], x["paired_lo"], x["paired_hi"]) + f" ({x['pairs']} prompts)"
        )
        row[f"TTFT target -{data.targets.ttft_reduction_percent:g} % vs baseline"] = x["ttft_target"]
        row[f"throughput target +{data.targets.throughput_increase_percent:g} % vs baseline"] = x["tput_target"]
        rows.append(row)
    return pd.DataFrame(rows)


def fidelity_table(data: RunData) -> pd.DataFrame:
    f = fidelity(data)
    if f.empty:
        return f
    out = f[["scenario"]].copy()
    out["could it fail?"] = [
        f"yes ({o} outputs for {p} prompts)"
        if o > 1
        else f"NO: {p} different prompts all gave one output (degenerate model): identical outputs prove nothing"
        for p, o in zip(f["distinct prompts"], f["distinct outputs"])
    ]
    for name in ("warm vs cold", "with cache vs baseline"):
        out[f"identical output, {name}"] = [
            "n/a" if not n else f"{same}/{n} ({pct:.0f} %)"
            for same, n, pct in zip(f[f"{name} identical"], f[f"{name} pairs"], f[f"{name} %"])
        ]
    return out


def round_phases(data: RunData) -> dict[tuple[str, int], str]:
    """(scenario label, round) -> the measured warmth; repeats that differ are joined with '/'."""
    r = data.rounds
    if r.empty or "phase" not in r.columns:
        return {}
    return {
        (lab, int(rnd)): "/".join(sorted(set(g.astype(str))))
        for (lab, rnd), g in r.groupby(["label", "round"])["phase"]
    }


def warm_round1_notes(data: RunData) -> list[str]:
    """One sentence per with-cache scenario whose round 1 was not cold."""
    r = data.rounds
    if r.empty or "reused_token_pct" not in r.columns:
        return []
    r1 = r[(r["round"] == 1) & (r["mode"] == "with-cache")]
    pct = col(r1, "reused_token_pct").groupby(r1["label"], sort=False).mean()
    return [f"{label}: {c}." for label, v in pct.items() if (c := round1_caveat(v))]


def _round_identity(r: pd.DataFrame) -> pd.DataFrame:
    """The leading columns of a per-round table: which cell and round a row is."""
    return pd.DataFrame(
        {
            "scenario": r["scenario"],
            "point": r["point"] if "point" in r else "",
            "mode": r["mode"],
            "isolation": r["isolation"],
            "rep": r["repeat"],
            "round": r["round"],
        }
    )


def stats_table(data: RunData) -> pd.DataFrame:
    """Per scenario, repeat and round: the seed's statistics from rounds.csv."""
    r = data.rounds
    if r.empty:
        return pd.DataFrame()
    out = _round_identity(r).assign(phase=r["phase"] if "phase" in r else "unknown")
    for m in pick(ROUND_TABLE):
        out[m.header] = col(r, m.column).map(m.show)
    return drop_default_mode(out.astype(str))


def drop_default_mode(df: pd.DataFrame) -> pd.DataFrame:
    """The mode column only matters when some rows are not with-cache (baseline runs), the point
    column only in a sweep."""
    if "mode" in df.columns and (df["mode"].astype(str) == "with-cache").all():
        df = df.drop(columns="mode")
    if "point" in df.columns and (df["point"].astype(str) == "").all():
        df = df.drop(columns="point")
    return df


def reductions_table(red: pd.DataFrame, data: RunData) -> pd.DataFrame:
    if red.empty:
        return pd.DataFrame()
    t = data.targets
    rows = []
    for x in red.to_dict("records"):
        if x.get("note"):
            rows.append(
                {
                    "scenario": x["scenario"],
                    "mode": x["mode"],
                    "isolation": x["isolation"],
                    "round": fmt(x["round"], 0) if not math.isnan(x["round"]) else "-",
                    "repeats": str(x["repeats"]),
                    "note": x["note"],
                }
            )
            continue
        rows.append(
            {
                "scenario": x["scenario"],
                "mode": x["mode"],
                "isolation": x["isolation"],
                "round": str(int(x["round"])),
                "repeats": str(x["repeats"]),
                "TTFT reduction %": fmt(x["ttft_reduction_pct"]),
                "TTFT 95 % CI": _ci(x["ttft_ci_lo"], x["ttft_ci_hi"])
                + (f" ({x['ttft_ci_basis']})" if not math.isnan(x["ttft_ci_lo"]) else ""),
                f"TTFT target >= {t.ttft_reduction_percent:g} %": x["ttft_verdict"],
                "throughput gain %": fmt(x["throughput_gain_pct"]),
                "throughput 95 % CI": _ci(x["tput_ci_lo"], x["tput_ci_hi"]),
                f"throughput target >= {t.throughput_increase_percent:g} %": x["tput_verdict"],
                "paired speed-up p50": "n/a" if math.isnan(x["speedup_p50"]) else f"{x['speedup_p50']:.2f}x",
                "note": "",
            }
        )
    return drop_default_mode(pd.DataFrame(rows).fillna(""))


def timings_table(data: RunData) -> pd.DataFrame:
    rows = []
    for d in data.dirs.to_dict("records"):
        t = d["entry"].timings
        if t:
            rows.append({"scenario": d["dir"], **{h: fmt(t.get(k)) for k, h in TIMINGS}})
    return pd.DataFrame(rows)


def isolation_table(data: RunData) -> pd.DataFrame:
    """Fresh vs shared stack, side by side: what pollution does to the cold round."""
    r = data.rounds
    if r.empty or r["isolation"].nunique() < 2:
        return pd.DataFrame()
    r1 = r[r["round"] == 1]
    cols = {
        "ttft_p50_ms": "r1 TTFT p50 ms",
        "cached_tokens": "r1 cached tokens",
        "external_hits": "r1 Mooncake hits",
        "foreign_hit_tokens": "r1 foreign hits",
        "master_key_count_start": "keys before r1",
    }
    name = r1["scenario"] + r1["mode"].map(lambda m: "" if m == "with-cache" else f" [{m}]")
    vals = pd.DataFrame({k: col(r1, k) for k in cols}).assign(scenario=name, isolation=r1["isolation"])
    wide = vals.pivot_table(index="scenario", columns="isolation", values=list(cols), aggfunc="mean", dropna=False)
    wide.columns = [f"{cols[m]} ({iso})" for m, iso in wide.columns]
    return wide.reset_index().map(lambda v: v if isinstance(v, str) else fmt(v))


def run_info(data: RunData) -> str:
    m = data.manifest
    if m is None:
        return f"run {data.name} (no manifest.json)"
    parts = [
        f"run {m.run_id}",
        f"started {m.started_at}",
        f"finished {m.finished_at or 'not finished'}",
        f"harness {m.harness_version}",
        f"commit {(m.git_commit or '?')[:10]}",
        f"host {m.host.get('hostname', '?')}",
    ]
    return " | ".join(parts)


def server_table(data: RunData) -> pd.DataFrame:
    """The client's TTFT next to vLLM's own (histogram deltas over exactly the round's requests)."""
    r = data.rounds
    if r.empty or "server_ttft_mean_ms" not in r.columns:
        return pd.DataFrame()
    out = _round_identity(r)
    for m in pick(SERVER_TABLE):
        out[m.header] = col(r, m.column).map(m.show)
    return drop_default_mode(out.astype(str))


def connector_table(data: RunData) -> pd.DataFrame:
    """Where each round's time goes in the KV connector (harness/connector.py); baseline rounds show
    the same figures with the connector's parts empty."""
    r = data.rounds
    if r.empty or "mc_load_ms_per_req" not in r.columns or r["mc_load_ms_per_req"].isna().all():
        return pd.DataFrame()
    out = _round_identity(r)
    for m in pick(CONNECTOR_TABLE):
        out[m.header] = col(r, m.column).map(m.show)
    return drop_default_mode(out.astype(str))


def turns_table(data: RunData) -> pd.DataFrame:
    """Conversations: per scenario, round and turn index, TTFT and how much of the prompt (the
    history so far) came from cache. Only for scenarios whose requests have turns."""
    req = data.requests
    if req.empty or not (req["turn"] > 0).any():
        return pd.DataFrame()
    multi = req[req["ok"] & req["dir"].isin(req.loc[req["turn"] > 0, "dir"].unique())]
    labels = data.dirs["label"]
    rows = []
    for (d, rnd, turn), g in multi.groupby(["dir", "round", "turn"], sort=True):
        prompt = g["prompt_tokens"].sum()
        rows.append(
            {
                "scenario": labels.iloc[int(d)],
                "round": str(rnd),
                "turn": str(turn + 1),
                "requests": str(len(g)),
                "TTFT mean ms": fmt(g["ttft_ms"].mean()),
                "TTFT p50 ms": fmt(g["ttft_ms"].median()),
                "prompt tokens mean": fmt(g["prompt_tokens"].mean(), 0),
                "reused %": fmt(100 * g["cached_tokens"].sum() / prompt if prompt else math.nan),
            }
        )
    return pd.DataFrame(rows)


CLIFF_KEEP = 90.0  # % of the infinite-cache hits a store size must keep to be past the cliff


def cliff_table(data: RunData) -> pd.DataFrame:
    """The cache cliff of a store-size sweep, as display strings (data.cache_cliff)."""
    c = cache_cliff(data)
    if c.empty:
        return c
    return pd.DataFrame(
        {
            "scenario": c["scenario"],
            "point": c["point"],
            "round": c["round"].map(lambda v: fmt(v, 0)),
            "store MiB": c["store_mib"].map(lambda v: fmt(v, 0)),
            "hits % of infinite cache": c["hit_pct"].map(fmt),
            "simulated LRU %": c["lru_pct"].map(fmt),
            "not explained by LRU, pp": c["unexplained_pp"].map(lambda v: fmt(v, 1, signed=True)),
            "TTFT mean ms": c["ttft_mean_ms"].map(fmt),
            "req/s": c["req_per_s"].map(lambda v: fmt(v, 2)),
            "evicted keys": c["evicted_keys"].map(lambda v: fmt(v, 0)),
            "alloc failures": c["alloc_failures"].map(lambda v: fmt(v, 0)),
        }
    )


def cliff_notes(data: RunData) -> list[str]:
    """Per scenario of a store-size sweep: the smallest store that kept CLIFF_KEEP % of the
    infinite-cache hits, and the largest loss the LRU simulation does not explain."""
    c = cache_cliff(data)
    notes: list[str] = []
    if c.empty:
        return notes
    for scen, g in c.groupby("scenario", sort=False):
        if g["hit_pct"].isna().all():
            continue
        kept = g[g["hit_pct"] >= CLIFF_KEEP]
        where = (
            f"the smallest store keeping >= {CLIFF_KEEP:g} % of the infinite-cache hits is "
            f"{kept['store_mib'].iloc[0]:,.0f} MiB ({kept['point'].iloc[0]})"
            if len(kept)
            else f"no swept store size kept {CLIFF_KEEP:g} % of the infinite-cache hits (best "
            f"{g['hit_pct'].max():.0f} %)"
        )
        gap = ""
        if g["unexplained_pp"].notna().any():
            worst = g.loc[g["unexplained_pp"].idxmax()]
            gap = (
                f"; a loss of {worst['unexplained_pp']:.1f} points of hits at {worst['store_mib']:,.0f} MiB is not "
                "explained by the simulated LRU store (eviction watermark, leases and write timing are not simulated)"
                if worst["unexplained_pp"] >= 1
                else f"; measured hits are within {g['unexplained_pp'].abs().max():.1f} points of the simulated LRU "
                "store at every size: the store's size explains the loss"
            )
        per_block = g["kv_bytes_per_block"].dropna()
        size = (
            f" The simulated store holds {g['store_blocks'].min():,.0f}-{g['store_blocks'].max():,.0f} blocks of "
            f"{per_block.iloc[0]:,.0f} bytes (the KV of one block, as the connector's puts measured it: bytes/keys)."
            if len(per_block)
            else ""
        )
        notes.append(f"{scen}: {where}{gap}.{size}")
    return notes


def summary_csv(data: RunData) -> pd.DataFrame:
    """Every round of every cell, led by the headline: on with-cache rows of fresh stacks, the change
    vs baseline (same scenario and round) with its intervals, as `vs_baseline_*` columns."""
    rounds = data.rounds.drop(columns=["dir", "label"])
    if "point" in rounds and (rounds["point"] == "").all():  # not a sweep
        rounds = rounds.drop(columns="point")
    head = reuse_buys(data)
    if head.empty:
        return rounds
    keep = {
        c: f"vs_baseline_{c}"
        for c in head.columns
        if c.endswith(("_change", "_lo", "_hi")) or c.startswith("paired_") or c == "pairs"
    }
    on = ["scenario", "round", "mode", "isolation", *(["point"] if "point" in rounds else [])]
    head = head[["scenario", "point", "round", *keep]].rename(columns=keep).assign(mode="with-cache", isolation="fresh")
    merged = rounds.merge(head[[*on, *keep.values()]], on=on, how="left")
    ident = [c for c in ("scenario", "point", "mode", "isolation", "repeat", "round", "phase") if c in merged.columns]
    return merged[[*ident, *keep.values(), *[c for c in rounds.columns if c not in ident]]]


def _worst(statuses: pd.Series) -> str:
    s = set(statuses)
    return next((x for x in STATUS_RANK if x in s), next(iter(s), "?"))


def summary_rows(data: RunData, red: pd.DataFrame) -> pd.DataFrame:
    """One compact row per scenario (and isolation): repeats averaged."""
    rows = []
    r = data.rounds
    for label, d in data.dirs.groupby("label", sort=False):
        rr = r[r["label"] == label] if not r.empty else r
        red1 = red[(red["label"] == label) & (red["round"] == 2)] if not red.empty else red
        x = red1.iloc[0].to_dict() if len(red1) else {}

        def p50(n: int, rr: pd.DataFrame = rr) -> str:
            return fmt(col(rr[rr["round"] == n], "ttft_p50_ms").mean()) if len(rr) else "n/a"

        rows.append(
            {
                "scenario": label,
                "reps": len(d),
                "status": _worst(d["status"]),
                "r1 TTFT p50 ms": p50(1),
                "r2 TTFT p50 ms": p50(2),
                "r2 vs r1 TTFT -%": fmt(x.get("ttft_reduction_pct")),
                "r2 vs r1 thrpt +%": fmt(x.get("throughput_gain_pct")),
                "targets r2 vs r1": f"{x.get('ttft_verdict', 'n/a')}/{x.get('tput_verdict', 'n/a')}",
                "cold/teardown": "/".join(_evidence_word(d, k) for k in ("cold_verified", "teardown_verified")),
            }
        )
    return pd.DataFrame(rows)


def _evidence_word(d: pd.DataFrame, key: str) -> str:
    vals = [getattr(e, key) for e in d["entry"]]
    if any(v is None for v in vals):
        return "?"
    return "yes" if all(vals) else "NO"


def _connector_means(r: pd.DataFrame, label_round: tuple[str, str, int], mode: str) -> dict[str, float]:
    scen, point, rnd = label_round
    g = r[(r["scenario"] == scen) & (r["round"] == rnd) & (r["mode"] == mode) & (r["isolation"] == "fresh")]
    if "point" in g:
        g = g[g["point"].fillna("").astype(str) == str(point)]
    cols = ("mc_lookup_ms_per_req", "mc_load_ms_per_req", "mc_save_ms_per_req", "mc_loaded_mb", "mc_saved_mb",
            "mc_load_gbps", "mc_save_gbps", "fetch_share_pct", "server_prefill_mean_ms", "server_queue_mean_ms",
            "requests")  # fmt: skip
    return {c: float(col(g, c).mean()) for c in cols}


def _signed(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:+.1f}"


def why_lines(data: RunData) -> list[str]:
    """Why the cache lost or did not help, where it did, from the connector's own timers and vLLM's
    histograms: what the fetch path cost each request (lookup and load RPCs, and the time a request
    waits in vLLM's queue while its KV is loaded) against the prefill it saved, or, where nothing
    was reused, what write-through cost. Nothing is said where the cache wins."""
    table = reuse_buys(data)
    r = data.rounds
    if table.empty or "mc_load_ms_per_req" not in r.columns:
        return []
    out = []
    for x in table.to_dict("records"):
        key = (x["scenario"], x["point"], x["round"])
        c, b = _connector_means(r, key, "with-cache"), _connector_means(r, key, "baseline")
        slower, lost_tput = x["ttft_mean_ms_change"] >= 0, x["req_per_s_change"] < 0
        if not (slower or lost_tput) or math.isnan(c["mc_save_ms_per_req"]):
            continue
        head = f"{x['label']} round {x['round']}: TTFT {_signed(x['ttft_mean_ms_change'])} %, throughput " \
               f"{_signed(x['req_per_s_change'])} % with the cache."  # fmt: skip
        n = c["requests"]
        if c["mc_loaded_mb"] > 0:
            fetch = c["mc_lookup_ms_per_req"] + c["mc_load_ms_per_req"]
            saved = b["server_prefill_mean_ms"] - c["server_prefill_mean_ms"]
            waited = c["server_queue_mean_ms"] - b["server_queue_mean_ms"]
            cause = (
                "the wait for the KV to arrive, not the transfer itself, outweighed the prefill it saved"
                if waited > fetch
                else "fetching the KV cost more than recomputing it at this prefix length"
            )
            out.append(
                f"{head} Lookups and loads took {fmt(fetch, 2)} ms per request ({fmt(c['mc_loaded_mb'] / n, 2)} MB "
                f"at {fmt(c['mc_load_gbps'], 2)} GB/s) and saved {fmt(saved)} ms of vLLM's prefill "
                f"({fmt(c['server_prefill_mean_ms'])} vs {fmt(b['server_prefill_mean_ms'])} ms), but requests waited "
                f"{fmt(c['server_queue_mean_ms'])} ms in vLLM's queue vs {fmt(b['server_queue_mean_ms'])} ms without "
                "(the connector keeps a request queued while its store lookup and load are in flight; vLLM "
                f"retries it on later engine steps): {cause}."
            )
        else:
            out.append(
                f"{head} Nothing was loaded; the connector's write-through saved {fmt(c['mc_saved_mb'] / n, 2)} MB "
                f"per request ({fmt(c['mc_save_ms_per_req'], 2)} ms of store RPCs per request, "
                f"{fmt(c['mc_save_gbps'], 2)} GB/s) and lookups took {fmt(c['mc_lookup_ms_per_req'], 2)} ms per "
                "request: the connector's price when nothing is reused."
            )
    return out


def headline_lines(data: RunData) -> list[str]:
    """What reuse buys, one line per scenario (its last round): what the console leads with."""
    t = headline_round(
        targets_vs_baseline(
            reuse_buys(data), data.targets.ttft_reduction_percent, data.targets.throughput_increase_percent
        )
    )
    lines = []
    for x in t.to_dict("records"):
        lines.append(
            f"{x['label']} round {x['round']}: TTFT mean {fmt(x['ttft_mean_ms_cache'])} ms with cache vs "
            f"{fmt(x['ttft_mean_ms_base'])} ms without "
            f"({_change_ci(x['ttft_mean_ms_change'], x['ttft_mean_ms_lo'], x['ttft_mean_ms_hi'])}), "
            f"per prompt {_change_ci(x['paired_change'], x['paired_lo'], x['paired_hi'])}; "
            f"throughput {fmt(x['req_per_s_cache'], 2)} vs {fmt(x['req_per_s_base'], 2)} req/s "
            f"({_change_ci(x['req_per_s_change'], x['req_per_s_lo'], x['req_per_s_hi'])}); "
            f"targets vs baseline {x['ttft_target']}/{x['tput_target']}"
        )
    return lines
