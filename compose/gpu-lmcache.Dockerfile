# The GPU engine image with LMCache: the same vLLM as the default GPU stack (harness/config.py,
# GPU_VLLM_IMAGE), plus lmcache, which vLLM's images leave out as an optional dependency.
#   docker build -t kvbench/vllm-openai-lmcache:v0.32.0 -f compose/gpu-lmcache.Dockerfile compose
# VLLM_IMAGE and LMCACHE_VERSION may be overridden with --build-arg; `kvbench bench` checks the result
# (vLLM has LMCacheConnectorV1, lmcache is importable, one Mooncake release) before any stack starts.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_IMAGE}
ARG LMCACHE_VERSION=""
RUN python3 -m pip install --no-cache-dir "lmcache${LMCACHE_VERSION:+==${LMCACHE_VERSION}}"
