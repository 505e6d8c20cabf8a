"""The configuration's models: every field a suite YAML may set, validated before any container starts."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from harness.config.trace import TraceError, read_trace

Api = Literal["completions", "chat"]  # which OpenAI endpoint the requests go to
NAME_RE = re.compile(r"^[a-z0-9_-]{1,48}$")

PositiveInt = Annotated[int, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class ConfigError(Exception):
    """Invalid configuration; str() is a single line naming file and field."""


def check_name(value: str, what: str = "name") -> str:
    """Names end up in paths and compose project names: keep them boring."""
    if not NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} must match [a-z0-9_-]{{1,48}}")
    return value


def _size(text: str) -> int | None:
    """Bytes of a Mooncake size string ("1GB", "256MB", "4 GB", a plain number); None if it is not one."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)B?\s*", text.upper())
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2)] if m else None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Targets(Strict):
    ttft_reduction_percent: float = 60.0
    throughput_increase_percent: float = 150.0


class _ScenarioBase(Strict):
    description: str = ""
    max_tokens: PositiveInt | None = None  # overrides the suite's max_tokens
    # Scenarios with the same prefix_seed (and length) get an identical shared
    # prefix; used to provoke cross-scenario pollution on purpose.
    prefix_seed: int | None = None


class DocumentQA(_ScenarioBase):
    """One long document + one of N questions (RAG / document QA)."""

    kind: Literal["document_qa"]
    num_requests: PositiveInt
    context_length: PositiveInt
    num_questions: PositiveInt = 5
    question_length: PositiveInt = 24


class CodeGeneration(_ScenarioBase):
    """One code-base context + one of N tasks."""

    kind: Literal["code_generation"]
    num_requests: PositiveInt
    context_length: PositiveInt
    num_tasks: PositiveInt = 4
    task_length: PositiveInt = 32


class BatchProcessing(_ScenarioBase):
    """A shared instruction + a short text unique to each request."""

    kind: Literal["batch_processing"]
    num_requests: PositiveInt
    instruction_length: PositiveInt
    text_length: PositiveInt = 200


class MultiTurn(_ScenarioBase):
    """Conversations whose history grows each turn, with the model's real replies."""

    kind: Literal["multi_turn"]
    num_conversations: PositiveInt
    turns: PositiveInt
    system_length: PositiveInt = 500
    user_length: PositiveInt = 100
    # The user's think time between an answer and the next turn, so other conversations write to
    # the cache meanwhile: fixed, or exponential with this mean (seeded, the same every round).
    think_time_s: NonNegFloat = 0.0
    think_time: Literal["fixed", "exponential"] = "fixed"


class ColdStart(_ScenarioBase):
    """Unique content per request, no prefix shared between requests."""

    kind: Literal["cold_start"]
    num_requests: PositiveInt
    prompt_length: PositiveInt


class Trace(_ScenarioBase):
    """Replay of a request trace in the Mooncake FAST'25 format (harness/config/trace.py): each hash id a
    deterministic 512-token block, arrivals at the trace's timestamps divided by `speed`."""

    kind: Literal["trace"]
    path: Path  # relative paths: to the config file's directory
    num_requests: PositiveInt | None = None  # the first N requests of the window (None: all)
    start_ms: NonNegFloat = 0.0
    end_ms: NonNegFloat | None = None
    # Requests with a longer input are skipped and counted (as are those that would not fit the context).
    max_input_length: PositiveInt | None = None
    speed: Annotated[float, Field(gt=0)] = 1.0  # 10: ten times faster than recorded
    timestamps: bool = True  # false: send as fast as `concurrency` allows
    # The trace's output_length is honoured (fixed length); this caps it for slow engines (recorded).
    max_output_length: PositiveInt | None = None

    @model_validator(mode="after")
    def _readable(self) -> Trace:  # the whole trace is validated before any container starts
        try:
            read_trace(self.path)
        except TraceError as e:
            raise ValueError(str(e)) from None
        if self.end_ms is not None and self.end_ms <= self.start_ms:
            raise ValueError(f"end_ms {self.end_ms:g} must be after start_ms {self.start_ms:g}")
        return self


class WorkingSet(_ScenarioBase):
    """D distinct documents of L tokens revisited in a chosen order, so that the working set (D x L
    tokens) is a chosen multiple of the engine's KV pool (`stack.engine_kv_pool_tokens`): where vLLM's
    own prefix cache stops holding the prefixes and a store behind it starts to pay.

    `ratio` (working set / pool) gives D = round(ratio * pool / L) (at least 1); `ratios: [...]` in
    the YAML makes one scenario per ratio (`<name>-x<ratio>`, e.g. ws-x0p5, ws-x8). Or give
    `documents` directly. Every round replays the same visits; the warm rounds (2+) are the revisits."""

    kind: Literal["working_set"]
    document_tokens: PositiveInt  # L
    ratio: Annotated[float, Field(gt=0)] | None = None  # working set / pool, as asked
    documents: PositiveInt | None = None  # D (from `ratio` and the pool when not given)
    # cyclic: 0, 1, ..., D-1, 0, ... (the LRU worst case: past the pool every revisit misses);
    # zipf: popularity ~ 1 / rank^zipf_s; random: uniform. Seeded: every round the same sequence.
    order: Literal["cyclic", "zipf", "random"] = "cyclic"
    zipf_s: Annotated[float, Field(gt=0)] = 1.0
    # Requests per round (None: D; cyclic: rounded up to whole passes over the documents).
    visits: PositiveInt | None = None
    num_questions: PositiveInt = 4
    question_length: PositiveInt = 16

    @model_validator(mode="after")
    def _sized(self) -> WorkingSet:
        if self.documents is None and self.ratio is None:
            raise ValueError("working_set: give ratio (working set / engine_kv_pool_tokens), ratios, or documents")
        return self

    @property
    def num_documents(self) -> int:
        assert self.documents is not None, "Config fills documents from the ratio and the pool"
        return self.documents

    @property
    def visits_per_round(self) -> int:
        d = self.num_documents
        v = self.visits or d
        return -(-v // d) * d if self.order == "cyclic" else v


Scenario = Annotated[
    DocumentQA | CodeGeneration | BatchProcessing | MultiTurn | ColdStart | Trace | WorkingSet,
    Field(discriminator="kind"),
]


# The GPU stack's images, the one place they are named (the compose overlays get them from here).
# - vLLM: the V1 MooncakeStoreConnector entered vLLM with PR #40900 (April 2026); vLLM's docs carry its
#   usage page from v0.21.0 on (docs.vllm.ai/en/v0.21.0/features/mooncake_store_connector_usage/),
#   v0.11.x has only the V0 lookup buffer. v0.32.0 is the CPU reference stack's generation (vLLM CPU
#   0.32 + mooncake 0.3.13); its docs name mooncake-transfer-engine-cuda13 for its CUDA 13 default.
# - Mooncake master: by default the vLLM image itself runs the `mooncake_master` of the transfer
#   engine it bundles, so master and client are one release by construction. Naming another image
#   is allowed; the preflight then refuses a release that differs from the engine's.
# - LMCache (connector: lmcache): vLLM's images leave optional dependencies out, so the LMCache
#   variant needs an image with lmcache on top of the same vLLM (compose/gpu-lmcache.Dockerfile);
#   the preflight refuses an image without it.
GPU_VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"


class GpuConfig(Strict):
    """Settings used by the GPU overlays (compose/gpu.yaml, compose/gpu-lmcache.yaml)."""

    vllm_image: str = GPU_VLLM_IMAGE  # pin the tag you validated
    mooncake_image: str | None = None  # None: the master runs from vllm_image (same Mooncake release)
    devices: Annotated[int, Field(gt=0)] | Literal["all"] | list[str] = 1  # a count, "all", or device ids
    tensor_parallel_size: PositiveInt = 1
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    # A named volume (a bare name) or an absolute host path holding the Hugging Face cache.
    model_cache: str = "hf-cache"
    rdma_devices: list[str] = []  # e.g. ["/dev/infiniband"]; used with protocol: rdma
    # Device ids per engine, in place of `devices`: cross-instance engines must not
    # share GPUs, e.g. [["0", "1"], ["2", "3"]] with tensor_parallel_size 2.
    engine_devices: list[Annotated[list[str], Field(min_length=1)]] = []


class KubernetesConfig(Strict):
    """stack.backend: kubernetes - where the namespaces go and how the harness reaches them."""

    context: str | None = None  # a kube context by name; None: the current one
    kubeconfig: Path | None = None  # None: $KUBECONFIG or ~/.kube/config
    in_cluster: bool = False  # kvbench runs in a pod: its service account, not a kubeconfig
    # port-forward: through the API server to the pods (works from a laptop; adds the tunnel's latency
    # to every TTFT). cluster-dns: the Services' <name>.<namespace>.svc names (kvbench inside the cluster).
    access: Literal["port-forward", "cluster-dns"] = "port-forward"
    # Where the `hf-token` Secret lives; it is copied into each stack's namespace (and deleted with it).
    secret_namespace: str = "default"
    delete_timeout: PositiveInt = 300  # seconds for a namespace to finish terminating

    @field_validator("secret_namespace")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", v):
            raise ValueError(f"{v!r} is not a namespace name (DNS-1123 label)")
        return v


class StackConfig(Strict):
    """How each fresh stack is brought up (compose/base.yaml + the overlays, in order)."""

    overlay: str | list[str] = "cpu"
    bind_address: str = "127.0.0.1"
    vllm_port: int = Field(default=0, ge=0, le=65535)  # 0 = pick a free port
    master_metrics_port: int = Field(default=0, ge=0, le=65535)
    ready_timeout: PositiveInt = 300
    teardown_timeout: PositiveInt = 5
    model: str = "/models/tiny"
    served_model_name: str = "tiny"
    # With engine_kv_pool_tokens and not given: derived from the selected scenarios' longest request.
    max_model_len: PositiveInt = 32768
    # Legacy switch for the modes `with-cache` / `baseline` (true: they run as local+store / local).
    # The arms (`mode`: none, local, store, local+store) set prefix caching themselves.
    enable_prefix_caching: bool = False
    kvcache_space_gib: PositiveInt = 1
    # The engine's own KV pool, where vLLM's prefix cache lives, in tokens: rendered as
    # `--num-gpu-blocks-override` (whole blocks, rounded up; vLLM applies it on every backend) and
    # read back from the engine. None: what the backend allocates (kvcache_space_gib on CPU,
    # gpu.gpu_memory_utilization on GPU).
    engine_kv_pool_tokens: PositiveInt | None = None
    pythonhashseed: int = 0
    client_ttl: PositiveInt = 5
    # Where the KV lives. embedded: every engine contributes `global_segment_size` of its own memory
    # (gone when the engine stops). store-node: a Mooncake client of its own (the `mooncake-store`
    # service) owns one `global_segment_size` pool; the engines run in standalone-store mode and
    # contribute none, so the store outlives engine restarts and replicas share it.
    store: Literal["embedded", "store-node"] = "embedded"
    global_segment_size: str = "1GB"
    local_buffer_size: str = "256MB"
    store_metrics_port: int = Field(default=0, ge=0, le=65535)  # the store node's /health and /metrics
    # The master evicts when the store is this full (mooncake_master --eviction_high_watermark_ratio).
    eviction_high_watermark_ratio: Annotated[float, Field(gt=0, le=1)] = 0.9
    extra_vllm_args: list[str] = []
    connector: Literal["mooncake_store", "lmcache"] = "mooncake_store"
    # cross-instance: two engines share one master; round 1 goes to engine A, rounds 2+ to B.
    # engine-restart: one engine, restarted before every round 2+ while the master keeps running
    # (warm store, cold engine: do hits survive an engine restart?).
    topology: Literal["single", "cross-instance", "engine-restart"] = "single"
    # One cpuset per engine (CPU stack, cross-instance: ["0", "1"] - one shared CPU stalls KV loads).
    engine_cpusets: list[str] = []
    protocol: Literal["tcp", "rdma"] = "tcp"
    device_name: str = ""  # RDMA NIC(s) for Mooncake, e.g. "mlx5_0"
    gpu: GpuConfig = GpuConfig()
    # compose: a Docker Compose project per stack on this host. kubernetes: a namespace per stack on
    # a cluster, rendered from the same compose files (harness/stack/kube.py).
    backend: Literal["compose", "kubernetes"] = "compose"
    kubernetes: KubernetesConfig = KubernetesConfig()

    @field_validator("overlay")
    @classmethod
    def _overlay_names(cls, v: str | list[str]) -> str | list[str]:
        for name in [v] if isinstance(v, str) else v:
            check_name(name, "overlay")
        if not v:
            raise ValueError("at least one overlay is required")
        return v

    @model_validator(mode="after")
    def _connector_matches_overlay(self) -> StackConfig:
        if ("gpu-lmcache" in self.overlays) != (self.connector == "lmcache"):
            raise ValueError("connector: 'lmcache' goes with the gpu-lmcache overlay (and only with it)")
        if self.protocol == "rdma" and not self.gpu.rdma_devices:
            raise ValueError("gpu.rdma_devices: protocol 'rdma' needs the RDMA devices, e.g. ['/dev/infiniband']")
        if self.topology == "engine-restart" and self.backend != "compose":
            raise ValueError("topology: engine-restart restarts a compose service; backend kubernetes has none")
        fixed = [(n, p) for n in ("vllm_port", "master_metrics_port", "store_metrics_port") if (p := getattr(self, n))]
        for i, (name, port) in enumerate(fixed):
            if (same := next((n for n, q in fixed[:i] if q == port), None)) is not None:
                raise ValueError(f"{name}: {port} is also {same}")
        if self.store == "store-node" and self.connector != "mooncake_store":
            raise ValueError(
                "store: 'store-node' runs MooncakeStoreConnector in standalone-store mode (connector: mooncake_store)"
            )
        if self.store == "store-node" and _size(self.global_segment_size) == 0:
            raise ValueError("global_segment_size: the store node's pool must not be empty")
        for name in ("global_segment_size", "local_buffer_size"):
            if _size(getattr(self, name)) is None:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not a size (e.g. 512MB, 4GB)")
        if self.gpu.engine_devices and len(self.gpu.engine_devices) != len(self.engines):
            raise ValueError(
                f"gpu.engine_devices: one list of device ids per engine ({len(self.engines)} for "
                f"topology {self.topology}), got {len(self.gpu.engine_devices)}"
            )
        return self

    @model_validator(mode="after")
    def _pool_holds_a_request(self) -> StackConfig:
        if self.engine_kv_pool_tokens is not None and self.max_model_len > self.pool_request_limit:
            raise ValueError(
                f"engine_kv_pool_tokens: a pool of {self.engine_kv_pool_tokens:,} tokens ({self.pool_blocks} blocks of "
                f"{self.kv_block_size}) serves requests of at most {self.pool_request_limit:,} tokens (vLLM keeps one "
                f"block back), but max_model_len is {self.max_model_len:,}: raise the pool or lower max_model_len"
            )
        return self

    @property
    def kv_block_size(self) -> int:
        """Tokens per KV block: `--block-size` in extra_vllm_args, else vLLM's default (128 on CPU, 16 on GPU)."""
        args = list(self.extra_vllm_args)
        for i, a in enumerate(args):
            if a == "--block-size" and i + 1 < len(args) and args[i + 1].isdigit():
                return int(args[i + 1])
            if a.startswith("--block-size=") and a.split("=", 1)[1].isdigit():
                return int(a.split("=", 1)[1])
        return 16 if self.on_gpu else 128

    @property
    def pool_blocks(self) -> int | None:
        """engine_kv_pool_tokens in whole blocks (rounded up): `--num-gpu-blocks-override`."""
        if self.engine_kv_pool_tokens is None:
            return None
        return -(-self.engine_kv_pool_tokens // self.kv_block_size)

    @property
    def pool_tokens(self) -> int | None:
        """The pool as rendered, in tokens (whole blocks)."""
        return None if self.pool_blocks is None else self.pool_blocks * self.kv_block_size

    @property
    def pool_request_limit(self) -> int:
        """The longest request the pool can serve: vLLM's start-up check ("estimated maximum model length")
        leaves one block out (64 blocks of 128 -> 8,064 tokens, measured)."""
        return max(0, ((self.pool_blocks or 1) - 1) * self.kv_block_size)

    @property
    def overlays(self) -> list[str]:
        return [self.overlay] if isinstance(self.overlay, str) else list(self.overlay)

    @property
    def on_gpu(self) -> bool:
        return any(o.startswith("gpu") for o in self.overlays)

    @property
    def engines(self) -> list[str]:
        """Engine services, stopped before the master (killing the master first garbles vLLM)."""
        return ["vllm", "vllm-b"] if self.topology == "cross-instance" else ["vllm"]


class WatchConfig(Strict):
    """The stack watch during every round (harness/observe/watch.py)."""

    # How often the engines' and the master's /health are asked.
    poll_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # A component that does not answer for this long is gone, even if its container still runs;
    # one whose container (or Deployment) is no longer live is gone at the first unanswered poll.
    down_after_s: Annotated[float, Field(gt=0)] = 10.0
    # A with-cache round whose store reads (lookups, loads) failed for more than this share of
    # their keys is `degraded`: it measured a broken store, not the cache.
    degraded_failed_keys_percent: Annotated[float, Field(ge=0, le=100)] = 1.0


class Config(Strict):
    # scenarios first: default_scenarios is checked against them (pydantic
    # validates fields in declaration order).
    scenarios: dict[str, Scenario]
    default_scenarios: list[str]
    rounds: PositiveInt = 2
    concurrency: PositiveInt = 4
    # Client processes that share a round's requests (each its own event loop and connections);
    # concurrency and request_rate stay the round's totals. None: from the cores and the concurrency.
    client_workers: PositiveInt | None = None
    # Poisson arrivals, requests/s; None (or inf, as `vllm bench serve --request-rate inf`) = as fast as
    # concurrency allows.
    request_rate: Annotated[float, Field(gt=0)] | None = None
    wait_between_rounds: NonNegFloat = 1.0
    request_timeout: Annotated[float, Field(gt=0)] = 120.0
    max_tokens: PositiveInt = 16
    temperature: NonNegFloat = 0.0
    api: Api = "completions"
    seed: int = 1234
    run_name: str | None = None
    # The arms, each on its own isolated stack, same prompts (a comma list or a YAML list):
    # none (no prefix cache, no connector), local (vLLM's own prefix cache), store (the KV connector
    # to Mooncake, no local prefix cache: the seed's setup), local+store (both: how production runs).
    # Aliases: with-cache = store, baseline = none, both = store,none (the default headline: what
    # reuse buys). With stack.enable_prefix_caching: true the aliases keep meaning what they ran as
    # before: with-cache = local+store, baseline = local.
    mode: str | list[str] = "both"
    # A scenario with more failed requests than this is failed, whatever its numbers say.
    max_failed_percent: Annotated[float, Field(ge=0, le=100)] = 2.0
    # What to do when a scenario's cold round finds a warm cache (cold-state gate).
    on_contamination: Literal["warn", "fail"] = "warn"
    # isolation reset: when a reset cannot be proven (a tier stayed warm), run the cell on a fresh
    # stack instead, or fail it.
    on_reset_failure: Literal["fresh", "fail"] = "fresh"
    targets: Targets = Targets()
    stack: StackConfig = StackConfig()
    watch: WatchConfig = WatchConfig()
    # Config paths with lists of values, crossed ("stack.global_segment_size": ["256MB", "1GB"]):
    # every point x scenario x mode x repeat gets its own fresh, cold-verified stack.
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}

    @field_validator("sweep")
    @classmethod
    def _sweep_paths(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path in v:
            if path.split(".")[0] in UNSWEPT or not _is_field(Config, path.split(".")):
                raise ValueError(f"{path}: not a setting a sweep can vary")
        return v

    @model_validator(mode="after")
    def _sweep_points(self) -> Config:
        for point in self.points():
            try:
                self.at(point)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"sweep point {point}: {where}: {err['msg']}") from None
        return self

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the sweep's values, in order (the last path varies fastest); none
        without a sweep."""
        if not self.sweep:
            return []
        return [dict(zip(self.sweep, values, strict=True)) for values in itertools.product(*self.sweep.values())]

    def at(self, point: dict[str, Any]) -> Config:
        """This configuration with the point's values set and no sweep."""
        data = self.model_dump(mode="json", exclude={"sweep"})
        for path, value in point.items():
            *parents, last = path.split(".")
            node = data
            for p in parents:
                node = node[p]
            node[last] = value
        return Config.model_validate(data)

    @field_validator("mode")
    @classmethod
    def _arms(cls, v: str | list[str]) -> str | list[str]:
        parse_arms(v)
        return v

    @model_validator(mode="before")
    @classmethod
    def _sized_by_pool(cls, data: Any) -> Any:
        """`ratios` -> one working_set scenario per ratio; a working set's D from its ratio and the pool;
        max_model_len from the workload when a pool is given and max_model_len is not."""
        if not isinstance(data, dict):
            return data
        return size_by_pool(data)

    @model_validator(mode="after")
    def _arms_and_pool(self) -> Config:
        named = [a for a in _arm_names(self.mode) if a in ARMS]
        if named and self.stack.enable_prefix_caching:
            raise ValueError(
                f"stack.enable_prefix_caching: the arms ({', '.join(named)}) set vLLM's prefix cache themselves "
                "(local, local+store: on; none, store: off); drop it"
            )
        for name, sc in self.scenarios.items():
            if isinstance(sc, WorkingSet) and sc.documents is None:
                raise ValueError(
                    f"scenario {name}: ratio needs stack.engine_kv_pool_tokens (the pool it is a multiple of)"
                )
        return self

    @property
    def arms(self) -> tuple[str, ...]:
        """The arms as they run: none, local, store, local+store (aliases resolved)."""
        return parse_arms(self.mode, self.stack.enable_prefix_caching)

    @field_validator("request_rate")
    @classmethod
    def _no_pacing(cls, v: float | None) -> float | None:
        return None if v is not None and math.isinf(v) else v  # recorded as null, never as Infinity

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v, "run_name")

    @field_validator("scenarios")
    @classmethod
    def _scenario_names(cls, v: dict[str, Scenario]) -> dict[str, Scenario]:
        if not v:
            raise ValueError("at least one scenario is required")
        for name in v:
            check_name(name, "scenario name")
        return v

    @field_validator("default_scenarios")
    @classmethod
    def _selection(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if not v:
            raise ValueError("no scenario selected")
        known = info.data.get("scenarios")
        for name in v:
            if known is not None and name not in known:
                raise ValueError(f"unknown scenario {name!r} (known: {', '.join(sorted(known))})")
        return v

    @model_validator(mode="after")
    def _traces_need_completions(self) -> Config:
        traces = [n for n, s in self.scenarios.items() if isinstance(s, Trace)]
        if traces and self.api != "completions":
            raise ValueError(f"scenario {traces[0]}: a trace is replayed as token ids, which needs api: completions")
        return self

    @property
    def modes(self) -> tuple[str, ...]:
        """The arms by their cell names (results directories, rows' `mode`): store and none keep
        today's names with-cache and baseline."""
        return tuple(MODE_OF_ARM[a] for a in self.arms)

    def selected(self) -> dict[str, Scenario]:
        return {name: self.scenarios[name] for name in self.default_scenarios}


UNSWEPT = ("sweep", "scenarios", "default_scenarios", "run_name", "mode")  # not per point


def point_label(point: dict[str, Any]) -> str:
    """A sweep point as people read it: the last part of each path and its value."""
    return ", ".join(f"{path.rsplit('.', 1)[-1]}={value}" for path, value in point.items())


def _is_field(model: type[BaseModel], parts: list[str]) -> bool:
    field = model.model_fields.get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    sub = field.annotation
    return isinstance(sub, type) and issubclass(sub, BaseModel) and _is_field(sub, parts[1:])


# ------------------------------------------------------------------ arms

ARMS = ("none", "local", "store", "local+store")
# An arm's cell name (its `mode` in rows and the manifest, its results directory): store and none
# keep the names they have had since the first release.
MODE_OF_ARM = {"none": "baseline", "local": "local", "store": "with-cache", "local+store": "local+store"}
ARM_OF_MODE = {m: a for a, m in MODE_OF_ARM.items()}
# (vLLM's prefix cache, the KV connector) per cell mode
ARM_FLAGS = {
    "baseline": (False, False),
    "local": (True, False),
    "with-cache": (False, True),
    "local+store": (True, True),
}
_ALIASES = {"with-cache": ("store",), "baseline": ("none",), "both": ("store", "none")}


def _arm_names(mode: str | list[str]) -> list[str]:
    items = [mode] if isinstance(mode, str) else list(mode)
    return [n.strip() for item in items for n in str(item).split(",") if n.strip()]


def parse_arms(mode: str | list[str], legacy_prefix_caching: bool = False) -> tuple[str, ...]:
    """`mode` as arms, in the given order without repeats; ValueError naming the unknown one."""
    out: list[str] = []
    for name in _arm_names(mode):
        if name in ARMS:
            out.append(name)
        elif name in _ALIASES:
            arms = _ALIASES[name]
            out += [{"store": "local+store", "none": "local"}[a] for a in arms] if legacy_prefix_caching else arms
        else:
            raise ValueError(
                f"{name!r} is not an arm: choose from {', '.join(ARMS)} (aliases: with-cache = store, "
                "baseline = none, both = store,none), comma-separated"
            )
    if not out:
        raise ValueError("no arm given")
    return tuple(dict.fromkeys(out))


# ------------------------------------------------------------------ sizes from the pool


def ratio_label(ratio: float) -> str:
    """A ratio in a scenario name: 0.5 -> x0p5, 8 -> x8."""
    return "x" + f"{ratio:g}".replace(".", "p").replace("-", "m")


def prompt_bound(sc: Any) -> int | None:
    """An upper bound of a scenario's longest prompt in tokens (its parts plus headroom for labels,
    BOS and a chat template); None when the config cannot tell (a trace without max_input_length)."""
    room = 64
    if isinstance(sc, DocumentQA):
        return sc.context_length + sc.question_length + room
    if isinstance(sc, CodeGeneration):
        return sc.context_length + sc.task_length + room
    if isinstance(sc, BatchProcessing):
        return sc.instruction_length + sc.text_length + room
    if isinstance(sc, ColdStart):
        return sc.prompt_length + room
    if isinstance(sc, WorkingSet):
        return sc.document_tokens + sc.question_length + room
    if isinstance(sc, MultiTurn):
        return sc.system_length + sc.turns * (sc.user_length + (sc.max_tokens or 0) + 16) + room
    if isinstance(sc, Trace):
        return sc.max_input_length + room if sc.max_input_length else None
    return None


def size_by_pool(data: dict) -> dict:
    """The raw config with working-set ratios expanded, D filled in from the pool, and max_model_len
    derived from the workload (when a pool is given and max_model_len is not). Data that does not
    validate is returned as far as it got: the model's own validation then names the field."""
    from pydantic import TypeAdapter

    data = dict(data)
    scenarios = data.get("scenarios")
    if isinstance(scenarios, dict):
        expanded: dict[str, Any] = {}
        renamed: dict[str, list[str]] = {}
        for name, sc in scenarios.items():
            if isinstance(sc, dict) and sc.get("kind") == "working_set" and isinstance(sc.get("ratios"), list):
                rest = {k: v for k, v in sc.items() if k != "ratios"}
                for r in sc["ratios"]:
                    new = f"{name}-{ratio_label(float(r))}" if isinstance(r, int | float) else f"{name}-{r}"
                    expanded[new] = {**rest, "ratio": r}
                    renamed.setdefault(name, []).append(new)
            else:
                expanded[name] = sc
        data["scenarios"] = expanded
        if renamed and isinstance(data.get("default_scenarios"), list):
            data["default_scenarios"] = [x for n in data["default_scenarios"] for x in renamed.get(n, [n])]
    raw_stack = data.get("stack", {})
    if not isinstance(raw_stack, dict | StackConfig):
        return data
    stack_dict = raw_stack.model_dump() if isinstance(raw_stack, StackConfig) else dict(raw_stack)
    if stack_dict.get("engine_kv_pool_tokens") is None:
        return data
    try:  # the pool's size in whole blocks needs the block size, i.e. the overlay and the engine's flags
        probe = StackConfig.model_validate({**stack_dict, "max_model_len": 1})
        parsed = TypeAdapter(dict[str, Scenario]).validate_python(data.get("scenarios") or {})
    except (ValidationError, ValueError, TypeError):
        return data
    pool = probe.pool_tokens or 0
    for name, sc in parsed.items():
        if isinstance(sc, WorkingSet) and sc.documents is None and sc.ratio is not None:
            data["scenarios"][name] = {
                **data["scenarios"][name],
                "documents": max(1, round(sc.ratio * pool / sc.document_tokens)),
            }
    if (
        "max_model_len" not in stack_dict
        or isinstance(raw_stack, StackConfig)
        and "max_model_len" not in raw_stack.model_fields_set
    ):
        selected = data.get("default_scenarios") or list(parsed)
        out = data.get("max_tokens", 16)
        needs = [
            (b + (parsed[n].max_tokens or out if isinstance(out, int) else 16), n)
            for n in selected
            if n in parsed and (b := prompt_bound(parsed[n])) is not None
        ]
        if needs and len(needs) == len([n for n in selected if n in parsed]):
            need, longest = max(needs, key=lambda x: x[0])  # the first scenario of the longest requests
            block = probe.kv_block_size
            derived = -(-need // block) * block
            if derived > probe.pool_request_limit:
                raise ValueError(
                    f"stack.engine_kv_pool_tokens: {stack_dict['engine_kv_pool_tokens']:,} tokens ({probe.pool_blocks} "
                    f"blocks of {block}) serve requests of at most {probe.pool_request_limit:,} tokens, but scenario "
                    f"{longest} needs max_model_len {derived:,} (its longest prompt and output): raise the pool to at "
                    f"least {derived + block:,} tokens or shorten the scenario"
                )
            stack_dict["max_model_len"] = derived
            data["stack"] = stack_dict
    return data
