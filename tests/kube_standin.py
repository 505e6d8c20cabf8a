"""STAND-IN Kubernetes API server - a test double, not Kubernetes.

No Kubernetes control plane can run on these machines (no registry ships kube-apiserver, kubelet,
k3s, kind or envtest), so the lifecycle code of `harness/stack/kubestack.py` is tested against this: an
in-memory API server speaking the REST subset the official `kubernetes` client uses for it, plus
the port-forward websocket (v4.channel.k8s.io), served by aiohttp in a thread.

What it imitates, and how far:
- objects: Namespaces, and in them ConfigMaps, Secrets, Services, Deployments, Pods, Events;
  create (409 when the name exists, 404 when the namespace does not), get, list with equality
  label selectors, cluster-wide lists, delete of a namespace;
- a "kubelet": each Deployment gets one Pod, Ready after `ready_after` seconds, unless
  `waiting[image]` names a waiting reason (ImagePullBackOff, CrashLoopBackOff ...) for its image;
- namespace deletion: Terminating for `terminate_after` seconds, then the namespace and all its
  objects are gone (`stuck_namespaces` never finish: a stuck finalizer);
- port-forward: bytes of the pod's port are relayed to `backends[service]` = (host, port), a real
  TCP server the test runs (service = the pod's `io.kvbench.service` label).
Not imitated: authentication, RBAC, watches, resource versions, scheduling, field validation.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
import uuid
from datetime import UTC, datetime

from aiohttp import WSMsgType, web

CORE = {"namespaces", "configmaps", "secrets", "services", "pods", "events"}
APPS = {"deployments"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}  # fmt: skip
    return web.json_response(body, status=code)


def _matches(obj: dict, selector: str | None) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        k, _, v = term.partition("=")
        if labels.get(k) != v:
            return False
    return True


class StandInApiServer:
    def __init__(self, ready_after: float = 0.5, terminate_after: float = 0.5) -> None:
        self.ready_after = ready_after
        self.terminate_after = terminate_after
        self.waiting: dict[str, tuple[str, str]] = {}  # image -> (reason, message)
        self.backends: dict[str, tuple[str, int]] = {}  # service -> where its port-forwards go
        self.stuck_namespaces: set[str] = set()
        self.objects: dict[tuple[str, str, str], dict] = {}  # (plural, namespace or "", name) -> object
        self.log: list[tuple[str, str]] = []  # (method, path) of every request
        self.deletes: list[dict] = []  # bodies of namespace deletions
        self.forwards = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> StandInApiServer:
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True).start()
        if not started.wait(10):
            raise RuntimeError("stand-in API server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path, context: str = "standin") -> str:
        """A kubeconfig naming this server as the cluster of `context`; returns the path."""
        import yaml

        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": "stand-in-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "standin", "user": "standin"}}],
        }))  # fmt: skip
        return str(path)

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        started.set()
        self._loop.run_forever()

    # ------------------------------------------------------------------ what tests read

    def names(self, plural: str, namespace: str = "") -> list[str]:
        return sorted(n for (p, ns, n) in list(self.objects) if p == plural and ns == namespace)

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        return self.objects.get((plural, namespace, name))

    def put(self, obj: dict, plural: str) -> None:
        """Create an object directly (a Secret an operator made, a namespace left by a crashed run)."""
        self._store(plural, obj["metadata"].get("namespace", ""), copy.deepcopy(obj))

    # ------------------------------------------------------------------ REST

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.log.append((request.method, request.path))
        parts = request.path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            rest = parts[2:]
        elif parts[:3] == ["apis", "apps", "v1"]:
            rest = parts[3:]
        else:
            return _status(404, "NotFound", f"no API at {request.path}")
        ns, name, sub = "", None, None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        elif rest[:1] == ["namespaces"] and len(rest) == 2:
            rest = ["namespaces", rest[1]]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if plural not in CORE | APPS:
            return _status(404, "NotFound", f"resource {plural} not served by the stand-in")
        if sub == "portforward":
            return await self._portforward(request, ns, name or "")
        if sub == "log":
            return web.Response(text=f"stand-in log of {name} ({request.query.get('container')})\n")
        if request.method == "POST" and name is None:
            return await self._create(request, plural, ns)
        if request.method == "GET" and name is None:
            return self._list(plural, ns, request.query.get("labelSelector"), all_namespaces=not ns)
        if request.method == "GET":
            obj = self.objects.get((plural, ns, name or ""))
            return web.json_response(obj) if obj else _status(404, "NotFound", f'{plural} "{name}" not found')
        if request.method == "DELETE" and plural == "namespaces":
            return await self._delete_namespace(request, name or "")
        return _status(405, "MethodNotAllowed", f"{request.method} {request.path} not served by the stand-in")

    async def _create(self, request: web.Request, plural: str, ns: str) -> web.Response:
        obj = await request.json()
        name = obj["metadata"]["name"]
        if ns and ("namespaces", "", ns) not in self.objects:
            return _status(404, "NotFound", f'namespaces "{ns}" not found')
        if ns and self.objects[("namespaces", "", ns)]["status"]["phase"] == "Terminating":
            return _status(403, "Forbidden", f"namespace {ns} is being terminated")
        if (plural, ns, name) in self.objects:
            return _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
        self._store(plural, ns, obj)
        if plural == "deployments":
            self._schedule(obj)
        return web.json_response(obj, status=201)

    def _store(self, plural: str, ns: str, obj: dict) -> None:
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion="1")
        if ns:
            meta["namespace"] = ns
        if plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        self.objects[(plural, ns, meta["name"])] = obj

    def _list(self, plural: str, ns: str, selector: str | None, all_namespaces: bool) -> web.Response:
        found = [
            o for (p, n, _), o in sorted(self.objects.items())
            if p == plural and (all_namespaces or n == ns) and _matches(o, selector)
        ]  # fmt: skip
        return web.json_response({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": found})

    async def _delete_namespace(self, request: web.Request, name: str) -> web.Response:
        ns = self.objects.get(("namespaces", "", name))
        if ns is None:
            return _status(404, "NotFound", f'namespaces "{name}" not found')
        self.deletes.append(await request.json() if request.can_read_body else {})
        if ns["status"]["phase"] != "Terminating":
            ns["status"]["phase"] = "Terminating"
            ns["metadata"]["deletionTimestamp"] = _now()
            for (_, n, _), o in self.objects.items():
                if n == name:
                    o["metadata"]["deletionTimestamp"] = _now()
            if name not in self.stuck_namespaces:
                self._loop.call_later(self.terminate_after, self._finalize, name)
        return web.json_response(ns)

    def _finalize(self, name: str) -> None:
        for key in [k for k in self.objects if k[1] == name or k == ("namespaces", "", name)]:
            del self.objects[key]

    # ------------------------------------------------------------------ "kubelet"

    def _schedule(self, deployment: dict) -> None:
        ns, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        pod_name = f"{name}-{uuid.uuid4().hex[:5]}"
        containers = template["spec"]["containers"]
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": dict(template["metadata"]["labels"])},
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending", "conditions": [], "containerStatuses": [
                {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}} for c in containers]},
        }  # fmt: skip
        self._store("pods", ns, pod)
        deployment["status"] = {"replicas": 1, "readyReplicas": 0}
        image = containers[0]["image"]
        if image in self.waiting:
            reason, message = self.waiting[image]
            self._loop.call_later(self.ready_after, self._set_waiting, pod, reason, message)
            self._event(ns, pod_name, "Failed", message)
        else:
            self._loop.call_later(self.ready_after, self._set_ready, deployment, pod)

    def _set_waiting(self, pod: dict, reason: str, message: str) -> None:
        for st in pod["status"]["containerStatuses"]:
            st["state"] = {"waiting": {"reason": reason, "message": message}}

    def _set_ready(self, deployment: dict, pod: dict) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            return
        now = _now()
        pod["status"].update(phase="Running", startTime=now, conditions=[
            {"type": "Ready", "status": "True", "lastTransitionTime": now}])  # fmt: skip
        for st in pod["status"]["containerStatuses"]:
            st.update(ready=True, state={"running": {"startedAt": now}})
        deployment["status"] = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}

    def _event(self, ns: str, pod: str, reason: str, message: str) -> None:
        name = f"{pod}.{uuid.uuid4().hex[:6]}"
        self._store("events", ns, {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": ns}, "reason": reason,
            "message": message, "type": "Warning", "lastTimestamp": _now(),
        })  # fmt: skip

    # ------------------------------------------------------------------ port-forward

    async def _portforward(self, request: web.Request, ns: str, pod_name: str) -> web.StreamResponse:
        pod = self.objects.get(("pods", ns, pod_name))
        if pod is None:
            return _status(404, "NotFound", f'pods "{pod_name}" not found')
        port = int(request.query["ports"])
        backend = self.backends.get(pod["metadata"]["labels"].get("io.kvbench.service", ""))
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(request)
        self.forwards += 1
        head = port.to_bytes(2, "little")
        await ws.send_bytes(b"\x00" + head)  # data channel, then error channel: each opens with the port
        await ws.send_bytes(b"\x01" + head)
        if backend is None:
            await ws.send_bytes(b"\x01" + f"no backend for {pod_name}:{port}".encode())
            await ws.close()
            return ws
        reader, writer = await asyncio.open_connection(*backend)

        async def upstream() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY and msg.data[:1] == b"\x00":
                    writer.write(msg.data[1:])
                    await writer.drain()
            writer.close()

        async def downstream() -> None:
            while data := await reader.read(1 << 16):
                await ws.send_bytes(b"\x00" + data)
            await ws.close()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        writer.close()
        await ws.close()
        return ws


def wait_until(predicate, timeout: float = 10.0) -> bool:
    """Poll a condition on the stand-in's state (set by its own timers) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
