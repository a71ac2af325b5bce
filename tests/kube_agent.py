"""Run `corral agent` in Kubernetes mode as a real process against the test control plane,
and act on pods as kubelet and users would (helpers for test_kube_agent and the bench)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests import polling
from tests.kube_plane import KubePlane

CORRAL = Path(sys.executable).parent / "corral"


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    what: str, check: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.2
) -> Any:
    """`tests.polling.wait_for` at the kube tests' 0.2 s cadence."""
    return polling.wait_for(what, check, timeout_s=timeout_s, interval_s=every_s)


@dataclass
class AgentProcess:
    """One `corral agent --kubeconfig ... --node-name ...` process (dry run)."""

    plane: KubePlane
    node: str
    work: Path
    topology: str = "epyc-7742-2s"
    kube: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kubeconfig: Path | None = None  # default: the plane's admin

    @property
    def log_path(self) -> Path:
        """The agent's stderr."""
        return self.work / f"agent-{self.node}.log"

    def start(self) -> None:
        """Start the agent and wait until its API answers."""
        self.work.mkdir(parents=True, exist_ok=True)
        config = self.work / f"agent-{self.node}.yaml"
        kube = {
            "publish_min_interval_s": 1.0,
            "kubelet_root": str(self.work / "kubelet"),
            **self.kube,
        }
        config.write_text(yaml.safe_dump({"kube": kube, "rebalance_period_s": 3600}))
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(
            [
                str(CORRAL),
                "agent",
                "--dry-run",
                "--config",
                str(config),
                "--topology",
                self.topology,
                "--state",
                str(self.work / f"state-{self.node}.db"),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--kubeconfig",
                str(self.plane.kubeconfig),
                "--node-name",
                self.node,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.starts += 1
        wait_for("the agent's /healthz", self.healthy, timeout_s=60)

    def healthy(self) -> bool:
        """True when /healthz answers; AssertionError when the process died."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited {self.proc.returncode}: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                return True
        except OSError:
            return False

    def api(self, path: str) -> Any:
        """GET the agent's API."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def kill9(self) -> None:
        """SIGKILL, as a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 30 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def pause(self) -> None:
        """SIGSTOP (the process freezes; its connections stay open)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of its log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_text(self) -> str:
        """Its whole log."""
        return self.log_path.read_text(errors="replace")


def pod_body(
    name: str,
    node: str,
    *,
    namespace: str = "default",
    cpu: str | None = None,
    memory: str | None = None,
    guaranteed: bool = False,
    annotations: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
    priority_class: str | None = None,
) -> dict[str, Any]:
    """A Pod bound to ``node``: requests (``guaranteed``: as limits too), extended
    resources in ``extra``."""
    requests: dict[str, str] = {}
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = memory
    requests.update(extra or {})
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if guaranteed or extra:
        resources["limits"] = dict(requests) if guaranteed else dict(extra or {})
    spec: dict[str, Any] = {
        "nodeName": node,
        "containers": [{"name": "c", "image": "registry.invalid/none", "resources": resources}],
    }
    if priority_class is not None:
        spec["priorityClassName"] = priority_class
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": spec,
    }


def create_pods(plane: KubePlane, bodies: Iterable[dict[str, Any]], threads: int = 16) -> None:
    """Create pods concurrently (as a burst)."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = list(bodies)

    def create(body: dict[str, Any]) -> None:
        ns = body["metadata"]["namespace"]
        plane.request("POST", f"/api/v1/namespaces/{ns}/pods", body)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, bodies))


def list_pods(plane: KubePlane, node: str) -> list[dict[str, Any]]:
    """The pods bound to ``node``."""
    data = plane.request("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
    return list(data.get("items") or [])


def annotations_of(pods: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """namespace/name -> annotations."""
    return {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["metadata"].get("annotations")
        or {}
        for p in pods
    }


def events_for(plane: KubePlane, namespace: str, reason: str) -> list[dict[str, Any]]:
    """Events of ``reason`` in ``namespace``."""
    data = plane.request("GET", f"/api/v1/namespaces/{namespace}/events")
    return [e for e in data.get("items") or [] if e.get("reason") == reason]


def get_or_none(plane: KubePlane, path: str) -> Any:
    """GET, None on 404."""
    try:
        return plane.request("GET", path)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise
