"""report.html in a real headless Chromium: every figure decodes, the evidence table is there, it renders,
and its first screen (1400x900) holds the verdict and the first headline figure with no table overflowing.

The page itself counts its images once loaded (`<body data-images data-broken-images>`,
set by its inline script); `--dump-dom` returns the DOM after that script ran.
Chromium comes from Debian's package (scripts/ensure_chromium.sh; `make test` runs it).
"""

from __future__ import annotations

import os
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


def _screenshot(tmp_path: Path, page: Path, name: str, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    shot = tmp_path / name
    out = _run(
        tmp_path, f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars", page.as_uri()
    )
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


# ------------------------------------------------------------------ the first screen


SCREEN = (1400, 900)
PHONE = (400, 900)


def _layout(tmp_path: Path, page: Path, size: tuple[int, int]) -> dict[str, str]:
    """What the page's own script measured after load at this window size (body data-* attributes):
    verdict-bottom, headline-figure-top/-bottom (px from the top of the page), overflowing-tables
    (ids of tables wider than their box), page-overflows."""
    out = _run(
        tmp_path, f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()
    )
    assert out.returncode == 0, out.stderr[-2000:]
    body = re.search(r"<body[^>]*>", out.stdout)
    assert body, out.stdout[:500]
    found = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(0)))
    assert "overflowing-tables" in found, f"the page's layout check did not run: {body.group(0)}"
    return found


def _keep(shot: Path) -> Path:
    """A screenshot kept as a test artefact: under the test's tmp dir, and copied to
    $KVB_TEST_ARTEFACTS when that is set (CI uploads that directory)."""
    dest = os.environ.get("KVB_TEST_ARTEFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shot = Path(shutil.copy(shot, Path(dest) / shot.name))
    print(f"screenshot: {shot}")
    return shot


@pytest.fixture(scope="module")
def both_modes_run(tmp_path_factory) -> Path:
    """bench-all --mode both, five scenarios: some where the cache wins, some where it does not."""
    root = tmp_path_factory.mktemp("both")
    speedups = {"long_context_high_reuse": 20.0, "multi_turn_conversation": 1.3, "code_generation": 8.0,
                "batch_processing": 1.1, "cold_start": 0.8}  # fmt: skip
    scens = [Scen(name, speedup=x, n=30) for name, x in speedups.items()]
    scens += [Scen(name, mode="baseline", speedup=1.0, n=30) for name in speedups]
    run = make_run(root, scens)
    write_report(run)
    return run


def test_the_first_screen_answers_the_question(both_modes_run, tmp_path):
    """At 1400x900 the verdict and the first headline figure (with vs without) are on the first
    screen, before any table or round-over-round figure, and no table needs horizontal scrolling."""
    page = both_modes_run / "report.html"
    html = page.read_text()
    assert html.index('id="verdict"') < html.index('id="headline-figures"') < html.index('<table id="reuse-ttft"')
    assert html.index('id="headline-figures"') < html.index("Round over round: TTFT distribution")
    got = _layout(tmp_path, page, SCREEN)
    assert got["page-overflows"] == "false"
    assert got["overflowing-tables"] == "", f"tables wider than the page at {SCREEN[0]} px: {got['overflowing-tables']}"
    assert 0 < int(got["verdict-bottom"]) <= SCREEN[1], got
    assert (
        int(got["verdict-bottom"]) < int(got["headline-figure-top"]) < int(got["headline-figure-bottom"]) <= SCREEN[1]
    ), got
    shot = _screenshot(tmp_path, page, "first-screen-1400x900.png", SCREEN)
    assert png_size(shot.read_bytes()) == SCREEN
    _keep(shot)


def test_the_verdict_reads_on_a_phone(both_modes_run, tmp_path):
    """At phone width the verdict's rows stack (one line per fact), so the verdict itself never needs
    horizontal scrolling; the wide tables below scroll in their own boxes, not the page."""
    page = both_modes_run / "report.html"
    got = _layout(tmp_path, page, PHONE)
    assert got["verdict-bottom"] and got["page-overflows"] == "false", got
    assert "verdict-table" not in got["overflowing-tables"].split(), got
    _keep(_screenshot(tmp_path, page, "first-screen-400x900.png", PHONE))
