"""report.html in a real headless Chromium: every figure decodes, the evidence table is there, it renders.

The page itself counts its images once loaded (`<body data-images data-broken-images>`,
set by its inline script); `--dump-dom` returns the DOM after that script ran.
Chromium comes from Debian's package (scripts/ensure_chromium.sh; `make test` runs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report import write_comparison, write_report

from .report_synth import Scen, make_run, png_size

pytestmark = pytest.mark.browser
WIDTH, HEIGHT = 1400, 3000


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("chromium is not installed: run scripts/ensure_chromium.sh (make test does)")
    return exe


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _dom(tmp_path: Path, page: Path) -> str:
    out = _run(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _body_counts(dom: str) -> tuple[int, int]:
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    images = re.search(r'data-images="(\d+)"', body.group(0))
    broken = re.search(r'data-broken-images="(\d+)"', body.group(0))
    assert images and broken, f"the page's check did not run: {body.group(0)}"
    return int(images.group(1)), int(broken.group(1))


def _screenshot(tmp_path: Path, page: Path, name: str) -> Path:
    shot = tmp_path / name
    out = _run(tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", page.as_uri())
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    return shot


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    scens = [Scen("long_context_high_reuse", repeat=r, speedup=2.5 + r / 3, n=30) for r in (1, 2, 3)]
    scens += [
        Scen("batch_processing", n=40, speedup=1.6),
        Scen("cold_start", n=20, speedup=1.2),
        Scen("batch_processing", isolation="shared", status="contaminated", foreign_r1=3968, n=40),
    ]
    run = make_run(root, scens)
    write_report(run)
    return run


def test_report_html_in_chromium(full_run, tmp_path):
    page = full_run / "report.html"
    dom = _dom(tmp_path, page)
    images, broken = _body_counts(dom)
    assert images == 4 and broken == 0
    assert 'id="evidence"' in dom and "CONTAMINATED" in dom
    assert re.search(r'<table id="evidence">.*kvb-20260101t000000z-abc123-shared-batch_processing', dom, re.S)
    shot = _screenshot(tmp_path, page, "report.png")
    data = shot.read_bytes()
    assert png_size(data) == (WIDTH, HEIGHT)
    assert len(data) > 100_000  # tables and figures, not a blank page


def test_partial_report_still_renders(tmp_path):
    run = make_run(tmp_path, [Scen("rag_a", rounds=1)])
    (run / "manifest.json").unlink()
    write_report(run)
    dom = _dom(tmp_path, run / "report.html")
    images, broken = _body_counts(dom)
    assert broken == 0 and images == 2  # TTFT CDF + token sources; no round 2 -> no gains, no speed-ups
    assert 'id="evidence"' in dom and 'id="missing"' in dom and "manifest.json is missing" in dom


def test_comparison_html_in_chromium(full_run, tmp_path):
    other = make_run(
        tmp_path / "b",
        [
            Scen("long_context_high_reuse", mode="baseline", speedup=1.0, n=30),
            Scen("batch_processing", mode="baseline", speedup=1.0, n=40),
        ],
        run_id="20260102t000000z-bbbbbb",
        seed=3,
    )
    md, _ = write_comparison([full_run, other], tmp_path / "cmp")
    page = md.with_suffix(".html")
    images, broken = _body_counts(_dom(tmp_path, page))
    assert images == 4 and broken == 0
    assert png_size(_screenshot(tmp_path, page, "comparison.png").read_bytes()) == (WIDTH, HEIGHT)
