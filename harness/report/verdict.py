"""What reuse buys: the same prompts with the KV connector and without it (baseline), and whether
the reused KV gave the same output.

Round-over-round figures compare round 2 with a round 1 that is itself mostly warm whenever a
scenario's requests share a prefix; the honest comparison is with-cache vs baseline, round by
round, on the same prompts, each on its own fresh stack. Every change is 100 * (with / without - 1)
(negative: lower TTFT, positive: more throughput), and every interval is for the figure beside it
(harness.intervals):

* TTFT mean change: one repeat, the change of the mean over the prompts answered in both (paired by
  prompt, BCa over prompts); several repeats, Student-t over the repeats' changes;
* per-prompt TTFT change (the geometric mean of each prompt's ratio): BCa over prompts, or
  Student-t over the repeats' estimates;
* other metrics (percentiles, throughput): Student-t over repeats; none with one repeat (one value
  per stack).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.analysis.frames import num
from harness.analysis.intervals import Interval, change_pct, paired_change_pct_bca, paired_mean_change_pct, t_mean
from harness.records import ISOLATED
from harness.records.metrics import HEADLINE
from harness.report.data import RunData

NO_PAIRS = Interval(math.nan, math.nan, math.nan, 0, "n/a (no pairs)")


def side(req: pd.DataFrame, rounds: pd.DataFrame, rnd: int) -> pd.DataFrame:
    """The requests of these cells (rounds.csv rows) in round `rnd`, one per prompt and repeat."""
    rep = dict(zip(rounds["dir"], rounds["repeat"]))
    rows = req[req["dir"].isin(list(rep)) & (req["round"] == rnd)].drop_duplicates(["dir", "pid"])
    return rows.assign(repeat=rows["dir"].map(rep))[["repeat", "pid", "ttft_ms"]]


def pair_up(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """TTFT of the same prompt in the same repeat under A and B: columns repeat, pid, a, b."""
    return a.merge(b, on=["repeat", "pid"]).rename(columns={"ttft_ms_x": "a", "ttft_ms_y": "b"})


def per_prompt_change(pairs: pd.DataFrame) -> Interval:
    """The typical per-prompt TTFT change A -> B (geometric mean): one repeat, BCa over its
    prompts; several, each repeat's estimate and Student-t over them."""
    if pairs.empty:
        return NO_PAIRS
    per_rep = [paired_change_pct_bca(g["a"], g["b"]) for _, g in pairs.groupby("repeat")]
    if len(per_rep) == 1:
        return per_rep[0]
    iv = t_mean([x.estimate for x in per_rep])
    return Interval(iv.estimate, iv.lo, iv.hi, len(pairs), iv.method)


def mean_change(pairs: pd.DataFrame, per_repeat: list[float]) -> Interval:
    """The change of the mean TTFT A -> B. Several repeats: the mean of the repeats' changes
    (`per_repeat`, from rounds.csv), Student-t over them. One repeat: over the prompts answered
    under both, paired by prompt, BCa over prompts; without request rows, the one figure and no
    interval."""
    if len(per_repeat) >= 2 or pairs.empty:
        return t_mean(per_repeat)
    return paired_mean_change_pct(pairs["a"], pairs["b"])


def _per_repeat(rounds: pd.DataFrame, metric: str) -> dict[int, float]:
    return num(rounds, metric).groupby(rounds["repeat"]).mean().to_dict()


def reuse_buys(data: RunData, req: pd.DataFrame) -> pd.DataFrame:
    """Per scenario (fresh stacks) and round: each headline metric with vs without the cache, its
    change in %, the interval of that change, and the typical per-prompt TTFT change. `req`: the
    run's successful requests (data.ok_requests)."""
    r = data.rounds
    if r.empty or not {"with-cache", "baseline"} <= set(r["mode"]):
        return pd.DataFrame()
    r = r[r["isolation"].isin(ISOLATED) & ~num(r, "partial").fillna(0).astype(bool)]
    rows = []
    r = r.assign(point=r["point"] if "point" in r else "")
    for (scen, point, rnd), g in r.groupby(["scenario", "point", "round"], sort=False):
        base, cache = g[g["mode"] == "baseline"], g[g["mode"] == "with-cache"]
        if base.empty or cache.empty:
            continue
        reps = sorted(set(base["repeat"]) & set(cache["repeat"]))
        row: dict = {
            "scenario": scen,
            "point": point,  # a sweep point: with and without the cache at the same settings
            "label": f"{scen} [{point}]" if point else scen,
            "round": int(rnd),
            "repeats": len(reps),
            "phase with cache": "/".join(sorted(set(cache["phase"].astype(str)))) if "phase" in cache else "?",
            # the measured warmth behind that word: share of prompt tokens served from cache
            "reused_pct_cache": float(num(cache, "reused_token_pct").mean()),
        }
        pairs = pair_up(side(req, base, int(rnd)), side(req, cache, int(rnd)))
        for metric in HEADLINE:
            b, c = _per_repeat(base, metric), _per_repeat(cache, metric)
            changes = [change_pct(b[k], c[k]) for k in reps]
            row[f"{metric}_base"], row[f"{metric}_cache"] = np.mean(list(b.values())), np.mean(list(c.values()))
            ch = mean_change(pairs, changes) if metric == "ttft_mean_ms" else t_mean(changes)
            row.update({f"{metric}_change": ch.estimate, f"{metric}_lo": ch.lo, f"{metric}_hi": ch.hi,
                        f"{metric}_method": ch.method})  # fmt: skip
        iv = per_prompt_change(pairs)
        row.update(paired_change=iv.estimate, paired_lo=iv.lo, paired_hi=iv.hi, pairs=iv.n, paired_method=iv.method)
        rows.append(row)
    return pd.DataFrame(rows)


def targets_vs_baseline(table: pd.DataFrame, ttft_reduction: float, tput_increase: float) -> pd.DataFrame:
    """The seed's targets checked against the with-cache vs baseline comparison: a TTFT reduction
    target of 60 is met by a mean TTFT change <= -60 %, a throughput target of 150 by >= +150 %."""
    if table.empty:
        return table

    def verdict(v: float, ok: bool) -> str:
        return "n/a" if math.isnan(v) else ("pass" if ok else "FAIL")

    return table.assign(
        ttft_target=[verdict(v, v <= -ttft_reduction) for v in table["ttft_mean_ms_change"]],
        tput_target=[verdict(v, v >= tput_increase) for v in table["req_per_s_change"]],
    )


def headline_round(table: pd.DataFrame) -> pd.DataFrame:
    """The row per scenario the verdict answers with: round 2 (the first warm round, the seed's
    "cache hit" round), or the last round a scenario has when it has no round 2."""
    if table.empty:
        return table
    rank = (table["round"] != 2).astype(int) * 1000 - table["round"]  # round 2 first, else the last
    return table.loc[rank.groupby(table["label"], sort=False).idxmin().to_numpy()]


def fidelity(data: RunData, req: pd.DataFrame) -> pd.DataFrame:
    """Per scenario: did the reused KV give the same output? At temperature 0 a reused KV that is
    right gives the same tokens; a mismatch is wrong KV (or numerical noise). The rate of prompts
    whose generated tokens are identical warm (rounds 2+) vs cold (round 1) with the cache, and
    with the cache vs baseline (same repeat, round and prompt), and which prompts differ.

    The check can only fail when the output depends on the prompt: `distinct outputs` (round 1)
    vs `distinct prompts` (texts, from requests.csv's prompt_hash, when prompts repeat; else ids).
    `informative`: "no" when several prompts all gave one output (identical text proves nothing),
    "weak" when the outputs are fewer than FEW_OUTPUTS of the prompts, "n/a" for a single prompt.
    `req`: data.ok_requests."""
    if req.empty or (req["out"] < 0).all():
        return pd.DataFrame()
    req = req[req["out"] >= 0]
    d = req["dir"].to_numpy(dtype=int)
    req = req.assign(
        mode=data.dirs["mode"].to_numpy()[d],
        scenario=data.dirs["scenario"].to_numpy()[d],
        iso=data.dirs["isolation"].to_numpy()[d],
        repeat=data.dirs["repeat"].to_numpy()[d],
    )
    req = req[req["iso"].isin(ISOLATED)]
    names = _PromptNames(data)
    rows = []
    for scen, g in req.groupby("scenario", sort=False):
        cache = g[g["mode"] == "with-cache"]
        cold = g[g["round"] == 1]
        prompts, outputs = int(g["pid"].nunique()), int((cold if len(cold) else g)["out"].nunique())
        if outputs < FEW_OUTPUTS * prompts:  # unless the prompts themselves repeat (5 questions, 30 requests)
            prompts = names.texts(g["dir"].unique()) or prompts
        informative = (
            "n/a" if prompts < 2 else "no" if outputs < 2 else "weak" if outputs < FEW_OUTPUTS * prompts else "yes"
        )
        row = {"scenario": scen, "distinct prompts": prompts, "distinct outputs": outputs, "informative": informative}
        row.update(_same(cache[cache["round"] == 1], cache[cache["round"] > 1], ["dir", "pid"], "warm vs cold", names))
        base = g[g["mode"] == "baseline"]
        row.update(_same(base, cache, ["repeat", "round", "pid"], "with cache vs baseline", names))
        rows.append(row)
    return pd.DataFrame(rows)


# Fewer distinct cold outputs than this share of the distinct prompts: the check is weak evidence.
FEW_OUTPUTS = 0.5


def _same(a: pd.DataFrame, b: pd.DataFrame, on: list[str], name: str, names: _PromptNames) -> dict:
    """Pairs of outputs of the same prompt; `differ`: the names of the prompts whose outputs differ."""
    pairs = a[[*on, "out"]].merge(b[[*on, "out"] + ([] if "dir" in on else ["dir"])], on=on, suffixes=("_a", "_b"))
    n = len(pairs)
    diff = pairs[pairs["out_a"] != pairs["out_b"]]
    return {
        f"{name} identical": n - len(diff),
        f"{name} pairs": n,
        f"{name} %": 100 * (n - len(diff)) / n if n else math.nan,
        f"{name} differ": names.of(diff["dir"], diff["pid"]),
    }


class _PromptNames:
    """Prompt ids and texts of a run's directories, read from their requests.csv only when needed
    (the loaded run keeps integer codes): to name the prompts whose outputs differ, and to count
    distinct prompt texts (prompt_hash) when few outputs may come from prompts that repeat."""

    ERRORS = (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError)

    def __init__(self, data: RunData) -> None:
        self._data = data
        self._raw: dict[int, pd.DataFrame | None] = {}

    def _read(self, d: int) -> pd.DataFrame | None:
        if d not in self._raw:
            path = self._data.run_dir / str(self._data.dirs["dir"].iloc[d]) / "requests.csv"
            try:
                raw = pd.read_csv(
                    path, usecols=lambda c: c in ("round", "prompt_id", "prompt_hash"), dtype=str, keep_default_na=False
                )
                raw = raw[num(raw, "round").notna()]  # the rows load_run keeps
            except (*self.ERRORS, KeyError):
                raw = None
            self._raw[d] = raw
        return self._raw[d]

    def _ids(self, d: int) -> dict[int, str]:
        """pid code -> prompt_id, aligning the directory's loaded rows with its file's rows."""
        raw, rows = self._read(d), self._data.requests
        rows = rows[rows["dir"] == d]
        if raw is None or "prompt_id" not in raw or len(raw) != len(rows):
            return {}
        if not (pd.to_numeric(raw["round"]).to_numpy() == rows["round"].to_numpy()).all():
            return {}
        return dict(zip(rows["pid"].to_numpy().tolist(), raw["prompt_id"], strict=True))

    def of(self, dirs: pd.Series, pids: pd.Series) -> list[str]:
        """Sorted names of these (dir, pid code) prompts (`#code` where the file does not say)."""
        ids = {d: self._ids(d) for d in set(dirs.tolist())}
        return sorted({ids[d].get(p, f"#{p}") for d, p in zip(dirs.tolist(), pids.tolist(), strict=True)})

    def texts(self, dirs: np.ndarray) -> int | None:
        """Distinct prompt texts over these directories; None when a file has no prompt hashes."""
        hashes: set[str] = set()
        for d in dirs.tolist():
            raw = self._read(int(d))
            if raw is None or "prompt_hash" not in raw or (raw["prompt_hash"] == "").all():
                return None
            hashes |= set(raw["prompt_hash"]) - {""}
        return len(hashes)
