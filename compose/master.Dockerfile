# Mooncake master (mooncake_master from mooncake-transfer-engine-non-cuda).
# Build from the repo root after scripts/make_wheelhouse.sh master:
#   docker build -f compose/master.Dockerfile -t kvbench/master-cpu .
# No entrypoint: the command (mooncake_master and its flags) comes from compose.
# One stage, as engine.Dockerfile (the wheelhouse layer, ~50 MB, stays in the image).
ARG BASE_IMAGE=kvbench/base:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Mooncake's transfer engine needs libibverbs/libnuma/libcurl even for TCP. kvbench's own base image
# has them (scripts/make_base_image.sh): no apt then. The same lines as engine.Dockerfile's (one cached layer).
RUN set -eux; pkgs=""; \
    for p in libibverbs1 libnuma1 libcurl4; do dpkg -s "$p" >/dev/null 2>&1 || pkgs="$pkgs $p"; done; \
    python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs="$pkgs python3 python3-venv"; \
    if [ -n "$pkgs" ]; then \
      apt-get update; apt-get install -y --no-install-recommends $pkgs; rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'

COPY compose/requirements/master.lock compose/requirements/installer.lock /tmp/
COPY build/wheelhouse/master/ /tmp/wheelhouse/
# uv from the wheelhouse (installer.lock's pin); without a uv wheel in the wheelhouse, pip.
RUN set -eux; \
    uv_whl="$(ls /tmp/wheelhouse/uv-"$(sed -n 's/^uv==//p' /tmp/installer.lock)"-*.whl 2>/dev/null || true)"; \
    if [ -n "$uv_whl" ]; then \
      python3 -m zipfile -e "$uv_whl" /tmp/uv; install -m 755 /tmp/uv/uv-*.data/scripts/uv /usr/local/bin/uv; \
      uv venv --python "$(command -v python3)" /opt/venv; \
      UV_NO_CACHE=1 uv pip install --python /opt/venv/bin/python --compile-bytecode \
        --no-index --no-deps --find-links /tmp/wheelhouse -r /tmp/master.lock; \
      rm -rf /tmp/uv /usr/local/bin/uv; \
    else \
      python3 -m venv /opt/venv; \
      /opt/venv/bin/pip install --no-index --no-deps --find-links /tmp/wheelhouse -r /tmp/master.lock; \
    fi; \
    rm -rf /tmp/wheelhouse; \
    test -x /opt/venv/bin/mooncake_master; /opt/venv/bin/python -c 'import mooncake.store'

ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EXPOSE 50051 8080 9003
