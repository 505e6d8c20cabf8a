"""The real steps a run takes with stacks (run.Steps): open one of ours, measure a cell, prove a used
stack cold again."""

from __future__ import annotations

from pathlib import Path

from harness.config import StackConfig
from harness.stack import Stack, open_stack
from harness.stack.spec import StackSpec
from harness.suite import cell, lifecycle
from harness.suite.run import Steps


def _open(spec: StackSpec, workdir: Path, cfg: StackConfig) -> Stack:
    return open_stack(spec, workdir, cfg)  # looked up at each call: the kubernetes client only for that backend


def real_steps() -> Steps:
    return Steps(open_stack=_open, measure=cell.measure, prove_reset=lifecycle.prove_reset)
