"""YAML -> Config: `extends:` merged underneath, command-line overrides applied, then validated.

Errors become a ConfigError carrying one line that names the file and the field (or the
command-line flag that gave the value); the CLI turns it into exit code 2.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from harness.config.models import Config, ConfigError


def _one_line(path: Path, err: ValidationError, flags: dict[str, str] | None = None) -> str:
    """`file: field: message`, or `--flag: message` when the field's value came from that command-line flag."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-after", "tagged-union")))
    msg = first["msg"].removeprefix("Value error, ")
    flag = (flags or {}).get(str(first["loc"][0])) if first["loc"] else None
    if not loc and re.match(r"^(stack\.|scenario )", msg):  # a check across fields names its own field
        return f"{path}: {msg}".replace("\n", " ")
    return (f"{flag}: {msg}" if flag else f"{path}: {loc or '<root>'}: {msg}").replace("\n", " ")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """YAML mapping; `extends: other.yaml` (relative to this file) is deep-merged underneath."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(f"{path}: invalid YAML at {where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: <root>: expected a mapping, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a file name")
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen:
        raise ConfigError(f"{path}: extends: cycle through {parent_path}")
    if not parent_path.exists():
        raise ConfigError(f"{path}: extends: {parent_path}: file not found")
    return _merge(_read_yaml(parent_path, (*seen, path.resolve())), raw)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    path: str | Path,
    *,
    scenarios: list[str] | None = None,
    rounds: int | None = None,
    concurrency: int | None = None,
    request_rate: float | None = None,
    seed: int | None = None,
    mode: str | None = None,
    client_workers: int | None = None,
    flags: dict[str, str] | None = None,
) -> Config:
    """Read, apply command-line overrides, validate. Raises ConfigError; an invalid override
    names its flag, not the file. `flags`: the flag a field's value came from where it is not the
    default name (`--scenario` of bench, an alias such as `--max-concurrency`)."""
    path = Path(path)
    raw = _read_yaml(path)
    given = {
        field: value
        for field, value in {
            "default_scenarios": scenarios,
            "rounds": rounds,
            "concurrency": concurrency,
            "request_rate": request_rate,
            "seed": seed,
            "mode": mode,
            "client_workers": client_workers,
        }.items()
        if value is not None
    }
    names = {
        "default_scenarios": "--scenarios",
        "rounds": "--rounds",
        "concurrency": "--concurrency",
        "request_rate": "--request-rate",
        "seed": "--seed",
        "mode": "--mode",
        "client_workers": "--client-workers",
        **(flags or {}),
    }
    raw.update(given)
    for sc in (raw.get("scenarios") or {}).values():  # trace paths are relative to the config file
        if isinstance(sc, dict) and sc.get("kind") == "trace" and isinstance(sc.get("path"), str):
            sc["path"] = str((path.parent / Path(sc["path"]).expanduser()).resolve())
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_one_line(path, e, {field: names[field] for field in given})) from None
