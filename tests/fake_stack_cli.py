"""`kvbench` on the FAKE STACK (tests/fake_stack.py - a test double, not vLLM/Mooncake), for tests
that must signal the process: `python -m tests.fake_stack_cli bench-all --config ...`.

Installs the fake stack factory, then runs `harness.cli.main(argv)` unchanged. The engine's wait
before each first token comes from $KVB_FAKE_FIRST_MS (default 0): rounds long enough to interrupt.
"""

from __future__ import annotations

import importlib
import os
import sys

from harness import cli

from .fake_stack import install


def _set(target: str, value: object) -> None:
    module, _, name = target.rpartition(".")
    setattr(importlib.import_module(module), name, value)


def main(argv: list[str] | None = None) -> int:
    install(_set, first_ms=float(os.environ.get("KVB_FAKE_FIRST_MS", "0")))
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
