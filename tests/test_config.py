"""Bad configuration is rejected before anything starts: exit 2, one line naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from harness.cli import main
from harness.config import ConfigError, StackConfig, load_config

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
    (
        "bad scenario name",
        lambda c: {**c, "scenarios": {**c["scenarios"], "Bad Name!": c["scenarios"]["cold_start"]}},
        "scenario name",
    ),
    ("bad run name", _mutate(["run_name"], "../etc"), "run_name"),
    ("unknown kind", _mutate(["scenarios", "cold_start", "kind"], "warm_start"), "kind"),
    ("bad api", _mutate(["api"], "grpc"), "api"),
    ("missing required field", _mutate(["scenarios", "cold_start", "prompt_length"], _DELETE), "prompt_length"),
    ("negative wait", _mutate(["wait_between_rounds"], -1), "wait_between_rounds"),
    ("bad stack overlay name", _mutate(["stack", "overlay"], "../gpu"), "overlay"),
    ("port out of range", _mutate(["stack", "vllm_port"], 70000), "vllm_port"),
    (
        "one fixed port for two services",
        lambda c: {**c, "stack": {**c.get("stack", {}), "vllm_port": 18000, "master_metrics_port": 18000}},
        "master_metrics_port",
    ),
    ("bad on_contamination", _mutate(["on_contamination"], "ignore"), "on_contamination"),
    ("unknown store", _mutate(["stack", "store"], "remote"), "store"),
    ("a store size that is not one", _mutate(["stack", "global_segment_size"], "lots"), "global_segment_size"),
    (
        "an empty store node",
        lambda c: {**c, "stack": {"store": "store-node", "global_segment_size": "0"}},
        "global_segment_size",
    ),
    (
        "the store node's port is the engine's",
        lambda c: {**c, "stack": {"store": "store-node", "vllm_port": 18000, "store_metrics_port": 18000}},
        "store_metrics_port",
    ),
    (
        "a store node behind LMCache",
        lambda c: {**c, "stack": {"store": "store-node", "overlay": "gpu-lmcache", "connector": "lmcache"}},
        "store",
    ),
    ("watermark above 1", _mutate(["stack", "eviction_high_watermark_ratio"], 1.5), "eviction_high_watermark_ratio"),
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
    code, err = _run_cli(["bench-all", "--config", str(path), "--results", str(tmp_path / "results")], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and field in err, err
    assert not (tmp_path / "results").exists()  # nothing started, nothing written


@pytest.mark.parametrize(
    "content,expect",
    [
        (None, "file not found"),
        ("rounds: [1, 2\n", "invalid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
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


@pytest.mark.parametrize(
    "argv,flag,expect",
    [
        (["bench", "--scenario", "nope"], "--scenario", "unknown scenario 'nope' (known: "),
        (["bench-all", "--scenarios", "cold_start", "nope"], "--scenarios", "unknown scenario 'nope' (known: "),
        (["bench-all", "--concurrency", "-1"], "--concurrency", "Input should be greater than 0"),
        (["bench-all", "--rounds", "0"], "--rounds", "Input should be greater than 0"),
        (
            ["run", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--scenarios", "nope"],
            "--scenarios",
            "unknown scenario 'nope'",
        ),
    ],
    ids=["bench-scenario", "bench-all-scenarios", "concurrency", "rounds", "run-scenarios"],
)
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
    code, err = _run_cli(
        ["bench-all", "--config", str(path), "--rounds", "3", "--results", str(tmp_path / "r")], capsys
    )
    assert code == 2 and err.startswith(f"kvbench: config error: {path}: wait_between_rounds: "), err


def test_missing_extends_target_names_the_file_that_refers_to_it(tmp_path, capsys):
    path = tmp_path / "a.yaml"
    path.write_text("extends: missing.yaml\nrounds: 3\n")
    code, err = _run_cli(["run", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--config", str(path)], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err == f"kvbench: config error: {path}: extends: {tmp_path / 'missing.yaml'}: file not found", err


def test_extends_merges_nested_keys_and_keeps_the_parents_siblings(tmp_path):
    (tmp_path / "base").mkdir()
    parent = tmp_path / "base" / "parent.yaml"
    parent.write_text(yaml.safe_dump({**_good(), "rounds": 4}))
    child = tmp_path / "child.yaml"
    child.write_text(
        "extends: base/parent.yaml\n"  # relative to the child, not to the working directory
        "concurrency: 9\n"
        "stack: {kvcache_space_gib: 3}\n"
        "scenarios: {cold_start: {prompt_length: 64}}\n"
        "targets: {ttft_reduction_percent: 40}\n"
    )
    cfg = load_config(child)
    assert cfg.concurrency == 9 and cfg.rounds == 4
    assert cfg.stack.kvcache_space_gib == 3 and cfg.stack.client_ttl == 5 and cfg.stack.ready_timeout == 300
    assert cfg.scenarios["cold_start"].prompt_length == 64 and cfg.scenarios["cold_start"].num_requests == 20
    assert set(cfg.scenarios) == set(_good()["scenarios"])  # the other scenarios are still there
    assert cfg.targets.ttft_reduction_percent == 40 and cfg.targets.throughput_increase_percent == 150


def test_extends_chain_and_a_list_replaces_the_parents_list(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(_good()))
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nrounds: 3\nstack: {extra_vllm_args: ['--x', '1']}\n")
    (tmp_path / "c.yaml").write_text("extends: b.yaml\ndefault_scenarios: [cold_start]\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.rounds == 3 and cfg.default_scenarios == ["cold_start"] and cfg.stack.extra_vllm_args == ["--x", "1"]


@pytest.mark.parametrize(
    "files",
    [
        {"a.yaml": "extends: a.yaml\nrounds: 2\n"},
        {"a.yaml": "extends: b.yaml\nrounds: 2\n", "b.yaml": "extends: a.yaml\nrounds: 3\n"},
    ],
    ids=["self", "two files"],
)
def test_an_extends_cycle_is_a_one_line_error(tmp_path, capsys, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "a.yaml"
    code, err = _run_cli(
        [
            "run",
            "--endpoint",
            "http://127.0.0.1:9",
            "--model",
            "m",
            "--config",
            str(path),
            "--results",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "extends: cycle through" in err and str(path) in err, err
    assert not (tmp_path / "r").exists()


def test_extends_must_name_a_file(tmp_path, capsys):
    path = tmp_path / "a.yaml"
    path.write_text("extends: [a, b]\n")
    code, err = _run_cli(["bench-all", "--config", str(path), "--results", str(tmp_path / "r")], capsys)
    assert code == 2 and err == f"kvbench: config error: {path}: extends: expected a file name", err


# --- `vllm bench serve` flag names -------------------------------------------------------------


def _parse(argv: list[str]):
    from harness.cli.parser import build_parser
    from harness.cli.parser import load as _load

    args = build_parser().parse_args(argv)
    return args, _load(args, getattr(args, "scenarios", None))


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--base-url", "http://10.0.0.5:8000", "--model", "m"],
        ["bench-all"],
    ],
    ids=["run", "bench-all"],
)
def test_vllm_bench_serve_flag_names_are_aliases(tmp_path, argv):
    out = str(tmp_path / "out")
    args, cfg = _parse(
        [
            *argv,
            "--config",
            str(GOOD),
            "--max-concurrency",
            "3",
            "--request-rate",
            "2.5",
            "--seed",
            "7",
            "--result-dir",
            out,
        ]
    )
    assert args.results == out and (args.command != "run" or args.endpoint == "http://10.0.0.5:8000")
    assert (cfg.concurrency, cfg.request_rate, cfg.seed) == (3, 2.5, 7)
    args, cfg = _parse([*argv, "--config", str(GOOD), "--concurrency", "5", "--results", out])
    assert args.results == out and cfg.concurrency == 5
    assert (cfg.request_rate, cfg.seed) == (None, 1234)  # not given: the file's values


def test_request_rate_inf_means_no_pacing_even_over_a_configured_rate(tmp_path):
    path = tmp_path / "paced.yaml"
    path.write_text(yaml.safe_dump({**_good(), "request_rate": 5.0}))
    assert _parse(["bench-all", "--config", str(path)])[1].request_rate == 5.0
    cfg = _parse(["bench-all", "--config", str(path), "--request-rate", "inf"])[1]
    assert cfg.request_rate is None and cfg.model_dump(mode="json")["request_rate"] is None  # manifest: null
    path.write_text(yaml.safe_dump(_good()).replace("request_rate: null", "request_rate: .inf"))
    assert load_config(path).request_rate is None


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["bench-all", "--max-concurrency", "0"], "--max-concurrency"),
        (["bench-all", "--concurrency", "0"], "--concurrency"),
        (["bench", "--scenario", "cold_start", "--request-rate", "0"], "--request-rate"),
        (["bench-all", "--request-rate", "-2"], "--request-rate"),
        (["run", "--base-url", "http://127.0.0.1:9", "--model", "m", "--request-rate", "nan"], "--request-rate"),
    ],
    ids=["max-concurrency", "concurrency", "rate-zero", "rate-negative", "rate-nan"],
)
def test_a_bad_alias_value_names_the_flag_that_was_typed(tmp_path, capsys, argv, flag):
    results = tmp_path / "results"
    code, err = _run_cli([*argv, "--config", str(GOOD), "--result-dir", str(results)], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err == f"kvbench: config error: {flag}: Input should be greater than 0", err
    assert not results.exists()


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["--base-url", "127.0.0.1:8000"], "--endpoint: expected an http:// or https:// URL, got '127.0.0.1:8000'"),
        (
            ["--endpoint", "http://127.0.0.1:8000", "--master-metrics", "9003"],
            "--master-metrics: expected an http:// or https:// URL, got '9003'",
        ),
    ],
    ids=["endpoint", "master-metrics"],
)
def test_run_urls_must_be_http(tmp_path, capsys, argv, expect):
    code, err = _run_cli(
        ["run", *argv, "--model", "m", "--config", str(GOOD), "--results", str(tmp_path / "r")], capsys
    )
    assert code == 2 and err == f"kvbench: config error: {expect}", err
    assert not (tmp_path / "r").exists()


def test_help_shows_the_vllm_bench_serve_names(capsys):
    for argv, names in (
        (["--help"], ["--base-url", "--max-concurrency", "--request-rate", "--seed", "--result-dir", "OPENAI_API_KEY"]),
        (
            ["run", "--help"],
            [
                "--endpoint ENDPOINT, --base-url ENDPOINT",
                "--max-concurrency",
                "--request-rate",
                "--seed",
                "--result-dir",
                "--api-key-env NAME",
            ],
        ),
        (
            ["bench", "--help"],
            [
                "--concurrency CONCURRENCY, --max-concurrency",
                "--request-rate",
                "--seed",
                "--results RESULTS, --result-dir",
            ],
        ),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert exit_.value.code == 0 and all(n in out for n in names), (argv, out)


# --- the API key of `kvbench run` ------------------------------------------------------------

KEY = "sk-live-3f9a1c7e5b2d4f6a8c0e"


def test_the_api_key_comes_from_openai_api_key_or_the_named_variable(monkeypatch):
    from harness.cli.run import api_key as _api_key

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert _api_key(None) is None  # no key: no Authorization header
    monkeypatch.setenv("OPENAI_API_KEY", f" {KEY}\n")
    assert _api_key(None) == ("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MY_GATEWAY_KEY", "other-key")
    assert _api_key("MY_GATEWAY_KEY") == ("MY_GATEWAY_KEY", "other-key")


@pytest.mark.parametrize(
    "flag_value,env,expect",
    [
        (KEY, {}, "expects the name of an environment variable"),  # the key itself given by mistake
        ("KVB_UNSET_VARIABLE", {}, "that environment variable is not set or empty"),
        ("KVB_EMPTY", {"KVB_EMPTY": "  "}, "that environment variable is not set or empty"),
        ("KVB_BAD", {"KVB_BAD": KEY[:10] + " " + KEY[10:]}, "the key in $KVB_BAD holds whitespace or non-ASCII"),
    ],
    ids=["key-as-name", "unset", "empty", "whitespace"],
)
def test_a_bad_api_key_setting_is_a_one_line_error_that_never_shows_the_key(
    tmp_path, capsys, monkeypatch, flag_value, env, expect
):
    monkeypatch.delenv("KVB_UNSET_VARIABLE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, err = _run_cli(
        [
            "run",
            "--base-url",
            "http://127.0.0.1:9",
            "--model",
            "m",
            "--config",
            str(GOOD),
            "--api-key-env",
            flag_value,
            "--result-dir",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 2 and len(err.splitlines()) == 1 and expect in err, err
    assert KEY[:10] not in err and KEY[10:] not in err, err
    assert not (tmp_path / "r").exists()  # nothing written: the command line holding it is recorded nowhere


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"stack.nope": [1]}, r"sweep: stack.nope: not a setting a sweep can vary"),
        ({"scenarios": [1]}, r"sweep: scenarios: not a setting a sweep can vary"),
        ({"concurrency": []}, r"sweep.concurrency: List should have at least 1 item"),
        ({"concurrency": [4, 0]}, r"sweep point \{'concurrency': 0\}: concurrency: Input should be greater than 0"),
    ],
)
def test_a_bad_sweep_is_a_one_line_error_before_anything_starts(tmp_path, sweep, message):
    doc = {
        "default_scenarios": ["a"],
        "scenarios": {"a": {"kind": "cold_start", "num_requests": 1, "prompt_length": 5}},
        "sweep": sweep,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message) as e:
        load_config(tmp_path / "c.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith(str(tmp_path / "c.yaml"))


@pytest.mark.parametrize(
    "extra", [["--rounds", "3"], ["--concurrency", "8"], ["--mode", "baseline"], ["--repeats", "2"]]
)
def test_resume_refuses_flags_that_would_change_the_run(tmp_path, capsys, extra):
    code, err = _run_cli(["bench-all", "--resume", str(tmp_path / "run"), *extra], capsys)
    assert code == 2 and "\n" not in err
    assert err.startswith(f"kvbench: config error: {extra[0]}: a resumed run keeps the settings it started with")


def test_engine_restart_needs_the_compose_backend():
    with pytest.raises(ValidationError, match="engine-restart restarts a compose service"):
        StackConfig.model_validate({"topology": "engine-restart", "backend": "kubernetes"})
    assert StackConfig.model_validate({"topology": "engine-restart"}).engines == ["vllm"]


@pytest.mark.parametrize(
    "value,expect",
    [("fresh", ("fresh",)), ("both", ("fresh", "shared")), ("shared,reset", ("shared", "reset")),
     ("reset,both,reset", ("reset", "fresh", "shared"))],
)  # fmt: skip
def test_isolation_takes_a_comma_list_run_side_by_side(value, expect):
    from harness.cli import build_parser

    args = build_parser().parse_args(["bench-all", "--isolation", value])
    assert args.isolation == expect


def test_an_unknown_isolation_is_rejected_before_anything_starts(tmp_path, capsys):
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_:
        main(["bench-all", "--config", str(GOOD), "--isolation", "shared,fersh", "--results", str(results)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--isolation: 'fersh': choose from fresh, shared, reset, both" in err
    assert not results.exists()
