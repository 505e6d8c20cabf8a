"""The report's tables as display strings (pandas frames of text): the headline (with cache vs
baseline), round-over-round figures, statistics, server-side times, timings, isolation and reuse
fidelity; and the rows of summary.csv. The computed frames they format come from the analysis
(analysis.analyse), computed once; a few cheap ones are read straight from the loaded run."""

from __future__ import annotations

import math

import pandas as pd

from harness.analysis.frames import num, truthy
from harness.analysis.intervals import MET
from harness.analysis.stats import TAIL_QUANTILE, reused_text, round1_caveat, tail_support
from harness.config import Targets
from harness.records import ISOLATED
from harness.records.metrics import CONNECTOR_TABLE, HEADLINE, METRICS, ROUND_TABLE, SERVER_TABLE, fmt, pick
from harness.report.data import RunData, cache_cliff, store_sizing

TIMINGS = [
    ("up_s", "up s"),
    ("service_start_s", "vLLM start s"),
    ("warmup_s", "warm-up s"),
    ("workload_s", "workload s"),
    ("rounds_s", "rounds s"),
    ("teardown_s", "teardown s"),
    ("harness_overhead_s", "overhead s"),
    ("total_s", "total s"),
]


# worst first: a scenario's repeats show the worst status
STATUS_RANK = ["failed", "interrupted", "misconfigured", "degraded", "contaminated", "unverified", "running",
               "pending", "unknown", "no manifest", "ok"]  # fmt: skip


def _ci(lo: float, hi: float) -> str:
    return "n/a" if math.isnan(lo) or math.isnan(hi) else f"[{lo:+.1f}, {hi:+.1f}]"


def _no_ci(method: object) -> str:
    """Why a figure has no interval, from its method ("no CI: 1 repeat", "n/a (2 pairs)")."""
    m = str(method) if isinstance(method, str) and method else "1 repeat"
    return "(" + (m if m.startswith("no CI") else "no CI: " + m.removeprefix("n/a (").removesuffix(")")) + ")"


def change_ci(v: float, lo: float, hi: float, method: object = None) -> str:
    """A change in % and its 95 % interval, same sign convention: "-66.2 % [-70.3, -61.8]"."""
    if math.isnan(v):
        return "n/a"
    return f"{v:+.1f} % " + (_no_ci(method) if math.isnan(lo) else _ci(lo, hi))


def short_change_ci(v: float, lo: float, hi: float) -> str:
    """The console's compact form: "-66.2 [-70.3, -61.8]" (the header says %)."""
    if math.isnan(v):
        return "n/a"
    return f"{v:+.1f}" + ("" if math.isnan(lo) else f" [{lo:+.1f}, {hi:+.1f}]")


def reuse_table(vs_baseline: pd.DataFrame, targets: Targets) -> pd.DataFrame:
    """The headline: per scenario and round, with cache vs without (baseline), same prompts."""
    rows = []
    for x in vs_baseline.to_dict("records"):
        row = {
            "scenario": x["label"],
            "round": str(x["round"]),
            "with cache": x["phase with cache"],
            "repeats": str(x["repeats"]),
        }
        for m in pick(HEADLINE):
            c = m.column
            flag = f" ({why}: ~max)" if (why := x.get(f"{c}_support")) else ""
            row[f"{m.header} with / without"] = f"{m.show(x[f'{c}_cache'])} / {m.show(x[f'{c}_base'])}{flag}"
            row[f"{m.header} change"] = (
                f"hidden ({why})" if why else change_ci(x[f"{c}_change"], x[f"{c}_lo"], x[f"{c}_hi"], x[f"{c}_method"])
            )
        row["per-prompt TTFT change"] = (
            change_ci(x["paired_change"], x["paired_lo"], x["paired_hi"], x["paired_method"])
            + f" ({x['pairs']} prompts)"
        )
        row[f"TTFT target <= -{targets.ttft_reduction_percent:g} % vs baseline"] = x["ttft_target"]
        row[f"throughput target >= +{targets.throughput_increase_percent:g} % vs baseline"] = x["tput_target"]
        rows.append(row)
    return pd.DataFrame(rows)


def fidelity_table(f: pd.DataFrame) -> pd.DataFrame:
    """verdict.fidelity as display strings."""
    if f.empty:
        return f
    out = f[["scenario"]].copy()
    could = {
        "yes": "yes ({o} outputs for {p} prompts)",
        "weak": "barely: {o} outputs for {p} different prompts: outputs barely depend on the prompt, "
        "identical text proves little",
        "no": "NO: {p} different prompts all gave one output: outputs do not depend on the prompt, "
        "identical text proves nothing",
        "n/a": "unknown: one prompt",
    }
    if "check" in f:
        out["check"] = f["check"]
    out["could it fail?"] = [
        could[i].format(p=p, o=o) for i, p, o in zip(f["informative"], f["distinct prompts"], f["distinct outputs"])
    ]
    for name in ("warm vs cold", "with cache vs baseline"):
        out[f"identical output, {name}"] = [
            "n/a" if not n else f"{same}/{n} ({math.floor(pct * 10) / 10:g} %)" + _differ(names)
            for same, n, pct, names in zip(
                f[f"{name} identical"], f[f"{name} pairs"], f[f"{name} %"], f[f"{name} differ"]
            )
        ]
    return out


def _differ(names: list[str], shown: int = 5) -> str:
    """The prompts whose outputs differ (the first `shown`)."""
    if not names:
        return ""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return "; differs: " + ", ".join(names[:shown]) + more


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
    """One sentence per with-cache scenario whose round 1 was not cold. Only complete rounds 1 count:
    a cut-short one (a failed cell) has no round over round for the sentence to qualify."""
    r = data.rounds
    if r.empty or "reused_token_pct" not in r.columns:
        return []
    complete = ~truthy(r["partial"]) if "partial" in r.columns else True
    r1 = r[(r["round"] == 1) & (r["mode"] == "with-cache") & complete]
    pct = num(r1, "reused_token_pct").groupby(r1["label"], sort=False).mean()
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
    n = num(r, "successes")
    for m in pick(ROUND_TABLE):
        shown = num(r, m.column).map(m.show)
        flags = [tail_support(m.column, k) for k in n]  # a tail percentile of too few requests: flagged
        out[m.header] = [f"{v} ({f}: ~max)" if f and v != "n/a" else v for v, f in zip(shown, flags)]
    return drop_default_mode(out.astype(str))


def drop_default_mode(df: pd.DataFrame) -> pd.DataFrame:
    """The mode column only matters when some rows are not with-cache (baseline runs), the point
    column only in a sweep."""
    if "mode" in df.columns and (df["mode"].astype(str) == "with-cache").all():
        df = df.drop(columns="mode")
    if "point" in df.columns and (df["point"].astype(str) == "").all():
        df = df.drop(columns="point")
    return df


def round_over_round_table(rr: pd.DataFrame, targets: Targets) -> pd.DataFrame:
    """The seed's figures (analysis.round_over_round): each warm round vs round 1 of the same stack,
    every change beside its own interval."""
    if rr.empty:
        return pd.DataFrame()
    rows = []
    for x in rr.to_dict("records"):
        row = {
            "scenario": x["scenario"],
            "mode": x["mode"],
            "isolation": x["isolation"],
            "round": fmt(x["round"], 0) if not math.isnan(x["round"]) else "-",
            "repeats": str(x["repeats"]),
        }
        if not x.get("note"):
            row.update(
                {
                    "TTFT mean change": change_ci(x["ttft_change"], x["ttft_lo"], x["ttft_hi"], x["ttft_method"]),
                    "TTFT CI basis": x["ttft_method"] if not math.isnan(x["ttft_lo"]) else "",
                    f"TTFT target <= -{targets.ttft_reduction_percent:g} %": x["ttft_verdict"],
                    "throughput change": change_ci(x["tput_change"], x["tput_lo"], x["tput_hi"], x["tput_method"]),
                    f"throughput target >= +{targets.throughput_increase_percent:g} %": x["tput_verdict"],
                    "per-prompt TTFT change": change_ci(
                        x["prompt_change"], x["prompt_lo"], x["prompt_hi"], x["prompt_method"]
                    )
                    + f" ({x['prompts']} prompts)",
                }
            )
        row["note"] = x.get("note") or ""
        rows.append(row)
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
    vals = pd.DataFrame({k: num(r1, k) for k in cols}).assign(scenario=name, isolation=r1["isolation"])
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
        out[m.header] = num(r, m.column).map(m.show)
    return drop_default_mode(out.astype(str))


def connector_table(data: RunData) -> pd.DataFrame:
    """Where each round's time goes in the KV connector (harness/analysis/connector.py); baseline rounds show
    the same figures with the connector's parts empty."""
    r = data.rounds
    if r.empty or "mc_load_ms_per_req" not in r.columns or r["mc_load_ms_per_req"].isna().all():
        return pd.DataFrame()
    out = _round_identity(r)
    for m in pick(CONNECTOR_TABLE):
        out[m.header] = num(r, m.column).map(m.show)
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
# Points of hits by which measured and simulated-LRU hits may differ at every size for the store's
# size to explain the loss: beyond it, Mooncake (not an exact LRU) did something the model does not.
LRU_TOLERANCE_PP = 5.0


def sizing_table(data: RunData) -> pd.DataFrame:
    """The store per with-cache round (data.store_sizing) as display strings: what it held, how full it
    was against the master's eviction watermark, and what it evicted or refused."""
    z = store_sizing(data)
    if z.empty:
        return z

    def mib(v: object) -> str:
        return fmt(float(v) / 2**20, 1) if isinstance(v, int | float) and not math.isnan(v) else "n/a"

    return pd.DataFrame(
        {
            "scenario": z["label"],
            "repeat": z["repeat"].map(lambda v: fmt(v, 0)),
            "round": z["round"].map(lambda v: fmt(v, 0)),
            "store": z["store"],
            "segment MiB": z["capacity_bytes"].map(mib),
            "keys start -> end": [f"{fmt(a, 0)} -> {fmt(b, 0)}" for a, b in zip(z["keys_start"], z["keys_end"])],
            "held MiB (end)": z["allocated_bytes_end"].map(mib),
            "full % (end)": z["used_pct_end"].map(lambda v: fmt(v, 1)),
            "evicts above %": z["watermark_pct"].map(lambda v: fmt(v, 0)),
            "evicted keys": z["evicted_keys"].map(lambda v: fmt(v, 0)),
            "alloc failures": z["alloc_failures"].map(lambda v: fmt(v, 0)),
        }
    )


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


def _lru_gap(g: pd.DataFrame) -> str:
    """How far one scenario's measured hits are from the simulated LRU store of each swept size,
    judged against LRU_TOLERANCE_PP: within it the store's size explains the loss; beyond it the
    simulation explains only part, and the largest gap is named with its sign."""
    worst = g.loc[g["unexplained_pp"].abs().idxmax()]
    pp, at = worst["unexplained_pp"], f"{worst['store_mib']:,.0f} MiB"
    if abs(pp) <= LRU_TOLERANCE_PP:
        return (
            f"; measured hits are within {abs(pp):.1f} points of the simulated LRU store at every size (tolerance "
            f"{LRU_TOLERANCE_PP:g} points): the store's size explains the loss"
        )
    why = (
        f"(beyond the {LRU_TOLERANCE_PP:g}-point tolerance; Mooncake is not an exact LRU: its eviction watermark, "
        "leases and write timing are not simulated)"
    )
    if pp > 0:
        return (
            f"; a loss of {pp:.1f} points of hits at {at} is not explained by the simulated LRU store, which "
            f"explains only part of the loss {why}"
        )
    return (
        f"; measured hits at {at} are {-pp:.1f} points above the simulated LRU store, which explains only part "
        f"of the curve {why}"
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
            f"{reused_text(g['hit_pct'].max())} %)"  # rounded down: never across the threshold
        )
        gap = _lru_gap(g) if g["unexplained_pp"].notna().any() else ""
        per_block = g["kv_bytes_per_block"].dropna()
        size = (
            f" The simulated store holds {g['store_blocks'].min():,.0f}-{g['store_blocks'].max():,.0f} blocks of "
            f"{per_block.iloc[0]:,.0f} bytes (the KV of one block, as the connector's puts measured it: bytes/keys)."
            if len(per_block)
            else ""
        )
        notes.append(f"{scen}: {where}{gap}.{size}")
    return notes


def summary_csv(data: RunData, vs_baseline: pd.DataFrame, vs_round1: pd.DataFrame) -> pd.DataFrame:
    """Every round of every cell, led by the headline: on with-cache rows of isolated stacks (fresh, or
    verified reset: each its own comparison), the change vs baseline (same scenario, isolation and
    round) with its intervals, which noise they span and the targets read from them (met / not met /
    inconclusive), as `vs_baseline_*` columns; on every
    warm round, the change vs round 1 of the same cell (`vs_round1_*`, analysis.changes_by_round).
    Changes are 100 * (new / old - 1): negative = lower."""
    rounds = data.rounds.drop(columns=["dir"])
    if "point" in rounds and (rounds["point"] == "").all():  # not a sweep
        rounds = rounds.drop(columns="point")
    added: list[str] = []
    if not vs_round1.empty:
        rounds = rounds.merge(vs_round1, on=["label", "round"], how="left")
        added += [c for c in vs_round1.columns if c not in ("label", "round")]
    rounds = rounds.drop(columns="label")
    for metric in TAIL_QUANTILE:  # "" where the round's requests support the percentile, else why not
        if metric in rounds:
            rounds[f"{metric}_support"] = [tail_support(metric, n) for n in num(rounds, "successes")]
    if not vs_baseline.empty:
        keep = {
            c: f"vs_baseline_{c}"
            for c in vs_baseline.columns
            if c.endswith(("_change", "_lo", "_hi", "_method", "_target", "_support"))
            or c.startswith("paired_")
            or c in ("pairs", "spans")
        }
        on = ["scenario", "round", "mode", "isolation", *(["point"] if "point" in rounds else [])]
        head = vs_baseline[["scenario", "isolation", "point", "round", *keep]].rename(columns=keep)
        head = head.assign(mode="with-cache")
        rounds = rounds.merge(head[[*on, *keep.values()]], on=on, how="left")
        added = [*keep.values(), *added]
    ident = [c for c in ("scenario", "point", "mode", "isolation", "repeat", "round", "phase") if c in rounds.columns]
    return rounds[[*ident, *added, *[c for c in rounds.columns if c not in ident and c not in added]]]


def status_rows(data: RunData) -> pd.DataFrame:
    """One row per cell label: repeats, worst status, cold/teardown checks, TTFT p50 per round."""
    r = data.rounds
    rows = []
    for label, d in data.dirs.groupby("label", sort=False):
        rr = r[r["label"] == label] if not r.empty else r

        def p50(n: int, rr: pd.DataFrame = rr) -> str:
            return fmt(num(rr[rr["round"] == n], "ttft_p50_ms").mean()) if len(rr) else "n/a"

        rows.append(
            {
                "scenario": label,
                "reps": str(len(d)),
                "status": _worst(d["status"]),
                "cold/teardown": "/".join(_evidence_word(d, k) for k in ("cold_verified", "teardown_verified")),
                "r1 TTFT p50 ms": p50(1),
                "r2 TTFT p50 ms": p50(2),
            }
        )
    return pd.DataFrame(rows)


def _worst(statuses: pd.Series) -> str:
    s = set(statuses)
    return next((x for x in STATUS_RANK if x in s), next(iter(s), "?"))


def _evidence_word(d: pd.DataFrame, key: str) -> str:
    vals = [getattr(e, key) for e in d["entry"]]
    if any(v is None for v in vals):
        return "?"
    return "yes" if all(vals) else "NO"


def _connector_means(r: pd.DataFrame, label_round: tuple[str, str, int, str], mode: str) -> dict[str, float]:
    scen, point, rnd, iso = label_round
    same = r["isolation"] == iso if iso else r["isolation"].isin(ISOLATED)
    g = r[(r["scenario"] == scen) & (r["round"] == rnd) & (r["mode"] == mode) & same]
    if "point" in g:
        g = g[g["point"].fillna("").astype(str) == str(point)]
    cols = ("mc_lookup_ms_per_req", "mc_load_ms_per_req", "mc_save_ms_per_req", "mc_loaded_mb", "mc_saved_mb",
            "mc_load_gbps", "mc_save_gbps", "fetch_share_pct", "server_prefill_mean_ms", "server_queue_mean_ms",
            "requests")  # fmt: skip
    return {c: float(num(g, c).mean()) for c in cols}


def _signed(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:+.1f}"


def _prefill_change(saved: float) -> str:
    """What the cache did to vLLM's prefill, in words that keep the sign: a negative saving is a longer prefill."""
    return f"saved {fmt(saved)} ms of vLLM's prefill" if saved >= 0 else f"vLLM's prefill took {fmt(-saved)} ms longer"


def _loss_cause(fetch: float, saved: float, waited: float) -> str:
    """Why a cache that loaded KV still lost, only as far as the compared figures say it."""
    if not saved > 0:  # NaN-safe
        return "with the KV loaded, vLLM's prefill was no shorter, so nothing was saved to pay for the fetch"
    if waited > saved and waited > fetch:
        return (
            f"the longer wait in vLLM's queue ({fmt(waited)} ms), not the transfer itself ({fmt(fetch, 2)} ms), "
            f"outweighed the prefill it saved ({fmt(saved)} ms)"
        )
    if fetch > saved:
        return f"fetching the KV ({fmt(fetch, 2)} ms) cost more than the prefill it saved ({fmt(saved)} ms)"
    return (
        f"the fetch ({fmt(fetch, 2)} ms) cost less than the prefill it saved ({fmt(saved)} ms), and the longer "
        f"queue wait ({fmt(waited)} ms) did not outweigh it either: the loss is outside the connector's timers "
        "and vLLM's prefill and queue histograms"
    )


def _clearly_lost(x: dict) -> tuple[bool, bool]:
    """(TTFT higher, throughput lower) with the cache, each only where its whole 95 % interval says so: a
    change inside its noise gets no story of why it was lost."""
    return bool(x["ttft_mean_ms_lo"] > 0), bool(x["req_per_s_hi"] < 0)  # NaN-safe: no interval, no claim


def why_lines(data: RunData, table: pd.DataFrame) -> list[str]:
    """Why the cache lost, where its interval shows it did (TTFT higher, or throughput lower, with the
    whole 95 % interval on that side), from the connector's own timers and vLLM's histograms: what
    the fetch path cost each request (lookup and load RPCs, and the time a request waits in vLLM's
    queue while its KV is loaded) against the prefill it saved, or, where nothing was reused, what
    write-through cost. Nothing is said where the cache wins or the change is inside its noise.
    `table`: the with vs without comparison (verdict.reuse_buys)."""
    r = data.rounds
    if table.empty or "mc_load_ms_per_req" not in r.columns:
        return []
    out = []
    for x in table.to_dict("records"):
        key = (x["scenario"], x["point"], x["round"], x.get("isolation", ""))
        c, b = _connector_means(r, key, "with-cache"), _connector_means(r, key, "baseline")
        slower, lost_tput = _clearly_lost(x)
        if not (slower or lost_tput) or math.isnan(c["mc_save_ms_per_req"]):
            continue
        head = f"{x['label']} round {x['round']}: TTFT {_signed(x['ttft_mean_ms_change'])} %, throughput " \
               f"{_signed(x['req_per_s_change'])} % with the cache ({'TTFT higher' if slower else 'throughput lower'}" \
               " across the whole 95 % interval)."  # fmt: skip
        n = c["requests"]
        if c["mc_loaded_mb"] > 0:
            fetch = c["mc_lookup_ms_per_req"] + c["mc_load_ms_per_req"]
            saved = b["server_prefill_mean_ms"] - c["server_prefill_mean_ms"]
            waited = c["server_queue_mean_ms"] - b["server_queue_mean_ms"]
            out.append(
                f"{head} Lookups and loads took {fmt(fetch, 2)} ms per request ({fmt(c['mc_loaded_mb'] / n, 2)} MB "
                f"at {fmt(c['mc_load_gbps'], 2)} GB/s) and {_prefill_change(saved)} "
                f"({fmt(c['server_prefill_mean_ms'])} vs {fmt(b['server_prefill_mean_ms'])} ms), while requests "
                f"waited {fmt(c['server_queue_mean_ms'])} ms in vLLM's queue vs {fmt(b['server_queue_mean_ms'])} ms "
                "without (the connector keeps a request queued while its store lookup and load are in flight; "
                f"vLLM retries it on later engine steps): {_loss_cause(fetch, saved, waited)}."
            )
        else:
            out.append(
                f"{head} Nothing was loaded; the connector's write-through wrote {fmt(c['mc_saved_mb'] / n, 2)} MB "
                f"per request ({fmt(c['mc_save_ms_per_req'], 2)} ms of store RPCs per request, "
                f"{fmt(c['mc_save_gbps'], 2)} GB/s) and lookups took {fmt(c['mc_lookup_ms_per_req'], 2)} ms per "
                "request: the connector's price when nothing is reused."
            )
    return out


# ------------------------------------------------------------------ the verdict and tables by question


def short_why(data: RunData, x: dict) -> str:
    """One line on why the cache missed a target in this with-vs-without row (verdict.reuse_buys),
    "" where both targets are met. From the connector's timers and vLLM's histograms when the run
    has them (the long story is why_lines), else from the measured warmth."""
    if x["ttft_target"] == MET and x["tput_target"] == MET:
        return ""
    r = data.rounds
    warm = x.get("reused_pct_cache", math.nan)
    if "mc_load_ms_per_req" not in r.columns:
        return (
            f"only {reused_text(warm)} % of prompt tokens came from cache"
            if warm < 90  # NaN-safe: an unknown warmth says nothing
            else "no connector or server timers in this run to say why"
        )
    key = (x["scenario"], x["point"], x["round"], x.get("isolation", ""))
    c, b = _connector_means(r, key, "with-cache"), _connector_means(r, key, "baseline")
    if not c["mc_loaded_mb"] > 0:
        rpc = fmt(c["mc_save_ms_per_req"], 1)
        return f"nothing was loaded from the store: the connector only wrote ({rpc} ms of store RPCs per request)"
    saved = b["server_prefill_mean_ms"] - c["server_prefill_mean_ms"]
    waited = c["server_queue_mean_ms"] - b["server_queue_mean_ms"]
    if waited > 0 and waited >= saved / 2:
        prefill = (
            f"prefill {fmt(saved, 0)} ms shorter, but" if saved >= 0 else f"prefill {fmt(-saved, 0)} ms longer, and"
        )
        return f"{prefill} requests queued {fmt(waited, 0)} ms longer in vLLM while their KV loaded"
    if b["server_prefill_mean_ms"] < x["ttft_mean_ms_base"] / 2:
        return (
            f"prefill is only {fmt(b['server_prefill_mean_ms'], 0)} of the {fmt(x['ttft_mean_ms_base'], 0)} ms "
            "TTFT without the cache: at most that can be saved"
        )
    fetch = c["mc_lookup_ms_per_req"] + c["mc_load_ms_per_req"]
    if not saved >= 0:  # NaN-safe
        return f"lookups and loads took {fmt(fetch, 1)} ms per request and prefill {fmt(-saved, 0)} ms longer"
    return f"lookups and loads took {fmt(fetch, 1)} ms per request for {fmt(saved, 0)} ms of prefill saved"


def headline_name(label: str, rnd: int) -> str:
    """A verdict row's name: the scenario (sweep point), and the round when it is not round 2."""
    return label if rnd == 2 else f"{label} (round {rnd})"


def verdict_table(head: pd.DataFrame, targets: Targets) -> pd.DataFrame:
    """The verdict's rows (Analysis.headline) as display strings: one per scenario (and sweep point),
    round 2: mean TTFT and throughput with vs without, each change beside its own interval, the
    targets and the measured warmth; `why` is shown on a line of its own."""
    rows = []
    for x in head.to_dict("records"):
        ttft, tput = METRICS["ttft_mean_ms"], METRICS["req_per_s"]
        warm = x.get("reused_pct_cache", math.nan)
        cached = "" if math.isnan(warm) else f" ({reused_text(warm)} % cached)"
        rows.append(
            {
                "scenario": headline_name(x["label"], x["round"]),
                "warmth with cache": x["phase with cache"] + cached,
                "TTFT mean ms with / without": f"{ttft.show(x['ttft_mean_ms_cache'])} / "
                f"{ttft.show(x['ttft_mean_ms_base'])}",
                "TTFT change [95 % CI]": change_ci(
                    x["ttft_mean_ms_change"], x["ttft_mean_ms_lo"], x["ttft_mean_ms_hi"], x["ttft_mean_ms_method"]
                ),
                "req/s with / without": f"{tput.show(x['req_per_s_cache'])} / {tput.show(x['req_per_s_base'])}",
                "throughput change [95 % CI]": change_ci(
                    x["req_per_s_change"], x["req_per_s_lo"], x["req_per_s_hi"], x["req_per_s_method"]
                ),
                f"TTFT target <= -{targets.ttft_reduction_percent:g} %": x["ttft_target"],
                f"throughput target >= +{targets.throughput_increase_percent:g} %": x["tput_target"],
                "why": x.get("why", ""),
            }
        )
    return pd.DataFrame(rows)


# The with-vs-without table, one table per question, so that none is wider than a screen.
REUSE_IDENT = ("scenario", "round", "with cache", "repeats")
REUSE_QUESTIONS = (
    (
        "reuse-ttft",
        "TTFT mean",
        ("TTFT mean ms with / without", "TTFT mean ms change", "per-prompt TTFT change", "TTFT target"),
    ),
    (
        "reuse-percentiles",
        "TTFT percentiles",
        ("TTFT p50 ms with / without", "TTFT p50 ms change", "TTFT p90 ms with / without", "TTFT p90 ms change"),
    ),
    (
        "reuse-throughput",
        "Throughput",
        (
            "req/s with / without",
            "req/s change",
            "total tok/s with / without",
            "total tok/s change",
            "throughput target",
        ),
    ),
)


def by_question(
    df: pd.DataFrame, ident: tuple[str, ...], questions: tuple[tuple[str, str, tuple[str, ...]], ...]
) -> list[tuple[str, str, pd.DataFrame]]:
    """One wide table as several narrow ones: (table id, title, the identity columns + the columns
    whose header starts with one of the question's prefixes); a question with no columns is left out,
    and columns no question names go to a last table ("other") rather than vanish."""
    if df.empty:  # one table that says "(no rows)", rather than none
        return [(questions[0][0], questions[0][1], df)]
    lead = [c for c in ident if c in df.columns]
    out, shown = [], set(lead)
    for table_id, title, prefixes in questions:
        cols = [c for p in prefixes for c in df.columns if str(c).startswith(p) and c not in shown]
        shown |= set(cols)
        if cols:
            out.append((table_id, title, df[lead + list(dict.fromkeys(cols))]))
    rest = [c for c in df.columns if c not in shown]
    if rest:
        out.append((f"{questions[0][0]}-other", "Other", df[lead + rest]))
    return out


def reuse_tables(vs_baseline: pd.DataFrame, targets: Targets) -> list[tuple[str, str, pd.DataFrame]]:
    """reuse_table split by question: TTFT mean, TTFT percentiles, throughput."""
    return by_question(reuse_table(vs_baseline, targets), REUSE_IDENT, REUSE_QUESTIONS)


EVIDENCE_IDENT = ("scenario", "mode", "isolation", "repeat")
EVIDENCE_QUESTIONS = (
    (
        "evidence",
        "Checks",
        (
            "status",
            "engine warm-up",
            "cold verified",
            "reset proof",
            "engine restarts",
            "teardown verified",
            "contamination",
            "failures",
            "reason",
        ),
    ),
    ("evidence-stacks", "Stacks and reuse", ("stack project", "engine container", "reuse achieved")),
)


def evidence_tables(ev: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """The evidence table split: the checks, then where each cell ran and what it reused."""
    return by_question(ev, EVIDENCE_IDENT, EVIDENCE_QUESTIONS)


ROUND_IDENT = ("scenario", "point", "mode", "isolation", "rep", "round", "phase")


def _headers(columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(m.header for m in pick(columns))


STATS_QUESTIONS = (
    (
        "round-stats",
        "TTFT",
        _headers(ROUND_TABLE[: ROUND_TABLE.index("tpot_mean_ms")]),  # the round table's TTFT columns
    ),
    (
        "round-stats-decode",
        "Decode and end to end",
        _headers(("tpot_mean_ms", "tpot_p50_ms", "itl_p50_ms", "itl_p99_ms", "e2e_mean_ms", "e2e_p90_ms")),
    ),
    (
        "round-stats-throughput",
        "Throughput and reuse",
        _headers(
            ("req_per_s", "concurrency", "inflight_mean", "output_tok_per_s", "total_tok_per_s", "cached_token_ratio")
        ),
    ),
)


def stats_tables(data: RunData) -> list[tuple[str, str, pd.DataFrame]]:
    """stats_table split by question: TTFT, decode and end to end, throughput and reuse."""
    return by_question(stats_table(data), ROUND_IDENT, STATS_QUESTIONS)


def arms_table(arms: pd.DataFrame, changes: pd.DataFrame) -> pd.DataFrame:
    """The four arms, one row per working set / pool ratio and arm: hit rates by tier (shares of the
    measured rounds' prompt tokens), TTFT mean [95 % CI] and p50, and per ratio local+store vs local."""
    if arms.empty:
        return pd.DataFrame()
    vs = {x["scenario"]: x for x in changes.to_dict("records")} if not changes.empty else {}
    rows = []
    for x in arms.to_dict("records"):
        c = vs.get(x["scenario"]) if x["arm"] == "local+store" else None
        rows.append(
            {
                "working set / pool": fmt(x["ratio"], 2),
                "scenario": x["scenario"],
                "arm": x["arm"],
                "documents x tokens": f"{x['documents']:,} x {x['document_tokens']:,}",
                "pool blocks": fmt(x["pool_blocks"], 0),
                "local pool %": fmt(x["local_pct"], 1),
                "local LRU-predicted %": fmt(x["lru_local_pct"], 1) if x["arm"] in ("local", "local+store") else "",
                "store %": fmt(x["store_pct"], 1),
                "reusable %": fmt(x["reusable_pct"], 1),
                "TTFT mean ms": fmt(x["ttft_mean_ms"], 1),
                "95 % CI": "n/a" if math.isnan(x["ttft_lo"]) else f"[{x['ttft_lo']:.1f}, {x['ttft_hi']:.1f}]",
                "TTFT p50 ms": fmt(x["ttft_p50_ms"], 1),
                "vs local: TTFT mean %": "" if c is None else fmt(c["change"], 1, signed=True),
                "vs local 95 % CI": "" if c is None else _ci(c["lo"], c["hi"]),
                "requests": x["requests"],
                "control": x.get("control", ""),
            }
        )
    return pd.DataFrame(rows)
