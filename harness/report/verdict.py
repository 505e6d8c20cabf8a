"""What reuse buys: the same prompts with the KV connector and without it (baseline), and whether
the reused KV gave the same output.

Round-over-round figures compare round 2 with a round 1 that is itself mostly warm whenever a
scenario's requests share a prefix; the honest comparison is with-cache vs baseline, round by
round, on the same prompts, each on its own fresh stack. Every change is 100 * (with / without - 1)
(negative: lower TTFT, positive: more throughput), and every interval is for the figure beside it
(harness.intervals):

* TTFT mean change: one repeat, the change of the mean over the prompts answered in both (paired by
  prompt, BCa over prompts: an interval over the prompts of one stack, which leaves out how much
  another stack would differ); several repeats, the geometric mean of the repeats' ratios with a
  Student-t interval over their log ratios (every bound a possible change, never below -100 %);
* per-prompt TTFT change (the geometric mean of each prompt's ratio): BCa over prompts, or
  Student-t over the repeats' log ratios;
* other metrics (percentiles, throughput): Student-t over the repeats' log ratios; none with one
  repeat (one value per stack).

Each row says which noise its intervals span (`spans`). Fresh and reset cells are never pooled:
a prompt is paired with itself in the same repeat and isolation only.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.analysis.frames import num
from harness.analysis.intervals import (
    Interval,
    change_pct,
    geometric_mean,
    paired_change_pct_bca,
    paired_mean_change_pct,
    repeats_change_pct,
    target_verdict,
)
from harness.analysis.stats import tail_support
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
    prompts; several, each repeat's estimate and Student-t over their log ratios."""
    if pairs.empty:
        return NO_PAIRS
    per_rep = [paired_change_pct_bca(g["a"], g["b"]) for _, g in pairs.groupby("repeat")]
    if len(per_rep) == 1:
        return per_rep[0]
    iv = repeats_change_pct([x.estimate for x in per_rep])
    return Interval(iv.estimate, iv.lo, iv.hi, len(pairs), iv.method)


def mean_change(pairs: pd.DataFrame, per_repeat: list[float]) -> Interval:
    """The change of the mean TTFT A -> B. Several repeats: the geometric mean of the repeats'
    ratios (`per_repeat`: their changes in %, from rounds.csv), Student-t over their log ratios.
    One repeat: over the prompts answered under both, paired by prompt, BCa over prompts (an
    interval over the prompts of one stack: within-run); without request rows, the one figure
    and no interval."""
    if len(per_repeat) >= 2 or pairs.empty:
        return repeats_change_pct(per_repeat)
    return paired_mean_change_pct(pairs["a"], pairs["b"])


def _per_repeat(rounds: pd.DataFrame, metric: str) -> dict[int, float]:
    return num(rounds, metric).groupby(rounds["repeat"]).mean().to_dict()


WITHIN_RUN = "prompts of one stack"


def spans(repeats: int, stacks: int, isolation: str) -> str:
    """Which noise an interval over these cells spans, in words: the prompts of one stack (one
    repeat: within-run; it leaves out how much a second stack would differ), or the repeats and
    the stacks they ran on (isolation reset runs repeats on one stack after verified resets)."""
    if repeats <= 1:
        return WITHIN_RUN
    if isolation == "reset":
        return f"{repeats} repeats after verified resets on {stacks} stack(s) per arm"
    return f"{repeats} stacks per arm"


def _stacks(data: RunData, cells: pd.DataFrame) -> int:
    """Distinct stacks (compose projects) these rounds.csv rows ran on."""
    dirs = data.dirs
    if "entry" not in dirs or "dir" not in cells:
        return int(cells["repeat"].nunique())
    projects = {getattr(dirs["entry"].iloc[int(d)], "project", "") or f"#{d}" for d in set(cells["dir"])}
    return len(projects)


def _label(scen: str, iso: str, point: str) -> str:
    tags = [t for t in (iso if iso != "fresh" else "", point) if t]
    return f"{scen} [{', '.join(tags)}]" if tags else scen


def reuse_buys(data: RunData, req: pd.DataFrame) -> pd.DataFrame:
    """Per scenario, isolation (fresh stacks, or verified resets: never pooled, each its own row and
    pairs) and round: each headline metric with vs without the cache, its change in %, the
    interval of that change, which noise that interval spans, and the typical per-prompt TTFT
    change. With several repeats the with / without figures are geometric means over the same
    repeats as the change, so the change is exactly their ratio. `req`: the run's successful
    requests (data.ok_requests)."""
    r = data.rounds
    if r.empty or not {"with-cache", "baseline"} <= set(r["mode"]):
        return pd.DataFrame()
    r = r[r["isolation"].isin(ISOLATED) & ~num(r, "partial").fillna(0).astype(bool)]
    rows = []
    r = r.assign(point=r["point"] if "point" in r else "")
    for (scen, iso, point, rnd), g in r.groupby(["scenario", "isolation", "point", "round"], sort=False):
        base, cache = g[g["mode"] == "baseline"], g[g["mode"] == "with-cache"]
        reps = sorted(set(base["repeat"]) & set(cache["repeat"]))
        if not reps:
            continue
        base, cache = base[base["repeat"].isin(reps)], cache[cache["repeat"].isin(reps)]
        row: dict = {
            "scenario": scen,
            "isolation": iso,
            "point": point,  # a sweep point: with and without the cache at the same settings
            "label": _label(scen, iso, point),
            "round": int(rnd),
            "repeats": len(reps),
            "spans": spans(len(reps), _stacks(data, cache), iso),
            "phase with cache": "/".join(sorted(set(cache["phase"].astype(str)))) if "phase" in cache else "?",
            # the measured warmth behind that word: share of prompt tokens served from cache
            "reused_pct_cache": float(num(cache, "reused_token_pct").mean()),
        }
        pairs = pair_up(side(req, base, int(rnd)), side(req, cache, int(rnd)))
        requests = float(num(pd.concat([base, cache]), "successes").min())  # the smallest round behind a figure
        for metric in HEADLINE:
            b, c = _per_repeat(base, metric), _per_repeat(cache, metric)
            changes = [change_pct(b[k], c[k]) for k in reps]
            row[f"{metric}_base"] = geometric_mean([b[k] for k in reps])
            row[f"{metric}_cache"] = geometric_mean([c[k] for k in reps])
            row[f"{metric}_support"] = why = tail_support(metric, requests)
            ch = mean_change(pairs, changes) if metric == "ttft_mean_ms" else repeats_change_pct(changes)
            if why:  # a tail percentile of too few requests is about their maximum: no change of it is shown
                ch = Interval(math.nan, math.nan, math.nan, ch.n, f"hidden: percentile of too few requests ({why})")
            row.update({f"{metric}_change": ch.estimate, f"{metric}_lo": ch.lo, f"{metric}_hi": ch.hi,
                        f"{metric}_method": ch.method})  # fmt: skip
        iv = per_prompt_change(pairs)
        row.update(paired_change=iv.estimate, paired_lo=iv.lo, paired_hi=iv.hi, pairs=iv.n, paired_method=iv.method)
        rows.append(row)
    return pd.DataFrame(rows)


def targets_vs_baseline(table: pd.DataFrame, ttft_reduction: float, tput_increase: float) -> pd.DataFrame:
    """The seed's targets checked against the with-cache vs baseline comparison, read from each
    change's interval (intervals.target_verdict): a TTFT reduction target of 60 is met when the
    whole interval of the mean TTFT change is <= -60 %, not met when all of it is above, and
    inconclusive when it straddles -60 or there is none; a throughput target of 150 alike at +150 %."""
    if table.empty:
        return table
    return table.assign(
        ttft_target=[target_verdict(*x, -ttft_reduction, "lower")
                     for x in zip(table["ttft_mean_ms_change"], table["ttft_mean_ms_lo"], table["ttft_mean_ms_hi"])],
        tput_target=[target_verdict(*x, tput_increase, "higher")
                     for x in zip(table["req_per_s_change"], table["req_per_s_lo"], table["req_per_s_hi"])],
    )  # fmt: skip


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
        row["check"] = _check(row)
        rows.append(row)
    return pd.DataFrame(rows)


def _check(row: dict) -> str:
    """The fidelity check's verdict: FAIL when any reused KV changed an output (the prompts are named
    beside it), pass when every pair agreed and the outputs depend on the prompt, otherwise why it
    cannot tell."""
    names = (*row["warm vs cold differ"], *row["with cache vs baseline differ"])
    if n := len(set(names)):
        return f"FAIL: the output changed with reused KV for {n} prompt{'s' if n > 1 else ''}"
    if not (row["warm vs cold pairs"] or row["with cache vs baseline pairs"]):
        return "n/a: no pairs"
    return "no evidence" if row["informative"] == "no" else "pass"


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
