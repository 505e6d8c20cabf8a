"""Stage 2, records: the typed rows (requests.csv, rounds.csv), the manifest, the metric registry."""

from harness.records.manifest import (
    ISOLATED,
    MODES,
    CellEntry,
    Manifest,
    Plan,
    ResetEvidence,
    Resumed,
    StackInfo,
    Status,
    cell_key,
    parse_cell_key,
)
from harness.records.rows import (
    REQUEST_COLUMNS,
    REQUEST_TEXT_DTYPES,
    ROUND_COLUMNS,
    Record,
    RequestRow,
    RoundSummary,
)

__all__ = [
    "ISOLATED",
    "MODES",
    "REQUEST_COLUMNS",
    "REQUEST_TEXT_DTYPES",
    "ROUND_COLUMNS",
    "CellEntry",
    "Manifest",
    "Plan",
    "Record",
    "RequestRow",
    "ResetEvidence",
    "Resumed",
    "RoundSummary",
    "StackInfo",
    "Status",
    "cell_key",
    "parse_cell_key",
]
