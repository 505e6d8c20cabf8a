"""Confidence intervals that cover what they claim (checked by simulation in tests/test_intervals.py).

Two facts get an interval:

* a mean over independent repeats (one value per repeat, e.g. a repeat's throughput gain):
  `t_interval`, the Student-t interval. With 2 or 3 repeats only the t quantile (12.7 and
  4.3 at 95 %) is honest; a bootstrap over 2 values can only return their range, which
  holds the true mean half of the time.
* the paired change of the same prompts' TTFT between two conditions (round 1 -> round 2,
  baseline -> with cache): `paired_ratio_bca` (typical speed-up a/b) and
  `paired_change_pct_bca` (typical TTFT change in %). Both are one computation: the mean
  per-prompt log ratio and its interval, shown on two scales.
* the change of the mean TTFT between two conditions, paired by prompt:
  `paired_mean_change_pct` (100 * (mean(b) / mean(a) - 1), the figure a "TTFT mean change"
  column shows), BCa over prompts of the log ratio of the two means.

Sign convention, everywhere: a change in % is 100 * (new / old - 1): negative = lower (a
faster TTFT), positive = higher (more throughput). Every interval returned here contains its
own point estimate (a bootstrap interval that would not - possible only for degenerate
resamples - is replaced by the normal-theory one, which is centred on the estimate).

Why the geometric mean of per-prompt ratios: a cache saves a share of each prompt's time
(a long prompt saves more milliseconds than a short one), so per-prompt speed-ups are
multiplicative and comparable across prompts of any length, while the mean of
differences is dominated by the longest prompts. The log of a ratio is a difference
of logs: roughly symmetric, with light tails, so its mean is nearly normal even for a few
dozen prompts and a bootstrap of it covers well (a raw ratio is skewed: one stalled
prompt at 10x its usual TTFT moves a mean of ratios far more than a mean of logs).
Pairing removes per-prompt difficulty (a long prompt is slow in both rounds) from the
noise, so the interval is as narrow as the data allow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The t and normal distributions come from scipy.special, imported where they are used: every
# `kvbench` command imports this module at start (--help included), long before an interval is
# computed. Not from scipy.stats: its import took 1.3 s of CPU in every process that writes a
# report, scipy.special's 0.2 s (tests/test_intervals.py checks the figures against scipy.stats).

# Below this many pairs a bootstrap cannot see the tails (the 3 points of 3 pairs give at most
# 10 distinct resample means), and the Student-t interval of the mean log ratio is used instead.
BCA_MIN_PAIRS = 10
# Above this many pairs BCa's skewness and bias corrections (which shrink as 1/sqrt(n)) are a
# fraction of a percent of the interval's width, and the t (by then: normal) interval is used.
BCA_MAX_PAIRS = 10_000
_BATCH_VALUES = 2_000_000  # resampled values held at once (16 MB): bounds the bootstrap's memory


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval (lo, hi are NaN when there is none); n: pairs used;
    method: how the interval was made, or why there is none."""

    estimate: float
    lo: float
    hi: float
    n: int
    method: str


def t_mean(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of independent values (one per repeat) and its Student-t interval (`t_interval`)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return Interval(math.nan, math.nan, math.nan, 0, "n/a (no values)")
    lo, hi = t_interval(v, level)
    method = f"t over {len(v)} repeats" if len(v) >= 2 else "no CI: 1 repeat"
    return Interval(float(v.mean()), lo, hi, len(v), method)


def change_pct(before: float, after: float) -> float:
    """100 * (after / before - 1): the one sign convention (negative = lower); NaN when undefined."""
    if not before or math.isnan(before) or math.isnan(after):
        return math.nan
    return (after / before - 1.0) * 100.0


def _contains(iv: Interval) -> bool:
    return math.isnan(iv.lo) or iv.lo <= iv.estimate <= iv.hi


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of independent values (one per repeat).

    Non-finite values are dropped; with fewer than 2 left there is no interval over repeats
    (NaN, NaN). Exact for normal values at any n; at 2-5 repeats bootstrap and z intervals
    are far too narrow (a 95 % bootstrap over 2 values covers 50 %, a z-interval 70 %)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 2:
        return math.nan, math.nan
    from scipy import special

    mean = float(v.mean())
    half = float(special.stdtrit(n - 1, 0.5 + level / 2) * v.std(ddof=1) / math.sqrt(n))
    return mean - half, mean + half


def _expanded_level(level: float, n: int) -> float:
    """Hesterberg's small-sample expansion of a bootstrap interval's level (as R's `resample`
    package does by default): the level whose normal quantile is sqrt(n/(n-1)) t_{n-1}.

    A bootstrap interval is too narrow for small samples, for the reasons a z-interval with
    the plug-in standard deviation is: it divides by n instead of n - 1 and it has no t tail.
    In tests/test_intervals.py's simulation plain BCa covered 89.8 % at 10 pairs and about
    92.7 % at 30 (nominal 95 %); expanded, 93.9 % and 95.0 %. The expansion fades as n
    grows (level 95 % -> 96.2 % at 30 pairs, 95.4 % at 100)."""
    from scipy import special

    z = math.sqrt(n / (n - 1)) * special.stdtrit(n - 1, 0.5 + level / 2)
    return float(2 * special.ndtr(z) - 1)


def _resampled_means(columns: list[np.ndarray], n_resamples: int, seed: int) -> list[np.ndarray]:
    """Each column's mean in `n_resamples` bootstrap resamples of the rows (the same rows for every
    column: pairs stay together)."""
    n = len(columns[0])
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in columns]
    step = max(1, _BATCH_VALUES // n)
    for start in range(0, n_resamples, step):
        idx = rng.integers(0, n, (min(step, n_resamples - start), n))
        for acc, c in zip(out, columns):
            acc.append(c[idx].mean(axis=1))
    return [np.concatenate(acc) for acc in out]


def _bca(est: float, boot: np.ndarray, jack: np.ndarray, level: float) -> tuple[float, float]:
    """The BCa interval (Efron 1987; what scipy.stats.bootstrap's "BCa" computes) from the bootstrap
    replicates and the jackknife (leave-one-out) values of the statistic. The leave-one-out values
    of a mean are closed-form, so this costs O(n) where scipy's generic jackknife costs O(n^2).
    NaN when the corrections are undefined (too few distinct values)."""
    from scipy import special

    with np.errstate(all="ignore"):
        z0 = special.ndtri(np.mean(boot < est))
        dev = jack.mean() - jack
        accel = np.sum(dev**3) / (6 * np.sum(dev**2) ** 1.5)
        z = special.ndtri(np.array([(1 - level) / 2, (1 + level) / 2]))
        alpha = special.ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    if not np.all(np.isfinite(alpha)):
        return math.nan, math.nan
    lo, hi = np.percentile(boot, 100 * alpha)
    return float(lo), float(hi)


def _mean_log_ratio(a: Sequence[float], b: Sequence[float], level: float, n_resamples: int, seed: int) -> Interval:
    """Mean of the per-pair log(a/b) and its interval, on the log scale. Pairs where either
    value is missing, non-finite or not positive are dropped."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError(f"paired values need the same length: {xa.shape} vs {xb.shape}")
    keep = np.isfinite(xa) & np.isfinite(xb) & (xa > 0) & (xb > 0)
    d = np.log(xa[keep]) - np.log(xb[keep])
    n = len(d)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "n/a (no pairs)")
    est = float(d.mean())
    if n < 3:
        return Interval(est, math.nan, math.nan, n, f"n/a ({n} pairs)")
    if np.ptp(d) <= 1e-12:  # every pair has the same ratio (up to rounding): nothing to resample
        return Interval(est, math.nan, math.nan, n, "n/a (all ratios equal)")
    if n < BCA_MIN_PAIRS:
        return Interval(est, *t_interval(d, level), n, f"t (n<{BCA_MIN_PAIRS})")
    if n > BCA_MAX_PAIRS:
        return Interval(est, *t_interval(d, level), n, f"t, normal theory (n>{BCA_MAX_PAIRS})")
    # Resampling the per-pair log ratios resamples whole prompts: both of a prompt's TTFTs
    # stay together.
    (boot,) = _resampled_means([d], n_resamples, seed)
    jack = (d.sum() - d) / (n - 1)  # leave-one-out means
    lo, hi = _bca(est, boot, jack, _expanded_level(level, n))
    if not (math.isfinite(lo) and math.isfinite(hi)):  # near-degenerate: BCa's corrections undefined
        return Interval(est, math.nan, math.nan, n, "n/a (BCa undefined: too few distinct ratios)")
    iv = Interval(est, lo, hi, n, f"BCa, expanded ({n_resamples} resamples)")
    return iv if _contains(iv) else Interval(est, *t_interval(d, level), n, "t (BCa excluded its estimate)")


def paired_ratio_bca(
    a: Sequence[float], b: Sequence[float], level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Interval:
    """Typical per-prompt speed-up a/b: the geometric mean of the ratios, exp(mean(log(a/b))),
    with its interval.

    a, b: the same prompts' TTFTs, aligned, under condition A (baseline / round 1) and B
    (with cache / round 2); 8.0 means B's TTFT is typically 1/8 of A's. The interval is a
    BCa bootstrap over prompts (10-10,000 usable pairs), Student-t for fewer or more
    (Interval.method says which); NaN with fewer than 3 pairs or when all ratios are equal.
    Never raises on data."""
    r = _mean_log_ratio(a, b, level, n_resamples, seed)
    return Interval(math.exp(r.estimate), math.exp(r.lo), math.exp(r.hi), r.n, r.method)


def paired_change_pct_bca(
    a: Sequence[float], b: Sequence[float], level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Interval:
    """The same fact as `paired_ratio_bca`, as a TTFT change in percent: (gm(b/a) - 1) * 100,
    so -88 means B's TTFT is typically 88 % lower than A's. The same interval, mapped: the
    map is monotone, so the mapped interval covers the mapped true value exactly as often."""
    r = _mean_log_ratio(a, b, level, n_resamples, seed)

    def pct(log_ab: float) -> float:
        return (math.exp(-log_ab) - 1) * 100

    return Interval(pct(r.estimate), pct(r.hi), pct(r.lo), r.n, r.method)  # decreasing: ends swap


def _pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError(f"paired values need the same length: {xa.shape} vs {xb.shape}")
    keep = np.isfinite(xa) & np.isfinite(xb) & (xa > 0) & (xb > 0)
    return xa[keep], xb[keep]


def _log_mean_ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.log(np.mean(b, axis=axis)) - np.log(np.mean(a, axis=axis))


def _delta_t(a: np.ndarray, b: np.ndarray, level: float) -> tuple[float, float]:
    """Normal-theory interval of log(mean(b) / mean(a)), centred on it: the delta method's
    influence values b/mean(b) - a/mean(a) (the pairing is in their variance), Student-t."""
    u = b / b.mean() - a / a.mean()
    lo, hi = t_interval(u, level)
    est, mid = float(_log_mean_ratio(a, b)), float(u.mean())  # mid is 0 up to rounding
    return est + lo - mid, est + hi - mid


def paired_mean_change_pct(
    a: Sequence[float], b: Sequence[float], level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Interval:
    """The change of the mean TTFT from A to B in %, 100 * (mean(b) / mean(a) - 1), over the same
    prompts (a, b aligned by prompt), with its interval: BCa over prompts (whole pairs resampled,
    10-10,000 usable pairs, level expanded for small samples as in `paired_ratio_bca`) of the log
    ratio of the means, else the delta method's t interval. -40 means B's mean is 40 % lower.

    This is the estimand of a "TTFT mean change" figure; `paired_change_pct_bca` is the typical
    per-prompt change (geometric mean), a different fact. Never raises on data."""
    xa, xb = _pairs(a, b)
    n = len(xa)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "n/a (no pairs)")

    def pct(log_r: float) -> float:
        return (math.exp(log_r) - 1) * 100

    est = float(_log_mean_ratio(xa, xb))
    if n < 3:
        return Interval(pct(est), math.nan, math.nan, n, f"n/a ({n} pairs)")
    if np.ptp(np.log(xb) - np.log(xa)) <= 1e-12:  # b = c * a for every prompt: the ratio of means is c, exactly
        return Interval(pct(est), math.nan, math.nan, n, "n/a (all ratios equal)")
    lo, hi = _delta_t(xa, xb, level)
    method = f"t, delta method (n<{BCA_MIN_PAIRS})" if n < BCA_MIN_PAIRS else f"t, delta method (n>{BCA_MAX_PAIRS})"
    if BCA_MIN_PAIRS <= n <= BCA_MAX_PAIRS:
        ma, mb = _resampled_means([xa, xb], n_resamples, seed)
        jack = np.log((xb.sum() - xb) / (n - 1)) - np.log((xa.sum() - xa) / (n - 1))  # leave-one-out
        blo, bhi = _bca(est, np.log(mb) - np.log(ma), jack, _expanded_level(level, n))
        if math.isfinite(blo) and math.isfinite(bhi) and blo <= est <= bhi:
            lo, hi, method = blo, bhi, f"BCa, expanded ({n_resamples} resamples)"
        else:
            method = "t, delta method (BCa undefined or excluded its estimate)"
    return Interval(pct(est), pct(lo), pct(hi), n, method)


# ------------------------------------------------------------------ changes over repeats


def repeats_change_pct(changes: Sequence[float], level: float = 0.95) -> Interval:
    """The typical change over independent repeats (stacks), from each repeat's change in %:
    the mean of the repeats' log ratios log(1 + change / 100), its Student-t interval, both
    mapped back to % (100 * (exp(x) - 1)). A ratio lives on (0, inf): averaging % changes with a
    t interval on the % scale can put a bound below -100 % (changes of -95 and -60 gave
    [-299.9, +144.9]); on the log scale every bound is a possible change, and the estimate is
    the geometric mean of the repeats' ratios. One repeat: its change and no interval over
    repeats. Changes <= -100 % (or NaN) have no log and are dropped."""
    c = np.asarray(changes, dtype=float)
    c = c[np.isfinite(c) & (c > -100)]
    if not len(c):
        return Interval(math.nan, math.nan, math.nan, 0, "n/a (no values)")
    logs = np.log1p(c / 100)
    est = math.expm1(float(logs.mean())) * 100  # math's expm1, as for the bounds: numpy's can differ in the last bit
    if len(c) < 2:
        return Interval(est, math.nan, math.nan, 1, "no CI: 1 repeat")
    lo, hi = t_interval(logs, level)
    return Interval(est, math.expm1(lo) * 100, math.expm1(hi) * 100, len(c), f"t over {len(c)} repeats, log ratios")


def geometric_mean(values: Sequence[float]) -> float:
    """exp(mean(log v)) over the positive finite values (NaN without any): the mean that goes with a
    change averaged on the log scale (the ratio of two geometric means is the geometric mean of the
    per-repeat ratios)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.exp(np.log(v).mean())) if len(v) else math.nan


# ------------------------------------------------------------------ verdicts read from an interval

MET, NOT_MET, INCONCLUSIVE = "met", "not met", "inconclusive"


def target_verdict(estimate: float, lo: float, hi: float, target: float, better: str) -> str:
    """A target read from the interval of the change, not from its point estimate: "met" when the
    whole interval is at or beyond the target (<= target when lower is better, >= when higher),
    "not met" when the whole interval falls short of it, "inconclusive" when it straddles the
    target or there is no interval (one value per stack: nothing says how far it could move);
    "n/a" without a figure."""
    if math.isnan(estimate):
        return "n/a"
    if math.isnan(lo) or math.isnan(hi) or math.isnan(target):
        return INCONCLUSIVE
    if better == "lower":
        return MET if hi <= target else (NOT_MET if lo > target else INCONCLUSIVE)
    return MET if lo >= target else (NOT_MET if hi < target else INCONCLUSIVE)


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down rejections (family-wise error <= alpha over the m tests): the k-th smallest
    p-value (k = 0, 1, ...) is compared with alpha / (m - k), stopping at the first that is not
    below it. NaN p-values are never rejected (and still count in m)."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(np.where(np.isnan(p), np.inf, p), kind="stable")
    reject = np.zeros(m, dtype=bool)
    for k, i in enumerate(order):
        if not p[i] <= alpha / (m - k):  # NaN-safe
            break
        reject[i] = True
    return reject.tolist()


# ------------------------------------------------------------------ tail percentiles on few samples


def min_samples_for_quantile(q: float, level: float = 0.95) -> int:
    """The fewest samples for which a distribution-free two-sided `level` interval of the q-quantile
    has an upper bound (the order-statistic interval, scipy.stats.quantile_test's): the sample
    maximum lies above the true q-quantile with probability 1 - q^n, which must reach
    1 - (1 - level) / 2. At 95 %: p90 36 samples, p99 368. Below that a p90 or p99 is about the
    sample's maximum and nothing bounds how far the true one lies above it."""
    return math.ceil(math.log((1 - level) / 2) / math.log(q))


def quantile_supported(n: float, q: float, level: float = 0.95) -> bool:
    """Does a sample of `n` values support its q-quantile (an upper bound exists)? False for NaN n."""
    return bool(n >= min_samples_for_quantile(q, level))  # NaN-safe: NaN >= x is False


# ------------------------------------------------------------------ equivalence (TOST)


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests of a mean log ratio against +-margin: the ratio exp(estimate) and its
    (1 - 2 alpha) t interval as % changes, the larger one-sided p-value, and the verdict."""

    estimate: float  # % change, 100 * (gm ratio - 1)
    lo: float
    hi: float
    n: int
    p: float
    margin_pct: float
    equivalent: bool


def tost_log_ratio(ratios: Sequence[float], margin_pct: float = 10.0, alpha: float = 0.05) -> Equivalence:
    """Equivalence of a ratio to 1 within +-margin_pct %, from one ratio per independent unit (a
    stack pair): TOST on the log ratios with Student-t, bounds log(1 - m) and log(1 + m).
    Equivalent iff both one-sided tests reject at alpha, which is the (1 - 2 alpha) t interval
    (90 % at alpha 0.05) lying inside the bounds. Fewer than 2 usable ratios: never equivalent."""
    r = np.asarray(ratios, dtype=float)
    logs = np.log(r[np.isfinite(r) & (r > 0)])
    n, m = len(logs), margin_pct / 100
    low, high = math.log(1 - m), math.log(1 + m)
    if n < 2:
        est = _pct(float(logs.mean())) if n else math.nan
        return Equivalence(est, math.nan, math.nan, n, math.nan, margin_pct, False)
    from scipy import special

    # scipy.stats.ttest_1samp's one-sided p-values, from the t distribution (see the note on scipy above).
    se = logs.std(ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_low = special.stdtr(n - 1, -(logs.mean() - low) / se)  # H1: mean > low
        p_high = special.stdtr(n - 1, (logs.mean() - high) / se)  # H1: mean < high
    lo, hi = t_interval(logs, 1 - 2 * alpha)
    p = float(max(p_low, p_high))
    return Equivalence(_pct(float(logs.mean())), _pct(lo), _pct(hi), n, p, margin_pct, bool(p < alpha))


def _pct(log_ratio: float) -> float:
    return math.expm1(log_ratio) * 100
