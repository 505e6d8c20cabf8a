"""Quiet set-up steps: one line per long step, its whole output in build/logs/, the log's
tail on failure (harness.stack.images._step and scripts/logged.sh); python-on-whales removal."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from typing import Any

import pytest

from harness.stack import images
from harness.stack.images import ImageBuildError

from .conftest import REPO

LOGGED = REPO / "scripts" / "logged.sh"


def test_a_step_prints_one_line_and_keeps_its_output_in_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv("KVB_LOG_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # the log is shown relative to the working directory
    said: list[str] = []
    with images._step("[images] thing", "built", "thing.log", said.append) as log:
        for i in range(100):
            log.write(f"noisy line {i}\n")
    assert len(said) == 1
    assert said[0].startswith("[images] thing: built in ") and said[0].endswith(" s (log: thing.log)")
    assert "noisy line 99" in (tmp_path / "thing.log").read_text()
    # a line that would wrap on 80 columns leaves the log out (a wrapped line is two on the screen)
    with images._step(
        "[images] engine kvbench/engine-cpu:0123456789ab", "built", "build/logs/engine-image.log", said.append
    ):
        pass  # fmt: skip
    assert len(said[1]) <= 80 and said[1].endswith(" s") and "(log:" not in said[1]


def test_a_failed_step_raises_with_the_last_lines_of_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("KVB_LOG_DIR", str(tmp_path))
    said: list[str] = []
    with pytest.raises(ImageBuildError) as err:
        with images._step("[images] thing", "built", "thing.log", said.append) as log:
            for i in range(100):
                log.write(f"noisy line {i}\n")
            raise RuntimeError("step broke")
    text = str(err.value)
    assert not said
    assert text.startswith("[images] thing: FAILED after ") and str(tmp_path / "thing.log") in text
    assert "noisy line 99" in text and "# failed: step broke" in text and "noisy line 70" not in text


def _logged(tmp_path, *cmd: str, label: str = "[t] step") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(LOGGED), label, "done", str(tmp_path / "s.log"), "--", *cmd],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )


def test_logged_sh_prints_one_line_and_logs_everything(tmp_path):
    out = _logged(tmp_path, "sh", "-c", "seq 1 500; echo to-stderr >&2")
    assert out.returncode == 0 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("[t] step: done in ")
    assert "(log: s.log)" in out.stderr
    log = (tmp_path / "s.log").read_text()
    wide = _logged(tmp_path, "true", label="[t] " + "x" * 60)
    assert wide.stderr.startswith("[t] ") and "(log:" not in wide.stderr and len(wide.stderr.strip()) <= 80
    assert "\n500\n" in log and "to-stderr" in log


def test_logged_sh_failure_shows_the_tail_and_keeps_the_exit_code(tmp_path):
    out = _logged(tmp_path, "sh", "-c", "seq 1 500; exit 7")
    assert out.returncode == 7
    lines = out.stderr.splitlines()
    assert "FAILED (exit 7)" in lines[0] and lines[-1] == "[t] step: FAILED, full log: s.log"
    assert lines[1:-1] == [f"  | {i}" for i in range(481, 501)]


def test_logged_sh_steps_side_by_side_print_whole_lines(tmp_path):
    """scripts/setup.sh runs steps at once with KVB_PROGRESS=none (the wheelhouses did: "[wheelhouse]
    master (...)[wheelhouse] engine (...): fetched in 15.9 s" then ": fetched in 42.4 s" on a bare
    machine): each step's line is written whole when it ends."""
    script = (
        f". {LOGGED}; run_logged '[t] slow' done slow.log sleep 1 & run_logged '[t] quick' done quick.log true; wait"
    )
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={**os.environ, "KVB_PROGRESS": "none"},
    )
    lines = out.stderr.splitlines()
    assert out.returncode == 0 and len(lines) == 2, out.stderr
    assert sorted(line.split(": done in ")[0] for line in lines) == ["[t] quick", "[t] slow"], out.stderr


@pytest.mark.docker
def test_force_remove_removes_by_name_and_skips_what_is_gone(light_image):
    """stack.force_remove (python-on-whales): a running container with its volume, a network,
    and names that no longer exist, which must not stop the rest. And the leftover check on objects
    listed before their removal and inspected after it (another run's teardown in between): gone,
    not an error (it raised NoSuchContainer with three pytest workers)."""
    from python_on_whales import docker

    from harness.stack.compose import Leftovers, _kept, find_resources, force_remove

    label = f"io.kvbench.test=force-remove-{uuid.uuid4().hex[:8]}"
    key, value = label.split("=")
    vol = docker.volume.create(labels={key: value})
    net = docker.network.create(f"kvb-test-{value}", labels={key: value})
    names = f"kvb-test-{value}", vol.name, net.name  # the objects' attributes inspect: gone after removal
    docker.run(
        light_image,
        ["sleep", "300"],
        detach=True,
        labels={key: value},
        volumes=[(names[1], "/data")],
        networks=[names[2]],
        name=names[0],
    )
    try:
        found = find_resources(label)
        assert (found.containers, found.volumes, found.networks) == ([names[0]], [names[1]], [names[2]])
        f: Any = [("label", label)]
        listed = [
            (docker.container.list(all=True, filters=f), lambda c: c.config.labels),
            (docker.volume.list(filters=f), lambda v: v.labels),
            (docker.network.list(filters=f), lambda n: n.labels),
        ]
        t = time.monotonic()
        force_remove(
            Leftovers(
                ["kvb-test-gone", *found.containers],
                ["kvb-test-gone", *found.volumes],
                ["kvb-test-gone", *found.networks],
            )
        )
        assert not find_resources(label)
        assert time.monotonic() - t < 30
        assert [_kept(objs, labels_of, lambda labels: True) for objs, labels_of in listed] == [[], [], []]
    finally:  # whatever force_remove left
        for fn, name in zip(
            (lambda n: docker.container.remove(n, force=True), docker.volume.remove, docker.network.remove), names
        ):
            try:
                fn(name)
            except Exception:  # noqa: BLE001 - already gone
                pass


@pytest.mark.docker
@pytest.mark.stack
def test_images_present_is_one_line_in_a_fraction_of_a_second(stack_images):
    said: list[str] = []
    t = time.monotonic()
    assert images.ensure_images("cpu", echo=said.append) == stack_images
    assert time.monotonic() - t < 2.0
    assert len(said) == 1 and said[0].endswith(" s)") and ": present (" in said[0], said


@pytest.mark.docker
def test_make_images_prints_at_most_three_lines_when_present(docker_ready):
    """`make images` with Docker up and the images present (skipped otherwise: nothing is built here)."""
    # As typed at a shell: not a sub-make of `make test` (MAKELEVEL makes make announce its directory).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    if images.image_id(images.base_image_ref()) is None:
        pytest.skip("base image missing: `make images` would build")
    base_id = images.image_id(images.base_image_ref())
    if any(images.image_id(images.image_tag(s, base_id)) is None for s in images.STACKS["cpu"]):
        pytest.skip("images missing: `make images` would build")
    out = subprocess.run(["make", "images"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len((out.stdout + out.stderr).splitlines()) <= 3, out.stdout + out.stderr


@pytest.mark.docker
def test_second_ctrl_c_kill_returns_at_once_and_down_still_removes_everything(
    tmp_path, light_image, no_harness_leftovers
):
    """Stack.kill_now (the signal handler's fire-and-forget `docker compose kill`), then down()."""
    from .test_lifecycle import _light_stack

    stack = _light_stack(tmp_path, "t-kill-now")
    with stack:
        stack.up()
        t = time.monotonic()
        stack.kill_now()
        assert time.monotonic() - t < 0.5
    assert stack.teardown is not None and stack.teardown.verified, stack.teardown
