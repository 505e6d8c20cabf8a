"""Run scenarios, each on its own fresh stack, and record the evidence.

For every scenario: prepare a compose project -> up and wait for health ->
prove the cache is cold -> rounds -> teardown with volumes -> verify nothing is
left. A failed scenario is recorded with its reason and logs and the next one
runs. Ctrl-C / SIGTERM tear the current stack down before the process exits.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.analysis.shortfall import cell_shortfalls
from harness.client.tokenizer import LocalTokenizer, ServerTokenizer
from harness.config import Config, ConfigError, point_label
from harness.observe.probes import Probe, Snapshot, cold_state
from harness.observe.watch import StackWatch
from harness.progress import console, print_rounds, round_progress, say, step
from harness.records import CellEntry, Manifest, Plan, ResetEvidence, Resumed, StackInfo, cell_key
from harness.report import report_and_summary
from harness.report.fit import wrap
from harness.results import RunDir, base_manifest, read_manifest, utc_now
from harness.runner.reset import ResetSettings, verified_reset
from harness.runner.rounds import Endpoint, Route, StackDown, run_rounds
from harness.stack import Stack, StackError, open_stack, preflight
from harness.stack.preflight import versions_line
from harness.stack.spec import COMPOSE_DIR, StackSpec, prepare
from harness.workload import Prompt, build_workload

ImageProvider = Callable[[str], dict[str, str]]


def degraded(table: pd.DataFrame) -> str | None:
    """Why a with-cache cell measured a broken store rather than the cache (None: it did not)."""
    if "degraded" not in table:
        return None
    bad = table[table["degraded"].map(lambda v: v is True)]
    why = [
        f"round {int(r['round'])}: the store failed {r['store_read_failed_keys']:,.0f} of its reads' keys "
        f"({r['store_read_failed_pct']:.1f} %): degraded, not a measurement of the cache"
        for _, r in bad.iterrows()
    ]
    return "; ".join(why) or None


def judge(table: pd.DataFrame, cold: bool, max_failed_percent: float, cold_detail: str | None = None) -> dict:
    """A measured cell's status: failed (too many failed requests) before contaminated before
    unverified before ok. Contaminated needs evidence: the cold gate saw keys or hits, or round 1
    hit tokens the scenario never computed. A gate that could not look (`cold_detail` "cannot
    verify ...": an external server without the metrics) leaves the cell unverified, not accused."""
    foreign = table.loc[table["round"] == 1, "foreign_hit_tokens"] if "foreign_hit_tokens" in table else None
    out: dict = {
        "foreign_hit_tokens_round1": int(foreign.iloc[0])
        if foreign is not None and len(foreign) and foreign.notna().iloc[0]
        else None
    }
    sent, failed = int(table["requests"].sum()), int(table["failures"].sum())
    pct = 100 * failed / sent if sent else 100.0
    if pct > max_failed_percent:
        out.update(
            status="failed",
            reason=f"{failed} of {sent} requests failed ({pct:.1f} % > max_failed_percent {max_failed_percent:g} %)",
        )
    elif out["foreign_hit_tokens_round1"]:
        out.update(status="contaminated", reason=f"round 1 hit {out['foreign_hit_tokens_round1']:,} foreign tokens")
    elif cold:
        out["status"] = "ok"
    elif _unseen(cold_detail):
        out.update(status="unverified", reason=f"cold state not verified ({cold_detail})")
    else:
        out.update(status="contaminated", reason=f"cold-state gate: {cold_detail or 'not cold'}")
    return out


def _unseen(cold_detail: str | None) -> bool:
    """The gate could not look (metrics missing) and, on no engine, saw a key or a hit."""
    return cold_detail is not None and "cannot verify" in cold_detail and "not cold" not in cold_detail


@dataclass
class SuiteOptions:
    results_root: Path = Path("results")
    compose_dir: Path = COMPOSE_DIR
    extra_compose_files: tuple[Path, ...] = ()


class Suite:
    """One run: scenarios x repeats x modes in `fresh` isolation and/or all scenarios on one `shared` stack.

    Every cell is registered as `pending` before the first stack starts, so an interrupted run
    shows what it never reached, and `resume` runs exactly the cells not finished `ok`."""

    def __init__(
        self,
        cfg: Config,
        images: ImageProvider,
        opts: SuiteOptions,
        command: list[str],
        run: RunDir | None = None,
        manifest: Manifest | None = None,
    ) -> None:
        self.cfg = cfg  # the configuration of the cell being run (a sweep point's, during a sweep)
        self.base_cfg = cfg
        self.images = images
        self.opts = opts
        self.run = run or RunDir.create(opts.results_root, cfg.run_name)
        self.manifest = manifest or base_manifest(self.run.run_id, cfg.model_dump(mode="json"), command)
        self.run.write_manifest(self.manifest)
        self.image_tags: dict[str, str] = {}
        self.model = cfg.stack.served_model_name
        # `kvbench run --tokenizer`: the endpoint has no usable POST /tokenize (not vLLM)
        self.local_tokenizer: LocalTokenizer | None = None

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
            scenarios=names, isolation=list(isolation), repeats=repeats, modes=list(modes), points=self.cfg.points()
        )

    def run_all(self, external: Callable[[str, CellEntry], object] | None = None) -> bool:
        """True when every cell succeeded (on a shared stack or an external server contamination is
        expected, not a failure). `external`: measure each cell there instead of on stacks of ours."""
        plan = self.plan
        names, isolation, repeats, modes = plan.scenarios, plan.isolation, plan.repeats, plan.modes
        say(f"run [bold]{self.run.run_id}[/bold] -> {self.run.root}")
        self.manifest.topology = self.cfg.stack.topology
        points: list[int | None] = list(range(1, len(plan.points) + 1)) or [None]
        cells = [
            (p, n, m, iso, r)
            for p in points
            for iso in ("fresh", "external", "reset")
            if iso in isolation
            for n in names
            for r in range(1, repeats + 1)
            for m in modes
        ]
        shared = [(None, n, m, "shared", 1) for m in modes if "shared" in isolation for n in names]
        for p, n, m, iso, r in cells + shared:
            self._register(n, m, iso, r, p)
        self.run.write_manifest(self.manifest)
        if external is None:
            self.image_tags = self.images(self.cfg.stack.overlays[0])
            self.manifest.images = self.image_tags
            self._preflight("with-cache" in modes)
        try:
            # point-major, then scenario-major: with-cache and baseline of a scenario back to back
            for p, n, m, iso, r in cells:
                self.cfg = self.base_cfg.at(plan.points[p - 1]) if p else self.base_cfg
                if iso == "external" and external is not None:
                    self._external(n, external)
                elif iso == "fresh":
                    self._fresh(n, r, m, p)
            # isolation reset: one stack per point and mode, its cells in the same scenario order
            for p in points if "reset" in isolation else ():
                self.cfg = self.base_cfg.at(plan.points[p - 1]) if p else self.base_cfg
                for m in modes:
                    self._reset_cells([(n, r) for n in names for r in range(1, repeats + 1)], m, p)
            self.cfg = self.base_cfg
            for m in modes if "shared" in isolation else ():
                self._shared(names, m)
        except KeyboardInterrupt as e:
            self.manifest.interrupted = str(e) or type(e).__name__
            raise
        finally:
            entries = self.manifest.scenarios
            self.manifest.not_reached = [k for k, e in entries.items() if e.status == "pending"]
            self.manifest.finished_at = utc_now()
            self.run.write_manifest(self.manifest)
            try:
                print(report_and_summary(self.run.root))
            except Exception as e:  # the results are on disk: a report fault must not hide them
                console.print(
                    f"[red]the report could not be written ({type(e).__name__}: {e}); the results are in "
                    f"{self.run.root}; `kvbench report {self.run.root}` retries[/red]"
                )
        return all(
            e.status == "ok" or (e.isolation in ("shared", "external") and e.status in ("contaminated", "unverified"))
            for e in self.manifest.scenarios.values()
        )

    def _preflight(self, with_connector: bool) -> None:
        """Versions inside the stack's images into the manifest; refuse a stack that cannot work."""
        images = preflight.stack_images(self.cfg.stack, self.image_tags)
        missing = preflight.not_local(images) if self.cfg.stack.backend == "kubernetes" else []
        if missing:
            self.manifest.preflight_skipped = f"kubernetes backend: not on this host: {', '.join(missing)}"
            say(f"  preflight skipped: {self.manifest.preflight_skipped} (the cluster pulls them)")
            return
        with step("preflight (versions inside the images)", transient=True):
            try:
                self.manifest.versions = preflight.check(images, self.cfg.stack, with_connector)
            except preflight.PreflightError as e:
                self.manifest.refused = str(e)
                self.run.write_manifest(self.manifest)
                raise
        self.run.write_manifest(self.manifest)
        for line in wrap(versions_line(self.manifest.versions or {}), console.width, indent="    "):
            say(line)

    def _register(self, name: str, mode: str, iso: str, rep: int, point: int | None) -> None:
        key = cell_key(name, mode, iso, rep, point)
        old = self.manifest.scenarios.get(key)
        if old and old.status == "ok":
            return
        values = self.plan.points[point - 1] if point else None
        entry = CellEntry(scenario=name, mode=mode, isolation=iso, repeat=rep, point=values)
        if old:  # an earlier attempt of a resumed run: its files move aside, its verdict stays on record
            entry.previous_attempts = [*old.previous_attempts, old.model_copy(update={"previous_attempts": []})]
            self._set_aside(key, len(entry.previous_attempts))
        self.manifest.scenarios[key] = entry

    def _set_aside(self, key: str, attempt: int) -> None:
        d = self.run.root / key
        if d.exists():
            dest = self.run.root / ".attempts" / f"{key.replace('/', '-')}-{attempt}"
            dest.parent.mkdir(exist_ok=True)
            shutil.rmtree(dest, ignore_errors=True)
            d.rename(dest)

    def _todo(self, key: str) -> CellEntry | None:
        entry = self.manifest.scenarios[key]
        if entry.status == "ok":
            say(f"{key}: ok in an earlier attempt, not run again")
            return None
        return entry

    def _external(self, name: str, measure: Callable[[str, CellEntry], object]) -> None:
        entry = self._todo(cell_key(name, self.plan.modes[0], "external", 1))
        if entry is None:
            return
        console.rule(f"{name} (external server: no isolation)")
        try:
            measure(name, entry)
        except (KeyboardInterrupt, SystemExit):
            entry.set(status="interrupted", reason="interrupted during the scenario")
            raise
        except Exception as e:  # one scenario's failure must not stop the others
            self._fail([entry], f"{type(e).__name__}: {e}"[:500], logs=None)
        finally:
            self.run.write_manifest(self.manifest)

    def _fresh(self, name: str, rep: int, mode: str, point: int | None = None) -> None:
        key = cell_key(name, mode, "fresh", rep, point)
        entry = self._todo(key)
        if entry is not None:
            if entry.point:
                say(f"  sweep point {point}: {point_label(entry.point)}")
            self._with_stack(
                key.replace("/", "-"),
                self.run.root / key,
                [entry],
                mode,
                lambda stack: self._measure(
                    name, stack.engine_urls, stack.master_metrics_url, self.run.root / key, entry, stack
                ),
            )

    def _shared(self, names: list[str], mode: str) -> None:
        """All scenarios back to back on one stack, as the users' old script did: pollution on purpose."""
        keys = [cell_key(n, mode, "shared", 1) for n in names]
        if all(self.manifest.scenarios[k].status == "ok" for k in keys):
            return
        for k in keys:  # one stack: a resumed shared run measures all its scenarios again
            entry = self.manifest.scenarios[k]
            if (self.run.root / k).exists():  # a finished cell's rows: set aside, never appended to
                entry.previous_attempts = [*entry.previous_attempts, entry.model_copy(update={"previous_attempts": []})]
                self._set_aside(k, len(entry.previous_attempts))
            entry.status = "pending"
        entries = {n: (k, self.manifest.scenarios[k]) for n, k in zip(names, keys, strict=True)}
        shared_dir = self.run.root / Path(keys[0]).parent

        def body(stack: Stack) -> None:
            for n in names:
                key, entry = entries[n]
                try:
                    self._measure(n, stack.engine_urls, stack.master_metrics_url, self.run.root / key, entry, stack)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # the shared stack goes on with the next scenario
                    entry.set(status="failed", reason=f"{type(e).__name__}: {e}"[:500])
                    console.print(f"[red]{key} failed: {entry.reason}[/red]")
                    if isinstance(e, StackDown):
                        raise

        label = str(shared_dir.relative_to(self.run.root)).replace("/", "-")
        stack_info = self._with_stack(label, shared_dir, [e for _, e in entries.values()], mode, body)
        self.manifest.shared_stacks[mode] = stack_info

    def _with_stack(
        self,
        label: str,
        workdir: Path,
        entries: list[CellEntry],
        mode: str,
        body: Callable[[Stack], object],
        dev_mode: bool = False,
    ) -> StackInfo:
        """Fresh stack -> body -> teardown with volumes -> verify; faults land in `entries` (the body
        may drop entries it leaves for another stack). `dev_mode`: the engine's reset endpoint."""
        t_all = time.perf_counter()
        info = StackInfo()
        timings = info.timings
        for e in entries:
            e.status = "running"
        console.rule(label)
        try:  # a preparation fault (port clash, compose files) fails this scenario, not the run
            spec = prepare(
                self.cfg.stack,
                self.run.run_id,
                label,
                workdir,
                self.image_tags,
                self.opts.compose_dir,
                list(self.opts.extra_compose_files),
                with_connector=mode != "baseline",
                dev_mode=dev_mode,
            )
        except Exception as e:
            self._fail(entries, f"stack preparation failed: {type(e).__name__}: {e}"[:500], logs=None)
            self.run.write_manifest(self.manifest)
            return info
        info.set(project=spec.project, ports={**spec.engine_ports, "master_metrics": spec.master_metrics_port})
        for entry in entries:
            entry.set(project=spec.project, ports=info.ports)
        self.run.write_manifest(self.manifest)
        try:
            stack = self._stack(spec, workdir)
        except Exception as e:
            self._fail(entries, f"stack preparation failed: {type(e).__name__}: {e}"[:500], logs=None)
            self.run.write_manifest(self.manifest)
            return info
        try:
            with step(f"bring-up ({stack.UP_STEP})", timings, "up_s", transient=True):
                stack.up()
            timings["service_start_s"] = stack.service_start_seconds()
            info.engine_container_ids = stack.engine_container_ids()
            for entry in entries:
                entry.engine_container_ids = info.engine_container_ids
            body(stack)
        except StackError as e:
            self._fail(entries, str(e), logs=str(workdir / "logs"))
        except (KeyboardInterrupt, SystemExit):
            stack.save_logs()
            for entry in entries:
                if entry.status == "running":
                    entry.set(status="interrupted", reason="interrupted during the scenario")
            raise
        except Exception as e:  # any fault: keep the rows, save logs, tear down, go on
            self._fail(entries, f"{type(e).__name__}: {e}"[:500], logs=str(stack.save_logs()))
        finally:
            self._teardown(stack, entries, info, timings, t_all)
        return info

    def _reset_cells(self, cells: list[tuple[str, int]], mode: str, point: int | None) -> None:
        """isolation reset: the cells of one mode (and sweep point) on as few stacks as the proofs
        allow. The first cell of a stack runs on it fresh; every next one after a verified reset. A
        reset that cannot be proven sends its cell, and those after it, to a new stack (or fails the
        cell: on_reset_failure: fail); so does a stack that broke."""
        todo = [(n, r) for n, r in cells if self._todo(cell_key(n, mode, "reset", r, point)) is not None]
        stacks = 0
        while todo:
            stacks += 1
            label = "-".join([*([f"point-{point:02d}"] if point else []), mode, "reset", str(stacks)])
            entries = [self.manifest.scenarios[cell_key(n, mode, "reset", r, point)] for n, r in todo]
            before = len(todo)
            body = functools.partial(self._on_reset_stack, todo=todo, entries=entries, mode=mode, point=point)
            self._with_stack(label, self.run.root / ".stacks" / label, entries, mode, body, dev_mode=True)
            if len(todo) == before:  # the stack never came up: _with_stack failed every entry
                return

    def _on_reset_stack(
        self, stack: Stack, todo: list[tuple[str, int]], entries: list[CellEntry], mode: str, point: int | None
    ) -> None:
        """Measure `todo`'s cells on this stack in order, popping each; leave the rest (dropped from
        `entries`, pending again) for a new stack when a proof fails or the stack breaks."""
        canary: Prompt | None = None
        since: list[Snapshot] | None = None
        first = True
        while todo:
            name, rep = todo[0]
            key = cell_key(name, mode, "reset", rep, point)
            entry = self.manifest.scenarios[key]
            if not first:
                entry.reset, since = self._prove_reset(stack, canary)
                self.run.write_manifest(self.manifest)
                if not entry.reset.verified:
                    if self.cfg.on_reset_failure == "fresh":
                        entry.reset.fallback = "fresh stack"
                        self._hand_on(entries, entry)
                        return
                    entry.reset.fallback = "failed (on_reset_failure: fail)"
                    entry.set(status="failed", reason=f"reset not proven: {entry.reset.warm}")
                    todo.pop(0)
                    continue
            todo.pop(0)
            first = False
            try:
                canary = (
                    self._measure(
                        name, stack.engine_urls, stack.master_metrics_url, self.run.root / key, entry, stack, since
                    )
                    or canary
                )
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # this cell failed; the next one's proof says whether the stack is usable
                entry.set(status="failed", reason=f"{type(e).__name__}: {e}"[:500], logs=str(stack.save_logs()))
                console.print(f"[red]{key} failed: {entry.reason}[/red]")
                if isinstance(e, StackDown) and todo:  # a broken stack: the rest on a new one
                    nxt = cell_key(todo[0][0], mode, "reset", todo[0][1], point)
                    self._hand_on(entries, self.manifest.scenarios[nxt])
                    return
            finally:
                self.run.write_manifest(self.manifest)

    @staticmethod
    def _hand_on(entries: list[CellEntry], first: CellEntry) -> None:
        """`first` and the cells after it go to the next stack: pending again, not this stack's."""
        i = next(i for i, e in enumerate(entries) if e is first)
        for e in entries[i:]:
            e.status = "pending"
        del entries[i:]

    def _prove_reset(self, stack: Stack, canary: Prompt | None) -> tuple[ResetEvidence, list[Snapshot]]:
        """A verified reset on every engine of the stack (harness/reset.py); the evidence of all of them
        in one record (the first failure's figures), and the snapshots the next cell's gate starts from."""
        with step("verified reset (reset, store empty, canary, reset)"):
            results = []
            for url in stack.engine_urls:
                probe = Probe(url, stack.master_metrics_url)
                try:
                    results.append(verified_reset(probe, self.model, self.cfg.api, canary, ResetSettings()))
                finally:
                    probe.close()
        # The first engine whose proof failed speaks for the stack (its verdict is then the stack's).
        evidence = next((ev for ev, _ in results if not ev.verified), results[-1][0])
        ok = "[green]proven cold[/green]" if evidence.verified else f"[yellow]NOT proven: {evidence.warm}[/yellow]"
        say(f"  reset: {ok} (store {evidence.keys_at_start or 0:,.0f} keys, canary {evidence.canary_cached_tokens} "
            f"cached tokens, {evidence.seconds:.1f} s)")  # fmt: skip
        return evidence, [snap for _, snap in results]

    def _stack(self, spec: StackSpec, workdir: Path) -> Stack:
        return open_stack(spec, workdir, self.cfg.stack)  # the kubernetes client only for that backend

    def _teardown(self, stack: Stack, entries: list[CellEntry], info: StackInfo, timings: dict, t_all: float) -> None:
        with step(f"teardown ({stack.DOWN_STEP})", timings, "teardown_s", transient=True):
            td = stack.down()
        timings["total_s"] = round(time.perf_counter() - t_all, 3)
        if timings.get("service_start_s") is not None:
            timings["harness_overhead_s"] = round(
                timings["up_s"] + timings["teardown_s"] - timings["service_start_s"], 3
            )
        info.set(teardown_verified=td.verified, teardown_leftovers=td.leftovers, timings=timings)
        for e in entries:
            e.set(teardown_verified=td.verified, teardown_leftovers=td.leftovers, timings={**timings, **e.timings})
            if not td.verified:
                e.set(status="failed", reason=(e.reason or "") + f"; teardown left {td.leftovers}")
        self.run.write_manifest(self.manifest)
        up = f"up in {timings['up_s']:.1f} s" if info.engine_container_ids else "bring-up failed"
        done = "nothing left" if td.verified else f"[red]NOT verified: left {td.leftovers}[/red]"
        say(f"  stack {up}; teardown ({stack.DOWN_STEP}) {td.seconds:.1f} s: {done}")

    @staticmethod
    def _fail(entries: list[CellEntry], reason: str, logs: str | None) -> None:
        for e in entries:
            if e.status in ("running", "pending"):
                e.set(status="failed", reason=reason, logs=logs)
        console.print(f"[red]{reason}[/red]" + (f" (logs: {logs})" if logs else ""))

    def run_external(self, endpoint: str, model: str, master_metrics: str | None) -> bool:
        """`kvbench run`: the scenarios back to back against a server someone else runs. No stack
        of ours, so nothing isolates them from each other or from earlier traffic; the cold gate
        and counters still show it. Same cells, rows, verdicts, signals and report as bench."""
        self.model = model
        self.manifest.driver, self.manifest.endpoint = "external-endpoint", endpoint
        self.plan_cells(self.cfg.default_scenarios, ("external",), 1, self.cfg.modes[:1])
        return self.run_all(
            lambda name, entry: self._measure(name, [endpoint.rstrip("/")], master_metrics, self.run.root / name, entry)
        )

    def _measure(
        self,
        name: str,
        urls: list[str],
        master_url: str | None,
        out: Path,
        entry: CellEntry,
        stack: Stack | None = None,
        since: list[Snapshot] | None = None,
    ) -> Prompt | None:
        """Cold-state gate, workload, rounds. Round 1 goes to the first engine, rounds 2+ to the last
        (cross-instance: engine B must get its warm hits from Mooncake). The whole stack is watched
        during every round; with the cache, its master too. `since`: per engine, the snapshot after a
        verified reset (isolation reset). Returns the workload's first prompt (the next cell's canary)."""
        timings = entry.timings
        out.mkdir(parents=True, exist_ok=True)
        entry.status = "running"
        probes = [Probe(u, master_url) for u in urls]
        try:
            snapshots = [p.snapshot() for p in probes]
            cold, detail = self._cold_gate(snapshots, since)
            entry.set(cold_verified=cold, cold_detail=detail, block_size=snapshots[0].block_size)
            say(f"  cold state {'verified' if cold else '[yellow]NOT verified[/yellow]'} ({detail})")
            if not cold and "not cold" in detail and self.cfg.on_contamination == "fail":
                raise RuntimeError(f"cold-state gate failed: {detail}")
            routes: list[Route] = [(Endpoint(u, self.model), p) for u, p in zip(urls, probes)]
            with self.local_tokenizer or ServerTokenizer(routes[0][0].base_url, self.model) as tok:
                self.manifest.tokenizer = tok.source
                how = "local tokenizer" if self.local_tokenizer else "/tokenize"
                with step(f"workload (exact token lengths via {how})", timings, "workload_s", transient=True):
                    wl = build_workload(
                        name,
                        self.cfg.scenarios[name],
                        tok,
                        api=self.cfg.api,
                        seed=self.cfg.seed,
                        max_model_len=self.cfg.stack.max_model_len,
                    )
                if wl.skipped:
                    entry.skipped_requests = wl.skipped
                    say(
                        f"  {name}: {wl.skipped} trace requests skipped (longer than max_input_length, or input + "
                        f"output over max_model_len {self.cfg.stack.max_model_len}); {wl.num_requests} replayed"
                    )
                t = time.perf_counter()
                labels = entry.model_dump(include={"scenario", "mode", "isolation", "repeat"})
                watch = StackWatch.for_stack(
                    urls,
                    master_url if entry.mode != "baseline" else None,
                    stack.health if stack else None,
                    self.cfg.watch.poll_s,
                    self.cfg.watch.down_after_s,
                    stack.spec.engines if stack else None,
                )
                restart = (
                    functools.partial(self._restart_engines, stack, probes[0], entry)
                    if stack is not None and self.cfg.stack.topology == "engine-restart"  # compose only (config)
                    else None
                )
                table = run_rounds(
                    wl,
                    self.cfg,
                    routes,
                    out,
                    progress=round_progress(name),
                    labels=labels,
                    stack_watch=watch,
                    before_round=restart,
                )
                timings["rounds_s"] = round(time.perf_counter() - t, 3)
            entry.set(**judge(table, cold, self.cfg.max_failed_percent, detail))
            if entry.status != "failed" and (why := degraded(table)):
                entry.set(status="degraded", reason=why)
            print_rounds(table)
            for why in cell_shortfalls(table):
                say(f"  [yellow]{why}[/yellow]")
            return wl.sessions[0].build(0, []) if wl.sessions else None
        finally:
            for p in probes:
                p.close()

    @staticmethod
    def _restart_engines(stack: Stack, probe: Probe, entry: CellEntry, rnd: int) -> None:
        """topology engine-restart: the engine starts again before round `rnd`, the master keeps
        running. Recorded: what the store held before and after, and that the new engine is cold
        (its own counters start at 0: no local hit, no external hit yet)."""
        before = probe.snapshot().counters()
        with step(f"engine restart before round {rnd} (the master keeps running)"):
            seconds = stack.restart_engines()
        c = probe.snapshot().counters()
        hits = {k: c[k] for k in ("local_hits", "external_hits")}  # a new process: its counters start at 0
        entry.engine_restarts = [
            *entry.engine_restarts,
            {
                "round": rnd,
                "seconds": seconds,
                "master_keys_before": before["master_key_count"],
                "master_keys_after": c["master_key_count"],
                "master_bytes_after": c["master_allocated_bytes"],
                "engine_cold": all(v == 0 for v in hits.values()),
                **{f"engine_{k}": v for k, v in hits.items()},
            },
        ]
        r = entry.engine_restarts[-1]
        say(f"  engine restarted in {seconds:.1f} s; the store holds {r['master_keys_after']} keys "
            f"(before: {r['master_keys_before']})")  # fmt: skip

    @staticmethod
    def _cold_gate(snapshots: list[Snapshot], since: list[Snapshot] | None = None) -> tuple[bool, str]:
        results = [cold_state(s, since[i] if since else None) for i, s in enumerate(snapshots)]
        if len(results) == 1:
            return results[0]
        return all(ok for ok, _ in results), "; ".join(f"engine {i + 1}: {d}" for i, (_, d) in enumerate(results))
