"""What is inside a stack image: run in the image (no GPU, no network), it prints one line, KVB{json}.

Stdlib only, besides vLLM's own connector registry (importing its factory module initialises no
device). `harness.stack.versions` runs it as `python3 -c` in an image; the engine image runs it at
build time too (scripts/engine_caches.py), keeping the line in RECORDED, so a new engine image is
not started once more to import vLLM (~8 s on 2 cores).
"""

from __future__ import annotations

import importlib.metadata as md
import json


def version(*names: str) -> str | None:
    for n in names:
        try:
            return md.version(n)
        except md.PackageNotFoundError:
            pass
    return None


def report() -> str:
    out: dict[str, object] = {
        "vllm": version("vllm"),
        "mooncake": version(
            "mooncake-transfer-engine", "mooncake-transfer-engine-cuda13", "mooncake-transfer-engine-non-cuda"
        ),
        "lmcache": version("lmcache"),
        "torch": version("torch"),
        "connectors": None,
    }
    if out["vllm"]:
        try:
            from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

            out["connectors"] = sorted(KVConnectorFactory._registry)
        except Exception as e:  # noqa: BLE001 - reported, and judged by harness.stack.versions
            out["connector_error"] = (type(e).__name__ + ": " + str(e))[:300]
    return "KVB" + json.dumps(out)


if __name__ == "__main__":
    print(report())
