"""Stack lifecycle on a real Docker engine, with the LIGHT test stack (tests/compose).

The light stack has the real stack's shape (two services, user network, named
volume, healthchecks, labels) but starts in a second; what it cannot do is
serve an OpenAI API, which the real-stack tests cover.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from python_on_whales import docker

from harness.config import StackConfig
from harness.stack.compose import ComposeStack, find_resources, leftovers
from harness.stack.spec import prepare

from .conftest import LIGHT_COMPOSE, REPO, run_interruptibly

pytestmark = pytest.mark.docker
KVBENCH = [sys.executable, "-m", "harness"]


def _light_stack(tmp_path: Path, run_id: str, scenario: str = "s1", overlay: str = "light", **env) -> ComposeStack:
    cfg = StackConfig(overlay=overlay, ready_timeout=60)
    spec = prepare(cfg, run_id, scenario, tmp_path / run_id, {}, compose_dir=LIGHT_COMPOSE)
    spec.env.update(env)
    return ComposeStack(spec, tmp_path / run_id, cfg.ready_timeout, cfg.teardown_timeout)


def _running(stack: ComposeStack) -> list[str]:
    return [c.name for c in docker.container.list(filters=[("label", stack.label)])]


def _die_order(project: str, since: int) -> list[str]:
    out = subprocess.run(
        [
            "docker",
            "events",
            "--since",
            str(since),
            "--until",
            str(int(time.time()) + 1),
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--filter",
            "event=die",
            "--format",
            '{{index .Actor.Attributes "com.docker.compose.service"}}',
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.split()


def test_up_down_removes_containers_volume_and_network(tmp_path, light_image, no_harness_leftovers):
    since = int(time.time()) - 1
    stack = _light_stack(tmp_path, "t-updown")
    with stack:
        stack.up()
        found = find_resources(stack.label)
        assert len(found.containers) == 2 and len(found.volumes) == 1 and len(found.networks) == 1
        vol = docker.volume.inspect(found.volumes[0])
        assert vol.labels["io.kvbench.managed"] == "true" and vol.labels["io.kvbench.run"] == "t-updown"
        # the stack answers on the published loopback port
        with socket.create_connection(("127.0.0.1", stack.spec.engine_ports["vllm"]), timeout=5):
            pass
    td = stack.teardown
    assert td is not None and td.verified, td
    assert td.seconds < 5.0
    assert not find_resources(stack.label)
    # the engine stops before the master it depends on
    assert _die_order(stack.spec.project, since) == ["vllm", "mooncake-master"]


@pytest.mark.serial  # `clean` and the leftover check see every run's stacks
def test_two_runs_at_once_do_not_touch_each_other(tmp_path, light_image, no_harness_leftovers):
    a, b = _light_stack(tmp_path, "t-run-a"), _light_stack(tmp_path, "t-run-b")
    assert a.spec.project != b.spec.project
    assert a.spec.engine_ports != b.spec.engine_ports
    with a, b:
        a.up()
        b.up()
        # Both owners (this process) are alive: neither is a leftover, and clean leaves them alone.
        assert not leftovers()
        out = subprocess.run([*KVBENCH, "clean"], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert out.returncode == 0 and "nothing to clean" in out.stderr
        assert len(_running(a)) == 2 and len(_running(b)) == 2
        assert a.down().verified
        assert len(_running(b)) == 2 and find_resources(b.label).volumes
    assert b.teardown and b.teardown.verified


@pytest.mark.serial  # `clean` and the leftover check see every run's stacks
def test_bench_refuses_over_leftovers_and_clean_removes_them(tmp_path, light_image, no_harness_leftovers):
    dead = _light_stack(tmp_path, "t-crashed", KVB_OWNER=f"{socket.gethostname()}:{2**22 + 1}")
    try:
        dead.up()
        assert leftovers()
        out = subprocess.run(
            [*KVBENCH, "bench", "--scenario", "cold_start", "--results", str(tmp_path / "r")],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert out.returncode == 2
        assert "kvbench clean" in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "r").exists()
        out = subprocess.run([*KVBENCH, "clean"], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert out.returncode == 0, out.stderr
        assert not find_resources(dead.label)
    finally:
        dead.down()


def test_a_kvbench_past_its_test_timeout_gets_ctrl_c_first(tmp_path):
    """conftest.run_interruptibly, which the real-stack tests run kvbench with: at a test's timeout
    kvbench is stopped as Ctrl-C stops it (its teardown runs), not with subprocess.run's SIGKILL,
    which left its stacks running and every later `kvbench bench` refusing over them."""
    child = (
        "import signal, sys, time\n"
        "def down(*_):\n"
        "    open(sys.argv[1], 'w').write('torn down')\n"
        "    sys.exit(130)\n"
        "signal.signal(signal.SIGINT, down)\n"
        "print('up', flush=True)\n"
        "time.sleep(120)\n"
    )
    t = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        run_interruptibly([sys.executable, "-c", child, str(tmp_path / "down")], timeout=2)
    assert (tmp_path / "down").read_text() == "torn down" and timed_out.value.stdout == "up\n"
    assert time.monotonic() - t < 60  # stopped by the signal, not at the child's end


def _suite_config(tmp_path: Path, overlay: str, names: list[str], **stack) -> Path:
    cfg = {
        "default_scenarios": names,
        "mode": "with-cache",
        "stack": {"overlay": overlay, "ready_timeout": 6, **stack},
        "scenarios": {n: {"kind": "cold_start", "num_requests": 2, "prompt_length": 50} for n in names},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_unhealthy_stack_fails_scenario_saves_logs_and_next_runs(tmp_path, light_image, no_harness_leftovers):
    config = _suite_config(tmp_path, "unhealthy", ["first", "second"])
    out = run_interruptibly(
        [
            *KVBENCH,
            "bench-all",
            "--config",
            str(config),
            "--compose-dir",
            str(LIGHT_COMPOSE),
            "--results",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=240,
    )
    assert out.returncode == 1, out.stderr
    (run_dir,) = (tmp_path / "results").iterdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for name in ("first", "second"):  # the second ran although the first failed
        entry = manifest["scenarios"][name]
        assert entry["status"] == "failed"
        assert "did not become healthy" in entry["reason"]
        assert entry["teardown_verified"] is True
        logs = run_dir / name / "logs"
        assert (logs / "compose.log").is_file()
        ps = json.loads((logs / "ps.json").read_text())
        assert [p["health"] for p in ps if "vllm" in p["name"]] in (["unhealthy"], ["starting"])
    assert (run_dir / "report.md").is_file()


def test_busy_fixed_port_is_a_clear_error_before_anything_starts(tmp_path, light_image, no_harness_leftovers):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        config = _suite_config(tmp_path, "light", ["only"], vllm_port=port)
        out = run_interruptibly(
            [
                *KVBENCH,
                "bench-all",
                "--config",
                str(config),
                "--compose-dir",
                str(LIGHT_COMPOSE),
                "--results",
                str(tmp_path / "results"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    assert out.returncode == 2
    assert f"stack.vllm_port: 127.0.0.1:{port} is already in use" in out.stderr
    assert not (tmp_path / "results").exists()


def test_a_preparation_fault_fails_its_scenario_not_the_run(tmp_path, light_image, no_harness_leftovers, monkeypatch):
    """The fixed port was free at the pre-start check but taken when the first scenario's stack
    was prepared (another process grabbed it, then let go): that scenario fails with the reason,
    the next one still gets its stack, and the run ends with its manifest and report."""
    import harness.suite.lifecycle as suite_mod
    from harness.config import load_config
    from harness.suite import Suite, SuiteOptions

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    cfg = load_config(_suite_config(tmp_path, "light", ["first", "second"], vllm_port=port))
    real_prepare = suite_mod.prepare

    def prepare_then_free_the_port(*a, **kw):
        try:
            return real_prepare(*a, **kw)
        finally:
            squatter.close()

    monkeypatch.setattr(suite_mod, "prepare", prepare_then_free_the_port)
    suite = Suite(cfg, lambda overlay: {}, SuiteOptions(tmp_path / "results", LIGHT_COMPOSE), ["test"])
    suite.plan_cells(["first", "second"], ("fresh",), 1, ("with-cache",))
    assert suite.run_all() is False
    manifest = json.loads((suite.run.root / "manifest.json").read_text())
    first, second = manifest["scenarios"]["first"], manifest["scenarios"]["second"]
    assert first["status"] == "failed" and first["reason"].startswith("stack preparation failed: PortInUse")
    assert second["project"] and second["teardown_verified"] is True  # it got its own stack
    assert manifest["finished_at"] and (suite.run.root / "report.md").is_file()
