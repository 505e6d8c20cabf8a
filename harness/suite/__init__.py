"""Stage 11, suite: a run's cells on their stacks: the plan and resume, a stack's life, one cell,
the isolation modes, and the console lines of it all."""

from harness.suite.run import Steps, SuiteOptions
from harness.suite.suite import Suite

__all__ = ["Steps", "Suite", "SuiteOptions"]
