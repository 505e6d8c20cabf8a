"""Reading figures out of frames, the one way every stage does it: a numeric column (`num`, and
`nums` its numbers as an array), a number (`number`) and a CSV boolean (`truthy`).

A column a CSV does not have (an older or interrupted run's) reads as all-NaN, a cell that does not
parse as NaN: "unknown", never 0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

TRUE_WORDS = ("true", "1", "1.0", "yes")


def num(df: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column, NaN where missing or unparsable; all-NaN when the frame does not have it."""
    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce")
    return pd.Series(math.nan, index=df.index, dtype=float)


def nums(df: pd.DataFrame, name: str) -> np.ndarray:
    """The column's numbers (missing and unparsable cells left out); none when it is absent."""
    return num(df, name).dropna().to_numpy(dtype=float)


def number(value: object) -> float:
    """One value as a float, NaN when it is missing or does not parse."""
    v = pd.to_numeric(value, errors="coerce")
    return float(v) if pd.notna(v) else math.nan


def truthy(s: pd.Series) -> pd.Series:
    """CSV booleans ("True"/"False", 1/0, or already bool) as a bool Series; anything else is False."""
    if s.dtype == bool:
        return s
    if isinstance(s.dtype, pd.CategoricalDtype):  # one look-up per category, not per row
        cats = pd.Index(s.cat.categories).astype(str).str.strip().str.lower().isin(TRUE_WORDS)
        codes = s.cat.codes.to_numpy()
        hit = np.zeros(len(s), dtype=bool) if not len(cats) else (codes >= 0) & cats[codes.clip(0)]
        return pd.Series(hit, index=s.index)
    return s.astype(str).str.strip().str.lower().isin(TRUE_WORDS)
