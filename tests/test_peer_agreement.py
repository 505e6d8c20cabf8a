"""Smoke run of benchmarks/peer_agreement.py on the REAL CPU stack, at tiny sizes.

One stack bring-up (~30 s): kvbench and `vllm bench serve` each time 3 requests; both
must succeed, each window must hold exactly its tool's requests, and nothing may be
left behind.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.stack]
SCRIPT = REPO / "benchmarks" / "peer_agreement.py"
PROMPTS, INPUT_LEN, OUTPUT_LEN = 3, 200, 4


def _run(argv: list[str], timeout: float) -> tuple[int, str, str]:
    """Run the benchmark; on a timeout interrupt it (it then tears its stack down) rather than kill it."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"peer_agreement.py took longer than {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return proc.returncode, out, err


def test_peer_agreement_smoke(tmp_path, stack_images, no_harness_leftovers):
    out_json = tmp_path / "peer.json"
    code, out, err = _run(
        [
            sys.executable,
            str(SCRIPT),
            "--prompts",
            str(PROMPTS),
            "--input-len",
            str(INPUT_LEN),
            "--output-len",
            str(OUTPUT_LEN),
            "--pairs",
            "1",
            "--json",
            str(out_json),
        ],
        timeout=480,
    )
    assert code == 0, (out[-3000:], err[-3000:])
    # The runs table comes first (the summary repeats each tool once below it): its first row per tool.
    runs_rows: dict[str, str] = {}
    for line in out.splitlines():
        for tool in ("kvbench", "vllm bench serve"):
            if line.startswith(tool + " "):
                runs_rows.setdefault(tool, line)
    assert runs_rows.keys() == {"kvbench", "vllm bench serve"}, out
    assert "nothing left" in out

    result = json.loads(out_json.read_text())
    assert result["failure"] is None and result["teardown_verified"] is True
    runs = result["runs"]
    assert sorted(r["tool"] for r in runs) == ["kvbench", "vllm bench serve"]
    for r in runs:
        # the window holds exactly the timed requests, and the gap is a real number
        assert r["requests"] == r["server_requests"] == PROMPTS, r
        assert r["gap_ms"] is not None and math.isfinite(r["gap_ms"]), r
        assert r["client_ttft_mean_ms"] > 0 and r["server_ttft_mean_ms"] > 0, r
        # the printed row carries the same gap
        assert f"{r['gap_ms']:.2f}" in runs_rows[r["tool"]], (r, runs_rows[r["tool"]])
        # same prompt length in the served model's tokens (vllm bench serve's re-encoding may add one)
        assert abs(r["server_prompt_tokens_per_request"] - INPUT_LEN) <= 1, r
    assert set(result["summary"]) == {"kvbench", "vllm bench serve"}
