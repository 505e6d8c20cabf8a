"""The run directory: results/<run_id>/ with manifest.json and one directory per cell.

Nothing is ever overwritten: run ids are a UTC timestamp plus a random suffix and directories are
created exclusively; the manifest is replaced atomically.
"""

from __future__ import annotations

import os
import platform
import secrets
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import __version__
from harness.config import check_name
from harness.records import Manifest


def new_run_id(name: str | None = None) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%Sz")
    rid = f"{stamp}-{secrets.token_hex(3)}"
    return f"{rid}-{check_name(name, 'run_name')}" if name else rid


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RunDir:
    root: Path
    run_id: str

    @classmethod
    def create(cls, results_root: Path, run_name: str | None = None) -> RunDir:
        results_root.mkdir(parents=True, exist_ok=True)
        run_id = new_run_id(run_name)
        root = results_root / run_id
        root.mkdir(exist_ok=False)
        return cls(root, run_id)

    def scenario_dir(self, scenario: str) -> Path:
        d = self.root / check_name(scenario, "scenario")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def write_manifest(self, manifest: Manifest) -> None:
        tmp = self.root / "manifest.json.tmp"
        tmp.write_text(manifest.model_dump_json(indent=2))
        tmp.replace(self.root / "manifest.json")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def host_info() -> dict:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def base_manifest(run_id: str, config: dict, command: list[str]) -> Manifest:
    return Manifest(
        run_id=run_id,
        harness_version=__version__,
        git_commit=git_commit(),
        host=host_info(),
        command=command,
        started_at=utc_now(),
        config=config,
    )


def read_manifest(path: Path) -> Manifest:
    """OSError, or pydantic.ValidationError (a ValueError) when it is not a kvbench manifest."""
    return Manifest.model_validate_json(path.read_text())
