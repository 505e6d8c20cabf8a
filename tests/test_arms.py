"""Four arms and the working set, without a stack: the arms a user names run with the flags they
claim, the engine's pool is sized as asked and refused before anything starts when it cannot serve
the workload, the working set is the chosen multiple of the pool, and the analysis names R0 and the
misconfigured controls from the counters. The real-stack check is tests/test_arms_e2e.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.analysis import arms as A
from harness.cli import main
from harness.config import ConfigError, WorkingSet, load_config
from harness.stack.compose import last_error_line
from harness.stack.spec import prepare, vllm_command
from harness.workload import build_workload
from tests.test_workload import Words

REPO = Path(__file__).resolve().parent.parent
WS = REPO / "configs" / "working-set.yaml"


def _config(tmp_path: Path, **over: object) -> Path:
    raw = {"extends": str(WS), **over}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_sweep_config_makes_one_scenario_per_ratio_sized_by_the_pool():
    cfg = load_config(WS)
    assert cfg.arms == ("none", "local", "store", "local+store")
    assert cfg.modes == ("baseline", "local", "with-cache", "local+store")
    pool = cfg.stack.pool_tokens
    assert cfg.stack.pool_blocks == 128 and pool == 16384
    sel = cfg.selected()
    assert list(sel) == ["ws-x0p5", "ws-x1", "ws-x2", "ws-x4", "ws-x8"]
    for name, want in zip(sel, (0.5, 1, 2, 4, 8)):
        sc = sel[name]
        assert isinstance(sc, WorkingSet)
        assert sc.num_documents * sc.document_tokens / pool == want
    # max_model_len from the longest request (4k document + question + output), in whole blocks
    assert cfg.stack.max_model_len == 4224 and cfg.stack.max_model_len <= cfg.stack.pool_request_limit


@pytest.mark.parametrize(
    "mode,arms",
    [
        ("both", ("store", "none")),
        ("with-cache", ("store",)),
        ("baseline", ("none",)),
        ("local,local+store", ("local", "local+store")),
        (["store", "none", "store"], ("store", "none")),
    ],
)
def test_arms_and_their_aliases(tmp_path, mode, arms):
    assert load_config(_config(tmp_path), mode=mode if isinstance(mode, str) else None).arms == arms or isinstance(
        mode, list
    )
    if isinstance(mode, list):
        assert load_config(_config(tmp_path, mode=mode)).arms == arms


def test_legacy_prefix_caching_switch_keeps_what_the_aliases_ran_as(tmp_path):
    p = _config(tmp_path, mode="both", stack={"enable_prefix_caching": True})
    assert load_config(p).arms == ("local+store", "local")
    with pytest.raises(ConfigError, match="enable_prefix_caching: the arms"):
        load_config(_config(tmp_path, mode="none,local", stack={"enable_prefix_caching": True}))


@pytest.mark.parametrize(
    "over,flag,needle",
    [
        ({"mode": "local,cache"}, None, "'cache' is not an arm"),
        ({"stack": {"engine_kv_pool_tokens": 2048}}, None, "scenario ws-x0p5 needs max_model_len 4,224"),
        ({"stack": {"engine_kv_pool_tokens": 8192, "max_model_len": 16384}}, None, "max_model_len is 16,384"),
    ],
)
def test_bad_arms_or_pool_exit_2_with_one_line_before_any_container(tmp_path, capsys, over, flag, needle):
    p = _config(tmp_path, **over)
    rc = main(["bench-all", "--config", str(p), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
    assert str(p) in err and not (tmp_path / "r").exists()


def test_arm_flags_render_prefix_caching_connector_and_pool(tmp_path):
    cfg = load_config(WS)
    seen = {}
    for mode in cfg.modes:
        spec = prepare(cfg.stack, "20261207t000000z-abcdef", f"ws-{mode}".replace("+", "-"), tmp_path / mode,
                       {"engine": "e", "master": "m"}, mode=mode)  # fmt: skip
        command = yaml.safe_load((tmp_path / mode / "compose.generated.yaml").read_text())["services"]["vllm"][
            "command"
        ]
        seen[mode] = ("--enable-prefix-caching" in command, "--kv-transfer-config" in command)
        assert command[command.index("--num-gpu-blocks-override") + 1] == "128"
        assert command[command.index("--max-model-len") + 1] == "4224"
        assert spec.project
    assert seen == {
        "baseline": (False, False),
        "local": (True, False),
        "with-cache": (False, True),
        "local+store": (True, True),
    }
    # without a pool: no override (the backend's own sizing)
    plain = load_config(REPO / "configs" / "test_config.yaml").stack
    assert "--num-gpu-blocks-override" not in vllm_command(plain)


def test_gpu_block_size_and_pool(tmp_path):
    p = tmp_path / "gpu.yaml"
    p.write_text(yaml.safe_dump({"extends": str(REPO / "configs" / "gpu-qwen2.5-72b.yaml"),
                                 "stack": {"engine_kv_pool_tokens": 100_000}}))  # fmt: skip
    cfg = load_config(p)
    assert cfg.stack.kv_block_size == 16 and cfg.stack.pool_blocks == 6250
    assert vllm_command(cfg.stack)[vllm_command(cfg.stack).index("--num-gpu-blocks-override") + 1] == "6250"


def test_working_set_workload_visits_whole_documents_in_the_chosen_order():
    ws = WorkingSet(kind="working_set", document_tokens=300, documents=5, visits=12, question_length=6)
    wl = build_workload("ws", ws, Words(), api="completions", seed=1)
    prompts = [s.build(0, []) for s in wl.sessions]
    assert len(prompts) == 15  # cyclic: whole passes (12 -> 3 x 5)
    assert [p.prefix_key for p in prompts[:6]] == [f"ws:doc{j:04d}" for j in (0, 1, 2, 3, 4, 0)]
    assert all(p.shared_prefix_tokens == prompts[0].shared_prefix_tokens for p in prompts)
    assert 300 <= prompts[0].shared_prefix_tokens <= 310  # the document (and BOS, the label)
    texts = {p.prefix_key: p.body[: p.body.index("Question:")] for p in prompts if isinstance(p.body, str)}
    assert len(set(texts.values())) == 5  # distinct documents
    z = ws.model_copy(update={"order": "zipf", "visits": 200})
    a = [s.build(0, []).prefix_key for s in build_workload("ws", z, Words(), api="completions", seed=1).sessions]
    b = [s.build(0, []).prefix_key for s in build_workload("ws", z, Words(), api="completions", seed=1).sessions]
    assert a == b and len(a) == 200
    counts = pd.Series(a).value_counts()
    assert counts.iloc[0] > 2 * counts.iloc[-1]  # popular documents come back more often


def test_engine_exit_reason_is_its_own_last_error_line():
    log = "\n".join(
        [
            "mooncake-master-1  | 2026-12-07T09:00:00.1Z I1207 master up",
            "vllm-1  | 2026-12-07T09:00:01.0Z INFO Overriding num_gpu_blocks=8192 with num_gpu_blocks_override=64",
            "vllm-1  | 2026-12-07T09:00:02.0Z ValueError: To serve at least one request with the model's max seq "
            "len (8192), (1.00 GiB KV cache is needed, ...) estimated maximum model length is 8064.",
            "vllm-1  | 2026-12-07T09:00:02.4Z RuntimeError: Engine core initialization failed. See root cause above.",
            "vllm-1  | 2026-12-07T09:00:02.5Z INFO shutting down",
        ]
    )
    assert last_error_line(log, "vllm").startswith("ValueError: To serve at least one request")
    assert last_error_line(log, "vllm-b") is None
    # pydantic's one-line header says only that something failed: the line after it says what
    refused = "\n".join(
        [
            "vllm-1  | 2026-12-07T09:00:01.0Z pydantic_core._pydantic_core.ValidationError: 1 validation error for "
            "ModelConfig",
            "vllm-1  | 2026-12-07T09:00:01.0Z   Value error, User-specified max_model_len (65536) is greater than the "
            "derived max_model_len (max_position_embeddings=32768.0 or model_max_length=None in model's config.json).",
            "vllm-1  | 2026-12-07T09:00:01.0Z     For further information visit https://errors.pydantic.dev/2.14/v/value_error",
        ]
    )
    line = last_error_line(refused, "vllm")
    assert line is not None and line.startswith("pydantic_core._pydantic_core.ValidationError: 1 validation error")
    assert "for ModelConfig: Value error, User-specified max_model_len (65536) is greater than" in line


# ------------------------------------------------------------------ analysis


def _cells(ratios: dict[str, float], ttft: dict[tuple[str, str], float], hits: dict[tuple[str, str], tuple]) -> tuple:
    """Synthetic rounds and requests: per scenario and arm one cell, 2 rounds of 20 prompts."""
    rng = np.random.default_rng(0)
    rounds, reqs = [], []
    d = 0
    for scen in ratios:
        for mode in ("baseline", "local", "with-cache", "local+store"):
            for rnd in (1, 2):
                local, ext, lru = hits[(scen, mode)] if rnd == 2 else (0, 0, 0)
                rounds.append({"dir": d, "scenario": scen, "mode": mode, "repeat": 1, "round": rnd,
                               "engine_pool_blocks": 128, "vllm_prompt_tokens": 40_000, "local_hits": local,
                               "external_hits": ext, "expected_reuse_tokens": 38_000 if rnd == 2 else 0,
                               "lru_local_reuse_tokens": lru, "master_evicted_keys": 0})  # fmt: skip
                for i in range(20):
                    base = ttft[(scen, mode)] if rnd == 2 else 100.0
                    reqs.append({"dir": d, "round": rnd, "pid": i, "ttft_ms": base * rng.lognormal(0, 0.05)})
            d += 1
    return pd.DataFrame(rounds), pd.DataFrame(reqs)


def test_crossover_named_from_the_measured_ratios_and_controls():
    ratios = {"ws-x0p5": 0.5, "ws-x2": 2.0, "ws-x8": 8.0}
    workloads = {s: (int(r * 16), 1024) for s, r in ratios.items()}  # 16 x 1024 tokens = the pool at ratio 1
    ttft, hits = {}, {}
    for s, r in ratios.items():
        fits = r < 1
        ttft |= {(s, "baseline"): 100.0, (s, "with-cache"): 40.0, (s, "local"): 20.0 if fits else 100.0,
                 (s, "local+store"): 20.0 if fits else 40.0}  # fmt: skip
        hits |= {(s, "baseline"): (0, 0, 0), (s, "with-cache"): (0, 38_000, 0),
                 (s, "local"): (38_000 if fits else 0, 0, 38_000 if fits else 0),
                 (s, "local+store"): (38_000 if fits else 0, 0 if fits else 38_000, 38_000 if fits else 0)}  # fmt: skip
    rounds, reqs = _cells(ratios, ttft, hits)
    table = A.arm_table(rounds, reqs, workloads, 128)
    assert sorted(table["ratio"].unique()) == [0.5, 2.0, 8.0]
    row = table[(table["scenario"] == "ws-x8") & (table["arm"] == "local+store")].iloc[0]
    assert row["store_pct"] == pytest.approx(95.0) and row["local_pct"] == 0
    assert row["ttft_lo"] < row["ttft_mean_ms"] < row["ttft_hi"] and "within-run" in row["ttft_method"]
    changes = A.changes_by_ratio(table, rounds, reqs)
    x = A.crossover(changes)
    assert x is not None and x.r0 == 2.0 and x.at == 8.0
    assert x.change.estimate == pytest.approx(-60, abs=3) and x.change.hi < 0
    line = A.verdict_line(x)
    assert "R0 = 2" in line and "adds nothing within its interval at 0.5" in line
    # controls: every arm here did what it claims
    for (scen, mode), g in rounds[rounds["round"] > 1].groupby(["scenario", "mode"]):
        assert A.control_problem(mode, g, 128) is None, (scen, mode)
    warm8 = rounds[(rounds["round"] == 2) & (rounds["scenario"] == "ws-x8")]
    dead_connector = warm8[warm8["mode"] == "local+store"].assign(external_hits=0)
    assert "0 external hits" in A.control_problem("local+store", dead_connector, 128)
    warm05 = rounds[(rounds["round"] == 2) & (rounds["scenario"] == "ws-x0p5")]
    no_local = warm05[warm05["mode"] == "local"].assign(local_hits=0)
    assert "0 local prefix-cache hits" in A.control_problem("local", no_local, 128)
    cached_control = warm05[warm05["mode"] == "baseline"].assign(local_hits=512)
    assert "without vLLM's prefix cache but counted 512 local hits" in A.control_problem(
        "baseline", cached_control, 128
    )
    unknown = warm8[warm8["mode"] == "local+store"].assign(external_hits=math.nan)
    assert A.control_problem("local+store", unknown, 128) is None  # no counters: no accusation


def test_no_r0_when_the_store_never_clearly_pays():
    c = pd.DataFrame({"scenario": ["a", "b"], "ratio": [1.0, 4.0], "change": [1.0, -2.0], "lo": [-3.0, -6.0],
                      "hi": [5.0, 2.0], "n": [20, 20], "method": ["x; within-run", "x; within-run"]})  # fmt: skip
    x = A.crossover(c)
    assert x is not None and x.r0 is None
    assert "no R0" in A.verdict_line(x)


def test_a_gain_without_a_token_from_the_store_is_not_the_stores():
    """Below the pool both arms hit vLLM's own cache; seen on the CPU stack: local+store -37.3 %
    [-53.7, -12.0] vs local at ratio 0.5 with 0 % from the store (two stacks at two moments of a busy
    host). That ratio is no win: R0 comes from where the store served, and the verdict says why."""
    c = pd.DataFrame({"scenario": ["a", "b"], "ratio": [0.5, 4.0], "change": [-37.3, -95.4], "lo": [-53.7, -96.0],
                      "hi": [-12.0, -94.5], "n": [32, 32], "method": ["x; within-run"] * 2,
                      "store_pct": [0.0, 99.4]})  # fmt: skip
    x = A.crossover(c)
    assert x is not None and x.r0 == 4.0 and x.no_store == [0.5]
    line = A.verdict_line(x)
    assert "from R0 = 4 on it is faster at every measured ratio" in line
    assert "faster at 0.5 (-37.3 % [-53.7, -12.0]) without a token from the store: not the store's gain" in line
    served = A.crossover(c.assign(store_pct=[3.0, 99.4]))  # the same figures with store hits: a win
    assert served is not None and served.r0 == 0.5 and served.no_store == []
    unknown = A.crossover(c.assign(store_pct=[math.nan, 99.4]))  # no counters: judged on TTFT alone
    assert unknown is not None and unknown.r0 == 0.5


@pytest.mark.docker  # kube.manifests renders the compose model with `docker compose config`
@pytest.mark.parametrize("mode", ["baseline", "local", "with-cache", "local+store"])
def test_gpu_kubernetes_renderings_carry_the_arm_and_the_pool(tmp_path, monkeypatch, mode):
    import kubernetes_validate

    from harness.stack import kube

    monkeypatch.setenv("HF_TOKEN", "hf_x")
    p = tmp_path / "gpu.yaml"
    stack = {"enable_prefix_caching": False, "engine_kv_pool_tokens": 200_000}
    p.write_text(yaml.safe_dump({"extends": str(REPO / "configs" / "gpu-qwen2.5-72b.yaml"), "stack": stack}))
    cfg = load_config(p)
    spec = prepare(cfg.stack, "20261207t000000z-abcdef", "ws", tmp_path / "w", {}, mode=mode)
    objs = kube.manifests(spec, tmp_path / "w")
    for o in objs:
        kubernetes_validate.validate(o, "1.33.0", strict=True)
    (engine,) = [d for d in objs if d["kind"] == "Deployment" and d["metadata"]["name"] != "mooncake-master"]
    args = engine["spec"]["template"]["spec"]["containers"][0]["args"]
    local, connector = {"baseline": (False, False), "local": (True, False), "with-cache": (False, True),
                        "local+store": (True, True)}[mode]  # fmt: skip
    assert ("--enable-prefix-caching" in args) == local and ("--no-enable-prefix-caching" in args) != local
    assert ("--kv-transfer-config" in args) == connector
    assert args[args.index("--num-gpu-blocks-override") + 1] == "12500"  # 200,000 tokens in blocks of 16


def test_arm_order_alternates_by_repeat_abba():
    from harness.records import Plan
    from harness.suite.plan import cells_of

    plan = Plan(scenarios=["ws"], isolation=["fresh"], repeats=3, modes=["local", "local+store"])
    assert [(c.repeat, c.mode) for c in cells_of(plan)] == [
        (1, "local"), (1, "local+store"), (2, "local+store"), (2, "local"), (3, "local"), (3, "local+store"),
    ]  # fmt: skip
