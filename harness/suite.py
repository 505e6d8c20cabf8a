"""Run scenarios, each on its own fresh stack, and record the evidence.

For every scenario: prepare a compose project -> up and wait for health ->
prove the cache is cold -> rounds -> teardown with volumes -> verify nothing is
left. A failed scenario is recorded with its reason and logs and the next one
runs. Ctrl-C / SIGTERM tear the current stack down before the process exits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from python_on_whales import docker

from .config import Config
from .probes import Probe, Snapshot, cold_state
from .progress import console, round_progress, say, step, warn_saturation
from .report import console_summary, write_report
from .results import RunDir, base_manifest, utc_now
from .runner import Endpoint, run_rounds
from .stack import Stack, StackError
from .stackspec import COMPOSE_DIR, StackSpec, prepare
from .tokenizer import ServerTokenizer
from .workload import build_workload

ImageProvider = Callable[[str], dict[str, str]]


@dataclass
class SuiteOptions:
    results_root: Path = Path("results")
    compose_dir: Path = COMPOSE_DIR
    extra_compose_files: tuple[Path, ...] = ()


def _parse_ts(ts: str) -> datetime:
    # Docker prints RFC 3339 with nanoseconds; Python takes microseconds.
    head, _, frac = ts.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def service_start_seconds(stack: Stack) -> float | None:
    """The services' own start: master container start -> vLLM's "Application startup complete".

    Harness overhead is bring-up + teardown minus this; healthcheck polling and
    compose's own work are the harness's share."""
    try:
        by_service = {c.config.labels.get("com.docker.compose.service"): c for c in stack.client.compose.ps(all=True)}
        master, engine = by_service.get("mooncake-master"), by_service.get("vllm")
        if not master or not engine:
            return None
        for line in docker.container.logs(engine, timestamps=True).splitlines():
            if "Application startup complete" in line:
                ready = _parse_ts(line.split(" ", 1)[0])
                return round((ready - master.state.started_at).total_seconds(), 3)
    except Exception:  # evidence only: never a reason to fail a scenario
        return None
    return None


class Suite:
    """One run: scenarios x repeats in `fresh` isolation and/or all scenarios on one `shared` stack."""

    def __init__(self, cfg: Config, images: ImageProvider, opts: SuiteOptions, command: list[str]) -> None:
        self.cfg = cfg
        self.images = images
        self.opts = opts
        self.run = RunDir.create(opts.results_root, cfg.run_name)
        self.manifest = base_manifest(self.run.run_id, cfg.model_dump(mode="json"), command)
        self.run.write_manifest(self.manifest)
        self.image_tags: dict[str, str] = {}

    def run_all(self, names: list[str], isolation: tuple[str, ...] = ("fresh",), repeats: int = 1,
                modes: tuple[str, ...] | None = None) -> bool:
        """True when every scenario succeeded (in shared mode contamination is expected, not a failure)."""
        say(f"run [bold]{self.run.run_id}[/bold] -> {self.run.root}")
        modes = modes or (self.cfg.mode,)
        self.manifest.update(isolation=list(isolation), repeats=repeats, modes=list(modes),
                             topology=self.cfg.stack.topology)
        self.image_tags = self.images(self.cfg.stack.overlays[0])
        self.manifest["images"] = self.image_tags
        ok = True
        try:
            for mode in modes:
                for iso in isolation:
                    if iso == "shared":
                        ok &= self._shared(names, mode)
                        continue
                    for name in names:
                        for rep in range(1, repeats + 1):
                            ok &= self._fresh(name, rep, mode)
        except KeyboardInterrupt as e:
            self.manifest["interrupted"] = str(e) or type(e).__name__
            raise
        finally:
            self.manifest["finished_at"] = utc_now()
            self.run.write_manifest(self.manifest)
            write_report(self.run.root)
            print(console_summary(self.run.root))
        return ok

    def _entry(self, name: str, mode: str, iso: str, rep: int) -> tuple[str, dict]:
        """Result key (= directory under the run): [baseline/][shared/]<scenario>[/repeat-N]."""
        parts = ([mode] if mode != "with-cache" else []) + (["shared"] if iso == "shared" else []) + [name]
        key = "/".join(parts + ([f"repeat-{rep}"] if rep > 1 else []))
        entry = {"scenario": name, "mode": mode, "isolation": iso, "repeat": rep, "status": "pending", "timings": {}}
        self.manifest["scenarios"][key] = entry
        return key, entry

    def _fresh(self, name: str, rep: int, mode: str) -> bool:
        key, entry = self._entry(name, mode, "fresh", rep)
        self._with_stack(key.replace("/", "-"), self.run.root / key, [entry], mode,
                         lambda spec, stack: self._measure(name, spec, self.run.root / key, entry))
        return entry["status"] == "ok"

    def _shared(self, names: list[str], mode: str) -> bool:
        """All scenarios back to back on one stack, as the users' old script did: pollution on purpose."""
        keyed = [self._entry(n, mode, "shared", 1) for n in names]
        entries = {e["scenario"]: (k, e) for k, e in keyed}
        shared_dir = self.run.root / Path(keyed[0][0]).parent

        def body(spec: StackSpec, stack: Stack) -> None:
            for n in names:
                key, entry = entries[n]
                try:
                    self._measure(n, spec, self.run.root / key, entry)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # the shared stack goes on with the next scenario
                    entry.update(status="failed", reason=f"{type(e).__name__}: {e}"[:500])
                    console.print(f"[red]{key} failed: {entry['reason']}[/red]")

        label = str(shared_dir.relative_to(self.run.root)).replace("/", "-")
        stack_info = self._with_stack(label, shared_dir, [e for _, e in keyed], mode, body)
        self.manifest.setdefault("shared_stacks", {})[mode] = stack_info
        return all(e["status"] in ("ok", "contaminated") for _, e in keyed)

    def _with_stack(self, label: str, workdir: Path, entries: list[dict], mode: str,
                    body: Callable[[StackSpec, Stack], None]) -> dict:
        """Fresh stack -> body -> teardown with volumes -> verify; faults land in `entries`."""
        t_all = time.perf_counter()
        timings: dict = {}
        spec = prepare(self.cfg.stack, self.run.run_id, label, workdir, self.image_tags, self.opts.compose_dir,
                       list(self.opts.extra_compose_files), with_connector=mode != "baseline")
        info = {"project": spec.project, "ports": {**spec.engine_ports, "master_metrics": spec.master_metrics_port},
                "timings": timings}
        for e in entries:
            e.update(project=spec.project, ports=info["ports"], status="running")
        self.run.write_manifest(self.manifest)
        console.rule(f"{label}  (stack {spec.project})")
        stack = Stack(spec, workdir, self.cfg.stack.ready_timeout, self.cfg.stack.teardown_timeout)
        try:
            with step("bring-up (compose up --wait)", timings, "up_s"):
                stack.up()
            timings["service_start_s"] = service_start_seconds(stack)
            info["engine_container_ids"] = stack.engine_container_ids()
            for e in entries:
                e["engine_container_ids"] = info["engine_container_ids"]
            body(spec, stack)
        except StackError as e:
            self._fail(entries, str(e), logs=str(workdir / "logs"))
        except (KeyboardInterrupt, SystemExit):
            stack.save_logs()
            for e in entries:
                if e["status"] == "running":
                    e.update(status="interrupted", reason="interrupted during the scenario")
            raise
        except Exception as e:  # any fault: keep the rows, save logs, tear down, go on
            self._fail(entries, f"{type(e).__name__}: {e}"[:500], logs=str(stack.save_logs()))
        finally:
            with step("teardown (down -v, verify)", timings, "teardown_s"):
                td = stack.down()
            timings["total_s"] = round(time.perf_counter() - t_all, 3)
            if timings.get("service_start_s") is not None:
                timings["harness_overhead_s"] = round(
                    timings["up_s"] + timings["teardown_s"] - timings["service_start_s"], 3)
            info.update(teardown_verified=td.verified, teardown_leftovers=td.leftovers)
            for e in entries:
                e.update(teardown_verified=td.verified, teardown_leftovers=td.leftovers)
                e["timings"].update({k: v for k, v in timings.items() if k not in e["timings"]})
                if not td.verified:
                    e.update(status="failed", reason=(e.get("reason") or "") + f"; teardown left {td.leftovers}")
            self.run.write_manifest(self.manifest)
            say(f"  teardown verified: {td.verified} ({td.seconds:.1f} s)")
        return info

    @staticmethod
    def _fail(entries: list[dict], reason: str, logs: str) -> None:
        for e in entries:
            if e["status"] in ("running", "pending"):
                e.update(status="failed", reason=reason, logs=logs)
        console.print(f"[red]{reason}[/red]")

    def _measure(self, name: str, spec: StackSpec, out: Path, entry: dict) -> None:
        """Cold-state gate, workload, rounds. Round 1 goes to the first engine, rounds 2+ to the last
        (cross-instance: engine B must get its warm hits from Mooncake)."""
        timings = entry["timings"]
        out.mkdir(parents=True, exist_ok=True)
        probes = [Probe(spec.engine_url(e), spec.master_metrics_url) for e in spec.engines]
        try:
            snapshots = [p.snapshot() for p in probes]
            cold, detail = self._cold_gate(snapshots)
            entry.update(cold_verified=cold, cold_detail=detail, block_size=snapshots[0].block_size)
            say(f"  {name}: cold state {'verified' if cold else '[yellow]NOT verified[/yellow]'} ({detail})")
            if not cold and self.cfg.on_contamination == "fail":
                raise RuntimeError(f"cold-state gate failed: {detail}")
            model = self.cfg.stack.served_model_name
            routes = [(Endpoint(spec.engine_url(e), model), p) for e, p in zip(spec.engines, probes)]
            with ServerTokenizer(routes[0][0].base_url, model) as tok:
                with step("workload (exact token lengths via /tokenize)", timings, "workload_s"):
                    wl = build_workload(name, self.cfg.scenarios[name], tok, api=self.cfg.api, seed=self.cfg.seed)
                t = time.perf_counter()
                labels = {k: entry[k] for k in ("scenario", "mode", "isolation", "repeat")}
                table = run_rounds(wl, self.cfg, routes, out, progress=round_progress(name), labels=labels)
                timings["rounds_s"] = round(time.perf_counter() - t, 3)
            foreign = table.loc[table["round"] == 1, "foreign_hit_tokens"] if "foreign_hit_tokens" in table else None
            entry["foreign_hit_tokens_round1"] = int(foreign.iloc[0]) if foreign is not None and len(foreign) else None
            entry["status"] = "ok" if cold and not entry["foreign_hit_tokens_round1"] else "contaminated"
            for _, r in table.iterrows():
                say(f"  round {int(r['round'])}: TTFT p50 {r['ttft_p50_ms']:.1f} ms, "
                    f"cached ratio {r['cached_token_ratio']:.2f}, ok {int(r['successes'])}/{int(r['requests'])}")
                if r.get("misses", 0) > 0 and r["misses"] < r["successes"]:  # both kinds (NaN: no usage)
                    say(f"    TTFT mean {r['ttft_miss_mean_ms']:.0f} ms for {int(r['misses'])} full prefill(s), "
                        f"{r['ttft_hit_mean_ms']:.0f} ms for the {int(r['successes'] - r['misses'])} hits")
            warn_saturation(table)
        finally:
            for p in probes:
                p.close()

    @staticmethod
    def _cold_gate(snapshots: list[Snapshot]) -> tuple[bool, str]:
        results = [cold_state(s) for s in snapshots]
        if len(results) == 1:
            return results[0]
        return all(ok for ok, _ in results), "; ".join(f"engine {i + 1}: {d}" for i, (_, d) in enumerate(results))
