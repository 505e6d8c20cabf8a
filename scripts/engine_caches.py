#!/usr/bin/env python3
"""Fill the engine image's caches for a faster `vllm serve` start (run at build time, in the image's venv).

Usage: VLLM_CACHE_ROOT=/var/lib/kvbench/vllm-cache python engine_caches.py MODEL_DIR [PROBE OUT]

1. vLLM's model-info cache: vLLM inspects the model's class in a subprocess at every start
   (8 s of a 28 s start on 2 cores) unless this cache (class capabilities, keyed by the module's
   hash; no KV data) has it. The stack's named volume is created from the image's copy of
   VLLM_CACHE_ROOT.
2. Bytecode for what `vllm serve` with the Mooncake store connector imports: the venv is
   installed without bytecode (20,000 files, +370 MB, 25-35 s of the build on 2 cores), and
   importing writes it for the modules imported. Without it every engine start compiled them (+11 s).
   Measured with vLLM 0.32: these imports cover 5,100 of the 5,400 modules a start imports; the
   rest is compiled at start (well under a second). A module missing from another vLLM release
   is skipped, not an error: this is a cache.
3. With PROBE OUT: the image's versions line (harness/stack/version_probe.py, run here where vLLM is
   imported already) into OUT, which kvbench reads instead of starting the image to import vLLM again.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import runpy
import sys
from pathlib import Path

SERVE_IMPORTS = (
    "vllm.entrypoints.cli.main",
    "vllm.entrypoints.cli.serve",
    "vllm.entrypoints.openai.api_server",
    "vllm.v1.engine.core",
    "vllm.v1.worker.cpu_worker",
    "vllm.v1.worker.cpu_model_runner",
    "vllm.model_executor.models.llama",
    "vllm.distributed.kv_transfer.kv_connector.v1.mooncake.store.connector",
    # imported later in a start (API server, quantization config probing, SageMaker routes)
    "pydantic.v1",
    "loguru",
    "websockets",
    "compressed_tensors",
    "jmespath",
    "model_hosting_container_standards.sagemaker",
    "prometheus_fastapi_instrumentator",
)


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 3):
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    import mooncake.store  # noqa: F401 - the connector's store client must import
    import torch

    from vllm.config import ModelConfig

    print("vllm", importlib.metadata.version("vllm"), "torch", torch.__version__)
    ModelConfig(model=argv[0])
    skipped = []
    for name in SERVE_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            skipped.append(f"{name} ({exc})")
    print(f"bytecode written for {len(sys.modules)} modules; skipped: {', '.join(skipped) or 'none'}")
    if len(argv) == 3:
        probe = runpy.run_path(argv[1], run_name="version_probe")
        line = probe["report"]()
        Path(argv[2]).write_text(line + "\n")
        print("versions:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
