"""Every overlay x topology x mode renders with `docker compose config` and carries the key fields.

GPU stacks cannot start here; rendering them with the real compose binary is how
CI checks everything but the image and the device reservation itself. Tests that call
the docker CLI are marked `docker`; the rest only run prepare() (single-engine stacks).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.config import GPU_VLLM_IMAGE, load_config
from harness.stack.spec import StackSpec, prepare

REPO = Path(__file__).resolve().parent.parent
SECRET = "hf_SUPERSECRET_do_not_leak"

CONFIGS = {
    "cpu": "configs/test_config.yaml",
    "gpu": "configs/gpu-qwen2.5-72b.yaml",
    "gpu-lmcache": "configs/gpu-lmcache.yaml",
}
COMBOS = [(c, t, m) for c in CONFIGS for t in ("single", "cross-instance") for m in ("with-cache", "baseline")]


def prepared(tmp_path: Path, config: str, topology: str, mode: str, monkeypatch) -> tuple[StackSpec, Path]:
    """One stack kind prepared in tmp_path/scenario (what a run writes before compose up)."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    cfg = load_config(REPO / CONFIGS[config])
    cross = topology == "cross-instance"
    gpu = cfg.stack.gpu.model_copy(update={"engine_devices": [["0", "1"], ["2", "3"]] if cross else []})
    stack = cfg.stack.model_copy(
        update={"topology": topology, "gpu": gpu, "engine_cpusets": ["0", "1"] if cross else []}
    )
    workdir = tmp_path / "scenario"
    spec = prepare(
        stack,
        "20261124t000000z-abcdef",
        "long_context_high_reuse",
        workdir,
        {"engine": "kvbench/engine-cpu:x", "master": "kvbench/master-cpu:x"},
        with_connector=mode == "with-cache",
    )
    return spec, workdir


def _render(tmp_path: Path, config: str, topology: str, mode: str, monkeypatch) -> tuple[dict, str, Path]:
    spec, workdir = prepared(tmp_path, config, topology, mode, monkeypatch)
    argv = [
        "docker",
        "compose",
        "-p",
        spec.project,
        "--env-file",
        str(workdir / "stack.env"),
        "--project-directory",
        str(spec.files[0].parent),
    ]
    for f in spec.files:
        argv += ["-f", str(f)]
    out = subprocess.run([*argv, "config", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stdout, workdir


@pytest.mark.docker  # renders with the docker CLI (`docker compose config`)
@pytest.mark.parametrize("config,topology,mode", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_overlay_renders_with_key_fields(tmp_path, monkeypatch, config, topology, mode):
    model, text, workdir = _render(tmp_path, config, topology, mode, monkeypatch)
    services = model["services"]
    engines = ["vllm", "vllm-b"] if topology == "cross-instance" else ["vllm"]
    assert set(services) == {"mooncake-master", *engines}

    # Published on loopback only, and every resource carries the harness labels.
    for svc in services.values():
        for p in svc.get("ports", []):
            assert p["host_ip"] == "127.0.0.1", p
        assert svc["labels"]["io.kvbench.managed"] == "true"
        assert svc["labels"]["io.kvbench.run"] == "20261124t000000z-abcdef"
    assert all(n["labels"]["io.kvbench.managed"] == "true" for n in model["networks"].values())
    assert model["volumes"]["kvdata"]["labels"]["io.kvbench.managed"] == "true"

    for e in engines:
        cmd = services[e]["command"]
        kv = [json.loads(cmd[i + 1]) for i, a in enumerate(cmd) if a == "--kv-transfer-config"]
        if mode == "baseline":
            assert kv == []
        else:
            want = "LMCacheConnectorV1" if config == "gpu-lmcache" else "MooncakeStoreConnector"
            assert kv == [{"kv_connector": want, "kv_role": "kv_both"}]
        assert services[e]["depends_on"]["mooncake-master"]["condition"] == "service_started"
        check = " ".join(services[e]["healthcheck"]["test"])
        assert "/health" in check and "$" not in check  # a probe as it is on Kubernetes: nothing to interpolate

    vllm = services["vllm"]
    if config.startswith("gpu"):
        (dev,) = vllm["deploy"]["resources"]["reservations"]["devices"]
        assert dev["driver"] == "nvidia" and dev["device_ids"] == ["0", "1"]
        assert vllm["ipc"] == "host" and "shm_size" not in vllm
        want_image = "kvbench/vllm-openai-lmcache:v0.32.0" if config == "gpu-lmcache" else GPU_VLLM_IMAGE
        assert vllm["image"] == services["mooncake-master"]["image"] == want_image  # one Mooncake release
        assert services["mooncake-master"]["entrypoint"] in ([], None)  # the master command, not vllm serve
        assert vllm["command"][vllm["command"].index("--tensor-parallel-size") + 1] == "2"
        assert {"source": "hf_token", "target": "/run/secrets/hf_token"}.items() <= vllm["secrets"][0].items()
        assert any(v["target"] == "/models/hf" and v["source"] == "/data/hf-cache" for v in vllm["volumes"])
    else:
        assert "deploy" not in vllm and int(vllm["shm_size"]) >= 1 << 30
        assert "--enforce-eager" in vllm["command"]
    if config == "gpu-lmcache":
        assert vllm["environment"]["LMCACHE_CONFIG_FILE"] == "/etc/kvbench/lmcache.yaml"
        assert any(v["target"] == "/etc/kvbench/lmcache.yaml" for v in vllm["volumes"])
        assert "mooncakestore://mooncake-master:50051/" in (workdir / "lmcache.yaml").read_text()
    else:  # no LMCache: no config written, none mounted
        assert not list(workdir.glob("lmcache*.yaml"))
        for e in engines:
            assert "LMCACHE_CONFIG_FILE" not in services[e]["environment"]
            assert not any("lmcache" in v["target"] for v in services[e]["volumes"])

    if topology == "cross-instance":
        b = services["vllm-b"]
        assert vllm["cpuset"] == "0" and b["cpuset"] == "1"
        assert b["environment"]["PYTHONHASHSEED"] == vllm["environment"]["PYTHONHASHSEED"]
        assert b["ports"][0]["published"] != vllm["ports"][0]["published"]
        if config.startswith("gpu"):  # disjoint GPUs per engine
            (dev_b,) = b["deploy"]["resources"]["reservations"]["devices"]
            assert dev_b["device_ids"] == ["2", "3"]
        if config == "gpu-lmcache":  # B's store registers under B's own hostname
            (mount,) = [v for v in b["volumes"] if v["target"] == "/etc/kvbench/lmcache.yaml"]
            assert Path(mount["source"]) == (workdir / "lmcache-b.yaml").resolve()
            assert yaml.safe_load(Path(mount["source"]).read_text())["extra_config"]["local_hostname"] == "vllm-b"
            assert yaml.safe_load((workdir / "lmcache.yaml").read_text())["extra_config"]["local_hostname"] == "vllm"

    # The token reached neither the rendered model nor anything written for the run.
    assert SECRET not in text
    for f in workdir.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text()


def test_rdma_option_renders_devices_and_protocol(tmp_path, monkeypatch):
    cfg = load_config(REPO / CONFIGS["gpu"])
    stack = cfg.stack.model_copy(
        update={
            "protocol": "rdma",
            "device_name": "mlx5_0",
            "gpu": cfg.stack.gpu.model_copy(update={"rdma_devices": ["/dev/infiniband"]}),
        }
    )
    prepare(stack, "r1", "s", tmp_path, {})
    mc = json.loads((tmp_path / "mooncake.json").read_text())
    assert mc["protocol"] == "rdma" and mc["device_name"] == "mlx5_0"
    gen = (tmp_path / "compose.generated.yaml").read_text()
    assert "/dev/infiniband" in gen and "IPC_LOCK" in gen


@pytest.mark.parametrize("config", ["cpu", "gpu"])
def test_stack_without_lmcache_gets_no_lmcache_config(tmp_path, config):
    spec = prepare(load_config(REPO / CONFIGS[config]).stack, "r1", "s", tmp_path, {})
    assert (tmp_path / "mooncake.json").is_file()
    assert not list(tmp_path.glob("lmcache*.yaml"))
    assert "KVB_LMCACHE_CONFIG" not in spec.env and "KVB_LMCACHE_CONFIG" not in (tmp_path / "stack.env").read_text()


def test_lmcache_stack_gets_its_lmcache_config(tmp_path):
    spec = prepare(load_config(REPO / CONFIGS["gpu-lmcache"]).stack, "r1", "s", tmp_path, {})
    lm = yaml.safe_load((tmp_path / "lmcache.yaml").read_text())
    assert lm["remote_url"] == "mooncakestore://mooncake-master:50051/"
    assert lm["extra_config"]["local_hostname"] == "vllm"
    assert spec.env["KVB_LMCACHE_CONFIG"] == str((tmp_path / "lmcache.yaml").resolve())
