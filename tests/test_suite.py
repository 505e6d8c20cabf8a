"""Cell planning and resume, without stacks: which scenario x mode x repeat cells run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import Config, ConfigError
from harness.records import CellEntry, StackInfo
from harness.suite import Suite, SuiteOptions

CFG = Config.model_validate(
    {
        "default_scenarios": ["a", "b"],
        "scenarios": {n: {"kind": "cold_start", "num_requests": 1, "prompt_length": 5} for n in ("a", "b")},
    }
)


def _suite(tmp_path: Path, calls: list, monkeypatch, suite: Suite | None = None) -> Suite:
    suite = suite or Suite(CFG, lambda overlay: {}, SuiteOptions(tmp_path), ["test"])

    def stack(label: str, workdir: Path, entries: list[CellEntry], mode: str, body) -> StackInfo:  # a verdict
        (entry,) = entries
        calls.append((entry.scenario, mode, entry.repeat))
        entry.status = "failed" if (entry.scenario, mode) == ("b", "baseline") else "ok"
        return StackInfo()

    monkeypatch.setattr(suite, "_with_stack", stack)
    monkeypatch.setattr("harness.suite.write_report", lambda root: None)
    monkeypatch.setattr("harness.suite.console_summary", lambda root: "")
    return suite


def test_cells_run_scenario_major_and_resume_reruns_only_what_was_not_ok(tmp_path, monkeypatch):
    calls: list = []
    suite = _suite(tmp_path, calls, monkeypatch)
    suite.plan_cells(["a", "b"], ("fresh",), 1, CFG.modes)
    assert suite.run_all() is False  # b's baseline failed
    assert calls == [("a", "with-cache", 1), ("a", "baseline", 1), ("b", "with-cache", 1), ("b", "baseline", 1)]
    (suite.run.root / "baseline" / "b").mkdir(parents=True)
    (suite.run.root / "baseline" / "b" / "requests.csv").write_text("round\n1\n")

    calls.clear()
    resumed = _suite(
        tmp_path,
        calls,
        monkeypatch,
        Suite.resume(suite.run.root, lambda overlay: {}, SuiteOptions(tmp_path), ["resume"]),
    )
    resumed.run_all()
    assert calls == [("b", "baseline", 1)]
    manifest = json.loads((suite.run.root / "manifest.json").read_text())
    assert manifest["scenarios"]["baseline/b"]["previous_attempts"][0]["status"] == "failed"
    assert (suite.run.root / ".attempts" / "baseline-b-1" / "requests.csv").is_file()
    assert manifest["resumed"][0]["command"] == ["resume"]


def test_an_interrupted_run_lists_the_cells_it_never_reached(tmp_path, monkeypatch):
    calls: list = []
    suite = _suite(tmp_path, calls, monkeypatch)

    def interrupted(name: str, rep: int, mode: str, point: int | None = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "_fresh", interrupted)
    suite.plan_cells(["a", "b"], ("fresh",), 1, ("with-cache",))
    with pytest.raises(KeyboardInterrupt):
        suite.run_all()
    manifest = json.loads((suite.run.root / "manifest.json").read_text())
    assert manifest["not_reached"] == ["a", "b"] and manifest["finished_at"]


def test_resume_of_something_that_is_not_a_run_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="--resume: .*manifest.json: file not found"):
        Suite.resume(tmp_path, lambda overlay: {}, SuiteOptions(tmp_path), ["resume"])


def test_a_sweep_runs_every_point_with_its_own_settings_and_resumes_by_point(tmp_path, monkeypatch):
    """Points x scenarios x modes, point-major; each cell sees its point's config; keys are
    point-NN/...; the manifest records each cell's point; a resumed sweep reruns only what failed."""
    cfg = Config.model_validate(
        {**CFG.model_dump(mode="json"), "sweep": {"stack.global_segment_size": ["256MB", "1GB"], "concurrency": [2]}}
    )
    seen: list = []
    suite = Suite(cfg, lambda overlay: {}, SuiteOptions(tmp_path), ["test"])

    def stack(label: str, workdir: Path, entries: list[CellEntry], mode: str, body) -> StackInfo:
        (entry,) = entries
        seen.append((label, suite.cfg.stack.global_segment_size, suite.cfg.concurrency))
        entry.status = "failed" if (label, mode) == ("point-02-baseline-b", "baseline") else "ok"
        return StackInfo()

    monkeypatch.setattr(suite, "_with_stack", stack)
    monkeypatch.setattr("harness.suite.write_report", lambda root: None)
    monkeypatch.setattr("harness.suite.console_summary", lambda root: "")
    suite.plan_cells(["a", "b"], ("fresh",), 1, cfg.modes)
    assert suite.run_all() is False
    assert [s[0] for s in seen] == [
        "point-01-a", "point-01-baseline-a", "point-01-b", "point-01-baseline-b",
        "point-02-a", "point-02-baseline-a", "point-02-b", "point-02-baseline-b",
    ]  # fmt: skip
    assert {s[1] for s in seen[:4]} == {"256MB"} and {s[1] for s in seen[4:]} == {"1GB"}
    assert {s[2] for s in seen} == {2} and suite.cfg.stack.global_segment_size == cfg.stack.global_segment_size
    manifest = json.loads((suite.run.root / "manifest.json").read_text())
    assert manifest["plan"]["points"][1] == {"stack.global_segment_size": "1GB", "concurrency": 2}
    assert manifest["scenarios"]["point-02/baseline/b"]["point"]["stack.global_segment_size"] == "1GB"

    seen.clear()
    resumed = Suite.resume(suite.run.root, lambda overlay: {}, SuiteOptions(tmp_path), ["resume"])
    monkeypatch.setattr(resumed, "_with_stack", stack)
    suite = resumed
    resumed.run_all()
    assert seen == [("point-02-baseline-b", "1GB", 2)]
