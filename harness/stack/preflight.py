"""Preflight: what must hold on this host before any container of a run starts.

The compose files the config names exist; the fixed ports are free; no leftover of an earlier run
is in the way (or, on Kubernetes, the cluster answers and no stale kvbench namespace is there).
A failure is one line and exit 2: ConfigError (the config asks for what cannot be), PortInUse, or
Refused (the machine is not in a state to start a run).
"""

from __future__ import annotations

from pathlib import Path

from harness.config import Config, ConfigError
from harness.stack.compose import leftovers
from harness.stack.spec import allocate_ports


class Refused(Exception):
    """The machine is not in a state to start a run (not a configuration fault); exit 2."""


def preflight(cfg: Config, compose_dir: Path, config_path: Path | str) -> None:
    for name in cfg.stack.overlays:
        if not (compose_dir / f"{name}.yaml").is_file():
            raise ConfigError(f"{config_path}: stack.overlay: no compose file {compose_dir / name}.yaml")
    if cfg.stack.backend == "kubernetes":
        _cluster(cfg, config_path)
        return
    s = cfg.stack
    allocate_ports(
        s.bind_address,
        {
            "vllm_port": s.vllm_port,
            "master_metrics_port": s.master_metrics_port,
            "store_metrics_port": s.store_metrics_port,
        },
    )
    left = leftovers()
    if left:
        raise Refused(
            f"leftovers of an earlier run are still present ({left.describe()}); "
            "remove them with `kvbench clean` (or `make clean`)"
        )


def _cluster(cfg: Config, config_path: Path | str) -> None:
    """The cluster answers with these credentials, and no stale kvbench namespace is in the way."""
    from harness.stack.kubestack import StackError, cluster, stale_namespaces  # the kubernetes client: only here

    try:
        with cluster(cfg.stack.kubernetes) as api:
            stale = stale_namespaces(api)
    except StackError as e:
        raise ConfigError(f"{config_path}: {e}") from None
    except Exception as e:
        raise ConfigError(
            f"{config_path}: stack.kubernetes: the cluster could not be asked ({type(e).__name__}: {e})"[:300]
        ) from None
    if stale:
        raise Refused(
            f"namespaces of an earlier run are still present ({', '.join(stale)}); remove them with `kvbench clean`"
        )
