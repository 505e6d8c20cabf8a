"""The typed records at the pipeline's seams, each written and read back by the same model.

- `RequestRow`: one line of requests.csv (runner -> results -> stats, report);
- `RoundSummary`: one line of rounds.csv (stats + reuse + probes -> report), its figures
  declared by the metric registry (metrics.METRICS);
- `Manifest` and its `CellEntry`s: manifest.json (records/manifest.py).

Every model forbids unknown fields: a column or key nobody declared is an error when it is
written, not a silent drop. CSV columns and their order come from the models.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, create_model, model_validator

from harness.config import Api
from harness.records.metrics import COUNTER_COLUMNS, METRICS


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)

    def set(self, **values: Any) -> None:
        """Assign several fields, each validated (an unknown one raises)."""
        for k, v in values.items():
            setattr(self, k, v)


# ------------------------------------------------------------------ requests.csv


class RequestRow(Record):
    """One request as it went. Times in ms on the monotonic clock; token counts from the server's usage."""

    scenario: str
    round: int
    index: int  # position in the workload: the same prompt has the same index every round
    prompt_id: str
    prompt_hash: str
    session_id: str
    turn: int
    api: Api
    ok: bool
    http_status: int | None
    error_class: str
    error_message: str
    send_s: float | None  # since the scenario's first send
    scheduled_s: float | None = None  # when a trace replay meant to send it (same clock as send_s)
    ttft_ms: float | None
    first_token_lag_ms: float | None
    read_delay_ms: float | None
    tpot_ms: float | None
    e2e_ms: float | None
    itl_ms: str  # space-separated inter-token latencies
    n_itl: int
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    expected_prompt_tokens: int
    shared_prefix_tokens: int
    prefix_key: str
    provides_prefix_key: str
    output_chars: int
    output_hash: str
    prefix_blocks: str  # chained block keys of the served prompt (reuse.block_chain)


REQUEST_COLUMNS = RequestRow.columns()
# Text columns stay text when read back (an all-empty column would otherwise read as floats).
REQUEST_TEXT_DTYPES = {name: str for name, f in RequestRow.model_fields.items() if f.annotation in (str, Api)}


# ------------------------------------------------------------------ rounds.csv


def _nan_is_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _none_is_nan(v: Any) -> Any:
    return math.nan if v is None or (isinstance(v, str) and not v.strip()) else v


Num = Annotated[float, BeforeValidator(_none_is_nan)]  # a figure; missing or unknown is NaN
Count = Annotated[int | None, BeforeValidator(_nan_is_none)]  # integer or unknown
Text = Annotated[str | None, BeforeValidator(_nan_is_none)]
Flag = Annotated[bool | None, BeforeValidator(_nan_is_none)]


class _RoundBase(Record):
    @model_validator(mode="before")
    @classmethod
    def _older_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "prompt_tokens_x" in data:  # rounds.csv of runs before 2026-11-24
            data = {("prompt_tokens" if k == "prompt_tokens_x" else k): v for k, v in data.items()}
        return data


# One rounds.csv row: identity, then every registry metric (metrics.METRICS: figures, NaN when
# unknown), the round's labels, then the server's counters (metrics.COUNTER_COLUMNS, scraped by
# probes). Only `round` is required: a rounds.csv of an older or interrupted run may lack columns.
_IDENTITY: dict[str, Any] = {
    "scenario": (Text, None),
    "mode": (Text, None),
    "isolation": (Text, None),
    "repeat": (Count, None),
    "round": (int, ...),
}
_LABELS: dict[str, Any] = {
    "phase": (Text, None),  # measured warmth: cold / partly warm / warm (stats.warmth)
    "planned": (Count, None),  # requests the round should have sent
    "partial": (Flag, None),  # cut short: no verdict
    "degraded": (Flag, None),  # the store's reads failed above the threshold: not a measurement of the cache
    "ttft_target_met": (Flag, None),
    "throughput_target_met": (Flag, None),
    "engine_url": (Text, None),  # which engine served the round (cross-instance: A, then B)
    "counter_resets": (Text, None),  # counters that went down during the round (engine restart): unknown deltas
    "ttft_gap_note": (Text, None),  # why the client-server TTFT gap is not computed
}
RoundSummary: type[_RoundBase] = create_model(  # type: ignore[call-overload]
    "RoundSummary",
    __base__=_RoundBase,
    **_IDENTITY,
    **{c: (Num, math.nan) for c in METRICS},
    **_LABELS,
    **{c: (Num, math.nan) for c in COUNTER_COLUMNS if c not in METRICS},
)
ROUND_COLUMNS = RoundSummary.columns()
