"""vLLM platform plugin in kvbench's CPU engine image: vLLM's own CPU platform, except that the
engine-core process is forked from the API server instead of spawned. Active only with
KVBENCH_ENGINE_FORK=1 (compose/cpu.yaml sets it); registered as a `vllm.platform_plugins` entry
point by compose/engine.Dockerfile. Checked on the real stack by
tests/test_stack_e2e.py::test_the_cpu_engine_core_is_forked_so_torch_and_vllm_are_imported_once.

Why: vLLM's CPU platform always starts its processes with `spawn`, so the engine-core process
imports torch and vLLM a second time after the API server has. Measured on one core, nothing beside
it, time to a healthy server (four alternations): spawn 23.9-28.1 s, fork 14.8-18.8 s; beside another
engine the second import took 17.5 s of a 48.5 s start. Serving is unchanged: `make bench --mode none`
(16k-token prompts on an AVX2-only host) TTFT mean 13.1 / 13.6 s in rounds 1 / 2 forked, 13.5 / 13.3 s
spawned. The spawn protects vLLM's multi-process CPU workers
(OpenMP is not fork-safe once a parallel region ran); kvbench's engine runs its worker inside the
engine-core process (`--distributed-executor-backend uni`), and the API server runs no kernel before
the fork, so fork is kept to that case. On GPUs vLLM forks its engine core by default as well.
"""

from __future__ import annotations

import os

from vllm.platforms.cpu import CpuPlatform

SWITCH = "KVBENCH_ENGINE_FORK"


class ForkingCpuPlatform(CpuPlatform):
    @classmethod
    def check_and_update_config(cls, vllm_config) -> None:  # type: ignore[no-untyped-def]
        super().check_and_update_config(vllm_config)  # sets VLLM_WORKER_MULTIPROC_METHOD=spawn
        if vllm_config.parallel_config.distributed_executor_backend == "uni":
            os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"


def register() -> str | None:
    """The platform's qualified name where vLLM's CPU platform would be chosen, with the switch on."""
    if os.environ.get(SWITCH) != "1":
        return None
    from vllm.platforms import cpu_platform_plugin

    return f"{__name__}.ForkingCpuPlatform" if cpu_platform_plugin() else None
