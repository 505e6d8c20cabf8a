"""Preflight on real images: the versions inside the CPU stack's images are recorded, and a stack
that cannot work is refused in one line (exit 2) before any container of it starts. The refusals
use a NAMED TEST DOUBLE (tests/images/fake-vllm.Dockerfile: only vLLM's metadata and connector
registry), because no GPU image runs here."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from python_on_whales import docker

from harness.config import StackConfig
from harness.stack import versions
from harness.stack.compose import find_resources

from .conftest import REPO

pytestmark = [pytest.mark.docker]
DOCKERFILE = REPO / "tests" / "images" / "fake-vllm.Dockerfile"


def _fake(base: str, **args: str) -> str:
    """The test double, built once per content (a few seconds on the local base image)."""
    key = hashlib.sha256((DOCKERFILE.read_text() + base + repr(sorted(args.items()))).encode()).hexdigest()[:12]
    tag = f"kvbench/test-fake-vllm:{key}"
    if not docker.image.exists(tag):
        docker.legacy_build(DOCKERFILE.parent, file=DOCKERFILE, tags=[tag], build_args={"BASE_IMAGE": base, **args})
    return tag


@pytest.mark.stack
def test_the_cpu_stacks_versions_are_recorded_and_it_passes(stack_images):
    found = versions.check(stack_images, StackConfig(), with_connector=True)
    engine, master = found["engine"], found["master"]
    assert engine["vllm"].startswith("0.32") and "MooncakeStoreConnector" in engine["connectors"]
    assert engine["torch"] and versions.release(engine["mooncake"]) == versions.release(master["mooncake"])
    assert master["vllm"] is None and master["image"] == stack_images["master"]
    # what the console prints of it: one line within 80 columns, the master only where it differs
    line = versions.versions_line(found)
    assert line.startswith("  engine: vllm 0.32") and line.endswith("; master: same") and len(line) <= 80, line
    assert "Connector" not in line and "image" not in line


def test_an_old_vllm_without_the_connector_is_refused_in_one_line(light_image):
    old = _fake(light_image, VLLM_VERSION="0.11.0")
    with pytest.raises(versions.UnfitStack) as e:
        versions.check({"engine": old}, StackConfig(), with_connector=True)
    assert str(e.value) == (
        f"image {old}: vLLM 0.11.0 has no MooncakeStoreConnector "
        "(the V1 MooncakeStoreConnector is in vLLM 0.21 and later)"
    )
    assert versions.check({"engine": old}, StackConfig(), with_connector=False)["engine"]["vllm"] == "0.11.0"


def test_a_master_of_another_mooncake_release_is_refused(light_image):
    engine = _fake(light_image, VLLM_VERSION="0.32.0", MOONCAKE_VERSION="0.3.13.post1",
                   CONNECTORS="MooncakeStoreConnector LMCacheConnectorV1")  # fmt: skip
    master = _fake(light_image, VLLM_VERSION="0.0.0", MOONCAKE_VERSION="0.3.7")
    assert versions.check({"engine": engine, "master": engine}, StackConfig(), with_connector=True)
    with pytest.raises(versions.UnfitStack, match=r"Mooncake 0\.3\.7 in the master image .* 0\.3\.13\.post1"):
        versions.check({"engine": engine, "master": master}, StackConfig(), with_connector=True)


def test_bench_refuses_with_exit_2_before_any_stack(tmp_path: Path, light_image):
    """A GPU config naming the old image: refused by the preflight (exit 2, one line), no container."""
    old = _fake(light_image, VLLM_VERSION="0.11.0")
    config = yaml.safe_load((REPO / "configs" / "gpu-qwen2.5-72b.yaml").read_text())
    config["extends"] = str(REPO / "configs" / "test_config.yaml")
    config["stack"]["gpu"]["vllm_image"] = old
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--config", str(tmp_path / "c.yaml"), "--scenario", "cold_start"]
        + ["--results", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("kvbench:")]
    assert "vLLM 0.11.0 has no MooncakeStoreConnector" in line
    (run,) = (tmp_path / "results").iterdir()
    assert "has no MooncakeStoreConnector" in (run / "manifest.json").read_text()
    assert not find_resources(f"io.kvbench.run={run.name}")


def test_a_probe_answer_is_kept_by_image_id_and_a_bad_entry_is_probed_again(tmp_path, monkeypatch, light_image):
    """The probe costs ~10 s per run on the CPU engine image; its answer is kept on disk by image ID.
    A kept entry is what later runs read (an edited entry shows through); an unreadable one is probed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    image = _fake(light_image, VLLM_VERSION="0.32.0")
    versions.image_versions.cache_clear()
    assert versions.image_versions(image)["vllm"] == "0.32.0"
    (entry,) = versions.cache_dir().iterdir()
    assert entry.name == docker.image.inspect(image).id.replace(":", "-") + ".json"

    kept = json.loads(entry.read_text())
    entry.write_text(json.dumps({**kept, "vllm": "9.9.9"}))  # only a read of the entry can answer this
    versions.image_versions.cache_clear()
    assert versions.image_versions(image)["vllm"] == "9.9.9"

    entry.write_text('{"vllm": "0.3')  # a torn write, or a disk that filled up
    versions.image_versions.cache_clear()
    assert versions.image_versions(image)["vllm"] == "0.32.0"
    assert json.loads(entry.read_text())["vllm"] == "0.32.0"
    versions.image_versions.cache_clear()


@pytest.mark.stack
def test_the_engine_image_records_at_build_time_what_the_probe_finds_in_it(stack_images):
    """The check reads the engine image's record (written by its build, where vLLM is imported anyway)
    instead of starting it to import vLLM once more: the record must be what the probe finds now."""
    engine = stack_images["engine"]
    recorded = str(docker.run(engine, ["cat", versions.RECORDED], entrypoint="", remove=True, networks=["none"]))
    live = str(docker.run(engine, ["python3", "-c", versions.PROBE], entrypoint="", remove=True, networks=["none"]))
    (recorded_line,) = [x for x in recorded.splitlines() if x.startswith("KVB")]
    (live_line,) = [x for x in live.splitlines() if x.startswith("KVB")]
    assert json.loads(recorded_line[3:]) == json.loads(live_line[3:])
    assert "MooncakeStoreConnector" in json.loads(recorded_line[3:])["connectors"]
