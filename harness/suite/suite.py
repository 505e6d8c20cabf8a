"""Run scenarios, each on its own fresh stack, and record the evidence.

For every scenario: prepare a compose project -> up and wait for health -> prove the cache is
cold -> rounds -> teardown with volumes -> verify nothing is left. A failed scenario is recorded
with its reason and logs and the next one runs. Ctrl-C / SIGTERM tear the current stack down
before the process exits. The isolation modes are in isolation.py, one cell in cell.py, a stack's
life in lifecycle.py, the plan and resume in plan.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.config import ARM_FLAGS, Config, ConfigError
from harness.records import CellEntry, Manifest, Plan, Resumed
from harness.report.fit import wrap
from harness.results import RunDir, base_manifest, read_manifest, utc_now
from harness.stack import versions
from harness.suite import isolation
from harness.suite.cell import Target
from harness.suite.console import console, new_run, say, step
from harness.suite.plan import arm_order, cells_of, register
from harness.suite.run import ImageProvider, Run, SuiteOptions
from harness.suite.steps import real_steps
from harness.workload import Prompt


class Suite:
    """One run: scenarios x repeats x modes in `fresh` or `reset` isolation and/or all scenarios on
    one `shared` stack. Every cell is registered as `pending` before the first stack starts, so an
    interrupted run shows what it never reached, and `resume` runs exactly the cells not finished `ok`."""

    def __init__(
        self,
        cfg: Config,
        images: ImageProvider,
        opts: SuiteOptions,
        command: list[str],
        run: RunDir | None = None,
        manifest: Manifest | None = None,
    ) -> None:
        run_dir = run or RunDir.create(opts.results_root, cfg.run_name)
        self.run = Run(
            cfg=cfg,
            dir=run_dir,
            manifest=manifest or base_manifest(run_dir.run_id, cfg.model_dump(mode="json"), command),
            opts=opts,
            steps=opts.steps or real_steps(),
            images=images,
            model=cfg.stack.served_model_name,
        )
        self.run.save()

    @property
    def cfg(self) -> Config:
        return self.run.cfg

    @property
    def manifest(self) -> Manifest:
        return self.run.manifest

    @classmethod
    def resume(cls, run_dir: Path, images: ImageProvider, opts: SuiteOptions, command: list[str]) -> Suite:
        """The run in `run_dir`, with the configuration it was started with (ConfigError when unusable)."""
        path = Path(run_dir) / "manifest.json"
        try:
            manifest = read_manifest(path)
            cfg = Config.model_validate(manifest.config)
            if manifest.plan is None:
                raise ValueError("no plan: the run never started a cell")
        except FileNotFoundError:
            raise ConfigError(f"--resume: {path}: file not found") from None
        except (OSError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise ConfigError(
                f"--resume: {path}: not a resumable kvbench run ({type(e).__name__}: {first})"[:300]
            ) from None
        manifest.resumed.append(Resumed(at=utc_now(), command=command))
        manifest.finished_at = None
        return cls(cfg, images, opts, command, RunDir(Path(run_dir), manifest.run_id), manifest)

    @property
    def plan(self) -> Plan:
        assert self.manifest.plan is not None, "plan_cells() first"
        return self.manifest.plan

    def plan_cells(self, names: list[str], isolation: tuple[str, ...], repeats: int, modes: tuple[str, ...]) -> None:
        self.manifest.plan = Plan(
            scenarios=names,
            isolation=list(isolation),
            repeats=repeats,
            modes=list(modes),
            points=self.cfg.points(),
            arm_order=[arm_order(list(modes), r) for r in range(1, repeats + 1)],
        )

    def run_all(self, external: Callable[[str, CellEntry], object] | None = None) -> bool:
        """True when every cell succeeded (on a shared stack or an external server contamination is
        expected, not a failure). `external`: measure each cell there instead of on stacks of ours."""
        run, plan = self.run, self.plan
        new_run()  # the client's warnings: said in full once per run
        say(f"run [bold]{run.dir.run_id}[/bold] -> {run.root}")
        self.manifest.topology = self.cfg.stack.topology
        planned = cells_of(plan)
        for c in planned:
            register(run, c)
        run.save()
        if external is None:
            run.image_tags = run.images(self.cfg.stack.overlays[0])
            self.manifest.images = run.image_tags
            self._check_versions(any(ARM_FLAGS.get(m, (False, True))[1] for m in plan.modes))
        try:
            self._run_cells(planned, external)
        except KeyboardInterrupt as e:
            self.manifest.interrupted = str(e) or type(e).__name__
            raise
        finally:
            self._finish()

        # Unisolated cells may show contamination; after a proven reset (kvbench run --reset) none may.
        def passed(e: CellEntry) -> bool:
            unisolated = e.isolation in ("shared", "external") and e.reset is None
            return e.status == "ok" or (unisolated and e.status in ("contaminated", "unverified"))

        return all(passed(e) for e in self.manifest.scenarios.values())

    def _run_cells(self, planned: list, external: Callable[[str, CellEntry], object] | None) -> None:
        run = self.run
        for c in planned:  # point-major, then scenario-major: the modes of a scenario back to back
            if c.isolation == "external" and external is not None:
                isolation.external(run, isolation.cell_for(run, c.key, c.point), external)
            elif c.isolation == "fresh" and run.todo(c.key) is not None:
                isolation.fresh(run, isolation.cell_for(run, c.key, c.point), c.point)
        # isolation reset: one stack per point and mode (and repeat, with repeats: the arms' order alternates,
        # ABBA), its cells in the same scenario order
        reset = [c for c in planned if c.isolation == "reset"]
        by_repeat = self.plan.repeats > 1
        for point, rep, mode in dict.fromkeys((c.point, c.repeat if by_repeat else 0, c.mode) for c in reset):
            group = [c for c in reset if (c.point, c.repeat if by_repeat else 0, c.mode) == (point, rep, mode)]
            isolation.reset(run, [isolation.cell_for(run, c.key, c.point) for c in group], mode, point, rep or None)
        for mode in dict.fromkeys(c.mode for c in planned if c.isolation == "shared"):
            cells = [isolation.cell_for(run, c.key, None) for c in planned if (c.isolation, c.mode) == ("shared", mode)]
            isolation.shared(run, cells, mode)

    def _finish(self) -> None:
        entries = self.manifest.scenarios
        self.manifest.not_reached = [k for k, e in entries.items() if e.status == "pending"]
        self.manifest.finished_at = utc_now()
        self.run.save()
        try:
            from harness.report import report_and_summary  # matplotlib and scipy load here, not at start

            print(report_and_summary(self.run.root))
        except Exception as e:  # the results are on disk: a report fault must not hide them
            console.print(
                f"[red]the report could not be written ({type(e).__name__}: {e}); the results are in "
                f"{self.run.root}; `kvbench report {self.run.root}` retries[/red]"
            )

    def _check_versions(self, with_connector: bool) -> None:
        """Versions inside the stack's images into the manifest; refuse a stack that cannot work."""
        images = versions.stack_images(self.cfg.stack, self.run.image_tags)
        missing = versions.not_local(images) if self.cfg.stack.backend == "kubernetes" else []
        if missing:
            self.manifest.preflight_skipped = f"kubernetes backend: not on this host: {', '.join(missing)}"
            say(f"  versions not checked: {self.manifest.preflight_skipped} (the cluster pulls them)")
            return
        with step("versions inside the images", transient=True):
            try:
                self.manifest.versions = versions.check(images, self.cfg.stack, with_connector)
            except versions.UnfitStack as e:
                self.manifest.refused = str(e)
                self.run.save()
                raise
        self.run.save()
        for line in wrap(versions.versions_line(self.manifest.versions or {}), console.width, indent="    "):
            say(line)

    def run_external(self, endpoint: str, model: str, master_metrics: str | None, reset: bool = False) -> bool:
        """`kvbench run`: the scenarios back to back against a server someone else runs. No stack
        of ours: without `reset` nothing isolates them from each other or from earlier traffic, and
        the cold gate (counting from the server's start) shows it. With `reset`, a verified reset
        before every scenario (runner/reset.py; the previous scenario's first prompt is the canary)
        and the cold gate counts from it. Same cells, rows, verdicts, signals and report as bench."""
        self.run.model, self.run.external_reset = model, reset
        self.manifest.driver, self.manifest.endpoint = "external-endpoint", endpoint
        self.plan_cells(self.cfg.default_scenarios, ("external",), 1, self.cfg.modes[:1])
        target = Target([endpoint.rstrip("/")], master_metrics)
        canary: Prompt | None = None  # the last measured scenario's first prompt

        def measure(name: str, entry: CellEntry) -> None:
            nonlocal canary
            cell = isolation.cell_for(self.run, name, None)
            since = None
            if reset:
                entry.reset, since = self.run.steps.prove_reset(self.run, cell.cfg, target, canary)
                self.run.save()
                if not entry.reset.verified:
                    raise ResetNotProven(f"reset not proven: {entry.reset.warm}")
            canary = self.run.steps.measure(self.run, cell, target, since) or canary

        return self.run_all(measure)


class ResetNotProven(RuntimeError):
    """`kvbench run --reset`: the server kept something the reset should have dropped."""
