"""kvbench: isolated KV-cache reuse benchmarks for vLLM + Mooncake."""

__version__ = "0.1.0"
