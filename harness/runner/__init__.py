"""Stage 9, runner: one cell's rounds against its stack (in this process or over client workers),
and the verified reset that makes a used stack cold again."""

from harness.runner.reset import ResetSettings, reset_endpoint_error, verified_reset
from harness.runner.round import Endpoint, RoundProgress
from harness.runner.rounds import EngineDown, Route, StackDown, StoreDown, run_rounds

__all__ = [
    "EngineDown",
    "Endpoint",
    "ResetSettings",
    "Route",
    "RoundProgress",
    "StackDown",
    "StoreDown",
    "reset_endpoint_error",
    "run_rounds",
    "verified_reset",
]
