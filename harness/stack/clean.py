"""`kvbench clean`: remove what crashed runs left behind: containers, volumes and networks by label,
and kvbench namespaces on a cluster when one is configured."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.config import KubernetesConfig
from harness.config.console import say
from harness.stack.compose import force_remove, leftovers


def clean(include_live: bool, kube: KubernetesConfig | None) -> bool:
    """True when nothing of kvbench's is left. `include_live`: also stacks of runs still alive."""
    ok = _namespaces(kube, include_live) if kube is not None else True
    found = leftovers(include_live=include_live)
    if not found:
        say("nothing to clean (containers, volumes, networks)")
        return ok
    say(f"removing {found.describe()}")
    force_remove(found)
    rest = leftovers(include_live=include_live)
    if rest:
        print(f"kvbench: could not remove {rest.describe()}", file=sys.stderr)
        return False
    return ok


def kube_wanted(context: str | None, kubeconfig: Path | None) -> bool:
    """A cluster is configured: a context or kubeconfig given, or the default kubeconfig exists."""
    default = Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config")
    return bool(context or kubeconfig or default.is_file())


def _namespaces(cfg: KubernetesConfig, include_live: bool) -> bool:
    from harness.stack.kubestack import StackError, cluster, delete_namespaces, stale_namespaces

    try:
        with cluster(cfg) as api:
            names = stale_namespaces(api, include_live=include_live)
            if not names:
                say("nothing to clean (kvbench namespaces)")
                return True
            say(f"deleting {len(names)} kvbench namespaces: {', '.join(names)}")
            left = delete_namespaces(api, names, cfg.delete_timeout)
    except StackError as e:
        print(f"kvbench: {e}", file=sys.stderr)
        return False
    except Exception as e:  # the API server refused or is unreachable
        print(f"kvbench: clean: the cluster could not be asked ({type(e).__name__}: {e})"[:300], file=sys.stderr)
        return False
    if left:
        print(f"kvbench: namespaces still terminating: {', '.join(left)}", file=sys.stderr)
    return not left
