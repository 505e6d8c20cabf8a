"""One fresh Kubernetes namespace per scenario run: the compose stack's promise on a cluster.

The manifests are `kube.manifests()` of the same prepared stack compose would start. Per stack:
create the namespace and its objects (copying the `hf-token` Secret in when the engines read
it) -> wait until every Deployment is ready, failing at once on a pull error or a crash loop ->
reach the engines and the master's metrics (a port-forward through the API server, or the
Services' cluster DNS names when kvbench runs inside the cluster) -> rounds -> delete the
namespace -> wait until it is gone -> check by label, cluster-wide, that nothing of it is left.

Everything goes through the official `kubernetes` client, against the current kube context,
a named one, or the pod's service account.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import utils as k8s_utils
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward

from harness.config import KubernetesConfig
from harness.stack import interrupts, kube
from harness.stack.base import REGISTRY, StackError, TeardownResult, owner_dead
from harness.stack.spec import MASTER, STORE, StackSpec

# Waiting reasons that will not resolve by waiting: fail the bring-up at once, with the reason.
FATAL_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}  # fmt: skip
POLL_S = 1.0  # readiness / deletion polling interval (the API server is asked, not waited on blindly)


def api_client(cfg: KubernetesConfig) -> k8s.ApiClient:
    """The cluster of the configured (or current) kube context; in a pod, its service account."""
    try:
        if cfg.in_cluster:
            k8s_config.load_incluster_config()
            return k8s.ApiClient()
        conf = k8s.Configuration()
        k8s_config.load_kube_config(
            config_file=str(cfg.kubeconfig) if cfg.kubeconfig else None,
            context=cfg.context,
            client_configuration=conf,
        )
        return k8s.ApiClient(conf)
    except (k8s_config.ConfigException, OSError) as e:
        where = f"context {cfg.context!r}" if cfg.context else "the current kube context"
        raise StackError(f"stack.kubernetes: cannot load {where}: {e}") from None


def items(listing: Any) -> list[Any]:
    """A list call's objects. The client types every field Optional; the API server fills the ones read
    here (metadata, status, spec) on objects it returns, so they are read without None checks."""
    return list(listing.items or [])


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class Forward:
    """127.0.0.1:<local> -> a pod's port, one port-forward stream per accepted connection (an HTTP
    client's keep-alive connections each get their own). Bytes are relayed, nothing is parsed.

    The client's `portforward()` swaps its ApiClient's `call_api` for a websocket call while it
    connects: on a shared client a concurrent API call (a teardown's delete, another connection's
    set-up) would go out as a websocket. So each Forward has its own ApiClient, and its set-ups
    take turns."""

    def __init__(self, configuration: k8s.Configuration, namespace: str, pod: str, port: int) -> None:
        self.api = k8s.ApiClient(configuration)
        self.core = k8s.CoreV1Api(self.api)
        self.namespace, self.pod, self.port = namespace, pod, port
        self._connecting = threading.Lock()
        self._closed = threading.Event()
        self.local = socket.socket()
        self.local.bind(("127.0.0.1", 0))
        self.local.listen(256)
        threading.Thread(target=self._accept, name=f"forward {pod}:{port}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.local.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            with self._connecting:
                pf = portforward(
                    self.core.connect_get_namespaced_pod_portforward, self.pod, self.namespace, ports=str(self.port)
                )
            remote = pf.socket(self.port)
        except Exception:  # the pod is gone or the API server refused: the client sees a closed connection
            conn.close()
            return
        with contextlib.closing(conn), contextlib.closing(remote):
            pair = {conn: remote, remote: conn}
            while not self._closed.is_set():
                readable, _, _ = select.select(list(pair), [], [], 1.0)
                for s in readable:
                    data = s.recv(1 << 16)
                    if not data:
                        return
                    pair[s].sendall(data)

    def close(self) -> None:
        self._closed.set()
        self.local.close()
        self.api.close()


class KubeStack:
    """A namespace for one scenario run: the `Stack` of backend kubernetes."""

    UP_STEP: ClassVar[str] = "namespace ready"
    DOWN_STEP: ClassVar[str] = "delete namespace, verify"

    def __init__(self, spec: StackSpec, workdir: Path, cfg: KubernetesConfig, ready_timeout: int,
                 objects: list[dict] | None = None, api: k8s.ApiClient | None = None) -> None:  # fmt: skip
        self.spec = spec
        self.workdir = workdir
        self.cfg = cfg
        self.ready_timeout = ready_timeout
        self.objects = objects if objects is not None else kube.manifests(spec, workdir)
        self.namespace = self.objects[0]["metadata"]["name"]
        self.labels: dict[str, str] = self.objects[0]["metadata"]["labels"]
        self.api = api or api_client(cfg)
        self.core = k8s.CoreV1Api(self.api)
        self.apps = k8s.AppsV1Api(self.api)
        self.forwards: list[Forward] = []
        self.urls: dict[str, str] = {}  # service -> base URL the harness reaches it at
        self.teardown: TeardownResult | None = None
        self._created = False
        self._fast = False

    # ------------------------------------------------------------------ the Stack protocol

    @property
    def label(self) -> str:
        return f"{kube.STACK_LABEL}={self.namespace}"

    @property
    def where(self) -> str:
        return f"{self.spec.project} (namespace {self.namespace})"

    @property
    def engine_urls(self) -> list[str]:
        return [self.urls[e] for e in self.spec.engines]

    @property
    def master_metrics_url(self) -> str:
        return self.urls[f"{MASTER}:metrics"]

    @property
    def store_url(self) -> str | None:
        return self.urls.get(f"{STORE}:http")

    def up(self) -> None:
        REGISTRY.add(self)
        try:
            secrets = self._secrets()  # before anything is created: a missing Secret is a config error
            self._created = True
            for obj in self.objects[:1] + secrets + self.objects[1:]:
                k8s_utils.create_from_dict(self.api, obj, namespace=self.namespace)
            self._wait_ready(time.monotonic() + self.ready_timeout)
            self._reach()
        except Exception as e:  # the API server refused, the client rejected a manifest, or not ready in time
            self.save_logs()
            raise StackError(
                f"namespace {self.namespace} did not become ready within {self.ready_timeout} s: {_reason(e)}"
            ) from None

    def health(self) -> dict[str, str]:
        """Deployment -> "ready" / "starting", and a pod's fatal waiting reason when it has one."""
        out: dict[str, str] = {}
        for d in items(self.apps.list_namespaced_deployment(self.namespace)):
            ready = (d.status.ready_replicas or 0) >= (d.spec.replicas or 1)
            out[d.metadata.name] = "ready" if ready else "starting"
        for pod in items(self.core.list_namespaced_pod(self.namespace)):
            service = (pod.metadata.labels or {}).get("io.kvbench.service", pod.metadata.name)
            for st in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]:
                waiting = st.state.waiting if st.state else None
                if waiting and waiting.reason in FATAL_WAITING:
                    out[service] = f"{waiting.reason}: {waiting.message or st.image}"[:300]
        return out

    def engine_container_ids(self) -> list[str]:
        """The engine pods' uids: a restarted or replaced engine pod shows as a new id."""
        return sorted(p.metadata.uid for p in self._pods({**kube.ENGINE_ROLE}))

    def service_start_seconds(self) -> float | None:
        """Master container start -> the last engine's Ready condition (the services' own start)."""
        try:
            master = self._pods({"io.kvbench.service": MASTER})[0]
            started = master.status.container_statuses[0].state.running.started_at
            ready = max(
                c.last_transition_time
                for p in self._pods(kube.ENGINE_ROLE)
                for c in p.status.conditions or []
                if c.type == "Ready" and c.status == "True"
            )
            return round((ready - started).total_seconds(), 3)
        except Exception:  # evidence only
            return None

    def save_logs(self) -> Path:
        d = self.workdir / "logs"
        d.mkdir(parents=True, exist_ok=True)
        try:
            pods = items(self.core.list_namespaced_pod(self.namespace))
            for p in pods:
                for c in [*(p.spec.init_containers or []), *p.spec.containers]:
                    with contextlib.suppress(ApiException):
                        text = self.core.read_namespaced_pod_log(p.metadata.name, self.namespace, container=c.name,
                                                                 timestamps=True)  # fmt: skip
                        (d / f"{p.metadata.name}.{c.name}.log").write_text(text)
            (d / "pods.json").write_text(json.dumps([self.api.sanitize_for_serialization(p.status) for p in pods],
                                                    indent=2, default=str))  # fmt: skip
            events = items(self.core.list_namespaced_event(self.namespace))
            (d / "events.txt").write_text(
                "".join(
                    f"{e.last_timestamp} {e.type} {e.involved_object.kind}/{e.involved_object.name} "
                    f"{e.reason}: {e.message}\n"
                    for e in events
                )  # fmt: skip
            )
        except ApiException as e:
            (d / "logs-error.txt").write_text(_reason(e))
        return d

    def down(self) -> TeardownResult:
        """Delete the namespace (everything in it goes with it), wait until it is gone, verify by label."""
        if self.teardown is not None:
            return self.teardown
        t = time.perf_counter()
        for f in self.forwards:
            f.close()
        attempts = 0
        with interrupts.shielded(self.kill_now):
            for attempts in range(1, 4):  # noqa: B007 - read after the loop
                try:
                    self._delete_namespace()
                    self._wait_gone(time.monotonic() + self.cfg.delete_timeout)
                except (ApiException, StackError):
                    pass  # checked below by label, and retried
                if not self.leftovers():
                    break
        left = self.leftovers()
        self.teardown = TeardownResult(not left, round(time.perf_counter() - t, 3), ", ".join(left), attempts)
        REGISTRY.discard(self)
        return self.teardown

    def restart_engines(self) -> float:
        """Not on this backend: config validation refuses topology engine-restart with backend kubernetes."""
        raise StackError("topology: engine-restart restarts a compose service; backend kubernetes has none")

    def kill_now(self) -> None:
        """Second Ctrl-C: the namespace's pods get no grace period; down() still deletes everything."""
        self._fast = True

    def __enter__(self) -> KubeStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ------------------------------------------------------------------ steps

    def _secrets(self) -> list[dict]:
        """Copies of the Secrets the manifests refer to, from `secret_namespace` (values never logged)."""
        out = []
        for name in sorted(kube.secret_names(self.objects)):
            try:
                src = self.core.read_namespaced_secret(name, self.cfg.secret_namespace)
            except ApiException as e:
                raise StackError(
                    f"stack.kubernetes.secret_namespace: Secret {name!r} not readable in namespace "
                    f"{self.cfg.secret_namespace!r} ({e.status} {e.reason}); create it with "
                    f"`kubectl -n {self.cfg.secret_namespace} create secret generic {name} --from-literal=hf_token=...`"
                ) from None
            out.append({"apiVersion": "v1", "kind": "Secret", "type": src.type or "Opaque", "data": src.data,
                        "metadata": {"name": name, "namespace": self.namespace, "labels": self.labels}})  # fmt: skip
        return out

    def _wait_ready(self, deadline: float) -> None:
        while True:
            states = self.health()
            waiting = {s: st for s, st in states.items() if st != "ready"}
            if states and not waiting:
                return
            fatal = {s: st for s, st in waiting.items() if st != "starting"}
            if fatal or time.monotonic() >= deadline:
                raise StackError(", ".join(f"{s}: {st}" for s, st in sorted((fatal or waiting).items())))
            time.sleep(POLL_S)  # polling the API server until the readiness deadline

    def _reach(self) -> None:
        """Base URLs of the engines' APIs and the master's metrics, by the configured access."""
        targets = {e: (e, self._published_port(e)) for e in self.spec.engines}
        targets[f"{MASTER}:metrics"] = (MASTER, self._published_port(MASTER))
        if self.spec.store_metrics_port:  # the store node's /health and /metrics
            targets[f"{STORE}:http"] = (STORE, self._published_port(STORE))
        for key, (service, port) in targets.items():
            if self.cfg.access == "cluster-dns":
                self.urls[key] = f"http://{service}.{self.namespace}.svc:{port}"
            else:
                pod = self._pods({"io.kvbench.service": service})[0].metadata.name
                fwd = Forward(self.api.configuration, self.namespace, pod, port)
                self.forwards.append(fwd)
                self.urls[key] = fwd.url

    def _published_port(self, service: str) -> int:
        """The container port compose publishes for the service (its API / metrics port)."""
        for o in self.objects:
            if o["kind"] == "Deployment" and o["metadata"]["name"] == service:
                return int(o["metadata"]["annotations"][kube.PUBLISHED_PORT])
        raise StackError(f"no Deployment {service} in the manifests")

    def _pods(self, labels: dict[str, str]) -> list[Any]:
        found = items(self.core.list_namespaced_pod(self.namespace, label_selector=selector(labels)))
        return sorted((p for p in found if p.metadata.deletion_timestamp is None), key=lambda p: p.metadata.name)

    def _delete_namespace(self) -> None:
        if not self._created:
            return
        body = k8s.V1DeleteOptions(grace_period_seconds=0 if self._fast else None, propagation_policy="Foreground")
        try:
            self.core.delete_namespace(self.namespace, body=body)
        except ApiException as e:
            if e.status != 404:
                raise

    def _wait_gone(self, deadline: float) -> None:
        while True:
            try:
                self.core.read_namespace(self.namespace)
            except ApiException as e:
                if e.status == 404:
                    return
                raise
            if time.monotonic() >= deadline:
                raise StackError(f"namespace {self.namespace} still terminating after {self.cfg.delete_timeout} s")
            time.sleep(POLL_S)  # namespace finalization: pods stop, then the objects go

    def leftovers(self) -> list[str]:
        """Anything of this stack still in the cluster, found by label (not by namespace); an API
        server that cannot be asked is a leftover too: nothing is verified then."""
        try:
            return find(self.api, self.label)
        except Exception as e:  # unreachable, forbidden: teardown must report, not raise
            return [f"not verified: the cluster could not be asked ({_reason(e)})"]


LISTS: dict[str, Callable[[k8s.ApiClient, str], Any]] = {
    "namespace": lambda api, sel: k8s.CoreV1Api(api).list_namespace(label_selector=sel),
    "deployment": lambda api, sel: k8s.AppsV1Api(api).list_deployment_for_all_namespaces(label_selector=sel),
    "pod": lambda api, sel: k8s.CoreV1Api(api).list_pod_for_all_namespaces(label_selector=sel),
    "service": lambda api, sel: k8s.CoreV1Api(api).list_service_for_all_namespaces(label_selector=sel),
    "configmap": lambda api, sel: k8s.CoreV1Api(api).list_config_map_for_all_namespaces(label_selector=sel),
}  # Secrets are not listed cluster-wide (that would read every Secret's data): the only one kvbench
#    makes, the hf-token copy, lives in the stack's namespace, which is verified gone.


def find(api: k8s.ApiClient, label_selector: str) -> list[str]:
    """kind/namespace/name of every harness object matching the selector, cluster-wide."""
    out = []
    for kind, lister in LISTS.items():
        for o in items(lister(api, label_selector)):
            ns = f"{o.metadata.namespace}/" if o.metadata.namespace else ""
            out.append(f"{kind}/{ns}{o.metadata.name}")
    return out


def stale_namespaces(api: k8s.ApiClient, include_live: bool = False) -> list[str]:
    """Harness namespaces whose owning process is gone (or all of them), for `kvbench clean`."""
    found = items(k8s.CoreV1Api(api).list_namespace(label_selector=selector(kube.MANAGED_BY)))
    return sorted(n.metadata.name for n in found if include_live or _owner_dead(n.metadata.labels or {}))


def _owner_dead(labels: dict[str, str]) -> bool:
    """The containers' rule (base.owner_dead); the owner label reads host_pid (':' is not allowed)."""
    host, _, pid = labels.get(kube.OWNER_LABEL, "").rpartition("_")
    if host != kube.label_value(socket.gethostname()):
        return True  # another host's run, or no owner: a leftover
    return owner_dead({kube.OWNER_LABEL: f"{socket.gethostname()}:{pid}"})


def delete_namespaces(api: k8s.ApiClient, names: list[str], timeout: float) -> list[str]:
    """Delete and wait; the namespaces still present at the deadline."""
    core = k8s.CoreV1Api(api)
    for n in names:
        with contextlib.suppress(ApiException):
            core.delete_namespace(n, body=k8s.V1DeleteOptions(propagation_policy="Foreground"))
    deadline = time.monotonic() + timeout
    left = list(names)
    while left and time.monotonic() < deadline:
        left = [n for n in left if _exists(core, n)]
        if left:
            time.sleep(POLL_S)
    return left


def _exists(core: k8s.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


def _reason(e: Exception) -> str:
    if isinstance(e, ApiException):
        try:
            return f"{e.status} {json.loads(e.body or '{}').get('message') or e.reason}"
        except ValueError:
            return f"{e.status} {e.reason}"
    if isinstance(e, k8s_utils.FailToCreateError):
        return "; ".join(_reason(x) for x in e.api_exceptions)
    if isinstance(e, StackError):
        return str(e)
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


@contextlib.contextmanager
def cluster(cfg: KubernetesConfig) -> Iterator[k8s.ApiClient]:
    api = api_client(cfg)
    try:
        yield api
    finally:
        api.close()
