from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.stack.compose import MANAGED_LABEL, find_resources

REPO = Path(__file__).resolve().parent.parent
LIGHT_COMPOSE = REPO / "tests" / "compose"


def _docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return (
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
        and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )


@pytest.fixture(scope="session")
def docker_ready():
    """`make test` installs and starts Docker first; running pytest alone without it fails loudly."""
    if not _docker_ok():
        pytest.fail("no Docker engine / compose v2: run `make docker` (make test does it for you)")


@pytest.fixture(scope="session")
def light_image(docker_ready) -> str:
    from harness.stack.images import DEFAULT_BASE_IMAGE, ensure_base_image

    ensure_base_image(DEFAULT_BASE_IMAGE, print)
    return DEFAULT_BASE_IMAGE


@pytest.fixture(scope="session")
def stack_images(docker_ready) -> dict[str, str]:
    from harness.stack.images import ensure_images

    return ensure_images("cpu")


@pytest.fixture(scope="session")
def tiny_tokenizer(stack_images, tmp_path_factory) -> Path:
    """The tiny model's Hugging Face tokenizer files, copied out of the engine image."""
    from python_on_whales import docker

    out = tmp_path_factory.mktemp("tiny-tokenizer")
    container = docker.container.create(stack_images["engine"], labels={"io.kvbench.managed": "true"})
    try:
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            docker.copy((container, f"/models/tiny/{name}"), out / name)
    finally:
        container.remove(volumes=True)
    return out


@pytest.fixture
def no_harness_leftovers(docker_ready):
    """Every docker test must leave nothing with the harness label behind."""
    yield
    left = find_resources(MANAGED_LABEL)
    assert not left, f"harness resources left behind: {left}"


def cold_prompts_got_faster(requests) -> bool:
    """The prompts that really were cold in round 1 (no cached tokens: the first request of
    each prefix; later ones already reuse it within the round) have a lower TTFT in round 2."""
    r1 = requests[(requests["round"] == 1) & (requests["cached_tokens"] == 0)].set_index("prompt_id")["ttft_ms"]
    r2 = requests[requests["round"] == 2].set_index("prompt_id")["ttft_ms"]
    pairs = r1.to_frame("cold").join(r2.rename("warm"), how="inner")
    return len(pairs) > 0 and bool((pairs["warm"] < pairs["cold"]).all())


def only_run(results: Path) -> Path:
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    return run_dir


def wait_for_rows(path: Path, n: int, proc: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "bench exited early"
        if path.exists():
            rows = sum(1 for _ in path.open()) - 1
            if rows >= n:
                return rows
        time.sleep(0.2)  # polling the file the harness writes, bounded by the deadline
    raise AssertionError(f"fewer than {n} rows in {path} after {timeout} s")


def bench_acting_mid_round(
    command: list[str],
    results: Path,
    scenario: str,
    rows: int,
    act: Callable[[subprocess.Popen, Path], None],
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> tuple[int, str, Path]:
    """Start `command` (kvbench, or kvbench on the fake stack) with `--results results`; once
    `scenario` has `rows` request rows, `act(proc, run_dir)`; wait for the exit.
    Returns (exit code, stderr, run directory)."""
    proc = subprocess.Popen(
        [*command, "--results", str(results)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 300
        while not results.exists() or not any(results.iterdir()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)  # waiting for the run directory, bounded by the deadline
        run_dir = only_run(results)
        wait_for_rows(run_dir / scenario / "requests.csv", rows, proc, timeout=400)
        act(proc, run_dir)
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, proc.stderr.read() if proc.stderr else "", run_dir
