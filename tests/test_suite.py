"""Cell planning and resume, without stacks: which scenario x mode x repeat cells run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import Config, ConfigError
from harness.records import ResetEvidence, cell_key, parse_cell_key
from harness.stack.base import TeardownResult
from harness.suite import Steps, Suite, SuiteOptions

CFG = Config.model_validate(
    {
        "default_scenarios": ["a", "b"],
        "scenarios": {n: {"kind": "cold_start", "num_requests": 1, "prompt_length": 5} for n in ("a", "b")},
    }
)


class _PlanStack:
    """Stands for a stack in the planning tests (no container, no server): the suite opens it
    through `Steps.open_stack`, brings it up, tears it down verified; the test's `measure` is
    what runs on it."""

    UP_STEP = "plan test: nothing to start"
    DOWN_STEP = "plan test: nothing to stop"
    engine_urls = ["http://127.0.0.1:1"]
    master_metrics_url = "http://127.0.0.1:2"
    store_url = None

    def __init__(self, spec, workdir: Path, cfg) -> None:
        self.spec = spec

    def up(self) -> None:
        pass

    def down(self) -> TeardownResult:
        return TeardownResult(verified=True, seconds=0.0)

    def service_start_seconds(self) -> float:
        return 0.0

    def engine_container_ids(self) -> list[str]:
        return ["plan-test"]

    def save_logs(self) -> Path:
        return Path("logs")


def _opts(tmp_path: Path, measure, prove=None, stacks: list | None = None) -> SuiteOptions:
    """The suite's public seam for plan tests: stacks that start nothing, the test's measurement and
    reset proof. `stacks`: one list per stack opened, the cells measured on it appended by `measure`."""

    def open_stack(spec, workdir, cfg):
        if stacks is not None:
            stacks.append([])
        return _PlanStack(spec, workdir, cfg)

    def no_reset(run, cfg, stack, canary):
        raise AssertionError("no reset in this plan")

    return SuiteOptions(tmp_path, steps=Steps(open_stack=open_stack, measure=measure, prove_reset=prove or no_reset))


def _suite(tmp_path: Path, calls: list, monkeypatch, resume: Path | None = None) -> Suite:
    def measure(run, cell, target, since):  # a verdict: b's baseline fails
        calls.append((cell.entry.scenario, cell.entry.mode, cell.entry.repeat))
        cell.entry.status = "failed" if (cell.entry.scenario, cell.entry.mode) == ("b", "baseline") else "ok"

    monkeypatch.setattr("harness.report.report_and_summary", lambda root: "")
    if resume:
        return Suite.resume(resume, lambda overlay: {}, _opts(tmp_path, measure), ["resume"])
    return Suite(CFG, lambda overlay: {}, _opts(tmp_path, measure), ["test"])


def test_cells_run_scenario_major_and_resume_reruns_only_what_was_not_ok(tmp_path, monkeypatch):
    calls: list = []
    suite = _suite(tmp_path, calls, monkeypatch)
    suite.plan_cells(["a", "b"], ("fresh",), 1, CFG.modes)
    assert suite.run_all() is False  # b's baseline failed
    assert calls == [("a", "with-cache", 1), ("a", "baseline", 1), ("b", "with-cache", 1), ("b", "baseline", 1)]
    (suite.run.root / "baseline" / "b").mkdir(parents=True, exist_ok=True)  # the stack wrote its files there
    (suite.run.root / "baseline" / "b" / "requests.csv").write_text("round\n1\n")

    calls.clear()
    resumed = _suite(tmp_path, calls, monkeypatch, resume=suite.run.root)
    resumed.run_all()
    assert calls == [("b", "baseline", 1)]
    manifest = json.loads((suite.run.root / "manifest.json").read_text())
    assert manifest["scenarios"]["baseline/b"]["previous_attempts"][0]["status"] == "failed"
    assert (suite.run.root / ".attempts" / "baseline-b-1" / "requests.csv").is_file()
    assert manifest["resumed"][0]["command"] == ["resume"]


def test_an_interrupted_run_lists_the_cells_it_never_reached(tmp_path, monkeypatch):
    def interrupted(run, cell, target, since) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("harness.report.report_and_summary", lambda root: "")
    suite = Suite(CFG, lambda overlay: {}, _opts(tmp_path, interrupted), ["test"])
    suite.plan_cells(["a", "b"], ("fresh",), 1, ("with-cache",))
    with pytest.raises(KeyboardInterrupt):
        suite.run_all()
    manifest = json.loads((suite.run.root / "manifest.json").read_text())
    assert manifest["not_reached"] == ["b"] and manifest["finished_at"]
    assert manifest["scenarios"]["a"]["status"] == "interrupted"


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

    def measure(run, cell, target, since) -> None:
        label = cell.key.replace("/", "-")
        seen.append((label, cell.cfg.stack.global_segment_size, cell.cfg.concurrency))
        cell.entry.status = "failed" if label == "point-02-baseline-b" else "ok"

    suite = Suite(cfg, lambda overlay: {}, _opts(tmp_path, measure), ["test"])
    monkeypatch.setattr("harness.report.report_and_summary", lambda root: "")
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
    resumed = Suite.resume(suite.run.root, lambda overlay: {}, _opts(tmp_path, measure), ["resume"])
    resumed.run_all()
    assert seen == [("point-02-baseline-b", "1GB", 2)]


def _reset_suite(tmp_path: Path, monkeypatch, proofs: list[bool], on_failure: str = "fresh"):
    """A suite whose stacks, proofs and measurements are recorded, not run: stacks[i] lists the cells
    measured on the i-th stack; a proof's verdict comes from `proofs` in order."""
    cfg = CFG.model_copy(update={"on_reset_failure": on_failure, "default_scenarios": ["a", "b", "c"]})
    cfg.scenarios["c"] = cfg.scenarios["a"]
    stacks: list[list[str]] = []
    verdicts = iter(proofs)

    def prove(run, cfg, stack, canary):
        ok = next(verdicts)
        ev = ResetEvidence(verified=ok, warm=None if ok else "store: 3 keys, 4,096 bytes at the cell's start")
        return ev, []

    def measure(run, cell, target, since):
        stacks[-1].append(f"{cell.name}/{cell.entry.mode}")
        cell.entry.status = "ok"
        return None

    suite = Suite(cfg, lambda overlay: {}, _opts(tmp_path, measure, prove, stacks), ["test"])
    monkeypatch.setattr("harness.report.report_and_summary", lambda root: "")
    suite.plan_cells(["a", "b", "c"], ("reset",), 1, ("with-cache",))
    return suite, stacks


def test_isolation_reset_runs_a_mode_on_one_stack_with_a_proof_before_every_later_cell(tmp_path, monkeypatch):
    suite, stacks = _reset_suite(tmp_path, monkeypatch, [True, True])
    assert suite.run_all() is True
    assert stacks == [["a/with-cache", "b/with-cache", "c/with-cache"]]
    cells = suite.manifest.scenarios
    assert cells["reset/a"].reset is None and cells["reset/b"].reset.verified and cells["reset/c"].reset.verified


def test_a_reset_that_cannot_be_proven_sends_its_cell_to_a_fresh_stack(tmp_path, monkeypatch):
    suite, stacks = _reset_suite(tmp_path, monkeypatch, [False, True])
    assert suite.run_all() is True
    assert stacks == [["a/with-cache"], ["b/with-cache", "c/with-cache"]]  # b first (fresh) on a new stack
    b = suite.manifest.scenarios["reset/b"]
    assert b.status == "ok" and b.reset.verified is False and b.reset.fallback == "fresh stack"
    assert "3 keys" in b.reset.warm


def test_on_reset_failure_fail_fails_the_cell_and_never_measures_it_warm(tmp_path, monkeypatch):
    suite, stacks = _reset_suite(tmp_path, monkeypatch, [False, True], on_failure="fail")
    assert suite.run_all() is False
    assert stacks == [["a/with-cache", "c/with-cache"]]
    b = suite.manifest.scenarios["reset/b"]
    assert b.status == "failed" and b.reason.startswith("reset not proven: store: 3 keys")


@pytest.mark.parametrize("iso", ["fresh", "shared", "reset"])
@pytest.mark.parametrize("mode", ["with-cache", "baseline"])
@pytest.mark.parametrize(("rep", "point"), [(1, None), (3, None), (1, 2), (2, 11)])
def test_a_cell_key_reads_back_as_the_cell_it_names(iso, mode, rep, point):
    key = cell_key("long_context_high_reuse", mode, iso, rep, point)
    assert parse_cell_key(key) == {
        "scenario": "long_context_high_reuse",
        "mode": mode,
        "isolation": iso,
        "repeat": rep,
        "point": f"point-{point:02d}" if point else "",
    }


def test_resuming_a_shared_run_sets_finished_cells_aside_instead_of_appending_to_them(tmp_path, monkeypatch):
    """One shared stack measures all its scenarios again on resume: the ok cell's earlier rows move to
    .attempts/ (its verdict on record), so the new requests.csv holds only the new attempt."""
    outcome = {"a": "ok", "b": "failed"}

    def measure(run, cell, target, since):
        cell.out.mkdir(parents=True, exist_ok=True)
        with (cell.out / "requests.csv").open("a") as fh:
            fh.write(f"row of {cell.name}\n")
        cell.entry.status = outcome[cell.name]

    monkeypatch.setattr("harness.report.report_and_summary", lambda root: "")
    suite = Suite(CFG, lambda overlay: {}, _opts(tmp_path, measure), ["test"])
    suite.plan_cells(["a", "b"], ("shared",), 1, ("with-cache",))
    suite.run_all()

    outcome["b"] = "ok"
    resumed = Suite.resume(suite.run.root, lambda overlay: {}, _opts(tmp_path, measure), ["resume"])
    assert resumed.run_all() is True
    assert (suite.run.root / "shared" / "a" / "requests.csv").read_text() == "row of a\n"  # not appended to
    assert (suite.run.root / ".attempts" / "shared-a-1" / "requests.csv").read_text() == "row of a\n"
    assert resumed.manifest.scenarios["shared/a"].previous_attempts[0].status == "ok"


def test_kvbench_run_reset_fails_a_cell_its_proof_missed_or_that_is_still_contaminated(tmp_path, monkeypatch):
    """`kvbench run` on an external server: without --reset a contaminated cell is shown, not a failure;
    with --reset, a reset that cannot be proven fails its cell (the next one still runs, with the last
    measured scenario's first prompt as its canary), and a cell contaminated after a proven reset fails
    the run."""
    proofs = iter([True, False, True])
    canaries: list = []

    def prove(run, cfg, target, canary):
        canaries.append(canary)
        ok = next(proofs)
        return ResetEvidence(verified=ok, warm=None if ok else "store: 3 keys, 4,096 bytes at the cell's start"), []

    def measure(run, cell, target, since):
        cell.entry.status = "contaminated"
        return f"first prompt of {cell.name}"

    monkeypatch.setattr("harness.report.report_and_summary", lambda root: "")
    cfg = CFG.model_copy(update={"default_scenarios": ["a", "b", "c"]})
    cfg.scenarios["c"] = cfg.scenarios["a"]
    plain = Suite(cfg, lambda overlay: {}, _opts(tmp_path / "plain", measure), ["test"])
    assert plain.run_external("http://127.0.0.1:1", "m", None) is True
    reset = Suite(cfg, lambda overlay: {}, _opts(tmp_path / "reset", measure, prove), ["test"])
    assert reset.run_external("http://127.0.0.1:1", "m", "http://127.0.0.1:2", reset=True) is False
    cells = reset.manifest.scenarios
    assert cells["b"].status == "failed" and cells["b"].reason.startswith("ResetNotProven: reset not proven: store: 3")
    assert cells["a"].status == cells["c"].status == "contaminated" and cells["c"].reset.verified
    assert canaries == [None, "first prompt of a", "first prompt of a"]
