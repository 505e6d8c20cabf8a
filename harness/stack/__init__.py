"""Stage 4, stack: what a cell runs on, and its lifecycle.

spec (prepare a stack: compose files, ports, env) -> compose (backend compose: a Docker Compose
project) or kube (the same stack rendered as Kubernetes manifests) -> kubestack (backend
kubernetes: a namespace per stack); images (build and tag the images), versions (what is inside
them), preflight (what must hold on the host before any container starts), clean (leftovers of
crashed runs), interrupts (Ctrl-C / SIGTERM delivered where it is safe). Every backend is a
`Stack` (base.py); `open_stack` picks one. The kubernetes client is imported only when a run uses
that backend.
"""

from __future__ import annotations

from pathlib import Path

from harness.config import StackConfig
from harness.stack.base import Stack, StackError, TeardownResult
from harness.stack.spec import StackSpec

__all__ = ["Stack", "StackError", "TeardownResult", "open_stack"]


def open_stack(spec: StackSpec, workdir: Path, s: StackConfig) -> Stack:
    """The configured backend's stack for `spec` (not up yet)."""
    if s.backend == "kubernetes":
        from harness.stack.kubestack import KubeStack  # imports the kubernetes client: only for this backend

        return KubeStack(spec, workdir, s.kubernetes, s.ready_timeout)
    from harness.stack.compose import ComposeStack

    return ComposeStack(spec, workdir, s.ready_timeout, s.teardown_timeout)
