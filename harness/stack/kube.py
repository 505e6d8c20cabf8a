"""Kubernetes manifests for a stack, translated from its compose model: one source of truth.

`prepare()` renders a scenario's compose files as for a compose run; `manifests()` reads the
merged compose model (`docker compose config`) and translates every service, so the model, the
vLLM command, the connector and Mooncake configs, ports, healthchecks and labels are the same
on both backends. Per stack:

- a Namespace named like the compose project, labelled like the compose resources;
- ConfigMaps for the files compose bind-mounts from the scenario directory (mooncake.json,
  lmcache.yaml);
- per service a Deployment (readiness from the compose healthcheck; engines wait for the
  master's readiness in an init container, as compose's depends_on does) and a ClusterIP
  Service with the same name, so `mooncake-master:50051` resolves as in compose;
- the store node (`stack.store: store-node`) as a workload of its own: a Deployment that waits for
  the master, engines that wait for it as well, and a headless Service (its transfer engine
  listens on ports it picks at start, which a ClusterIP Service could not forward);
- GPUs as `nvidia.com/gpu` limits, `ipc: host` as hostIPC, shm as a memory emptyDir, RDMA
  devices as hostPath devices with IPC_LOCK; engines of a cross-instance topology on different
  nodes (required pod anti-affinity);
- the model cache: an absolute path stays a hostPath, a volume name becomes a PVC of that name
  (created once by the operator; never deleted by kvbench); the per-stack data volume is an
  emptyDir (gone with the pod);
- HF_TOKEN only by reference: the compose secret becomes a Secret volume (`secretName`), never
  a value.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from python_on_whales import DockerClient

from harness.stack.spec import MASTER, STORE, StackSpec

HF_SECRET = "hf-token"  # the Secret (key hf_token) the GPU engines read HF_TOKEN from
ENGINE_ROLE = {"io.kvbench.role": "engine"}
MANAGED_BY = {"app.kubernetes.io/managed-by": "kvbench"}
STACK_LABEL = "io.kvbench.stack"  # = the namespace: every object of a stack, found by label after teardown
OWNER_LABEL = "io.kvbench.owner"  # host_pid of the harness process (compose's host:pid as a label value)
PUBLISHED_PORT = "io.kvbench/published-port"  # annotation: the port compose publishes (API, master metrics)


def compose_model(spec: StackSpec, workdir: Path) -> dict:
    """The merged compose model of a prepared stack, as `docker compose config` resolves it."""
    client = DockerClient(
        compose_files=list[str | Path](spec.files),
        compose_env_files=[workdir / "stack.env"],
        compose_project_name=spec.project,
        compose_project_directory=spec.files[0].parent,
    )
    return client.compose.config(return_json=True)


def namespace_name(project: str) -> str:
    """A DNS-1123 label from the compose project name (which may hold '_')."""
    return re.sub(r"[^a-z0-9-]", "-", project.lower())[:63].strip("-")


def manifests(spec: StackSpec, workdir: Path, model: dict | None = None, host_network: bool = False) -> list[dict]:
    """Every object of the stack, Namespace first. `host_network`: every pod on the node's network,
    service names resolving to 127.0.0.1 (hostAliases), for a one-node player without cluster DNS
    such as `podman kube play`; single-engine stacks only (two engines would share port 8000)."""
    if host_network and len(spec.engines) > 1:
        raise ValueError("host_network: a cross-instance stack needs a cluster (two engines on one port)")
    model = model or compose_model(spec, workdir)
    services: dict[str, dict] = model["services"]
    ns = namespace_name(spec.project)
    labels = {
        k: label_value(v) for k, v in (services[MASTER].get("labels") or {}).items() if k.startswith("io.kvbench.")
    }
    labels |= MANAGED_BY | {STACK_LABEL: ns}
    external = {k for k, v in (model.get("volumes") or {}).items() if v.get("external")}
    out: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}]
    for name, svc in services.items():
        files = _mounted_files(name, svc)
        out += [_config_map(ns, labels, cm, content) for cm, (_, content) in files.items()]
        out += [
            _deployment(ns, labels, name, svc, files, external, engines=len(spec.engines)),
            _service(ns, labels, name, svc),
        ]
    return _on_host_network(out, sorted(services)) if host_network else out


def _on_host_network(objs: list[dict], names: list[str]) -> list[dict]:
    """Every pod on the node's network: service names become 127.0.0.1 where the stack's own
    configs address them (a player without cluster DNS may also ignore hostAliases, as podman 4.3
    does), and ports are where processes listen, not mappings."""
    local = re.compile(rf"\b({'|'.join(map(re.escape, names))})(?=[:/])")
    for o in objs:
        if o["kind"] == "ConfigMap":
            o["data"] = {k: local.sub("127.0.0.1", v) for k, v in o["data"].items()}
        if o["kind"] == "Deployment":
            pod = o["spec"]["template"]["spec"]
            pod |= {"hostNetwork": True, "hostAliases": [{"ip": "127.0.0.1", "hostnames": names}]}
            # podman 4.3 removes an init container it has just started ("cannot remove container ... as it
            # is running"): without one, the engine connects to the master while loading its weights (~20 s),
            # and the pod restarts should the master not be ready yet.
            pod.pop("initContainers", None)
            for c in pod["containers"]:
                c.pop("ports", None)
    return objs


def label_value(v: object) -> str:
    """A Kubernetes label value ([A-Za-z0-9._-], at most 63, alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(v))[:63].strip("._-")


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:  # a manifest reads top to bottom: no &id/*id
        return True


def dump(objs: list[dict]) -> str:
    return yaml.dump_all(objs, Dumper=_NoAliases, sort_keys=False)


# ------------------------------------------------------------------ translation


Files = dict[str, tuple[str, dict[str, str]]]  # ConfigMap name -> (mount directory, file name -> content)


def _mounted_files(service: str, svc: dict) -> Files:
    """The files compose bind-mounts read-only into a service (mooncake.json, lmcache.yaml), one
    ConfigMap per target directory, mounted as that directory: no subPath, which not every player
    supports (podman 4.3 mounts a directory there)."""
    files: Files = {}
    for v in svc.get("volumes") or []:
        if v.get("type") == "bind" and v.get("read_only") and Path(v["source"]).is_file():
            target = Path(v["target"])
            name = re.sub(r"[^a-z0-9]+", "-", f"{service}-{target.parent}".lower()).strip("-")
            files.setdefault(name, (str(target.parent), {}))[1][target.name] = Path(v["source"]).read_text()
    return files


def _config_map(ns: str, labels: dict, name: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "data": data}  # fmt: skip


def _probe(svc: dict) -> dict | None:
    hc = svc.get("healthcheck") or {}
    test = hc.get("test") or []
    if not test or test[0] not in ("CMD", "CMD-SHELL"):
        return None
    cmd = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
    return {"exec": {"command": cmd}, "periodSeconds": 2, "timeoutSeconds": 5, "failureThreshold": 3}


def _ports(svc: dict) -> list[int]:
    """Published ports, and the ports a command listens on (`--rpc_port=50051`, `--port 8000`): on a
    compose network every port is reachable, a Service must name them."""
    ports = {int(p["target"]) for p in svc.get("ports") or []} | {int(x) for x in svc.get("expose") or []}
    args = [str(a) for a in svc.get("command") or []]
    for i, a in enumerate(args):
        if m := re.fullmatch(r"--(?:[a-z_]+_)?port=(\d+)", a):
            ports.add(int(m.group(1)))
        elif a == "--port" and i + 1 < len(args) and args[i + 1].isdigit():
            ports.add(int(args[i + 1]))
    return sorted(ports)


def _container(name: str, svc: dict, files: Files, external: set[str]) -> tuple[dict, list[dict], dict]:
    """The container, its pod volumes, and pod-level settings (hostIPC, ...)."""
    # Images are pinned or content-tagged: pull once (a `:latest` would otherwise be pulled every start).
    c: dict[str, Any] = {"name": name, "image": svc["image"], "imagePullPolicy": "IfNotPresent"}
    if svc.get("entrypoint"):
        c["command"] = list(svc["entrypoint"])
    if svc.get("command"):
        c["args"] = [str(a) for a in svc["command"]]
    env = svc.get("environment") or {}
    if env:
        c["env"] = [{"name": k, "value": "" if v is None else str(v)} for k, v in env.items()]
    if ports := _ports(svc):
        c["ports"] = [{"containerPort": p} for p in ports]
    if probe := _probe(svc):
        c["readinessProbe"] = probe
        start = _seconds((svc.get("healthcheck") or {}).get("start_period"))
        if start:  # vLLM loads weights for minutes: readiness may take that long, liveness is not judged
            c["startupProbe"] = {**probe, "failureThreshold": max(1, int(start // 2))}
    volumes = [{"name": cm, "configMap": {"name": cm}} for cm in files]
    mounts = [{"name": cm, "mountPath": directory, "readOnly": True} for cm, (directory, _) in files.items()]
    in_config_maps = {f"{directory}/{f}" for directory, data in files.values() for f in data}
    pod: dict[str, Any] = {}
    for i, v in enumerate(svc.get("volumes") or []):
        vol_name = f"v{i}"
        if v["target"] in in_config_maps:
            continue
        if v.get("type") == "bind":
            volumes.append({"name": vol_name, "hostPath": {"path": v["source"], "type": "DirectoryOrCreate"}})
            mounts.append({"name": vol_name, "mountPath": v["target"]})
        elif v.get("type") == "volume" and v.get("source") in external:
            volumes.append({"name": vol_name, "persistentVolumeClaim": {"claimName": v["source"]}})
            mounts.append({"name": vol_name, "mountPath": v["target"]})
        else:  # the stack's own data: gone with the pod, as `down -v` removes the volume
            volumes.append({"name": vol_name, "emptyDir": {}})
            mounts.append({"name": vol_name, "mountPath": v["target"]})
    if svc.get("shm_size"):
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(svc["shm_size"])}})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    if svc.get("ipc") == "host":
        pod["hostIPC"] = True
    for s in svc.get("secrets") or []:  # HF_TOKEN: a reference to a Secret, never a value
        volumes.append({"name": "hf-token", "secret": {"secretName": HF_SECRET}})
        mounts.append({"name": "hf-token", "mountPath": s.get("target", f"/run/secrets/{s['source']}"),
                       "subPath": "hf_token", "readOnly": True})  # fmt: skip
    for i, d in enumerate(svc.get("devices") or []):  # RDMA
        path = d["source"] if isinstance(d, dict) else str(d).split(":")[0]
        volumes.append({"name": f"dev{i}", "hostPath": {"path": path}})
        mounts.append({"name": f"dev{i}", "mountPath": path})
    if svc.get("cap_add") or svc.get("devices"):
        c["securityContext"] = {"capabilities": {"add": sorted(set(svc.get("cap_add") or []) | {"IPC_LOCK"})}}
    if gpus := _gpus(svc):
        c["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}  # a quantity: the API client takes strings
    if mounts:
        c["volumeMounts"] = mounts
    return c, volumes, pod


def _gpus(svc: dict) -> int | None:
    for d in (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []:
        if "gpu" in (d.get("capabilities") or []) or d.get("driver") == "nvidia":
            # Kubernetes schedules a count; specific device ids are the node's business.
            return len(d["device_ids"]) if d.get("device_ids") else int(d.get("count") or 1)
    return None


def _seconds(text: str | None) -> float:
    if not text:
        return 0.0
    total = 0.0
    for n, unit in re.findall(r"([\d.]+)(ms|s|m|h)", str(text)):
        total += float(n) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    return total


# What each dependency's readiness looks like: its /health URL and the JSON field and value that say so.
_READY = {
    MASTER: (f"http://{MASTER}:9003/health", "service_ready", True),
    STORE: (f"http://{STORE}:9300/health", "status", "healthy"),
}


def _wait_for(service: str, image: str) -> dict:
    """compose's depends_on, as an init container polling the dependency's readiness (on a cluster a
    dependency's pod may wait for a node or an image pull far longer than compose's ~1 s)."""
    url, key, want = _READY[service]
    check = (
        "import json, time, urllib.request\n"
        "while True:\n"
        "    try:\n"
        f"        r = urllib.request.urlopen('{url}', timeout=2)\n"
        f"        if json.load(r).get({key!r}) == {want!r}:\n"
        "            break\n"
        "    except Exception:\n"
        "        pass\n"
        "    time.sleep(1)\n"
    )
    return {
        "name": f"wait-for-{service.removeprefix('mooncake-')}",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-c", check],
    }


def _deployment(ns: str, labels: dict, name: str, svc: dict, files: Files, external: set[str], engines: int) -> dict:
    container, volumes, pod = _container(name, svc, files, external)
    engine = name not in (MASTER, STORE)
    pod_labels = {**labels, "io.kvbench.service": name, **(ENGINE_ROLE if engine else {})}
    spec: dict[str, Any] = {"containers": [container], **pod}
    if volumes:
        spec["volumes"] = volumes
    if waits := [_wait_for(d, svc["image"]) for d in (MASTER, STORE) if d in (svc.get("depends_on") or {})]:
        spec["initContainers"] = waits
    if engine and engines > 1:  # cross-instance: A and B on different nodes, or the test means little
        spec["affinity"] = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": ENGINE_ROLE}, "topologyKey": "kubernetes.io/hostname"}
                ]
            }
        }
    published = [int(p["target"]) for p in svc.get("ports") or []]
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": pod_labels}
    if published:
        meta["annotations"] = {PUBLISHED_PORT: str(published[0])}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"io.kvbench.service": name}},
            "template": {"metadata": {"labels": pod_labels}, "spec": spec},
        },
    }


def _service(ns: str, labels: dict, name: str, svc: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {**labels, "io.kvbench.service": name}},
        "spec": {
            **({"clusterIP": "None"} if name == STORE else {}),  # the name resolves to the pod: every port
            "selector": {"io.kvbench.service": name},
            "ports": [{"name": f"p{p}", "port": p, "targetPort": p} for p in _ports(svc)],
        },
    }


def secret_names(objs: list[dict]) -> set[str]:
    """Secrets the manifests refer to (by name only: no Secret object is ever rendered)."""
    text = json.dumps(objs)
    return set(re.findall(r'"secretName": "([^"]+)"', text))
