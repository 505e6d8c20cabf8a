"""Small synthetic run directories for the report tests: the files a bench run writes, made in a tmp dir.

`make_run` writes manifest.json and, per scenario directory, requests.csv (the runner's
columns) and rounds.csv (computed with harness.stats like the runner, plus the counter
and reuse columns), so each test can then delete or damage what it is about.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.stats import rounds_table
from harness.config import Targets
from harness.records import REQUEST_COLUMNS, CellEntry, Manifest, cell_key


@dataclass
class Scen:
    name: str
    mode: str = "with-cache"
    isolation: str = "fresh"
    repeat: int = 1
    status: str = "ok"
    reason: str = ""
    foreign_r1: int = 0
    speedup: float = 3.0  # how much faster warm rounds are (below 1: slower)
    noise: float = 0.3  # sigma of each request's lognormal TTFT (independent per request and round)
    n: int = 12
    rounds: int = 2
    extra: dict = field(default_factory=dict)
    point: int | None = None  # sweep point index (key prefix point-NN/)
    point_values: dict | None = None

    @property
    def key(self) -> str:
        return cell_key(self.name, self.mode, self.isolation, self.repeat, self.point)


def requests_frame(s: Scen, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for rnd in range(1, s.rounds + 1):
        for i in range(s.n):
            ttft = float(rng.lognormal(5, s.noise)) / (s.speedup if rnd > 1 else 1.0)
            tpot = float(rng.uniform(5, 10))
            rows.append(
                {
                    "scenario": s.name,
                    "round": rnd,
                    "index": i,
                    "prompt_id": f"{s.name}-{i:04d}",
                    "prompt_hash": "",
                    "session_id": f"{s.name}-{i:04d}",
                    "turn": 0,
                    "api": "completions",
                    "ok": True,
                    "http_status": 200,
                    "error_class": "",
                    "error_message": "",
                    "send_s": round((rnd - 1) * 10 + i * 0.05, 6),
                    "ttft_ms": round(ttft, 3),
                    "tpot_ms": round(tpot, 3),
                    "e2e_ms": round(ttft + 15 * tpot, 3),
                    "itl_ms": " ".join(f"{x:.3f}" for x in rng.uniform(3, 12, 4)),
                    "n_itl": 4,
                    "prompt_tokens": 1034,
                    "completion_tokens": 16,
                    "cached_tokens": 1024 if rnd > 1 else (0 if i == 0 else 896),
                    "expected_prompt_tokens": 1034,
                    "shared_prefix_tokens": 1000,
                    "prefix_key": f"{s.name}:p",
                    "provides_prefix_key": f"{s.name}:p",
                    "output_chars": 40,
                }
            )
    return pd.DataFrame(rows, columns=REQUEST_COLUMNS)


def rounds_frame(s: Scen, req: pd.DataFrame) -> pd.DataFrame:
    t = rounds_table(req, Targets())
    for i, (k, v) in enumerate(
        {"scenario": s.name, "mode": s.mode, "isolation": s.isolation, "repeat": s.repeat}.items()
    ):
        t.insert(i, k, v)
    cached = req.groupby("round")["cached_tokens"].sum().to_numpy()
    prompt = req.groupby("round")["prompt_tokens"].sum().to_numpy()
    t["expected_reuse_tokens"] = cached - np.where(t["round"] == 1, s.foreign_r1, 0)
    t["achieved_reuse_tokens"] = cached
    t["reuse_achieved_ratio"] = t["achieved_reuse_tokens"] / t["expected_reuse_tokens"]
    t["foreign_hit_tokens"] = np.where(t["round"] == 1, s.foreign_r1, 0)
    t["tokens_local_compute"] = prompt - cached
    t["tokens_local_cache_hit"] = 0
    t["tokens_external_kv_transfer"] = cached
    t["master_key_count_start"] = np.where(t["round"] == 1, 0, 8)
    for k, v in s.extra.items():
        t[k] = v
    return t


def entry(s: Scen, run_id: str) -> CellEntry:
    return CellEntry(
        scenario=s.name,
        mode=s.mode,
        isolation=s.isolation,
        repeat=s.repeat,
        status=s.status,
        reason=s.reason,
        project=f"kvb-{run_id}-{s.key.replace('/', '-')}",
        engine_container_ids=[f"{zlib.crc32(s.key.encode()):08x}" + "cafe" * 14],
        cold_verified=s.foreign_r1 == 0,
        cold_detail="master_key_count=0",
        foreign_hit_tokens_round1=s.foreign_r1,
        teardown_verified=True,
        block_size=128,
        point=s.point_values,
        timings={
            "up_s": 25.1,
            "service_start_s": 23.0,
            "workload_s": 0.2,
            "rounds_s": 3.0,
            "teardown_s": 1.4,
            "harness_overhead_s": 2.0,
            "total_s": 30.0,
        },
    )


def make_run(
    root: Path, scens: list[Scen], run_id: str = "20260101t000000z-abc123", seed: int = 0, write_csv: bool = True
) -> Path:
    run = root / run_id
    run.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    manifest = Manifest(
        run_id=run_id,
        harness_version="0.1.0",
        git_commit="0" * 40,
        host={"hostname": "test"},
        command=["kvbench", "bench-all"],
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:10:00+00:00",
        config={"rounds": 2, "targets": {"ttft_reduction_percent": 60, "throughput_increase_percent": 150}},
    )
    for s in scens:
        manifest.scenarios[s.key] = entry(s, run_id)
        if not write_csv:
            continue
        d = run / s.key
        d.mkdir(parents=True)
        req = requests_frame(s, rng)
        req.to_csv(d / "requests.csv", index=False)
        rounds_frame(s, req).to_csv(d / "rounds.csv", index=False, float_format="%.4f")
    (run / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return run


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (and a check that it is a PNG at all)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def cliff_sweep(hits: list[float], lru: list[float], sizes_mib: tuple[int, ...] = (256, 512, 1024, 2048),
                evictions: bool = False) -> list[Scen]:  # fmt: skip
    """A store-size sweep of one trace scenario: per size, the round-2 hit share measured (`hits`)
    and of a simulated LRU store (`lru`), of 10,000 expected tokens."""
    return [
        Scen(
            "tr",
            point=i + 1,
            point_values={"stack.global_segment_size": f"{mib}MB"},
            extra={
                "master_capacity_bytes_start": mib * 2**20,
                "expected_reuse_tokens": [0, 10_000],
                "achieved_reuse_tokens": [0, int(10_000 * h)],
                "lru_reuse_tokens": [0, int(10_000 * s)],
                **({"master_evicted_keys": [100 * (len(sizes_mib) - i)] * 2} if evictions else {}),
            },
        )
        for i, (mib, h, s) in enumerate(zip(sizes_mib, hits, lru, strict=True))
    ]


def md_table(text: str, heading: str) -> pd.DataFrame:
    """The first Markdown table under the `## heading` (or `### heading`) that contains `heading`,
    as strings: a test reads the figure the report prints, not only that a title appears."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("#") and heading in ln)
    rows = []
    for ln in lines[start + 1 :]:
        if ln.startswith("#"):
            break
        if ln.startswith("|"):
            rows.append([c.strip() for c in ln.strip("|").split("|")])
        elif rows:
            break
    header, body = rows[0], [r for r in rows[2:]]
    return pd.DataFrame(body, columns=header)


def md_number(cell: str) -> float:
    """A figure as the report prints it ("9,856.0", "n/a") as a float (NaN for n/a)."""
    return float("nan") if cell in ("n/a", "") else float(cell.replace(",", ""))
