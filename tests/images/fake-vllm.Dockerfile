# A NAMED TEST DOUBLE for the preflight (tests/test_preflight.py): not vLLM, only what the preflight
# reads of it - installed versions (dist-info metadata) and vLLM's KV connector registry - so the
# refusal paths can be shown without a GPU image: an old vLLM without the V1 MooncakeStoreConnector,
# or a Mooncake release other than the master's.
ARG BASE_IMAGE=kvbench/base:bookworm
FROM ${BASE_IMAGE}
ARG VLLM_VERSION=0.11.0
ARG MOONCAKE_VERSION=0.3.13
ARG CONNECTORS="SharedStorageConnector LMCacheConnectorV1"
ENV PYTHONPATH=/opt/fake
RUN set -e; d=/opt/fake/vllm/distributed/kv_transfer/kv_connector; mkdir -p "$d"; \
    for p in vllm vllm/distributed vllm/distributed/kv_transfer "$d"; do touch "/opt/fake/${p#/opt/fake/}/__init__.py"; done; \
    printf 'class KVConnectorFactory:\n    _registry = dict.fromkeys(%s)\n' \
      "$(python3 -c 'import sys; print(repr(sys.argv[1].split()))' "$CONNECTORS")" > "$d/factory.py"; \
    for pkg in "vllm $VLLM_VERSION" "mooncake_transfer_engine $MOONCAKE_VERSION"; do \
      set -- $pkg; mkdir -p "/opt/fake/$1-$2.dist-info"; \
      printf 'Metadata-Version: 2.1\nName: %s\nVersion: %s\n' "$(echo $1 | tr _ -)" "$2" > "/opt/fake/$1-$2.dist-info/METADATA"; \
    done
