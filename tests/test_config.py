"""Bad configuration is rejected before anything starts: exit 2, one line naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.config import load_config

GOOD = Path(__file__).resolve().parent.parent / "configs" / "test_config.yaml"


def _good() -> dict:
    return yaml.safe_load(GOOD.read_text())


def _mutate(path, value):
    def apply(cfg: dict) -> dict:
        node = cfg
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return cfg
    return apply


_DELETE = object()

CASES = [
    ("unknown top-level key", _mutate(["roundz"], 3), "roundz"),
    ("unknown scenario key", _mutate(["scenarios", "cold_start", "promt_length"], 5), "promt_length"),
    ("wrong type", _mutate(["rounds"], "two"), "rounds"),
    ("zero rounds", _mutate(["rounds"], 0), "rounds"),
    ("negative concurrency", _mutate(["concurrency"], -1), "concurrency"),
    ("non-positive request count", _mutate(["scenarios", "batch_processing", "num_requests"], 0), "num_requests"),
    ("unknown default scenario", _mutate(["default_scenarios"], ["nope"]), "default_scenarios"),
    ("empty selection", _mutate(["default_scenarios"], []), "default_scenarios"),
    ("bad scenario name", lambda c: {**c, "scenarios": {**c["scenarios"], "Bad Name!": c["scenarios"]["cold_start"]}},
     "scenario name"),
    ("bad run name", _mutate(["run_name"], "../etc"), "run_name"),
    ("unknown kind", _mutate(["scenarios", "cold_start", "kind"], "warm_start"), "kind"),
    ("bad api", _mutate(["api"], "grpc"), "api"),
    ("missing required field", _mutate(["scenarios", "cold_start", "prompt_length"], _DELETE), "prompt_length"),
    ("negative wait", _mutate(["wait_between_rounds"], -1), "wait_between_rounds"),
    ("bad stack overlay name", _mutate(["stack", "overlay"], "../gpu"), "overlay"),
    ("port out of range", _mutate(["stack", "vllm_port"], 70000), "vllm_port"),
    ("one fixed port for two services",
     lambda c: {**c, "stack": {**c.get("stack", {}), "vllm_port": 18000, "master_metrics_port": 18000}},
     "master_metrics_port"),
    ("bad on_contamination", _mutate(["on_contamination"], "ignore"), "on_contamination"),
    ("GPUs for 2 engines on 1", _mutate(["stack", "gpu"], {"engine_devices": [["0"], ["1"]]}), "engine_devices"),
    ("empty device list", _mutate(["stack", "gpu"], {"engine_devices": [[]]}), "engine_devices"),
]


def _run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("name,mutate,field", CASES, ids=[c[0] for c in CASES])
def test_malformed_config_exits_2_with_one_line(tmp_path, capsys, name, mutate, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(mutate(_good())))
    code, err = _run_cli(["bench-all", "--config", str(path),
                          "--results", str(tmp_path / "results")], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and field in err, err
    assert not (tmp_path / "results").exists()  # nothing started, nothing written


@pytest.mark.parametrize("content,expect", [
    (None, "file not found"),
    ("rounds: [1, 2\n", "invalid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_unreadable_config(tmp_path, capsys, content, expect):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    code, err = _run_cli(["run", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--config", str(path)], capsys)
    assert code == 2 and expect in err and str(path) in err and len(err.splitlines()) == 1


def test_cli_overrides_are_validated_too(tmp_path, capsys):
    code, err = _run_cli(["bench-all", "--config", str(GOOD), "--rounds", "0", "--results", str(tmp_path)], capsys)
    assert code == 2 and "rounds" in err


def test_overrides_apply():
    cfg = load_config(GOOD, scenarios=["cold_start"], rounds=3, concurrency=7)
    assert cfg.default_scenarios == ["cold_start"] and cfg.rounds == 3 and cfg.concurrency == 7
    assert list(cfg.selected()) == ["cold_start"]


def test_seed_scenarios_keep_the_seed_parameters():
    s = load_config(GOOD).scenarios
    assert s["long_context_high_reuse"].num_requests == 30 and s["long_context_high_reuse"].context_length == 16000
    assert s["long_context_high_reuse"].num_questions == 5
    assert s["multi_turn_conversation"].num_conversations * s["multi_turn_conversation"].turns == 40
    assert s["code_generation"].num_requests == 25 and s["code_generation"].context_length == 8000
    assert s["code_generation"].num_tasks == 4
    assert s["batch_processing"].num_requests == 50 and s["batch_processing"].instruction_length == 1500
    assert s["cold_start"].num_requests == 20 and s["cold_start"].prompt_length == 2000


@pytest.mark.parametrize("argv,flag,expect", [
    (["bench", "--scenario", "nope"], "--scenario", "unknown scenario 'nope' (known: "),
    (["bench-all", "--scenarios", "cold_start", "nope"], "--scenarios", "unknown scenario 'nope' (known: "),
    (["bench-all", "--concurrency", "-1"], "--concurrency", "Input should be greater than 0"),
    (["bench-all", "--rounds", "0"], "--rounds", "Input should be greater than 0"),
    (["run", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--scenarios", "nope"], "--scenarios",
     "unknown scenario 'nope'"),
], ids=["bench-scenario", "bench-all-scenarios", "concurrency", "rounds", "run-scenarios"])
def test_bad_override_names_the_flag_not_the_file(tmp_path, capsys, argv, flag, expect):
    results = tmp_path / "results"
    code, err = _run_cli([*argv, "--config", str(GOOD), "--results", str(results)], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"kvbench: config error: {flag}: {expect}"), err
    assert str(GOOD) not in err and "test_config.yaml" not in err, err
    assert not results.exists()  # nothing started, nothing written


def test_bad_file_value_still_names_the_file_when_flags_are_given(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_mutate(["wait_between_rounds"], -1)(_good())))
    code, err = _run_cli(["bench-all", "--config", str(path), "--rounds", "3", "--results", str(tmp_path / "r")],
                         capsys)
    assert code == 2 and err.startswith(f"kvbench: config error: {path}: wait_between_rounds: "), err


def test_missing_extends_target_names_the_file_that_refers_to_it(tmp_path, capsys):
    path = tmp_path / "a.yaml"
    path.write_text("extends: missing.yaml\nrounds: 3\n")
    code, err = _run_cli(["run", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--config", str(path)], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err == f"kvbench: config error: {path}: extends: {tmp_path / 'missing.yaml'}: file not found", err
