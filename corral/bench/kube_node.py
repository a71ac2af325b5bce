"""``corral bench kube-node``: the node agent in Kubernetes mode against a real control plane.

A real etcd + kube-apiserver (../shared/k8s), one Node, and `corral agent --dry-run
--kubeconfig ... --node-name ...` as its own process. Measured:

* burst: ``pods`` pods (exclusive, shared and BE) created at once through the API, the time
  until every one carries ``corral.io/cpuset`` (target < 10 s), and how many times the
  NodeResourceTopology object was written for that burst (its ``generation``; target <= 5);
* idle: the agent's CPU use (utime + stime from /proc) over ``idle_s`` with ``idle_pods``
  pods bound and nothing changing.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from corral.bench.cluster import Plane, Process, free_port, start_plane, wait_until
from corral.errors import CorralError
from corral.kube import annotations as ann
from corral.kube import fingerprint, nrt

NODE: Final = "bench-node"
NAMESPACE: Final = "bench"
TARGET_BURST_S: Final = 10.0
TARGET_NRT_WRITES: Final = 5


@dataclass(frozen=True, slots=True)
class KubeNodeBenchConfig:
    """The bench's knobs."""

    pods: int = 200
    idle_pods: int = 100
    idle_s: float = 30.0
    topology: str = "epyc-7742-2s"
    timeout_s: float = 120.0


@dataclass(frozen=True, slots=True)
class KubeNodeBenchResult:
    """What one run measured."""

    pods: int
    burst_create_s: float
    burst_annotated_s: float
    nrt_writes: int
    idle_pods: int
    idle_s: float
    idle_cpu_percent: float
    topology: str

    def to_json(self) -> dict[str, Any]:
        """The result as JSON, with the targets."""
        return {
            **asdict(self),
            "targets": {"burst_annotated_s": TARGET_BURST_S, "nrt_writes": TARGET_NRT_WRITES},
            "met": {
                "burst_annotated_s": self.burst_annotated_s < TARGET_BURST_S,
                "nrt_writes": self.nrt_writes <= TARGET_NRT_WRITES,
            },
        }


class _Api:
    """Blocking admin calls to the apiserver (the bench's side, not the agent's)."""

    def __init__(self, kubeconfig: Path) -> None:
        doc = yaml.safe_load(kubeconfig.read_text())
        cluster = doc["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.token = doc["users"][0]["user"]["token"]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def get_or_none(self, path: str) -> Any:
        try:
            return self.call("GET", path)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise


def _pod(i: int) -> dict[str, Any]:
    """Pod ``i`` of the mix: 30 % Guaranteed 1-2 CPUs (exclusive), 50 % Burstable 250m,
    20 % BE requesting batch-cpu."""
    kind = i % 10
    if kind < 3:
        cpu = str(1 + i % 2)
        res: dict[str, Any] = {
            "requests": {"cpu": cpu, "memory": "128Mi"},
            "limits": {"cpu": cpu, "memory": "128Mi"},
        }
    elif kind < 8:
        res = {"requests": {"cpu": "250m", "memory": "64Mi"}}
    else:
        res = {"requests": {ann.BATCH_CPU: "500"}, "limits": {ann.BATCH_CPU: "500"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"bench-{i}", "namespace": NAMESPACE},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "c", "image": "registry.invalid/none", "resources": res}],
        },
    }


def _pods(api: _Api) -> list[dict[str, Any]]:
    data = api.call(
        "GET", f"/api/v1/namespaces/{NAMESPACE}/pods?fieldSelector=spec.nodeName%3D{NODE}"
    )
    return list(data.get("items") or [])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _poll(what: str, check: Callable[[], Any], timeout_s: float, agent: Process) -> Any:
    found: list[Any] = []

    def probe() -> bool:
        value = check()
        if value:
            found.append(value)
        return bool(value)

    wait_until(what, probe, timeout_s, agent)
    return found[-1]


def _nrt_settled(api: _Api, names: list[str]) -> dict[str, Any] | None:
    data = api.get_or_none(f"{nrt.PATH}/{NODE}")
    if data is None:
        return None
    wanted = fingerprint.sign([(NAMESPACE, n) for n in names])
    obj = nrt.nrt_from_json(data)
    return data if obj.attribute(nrt.ATTR_FINGERPRINT) == wanted else None


def run_kube_node_bench(
    config: KubeNodeBenchConfig, *, progress: Callable[[str], None] = lambda _: None
) -> KubeNodeBenchResult:
    """Start a plane and an agent, run the burst and the idle measurement, stop both."""
    plane: Plane = start_plane()
    work = Path(tempfile.mkdtemp(prefix="corral-bench-kube-node-"))
    agent: Process | None = None
    try:
        api = _Api(plane.kubeconfig)
        api.call(
            "POST",
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": NODE},
                "status": {
                    "capacity": {"cpu": "256", "memory": "1Ti", "pods": "1000"},
                    "allocatable": {"cpu": "256", "memory": "1Ti", "pods": "1000"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                },
            },
        )
        api.call("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        port = free_port()
        settings = work / "agent.yaml"
        settings.write_text(yaml.safe_dump({"kube": {"kubelet_root": str(work / "kubelet")}}))
        agent = Process(
            [
                str(Path(sys.executable).parent / "corral"),
                "agent",
                "--dry-run",
                "--config",
                str(settings),
                "--topology",
                config.topology,
                "--state",
                str(work / "state.db"),
                "--listen",
                f"127.0.0.1:{port}",
                "--kubeconfig",
                str(plane.kubeconfig),
                "--node-name",
                NODE,
                "--log-level",
                "WARNING",
            ],
            work / "agent.log",
        )
        agent.start()
        progress("agent started; waiting for its first NRT")
        first = _poll("the first NRT", lambda: _nrt_settled(api, []), config.timeout_s, agent)
        generation = int(first["metadata"].get("generation") or 1)
        bodies = [_pod(i) for i in range(config.pods)]
        progress(f"creating {config.pods} pods at once")
        start = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            list(
                pool.map(
                    lambda b: api.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", b), bodies
                )
            )
        created = time.monotonic() - start

        def annotated() -> bool:
            pods = _pods(api)
            done = [p for p in pods if ann.CPUSET in (p["metadata"].get("annotations") or {})]
            return len(done) >= config.pods

        _poll("every pod annotated", annotated, config.timeout_s, agent)
        burst = time.monotonic() - start
        names = [b["metadata"]["name"] for b in bodies]
        settled = _poll(
            "the NRT of the burst", lambda: _nrt_settled(api, names), config.timeout_s, agent
        )
        time.sleep(3.0)  # a late write would show here
        settled = api.call("GET", f"{nrt.PATH}/{NODE}")
        writes = int(settled["metadata"].get("generation") or 0) - generation
        progress(
            f"burst: {burst:.2f} s, {writes} NRT writes; deleting down to {config.idle_pods} pods"
        )
        drop = names[config.idle_pods :]
        with ThreadPoolExecutor(32) as pool:
            list(
                pool.map(
                    lambda n: api.call(
                        "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{n}?gracePeriodSeconds=0"
                    ),
                    drop,
                )
            )
        keep = names[: config.idle_pods]
        _poll("the NRT of the idle pods", lambda: _nrt_settled(api, keep), config.timeout_s, agent)
        time.sleep(3.0)
        if agent.proc is None:
            raise CorralError("the agent under test was never started")
        pid = agent.proc.pid
        progress(f"measuring idle CPU for {config.idle_s:g} s")
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(config.idle_s)
        cpu1, t1 = _cpu_seconds(pid), time.monotonic()
        if not agent.alive():
            raise CorralError(f"the agent exited:\n{agent.tail()}")
        return KubeNodeBenchResult(
            pods=config.pods,
            burst_create_s=round(created, 3),
            burst_annotated_s=round(burst, 3),
            nrt_writes=writes,
            idle_pods=config.idle_pods,
            idle_s=round(t1 - t0, 2),
            idle_cpu_percent=round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
            topology=config.topology,
        )
    finally:
        if agent is not None:
            agent.stop()
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)
