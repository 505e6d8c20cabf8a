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

from .config import Config, Scenario
from .probes import Probe, cold_state
from .progress import console, round_progress, say, step
from .report import write_report
from .results import RunDir, base_manifest, utc_now
from .runner import Endpoint, run_rounds
from .stack import COMPOSE_DIR, Stack, StackError, prepare
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
    def __init__(self, cfg: Config, images: ImageProvider, opts: SuiteOptions, command: list[str]) -> None:
        self.cfg = cfg
        self.images = images
        self.opts = opts
        self.run = RunDir.create(opts.results_root, cfg.run_name)
        self.manifest = base_manifest(self.run.run_id, cfg.model_dump(mode="json"), command)
        self.manifest.update(mode="fresh-stack-per-scenario", isolation="fresh")
        self.run.write_manifest(self.manifest)

    def run_all(self, names: list[str]) -> bool:
        """True when every scenario succeeded."""
        say(f"run [bold]{self.run.run_id}[/bold] -> {self.run.root}")
        image_tags = self.images(self.cfg.stack.overlay)
        self.manifest["images"] = image_tags
        ok = True
        try:
            for name in names:
                ok &= self._scenario(name, self.cfg.scenarios[name], image_tags)
        except KeyboardInterrupt as e:
            self.manifest["interrupted"] = type(e).__name__ if not str(e) else str(e)
            raise
        finally:
            self.manifest["finished_at"] = utc_now()
            self.run.write_manifest(self.manifest)
            path, text = write_report(self.run.root)
            print(text)
            say(f"report: {path}")
        return ok

    def _scenario(self, name: str, scen: Scenario, images: dict[str, str]) -> bool:
        out = self.run.scenario_dir(name)
        entry: dict = {"status": "running", "timings": {}}
        self.manifest["scenarios"][name] = entry
        timings = entry["timings"]
        t_all = time.perf_counter()
        spec = prepare(self.cfg.stack, self.run.run_id, name, out, images, self.opts.compose_dir,
                       list(self.opts.extra_compose_files))
        entry.update(project=spec.project, ports={"vllm": spec.ports.vllm, "master_metrics": spec.ports.master_metrics})
        self.run.write_manifest(self.manifest)
        console.rule(f"{name}  (stack {spec.project})")
        stack = Stack(spec, out, self.cfg.stack.ready_timeout, self.cfg.stack.teardown_timeout)
        try:
            with step("bring-up (compose up --wait)", timings, "up_s"):
                stack.up()
            timings["service_start_s"] = service_start_seconds(stack)
            entry["engine_container_ids"] = stack.engine_container_ids()
            self._measure(name, scen, spec, out, entry)
        except StackError as e:
            entry.update(status="failed", reason=str(e), logs=str(out / "logs"))
            console.print(f"[red]{name}: {e}[/red]")
        except (KeyboardInterrupt, SystemExit):
            entry.update(status="interrupted", reason="interrupted during the scenario")
            stack.save_logs()
            raise
        except Exception as e:  # any fault: keep the rows, save logs, tear down, go on
            entry.update(status="failed", reason=f"{type(e).__name__}: {e}"[:500], logs=str(stack.save_logs()))
            console.print(f"[red]{name} failed: {entry['reason']}[/red]")
        finally:
            with step("teardown (down -v, verify)", timings, "teardown_s"):
                td = stack.down()
            entry.update(teardown_verified=td.verified, teardown_leftovers=td.leftovers)
            timings["total_s"] = round(time.perf_counter() - t_all, 3)
            if timings.get("service_start_s") is not None:
                timings["harness_overhead_s"] = round(
                    timings["up_s"] + timings["teardown_s"] - timings["service_start_s"], 3)
            if not td.verified:
                entry.update(status="failed", reason=(entry.get("reason") or "") + f"; teardown left {td.leftovers}")
            self.run.write_manifest(self.manifest)
            say(f"  teardown verified: {td.verified} ({td.seconds:.1f} s)")
        return entry["status"] == "ok"

    def _measure(self, name: str, scen: Scenario, spec, out: Path, entry: dict) -> None:
        timings = entry["timings"]
        probe = Probe(spec.vllm_url, spec.master_metrics_url)
        try:
            cold, detail = cold_state(probe.snapshot())
            entry.update(cold_verified=cold, cold_detail=detail, block_size=probe.block_size())
            say(f"  cold state: {'verified' if cold else 'NOT verified'} ({detail})")
            if not cold and self.cfg.on_contamination == "fail":
                raise RuntimeError(f"cold-state gate failed: {detail}")
            endpoint = Endpoint(spec.vllm_url, self.cfg.stack.served_model_name)
            with ServerTokenizer(endpoint.base_url, endpoint.model) as tok:
                with step("workload (exact token lengths via /tokenize)", timings, "workload_s"):
                    wl = build_workload(name, scen, tok, api=self.cfg.api, seed=self.cfg.seed)
                t = time.perf_counter()
                table = run_rounds(wl, self.cfg, endpoint, out, progress=round_progress(name), probe=probe)
                timings["rounds_s"] = round(time.perf_counter() - t, 3)
            entry["status"] = "ok" if cold else "contaminated"
            for _, r in table.iterrows():
                say(f"  round {int(r['round'])}: TTFT p50 {r['ttft_p50_ms']:.1f} ms, "
                    f"cached ratio {r['cached_token_ratio']:.2f}, ok {int(r['successes'])}/{int(r['requests'])}")
        finally:
            probe.close()
