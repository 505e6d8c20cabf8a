# Mooncake master (mooncake_master from mooncake-transfer-engine-non-cuda).
# Build from the repo root after scripts/make_wheelhouse.sh master:
#   docker build -f compose/master.Dockerfile -t kvbench/master-cpu .
# No entrypoint: the command (mooncake_master and its flags) comes from compose.
ARG BASE_IMAGE=kvbench/base:bookworm
FROM ${BASE_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN set -eux; pkgs="libibverbs1 libnuma1 libcurl4"; \
    python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs="$pkgs python3 python3-venv"; \
    apt-get update; apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'

FROM base AS master-build
COPY compose/requirements/master.lock /tmp/master.lock
COPY build/wheelhouse/master/ /tmp/wheelhouse/
RUN set -eux; python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-index --no-deps --find-links /tmp/wheelhouse -r /tmp/master.lock; \
    test -x /opt/venv/bin/mooncake_master; /opt/venv/bin/python -c 'import mooncake.store'

FROM base AS master
COPY --from=master-build /opt/venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EXPOSE 50051 8080 9003
