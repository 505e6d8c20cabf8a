"""manifest.json: the run's plan, one `CellEntry` per cell (its status and evidence), the stacks.

Written by the suite as the run goes (so an interrupted run shows what it never reached), read
by the report and by `--resume`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from harness.records.rows import Record

# ------------------------------------------------------------------ manifest.json

Status = Literal[
    "pending", "running", "ok", "contaminated", "unverified", "degraded", "misconfigured", "failed", "interrupted"
]


# ------------------------------------------------------------------ cells

MODES = ("with-cache", "baseline", "local", "local+store")  # the arms' cell names (config.MODE_OF_ARM)
# Cells whose round 1 is proven cold on a stack of their own: a fresh one, or one reused after a
# verified reset. Only these measure what reuse buys; shared and external cells show pollution.
ISOLATED = ("fresh", "reset")
_KEYED_ISOLATION = ("shared", "reset")  # isolations with their own directory level


def cell_key(name: str, mode: str, iso: str, rep: int, point: int | None = None) -> str:
    """Result key (= directory under the run): [point-NN/][baseline/][shared/|reset/]<scenario>[/repeat-N]."""
    parts = [f"point-{point:02d}"] if point else []
    parts += ([mode] if mode != "with-cache" else []) + ([iso] if iso in _KEYED_ISOLATION else []) + [name]
    return "/".join(parts + ([f"repeat-{rep}"] if rep > 1 else []))


def parse_cell_key(key: str) -> dict[str, Any]:
    """cell_key's inverse: scenario, mode, isolation (fresh, or external when the key says nothing
    and the manifest does), repeat and point label ("point-NN" or "")."""
    parts = key.split("/")
    point = parts.pop(0) if len(parts) > 1 and parts[0].startswith("point-") else ""
    rep = next((int(p.split("-", 1)[1]) for p in parts if p.startswith("repeat-") and p[7:].isdigit()), 1)
    mode = parts[0] if parts[0] in MODES and len(parts) > 1 else "with-cache"
    rest = parts[1:] if parts[0] in MODES and len(parts) > 1 else parts
    iso = rest[0] if len(rest) > 1 and rest[0] in _KEYED_ISOLATION else "fresh"
    names = [p for p in rest[(iso != "fresh") :] if not p.startswith("repeat-")]
    return {"scenario": names[0] if names else key, "mode": mode, "isolation": iso, "repeat": rep, "point": point}


class ResetEvidence(Record):
    """How a cell on a reused stack was made cold (harness/runner/reset.py): the reset, the store's
    emptiness, the canary, and the verdict."""

    external: bool = True  # reset_external=true: the store too, not only the engine's prefix cache
    idle: bool | None = None  # no request running or queued before the reset
    reset_ok: bool | None = None  # every reset answered success (within its retries)
    attempts: int | None = None
    keys_after_reset: float | None = None
    bytes_after_reset: float | None = None
    canary_prompt: str | None = None  # the previous cell's first prompt, sent again
    canary_cached_tokens: int | None = None
    canary_local_hits: float | None = None
    canary_external_hits: float | None = None
    keys_at_start: float | None = None  # after the second reset: what the cell starts on
    bytes_at_start: float | None = None
    seconds: float | None = None
    verified: bool | None = None
    warm: str | None = None  # which tier stayed warm, with its numbers
    fallback: str | None = None  # what kvbench did when the proof failed (fresh stack / failed)


class CellEntry(Record):
    """One cell of a run (scenario x mode x isolation x repeat): its stack and its evidence."""

    scenario: str
    mode: str = "with-cache"
    isolation: str = "fresh"
    repeat: int = 1
    status: Status = "pending"
    reason: str | None = None
    logs: str | None = None
    timings: dict[str, float | None] = Field(default_factory=dict)
    project: str | None = None
    ports: dict[str, int] | None = None
    engine_container_ids: list[str] | None = None
    cold_verified: bool | None = None
    cold_detail: str | None = None
    block_size: int | None = None
    # the engine warm-up before the cold proof (runner/warmup.py): requests, prompt tokens (each
    # below one KV block), their TTFTs, seconds; None: no warm-up (runs before issue 34)
    warmup: dict[str, Any] | None = None
    # The engine's own KV pool as it allocated it (vllm:cache_config_info), and as asked (stack.engine_kv_pool_tokens)
    engine_pool_blocks: int | None = None
    engine_pool_tokens: int | None = None
    engine_prefix_caching: bool | None = None  # the engine's own prefix cache, as it reports it
    # Controls (analysis/arms.py): why an arm measured something else than it claims (None: it did not)
    misconfigured: str | None = None
    foreign_hit_tokens_round1: int | None = None
    skipped_requests: int | None = None  # trace requests longer than the served context
    point: dict[str, Any] | None = None  # the sweep point this cell ran at (config path -> value)
    teardown_verified: bool | None = None
    teardown_leftovers: str | None = None
    reset: ResetEvidence | None = None  # isolation reset: how this cell's stack was made cold again
    # topology engine-restart, per restart: round, seconds, master keys before/after, the new engine's counters
    engine_restarts: list[dict[str, Any]] = Field(default_factory=list)
    previous_attempts: list[CellEntry] = Field(default_factory=list)


class Plan(Record):
    scenarios: list[str]
    isolation: list[str]
    repeats: int
    modes: list[str]
    points: list[dict[str, Any]] = Field(default_factory=list)  # sweep points (config path -> value)
    arm_order: list[list[str]] = Field(default_factory=list)  # per repeat, the modes in the order they ran (ABBA)


class StackInfo(Record):
    timings: dict[str, float | None] = Field(default_factory=dict)
    project: str | None = None
    ports: dict[str, int] | None = None
    engine_container_ids: list[str] | None = None
    teardown_verified: bool | None = None
    teardown_leftovers: str | None = None


class Resumed(Record):
    at: str
    command: list[str]


class Manifest(Record):
    run_id: str
    harness_version: str
    git_commit: str | None
    host: dict[str, Any]
    command: list[str]
    started_at: str
    finished_at: str | None = None
    config: dict[str, Any]
    plan: Plan | None = None
    topology: str | None = None
    images: dict[str, str] | None = None
    versions: dict[str, dict[str, Any]] | None = None  # per image role: vllm, mooncake, lmcache, torch (preflight)
    refused: str | None = None  # why no stack started (preflight)
    preflight_skipped: str | None = None  # why the versions were not checked (kubernetes: images not on this host)
    driver: str | None = None  # "external-endpoint" for `kvbench run`
    endpoint: str | None = None
    endpoint_auth: str | None = None  # where the key came from; never the key
    tokenizer: str | None = None  # what counted the prompts' tokens: the server's /tokenize or a local one
    scenarios: dict[str, CellEntry] = Field(default_factory=dict)
    shared_stacks: dict[str, StackInfo] = Field(default_factory=dict)
    interrupted: str | None = None
    not_reached: list[str] = Field(default_factory=list)
    resumed: list[Resumed] = Field(default_factory=list)
    # The plan's fields, repeated at the top by runs before 2026-11-26; read, never written.
    isolation: list[str] | None = Field(default=None, exclude=True)
    repeats: int | None = Field(default=None, exclude=True)
    modes: list[str] | None = Field(default=None, exclude=True)
