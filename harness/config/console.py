"""The one console every stage prints its lines to (stderr: stdout stays for data)."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, highlight=False)


def say(msg: str) -> None:
    console.print(msg)
