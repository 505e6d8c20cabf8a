from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness.stack.base import OWNER_LABEL, owner_dead
from harness.stack.compose import MANAGED_LABEL, find_resources
from harness.stack.spec import owner_id

REPO = Path(__file__).resolve().parent.parent
LIGHT_COMPOSE = REPO / "tests" / "compose"


# The longest real-stack module (one bench-all run of 6 stacks, ~4-5 min) starts first.
LONGEST_FIRST = ("test_stack_e2e.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Real-stack modules first (the longest one first), then the other Docker tests, then the rest:
    `make test` hands whole modules to two pytest-xdist workers in this order (--no-loadscope-reorder),
    and a long module starting last would leave one core idle at the end."""
    rank = {"stack": 0, "docker": 1}

    def key(item: pytest.Item) -> tuple[int, int]:
        marker = min((rank[m.name] for m in item.iter_markers() if m.name in rank), default=2)
        return marker, 0 if item.path.name in LONGEST_FIRST else 1

    items.sort(key=key)


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
    labels = {"io.kvbench.managed": "true", OWNER_LABEL: owner_id()}  # a live owner: not another run's leftover
    container = docker.container.create(stack_images["engine"], labels=labels)
    try:
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            docker.copy((container, f"/models/tiny/{name}"), out / name)
    finally:
        container.remove(volumes=True)
    return out


def _ours_or_orphaned(labels: dict) -> bool:
    """Created by this test process, or by a process that has exited (the test's kvbench): a
    stack of a test running at the same time in another pytest-xdist worker is neither."""
    return labels.get(OWNER_LABEL) == owner_id() or owner_dead(labels)


@pytest.fixture
def no_harness_leftovers(docker_ready):
    """Every docker test must leave nothing with the harness label behind."""
    yield
    left = find_resources(MANAGED_LABEL, _ours_or_orphaned)
    assert not left, f"harness resources left behind: {left}"


def worker_core() -> str | None:
    """The CPU this pytest-xdist worker's engines run on (gw0 -> 0, gw1 -> 1, ...); None outside
    xdist. The CPU engine binds its threads to every core it sees: two stacks at once would each
    spin on both cores, several times slower than one stack per core."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return str(int(worker[2:]) % (os.cpu_count() or 1)) if worker[2:].isdigit() else None


def pinned(config: Path, tmp: Path, engines: int = 1) -> Path:
    """`config` with this worker's engines on its own core (stack.engine_cpusets), as a config that
    extends it; `config` itself outside xdist. Two-engine topologies put both on it: spread over both
    cores they met the other worker's engine on one (its engine process then took 2 min to start)."""
    core = worker_core()
    if core is None:
        return config
    out = tmp / f"{config.stem}-cpu{core}.yaml"
    out.write_text(yaml.safe_dump({"extends": str(config), "stack": {"engine_cpusets": [core] * engines}}))
    return out


def warm_beats_cold(requests) -> bool:
    """Round 2 (every prompt's blocks in the store) is typically faster than round 1's cold prompts
    (no cached tokens: the first request of each prefix; later ones already reuse it within the
    round): the median TTFT of each. Medians: on 2 cores shared with the other pytest worker's
    engine, single requests were seen slower than a cold prefill (738 vs 497 ms) when that engine
    was busy; a store that loads slower than recomputing still fails this."""
    r1 = requests[(requests["round"] == 1) & (requests["cached_tokens"] == 0)]["ttft_ms"]
    r2 = requests[requests["round"] == 2]["ttft_ms"]
    return len(r1) > 0 and len(r2) > 0 and bool(r2.median() < r1.median())


def only_run(results: Path) -> Path:
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    return run_dir


def wait_for_rows(path: Path, n: int, proc: subprocess.Popen, stderr: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, stderr.read_text()[-3000:]
        if path.exists():
            rows = sum(1 for _ in path.open()) - 1
            if rows >= n:
                return rows
        time.sleep(0.2)  # polling the file the harness writes, bounded by the deadline
    raise AssertionError(f"fewer than {n} rows in {path} after {timeout} s")


Act = tuple[str, int, Callable[[subprocess.Popen, Path], None]]


def bench_acting_mid_round(
    command: list[str],
    results: Path,
    acts: list[Act],
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> tuple[int, str, Path]:
    """Start `command` (kvbench, or kvbench on the fake stack) with `--results results`; for each
    (cell key, rows, act) in order: once that cell's requests.csv has `rows` rows, `act(proc, run_dir)`;
    then wait for the exit. Output goes to files (a long run's progress would fill a pipe).
    Returns (exit code, stderr, run directory)."""
    results.mkdir(parents=True, exist_ok=True)
    out, err = results.with_name(results.name + ".stdout"), results.with_name(results.name + ".stderr")
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [*command, "--results", str(results)], cwd=REPO, stdout=stdout, stderr=stderr, text=True, env=env
        )
    try:
        deadline = time.monotonic() + 300
        while not any(results.iterdir()):
            assert time.monotonic() < deadline and proc.poll() is None, err.read_text()[-3000:]
            time.sleep(0.2)  # waiting for the run directory, bounded by the deadline
        run_dir = only_run(results)
        for key, rows, act in acts:
            wait_for_rows(run_dir / key / "requests.csv", rows, proc, err, timeout=400)
            act(proc, run_dir)
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            _interrupt(proc)
    return code, err.read_text(), run_dir


def _interrupt(proc: subprocess.Popen, grace: float = 60) -> tuple[str | None, str | None]:
    """Stop a kvbench that overran as Ctrl-C does, so it tears its stacks down: a SIGKILL leaves them
    running, and a dead owner's stacks are leftovers that make every later `kvbench bench` refuse to
    start. Killed only if it has not exited `grace` s later. Its (stdout, stderr) where piped."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def run_interruptibly(
    args: list[str], *, timeout: float, capture_output: bool = True, text: bool = True, **kwargs
) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, text=True, timeout=...) for kvbench, or a script
    that runs it, but stopped by `_interrupt` at the timeout instead of subprocess.run's SIGKILL.
    Raises TimeoutExpired as subprocess.run does."""
    assert capture_output and text, "output is captured as text"
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = _interrupt(proc)
            raise subprocess.TimeoutExpired(args, timeout, out, err) from None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)
