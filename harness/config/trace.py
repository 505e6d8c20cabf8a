"""Request traces in the Mooncake FAST'25 format, and the token blocks a replay is made of.

One JSON object per line: `timestamp` (ms from the trace's start), `input_length` and
`output_length` (tokens), `hash_ids` (one id per `block`-token block of the input, 512 in the
published traces; equal ids at the same position are a reusable prefix).

A replay turns every hash id into a deterministic block of token ids (a function of the id and
the seed only), so equal ids give identical token prefixes; a request is its blocks cut to
`input_length`. Prompts are sent as token ids, so their length in the served model's tokens is
exact by construction.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TRACE_BLOCK = 512  # tokens per hash id in the published traces


class TraceError(ValueError):
    """A trace file that cannot be replayed; str() is one line naming the file and line."""


class TraceRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    timestamp: float = Field(ge=0)
    input_length: int = Field(gt=0)
    output_length: int = Field(gt=0)
    hash_ids: tuple[int, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _blocks_cover_the_input(self) -> TraceRecord:
        need = math.ceil(self.input_length / TRACE_BLOCK)
        if len(self.hash_ids) != need:
            raise ValueError(f"{len(self.hash_ids)} hash_ids for input_length {self.input_length} (expected {need})")
        return self


@functools.lru_cache(maxsize=8)
def _read(path: Path, mtime_ns: int) -> tuple[TraceRecord, ...]:
    out = []
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(TraceRecord.model_validate(json.loads(line)))
            except json.JSONDecodeError as e:
                raise TraceError(f"{path}:{n}: not JSON ({e.msg})") from None
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "record"
                raise TraceError(f"{path}:{n}: {where}: {err['msg'].removeprefix('Value error, ')}") from None
    if not out:
        raise TraceError(f"{path}: no requests")
    return tuple(out)


def read_trace(path: Path) -> tuple[TraceRecord, ...]:
    """Every record of the file, validated (TraceError naming the file and line otherwise)."""
    try:
        return _read(path, path.stat().st_mtime_ns)
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"{path}: cannot read: {e}") from None


@dataclass(frozen=True)
class Selection:
    records: list[TraceRecord]  # in trace order
    skipped_too_long: int  # selected by count/window, but longer than the model's context


def select(
    records: Sequence[TraceRecord],
    *,
    num_requests: int | None,
    start_ms: float = 0.0,
    end_ms: float | None = None,
    max_total_tokens: int | None = None,
    max_input_length: int | None = None,
) -> Selection:
    """The requests in [start_ms, end_ms), the first `num_requests` of them; those whose input plus
    output would not fit `max_total_tokens` (the served model's context), or whose input is longer
    than `max_input_length`, are skipped and counted."""
    window = [r for r in records if r.timestamp >= start_ms and (end_ms is None or r.timestamp < end_ms)]
    window = window[:num_requests] if num_requests else window
    fits = [
        r
        for r in window
        if (max_total_tokens is None or r.input_length + r.output_length <= max_total_tokens)
        and (max_input_length is None or r.input_length <= max_input_length)
    ]
    return Selection(fits, len(window) - len(fits))


class BlockMaker:
    """Token-id blocks per hash id. `vocab`: ordinary token ids of the served model to draw from
    (never special tokens); the same (vocab, seed, id) always gives the same block."""

    def __init__(self, vocab: Sequence[int], seed: int | str, block: int = TRACE_BLOCK) -> None:
        if len(vocab) < 16:
            raise ValueError(f"a vocabulary of {len(vocab)} token ids is too small to tell blocks apart")
        self._vocab = list(vocab)
        self._seed = seed
        self.block = block
        self._cache: dict[int, list[int]] = {}

    def block_ids(self, hash_id: int) -> list[int]:
        if hash_id not in self._cache:
            rng = random.Random(f"{self._seed}:block:{hash_id}")
            self._cache[hash_id] = rng.choices(self._vocab, k=self.block)
        return self._cache[hash_id]

    def prompt_ids(self, rec: TraceRecord) -> list[int]:
        out: list[int] = []
        for h in rec.hash_ids:
            out += self.block_ids(h)
        return out[: rec.input_length]


def shared_prefix_blocks(records: Sequence[TraceRecord]) -> list[int]:
    """Per request: how many leading hash ids an earlier request of the sequence also began with
    (prefix-only, as the engine reuses). A trie of the prefixes seen: (node, id) -> child node."""
    trie: dict[tuple[int, int], int] = {}
    out = []
    for r in records:
        node, shared, walking = 0, 0, True
        for h in r.hash_ids:
            child = trie.get((node, h))
            if child is None:
                walking = False
                child = trie[(node, h)] = len(trie) + 1
            elif walking:
                shared += 1
            node = child
        out.append(shared)
    return out
