"""What a stack is made of: compose files, generated overlay, client configs, ports, env.

Everything config-dependent is rendered into the scenario's directory
(`compose.generated.yaml`, `mooncake.json`, `stack.env`, and `lmcache.yaml` for the LMCache
connector), so the results say exactly what ran. Secrets never go there: `HF_TOKEN` reaches the
GPU engines as a compose secret read from the process environment.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from python_on_whales import DockerClient

from harness.config import ARM_FLAGS, StackConfig

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
MASTER = "mooncake-master"
STORE = "mooncake-store"  # the store node (stack.store: store-node): compose/store-node.yaml
LMCACHE_TARGET = "/etc/kvbench/lmcache.yaml"  # where compose/gpu-lmcache.yaml mounts the LMCache config
CONNECTORS = {"mooncake_store": "MooncakeStoreConnector", "lmcache": "LMCacheConnectorV1"}


class PortInUse(ValueError):
    pass


def project_name(run_id: str, label: str) -> str:
    """Compose project names allow [a-z0-9_-], starting with a letter or digit."""
    raw = f"kvb-{run_id}-{label}".lower()
    return re.sub(r"[^a-z0-9_-]", "-", raw)[:63].rstrip("-_")


def owner_id() -> str:
    """Who created a stack: lets `clean` tell a crashed run's leftovers from a live run."""
    return f"{socket.gethostname()}:{os.getpid()}"


def allocate_ports(bind: str, wanted: dict[str, int]) -> dict[str, int]:
    """Published ports for the stack: a fixed port must be free now (a clear error instead of a
    compose failure); 0 picks a free one. All sockets stay bound until every port is chosen, so
    two services never get the same port (sequential bind-to-0 calls can return it twice)."""
    ports: dict[str, int] = {}
    with ExitStack() as held:
        for name, port in sorted(wanted.items(), key=lambda kv: kv[1] == 0):  # fixed ports first
            sock = held.enter_context(socket.socket())
            try:
                sock.bind((bind, port))
            except OSError:
                raise PortInUse(
                    f"stack.{name}: {bind}:{port} is already in use (set it to 0 to pick a free port)"
                ) from None
            ports[name] = sock.getsockname()[1]
    return ports


@dataclass
class StackSpec:
    project: str
    run_id: str
    label: str
    files: list[Path]
    env: dict[str, str]
    bind: str
    engine_ports: dict[str, int]  # engine service -> published API port
    master_metrics_port: int
    engines: list[str] = field(default_factory=lambda: ["vllm"])
    store_metrics_port: int | None = None  # the store node's published HTTP port (None: embedded store)

    def engine_url(self, service: str = "vllm") -> str:
        return f"http://{self.bind}:{self.engine_ports[service]}"

    @property
    def vllm_url(self) -> str:
        return self.engine_url("vllm")

    @property
    def master_metrics_url(self) -> str:
        return f"http://{self.bind}:{self.master_metrics_port}"

    @property
    def store_url(self) -> str | None:
        """The store node's /health and /metrics (None: the engines hold the store)."""
        return f"http://{self.bind}:{self.store_metrics_port}" if self.store_metrics_port else None

    @property
    def services(self) -> list[str]:
        """Every service of the stack, engines first."""
        return [*self.engines, *([STORE] if self.store_metrics_port else []), MASTER]


def arm_flags(s: StackConfig, mode: str | None, with_connector: bool = True) -> tuple[bool, bool]:
    """(vLLM's prefix cache, the KV connector) for a cell mode (an arm's cell name: baseline, local,
    with-cache, local+store); without one, today's switches (with_connector, stack.enable_prefix_caching)."""
    if mode is None:
        return s.enable_prefix_caching, with_connector
    if mode not in ARM_FLAGS:
        raise ValueError(f"unknown mode {mode!r} (arms: {', '.join(ARM_FLAGS)})")
    return ARM_FLAGS[mode]


def vllm_command(s: StackConfig, with_connector: bool = True, prefix_caching: bool | None = None) -> list[str]:
    """The engine's command line. `prefix_caching`: vLLM's own prefix cache on/off (None: the
    stack's enable_prefix_caching); `with_connector`: the KV connector to the store."""
    local = s.enable_prefix_caching if prefix_caching is None else prefix_caching
    args = [
        s.model,
        "--served-model-name",
        s.served_model_name,
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--max-model-len",
        str(s.max_model_len),
        "--enable-prompt-tokens-details",
        "--enable-prefix-caching" if local else "--no-enable-prefix-caching",
    ]
    if s.pool_blocks is not None:  # the engine's own KV pool, as asked (vLLM applies it on every backend)
        args += ["--num-gpu-blocks-override", str(s.pool_blocks)]
    if with_connector:  # baseline mode: the same stack, no KV connector
        args += ["--kv-transfer-config", json.dumps({"kv_connector": CONNECTORS[s.connector], "kv_role": "kv_both"})]
    if s.on_gpu:
        args += [
            "--tensor-parallel-size",
            str(s.gpu.tensor_parallel_size),
            "--gpu-memory-utilization",
            str(s.gpu.gpu_memory_utilization),
        ]
    else:
        args.append("--enforce-eager")  # ~17 s to healthy instead of 25-50 s; the compile cache does not reload
        # The worker inside the engine-core process: no third process importing torch and vLLM, no IPC
        # per step. Measured alone on 2 cores: healthy in 18.3 s instead of 23.9 s; LCHR round 2 without
        # the connector 751 vs 1,061 ms, with it 112 vs 132 ms (-85.1 vs -87.5 %, within stack-to-stack
        # noise). vLLM then serves with 1 torch thread, its own default; OMP_NUM_THREADS=2 gave 805 ms.
        # vLLM's CPU platform turns `uni` into `mp` unless VLLM_ENABLE_V1_MULTIPROCESSING=0 (compose/cpu.yaml).
        args += ["--distributed-executor-backend", "uni"]
    return args + list(s.extra_vllm_args)


def mooncake_client_config(s: StackConfig) -> dict:
    """The engines' MOONCAKE_CONFIG_PATH file. With a store node the engines contribute no memory
    (standalone-store mode requires global_segment_size 0); their local buffer stays for transfers."""
    node = s.store == "store-node"
    return {
        "metadata_server": f"http://{MASTER}:8080/metadata",
        "master_server_address": f"{MASTER}:50051",
        "protocol": s.protocol,
        "device_name": s.device_name,
        "mode": "standalone-store" if node else "embedded",
        "global_segment_size": 0 if node else s.global_segment_size,
        "local_buffer_size": s.local_buffer_size,
    }


_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def size_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?B?)\s*", text.upper())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2) if m.group(2) != "K" else "KB"]


def lmcache_config(s: StackConfig, hostname: str = "vllm") -> dict:
    """LMCache with Mooncake as its remote store: the users' original deployment.
    `hostname`: the engine's compose service, where other stores reach its segment."""
    return {
        "chunk_size": 256,
        "local_cpu": False,
        "remote_url": f"mooncakestore://{MASTER}:50051/",
        "remote_serde": "naive",
        "extra_config": {
            "local_hostname": hostname,
            "metadata_server": f"http://{MASTER}:8080/metadata",
            "protocol": s.protocol,
            "device_name": s.device_name,
            "master_server_address": f"{MASTER}:50051",
            "global_segment_size": size_bytes(s.global_segment_size),
            "local_buffer_size": size_bytes(s.local_buffer_size),
            "transfer_timeout": 1,
            "save_chunk_meta": False,
        },
    }


def _engine_overrides(s: StackConfig, with_connector: bool, prefix_caching: bool | None = None) -> dict:
    svc: dict = {"command": vllm_command(s, with_connector, prefix_caching)}
    if s.engine_cpusets:
        svc["cpuset"] = s.engine_cpusets[0]
    if s.on_gpu:
        svc["deploy"] = _gpu_reservation(s.gpu.engine_devices[0] if s.gpu.engine_devices else s.gpu.devices)
        # Model cache: a host path is bind-mounted; a bare name is an external volume,
        # so `down -v` (which removes the stack's KV state) never deletes downloaded weights.
        kind = "bind" if s.gpu.model_cache.startswith("/") else "volume"
        svc["volumes"] = [{"type": kind, "source": s.gpu.model_cache, "target": "/models/hf"}]
    if s.protocol == "rdma":
        svc["devices"] = list(s.gpu.rdma_devices)
        svc["cap_add"] = ["IPC_LOCK"]
    return svc


def _gpu_reservation(devices: int | str | list[str]) -> dict:
    reservation: dict = {"driver": "nvidia", "capabilities": ["gpu"]}
    reservation.update({"device_ids": [str(d) for d in devices]} if isinstance(devices, list) else {"count": devices})
    return {"resources": {"reservations": {"devices": [reservation]}}}


def _top_level(s: StackConfig) -> dict:
    if s.on_gpu and not s.gpu.model_cache.startswith("/"):
        return {"volumes": {s.gpu.model_cache: {"external": True}}}
    return {}


def _second_engine(files: list[Path], env_file: Path, s: StackConfig, port: int, lmcache_b: Path | None) -> dict:
    """Engine B = engine A as the merged compose model has it, on its own port, cpuset,
    GPUs and (LMCache) hostname."""
    merged = DockerClient(
        compose_files=list[str | Path](files), compose_env_files=[env_file], compose_project_directory=files[0].parent
    ).compose.config(return_json=True)
    b = copy.deepcopy(merged["services"]["vllm"])
    for key in ("build", "container_name", "hostname"):
        b.pop(key, None)
    b["ports"] = [{"target": 8000, "published": str(port), "host_ip": s.bind_address, "protocol": "tcp"}]
    # B's container after A's: both mount the stack's named volume, and Docker copying the image's
    # files into the empty volume for two containers at once can fail one ("mkdir .../vllm-cache/
    # modelinfos: file exists", seen once in a cross-instance bring-up). A started, not healthy: ~1 s.
    b["depends_on"] = {**b.get("depends_on", {}), "vllm": {"condition": "service_started", "required": True}}
    if len(s.engine_cpusets) > 1:
        b["cpuset"] = s.engine_cpusets[1]
    if s.on_gpu and s.gpu.engine_devices:
        b["deploy"] = _gpu_reservation(s.gpu.engine_devices[1])
    for v in b.get("volumes", []) if lmcache_b else []:  # the LMCache overlay's config mount
        if lmcache_b and v.get("target") == LMCACHE_TARGET:
            v["source"] = str(lmcache_b.resolve())
    return b


def prepare(
    s: StackConfig,
    run_id: str,
    label: str,
    workdir: Path,
    images: dict[str, str],
    compose_dir: Path = COMPOSE_DIR,
    extra_files: list[Path] | None = None,
    with_connector: bool = True,
    dev_mode: bool = False,
    mode: str | None = None,
) -> StackSpec:
    """Render the stack for one scenario run into `workdir` and assemble the compose call.
    `dev_mode`: vLLM's dev endpoints (the cache reset), only for stacks reused with `isolation: reset`.
    `mode`: the arm's cell name (baseline, local, with-cache, local+store): sets prefix caching and the
    connector (without it: `with_connector` and stack.enable_prefix_caching)."""
    prefix_caching, with_connector = arm_flags(s, mode, with_connector)
    node = s.store == "store-node" and with_connector  # a baseline stack has no store to keep
    wanted = {"vllm_port": s.vllm_port, "master_metrics_port": s.master_metrics_port}
    if s.topology == "cross-instance":
        wanted["vllm_b_port"] = 0
    if node:
        wanted["store_metrics_port"] = s.store_metrics_port
    chosen = allocate_ports(s.bind_address, wanted)
    ports = {"vllm": chosen["vllm_port"]}
    if s.topology == "cross-instance":
        ports["vllm-b"] = chosen["vllm_b_port"]
    metrics = chosen["master_metrics_port"]
    workdir.mkdir(parents=True, exist_ok=True)
    mc = workdir / "mooncake.json"
    mc.write_text(json.dumps(mooncake_client_config(s), indent=2))
    lm = workdir / "lmcache.yaml" if s.connector == "lmcache" else None  # only the gpu-lmcache overlay mounts it
    if lm:
        lm.write_text(yaml.safe_dump(lmcache_config(s), sort_keys=False))
    generated = workdir / "compose.generated.yaml"
    overlay = {"services": {"vllm": _engine_overrides(s, with_connector, prefix_caching)}, **_top_level(s)}
    generated.write_text(yaml.safe_dump(overlay, sort_keys=False))
    files = [
        compose_dir / "base.yaml",
        *(compose_dir / f"{o}.yaml" for o in s.overlays),
        *([compose_dir / "store-node.yaml"] if node else []),
        generated,
        *(extra_files or []),
    ]
    env = {
        "KVB_RUN_ID": run_id,
        "KVB_OWNER": owner_id(),
        "KVB_SCENARIO": label,
        "KVB_BIND_ADDRESS": s.bind_address,
        "KVB_VLLM_PORT": str(ports["vllm"]),
        "KVB_MASTER_METRICS_PORT": str(metrics),
        "KVB_MOONCAKE_CONFIG": str(mc.resolve()),
        "KVB_PYTHONHASHSEED": str(s.pythonhashseed),
        "KVB_KVCACHE_SPACE": str(s.kvcache_space_gib),
        "KVB_CLIENT_TTL": str(s.client_ttl),
        "KVB_EVICTION_WATERMARK": f"{s.eviction_high_watermark_ratio:g}",
        "KVB_DEV_MODE": "1" if dev_mode else "0",
        "KVB_ENGINE_IMAGE": images.get("engine", ""),
        "KVB_MASTER_IMAGE": images.get("master", ""),
        "KVB_VLLM_IMAGE": s.gpu.vllm_image,
        "KVB_MOONCAKE_IMAGE": s.gpu.mooncake_image or s.gpu.vllm_image,
        "KVB_MODEL_CACHE": s.gpu.model_cache,
        **({"KVB_LMCACHE_CONFIG": str(lm.resolve())} if lm else {}),
        **(_store_env(s, images, chosen["store_metrics_port"]) if node else {}),
    }
    spec = StackSpec(
        project_name(run_id, label),
        run_id,
        label,
        files,
        env,
        s.bind_address,
        ports,
        metrics,
        s.engines,
        chosen["store_metrics_port"] if node else None,
    )
    env_file = write_env_file(spec, workdir / "stack.env")
    if s.topology == "cross-instance":
        lm_b = workdir / "lmcache-b.yaml" if lm else None
        if lm_b:
            lm_b.write_text(yaml.safe_dump(lmcache_config(s, "vllm-b"), sort_keys=False))
        # Engine B is A as compose merges it, extra overlays included. An extra overlay may address vllm-b
        # itself (tests/compose/wrong-weights.yaml): a placeholder lets compose merge it meanwhile; it
        # applies to the real B afterwards, as every overlay does.
        overlay["services"]["vllm-b"] = {"image": "kvbench/placeholder:vllm-b"}
        generated.write_text(yaml.safe_dump(overlay, sort_keys=False))
        overlay["services"]["vllm-b"] = _second_engine(files, env_file, s, ports["vllm-b"], lm_b)
        generated.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return spec


def _store_env(s: StackConfig, images: dict[str, str], port: int) -> dict[str, str]:
    """compose/store-node.yaml's settings: the pool, its buffer and transport, and the master's image
    (the store node is a client of that Mooncake release)."""
    return {
        "KVB_STORE_IMAGE": (s.gpu.mooncake_image or s.gpu.vllm_image) if s.on_gpu else images.get("master", ""),
        "KVB_STORE_SEGMENT_SIZE": s.global_segment_size,
        "KVB_STORE_BUFFER_SIZE": s.local_buffer_size,
        "KVB_STORE_PROTOCOL": s.protocol,
        "KVB_STORE_DEVICE": s.device_name,
        "KVB_STORE_METRICS_PORT": str(port),
    }


def write_env_file(spec: StackSpec, path: Path) -> Path:
    # Only KVB_* values go here; secrets (HF_TOKEN) stay in the process environment.
    path.write_text("".join(f"{k}={v}\n" for k, v in sorted(spec.env.items())))
    return path
