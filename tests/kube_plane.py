"""One real Kubernetes control plane per test session (etcd + kube-apiserver +
kube-scheduler v1.20.2 from ../shared/k8s), on free loopback ports.

Use the ``kube_plane`` fixture: it starts the plane the first time a test asks for it,
installs the NodeResourceTopology CRD, and stops everything (and removes its directory)
at the end of the session. Tests are skipped, with the reason, only when the binaries or
etcd are missing; a plane that is there but fails to start fails the tests.

`KubePlane` helps tests act on it: `client()`, `kubectl()`, `restart_apiserver()`
(same flags, same etcd: watches break and must resume), `compact_etcd()` (old
resourceVersions become 410 Gone), `create_node()`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_K8S = Path(os.environ.get("CORRAL_SHARED_K8S", REPO.parent / "shared" / "k8s"))
SCRIPT = SHARED_K8S / "control-plane.sh"
CRD = SHARED_K8S / "samples" / "nrt-crd.yaml"


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _alive(pid: int, mine: list[subprocess.Popen[bytes]]) -> bool:
    if mine:
        return mine[0].poll() is None  # our child: reaped here
    return Path(f"/proc/{pid}").exists()


def missing() -> str | None:
    """Why no control plane can run here (None: it can)."""
    if not SCRIPT.exists():
        return f"no {SCRIPT} (the shared Kubernetes binaries are not beside this clone)"
    for name in ("kube-apiserver", "kube-scheduler", "kubectl"):
        if not (SHARED_K8S / "bin" / f"{name}.xz").exists():
            return f"no {SHARED_K8S}/bin/{name}.xz"
    for tool in ("etcd", "openssl", "curl", "xz"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install etcd-server openssl curl xz-utils)"
    return None


@dataclass
class KubePlane:
    """A running control plane."""

    dir: Path
    env: dict[str, str]
    kubeconfig: Path
    apiserver_port: int
    etcd_port: int
    token: str
    ca: Path
    bin: Path
    restarts: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def server(self) -> str:
        """The apiserver URL."""
        return f"https://127.0.0.1:{self.apiserver_port}"

    def client(self) -> Any:
        """A `corral.kube.client.KubeClient` as admin (close it: ``async with``)."""
        from corral.kube.client import KubeClient, load_kubeconfig

        return KubeClient(load_kubeconfig(self.kubeconfig))

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """Run kubectl 1.20 against the plane; its stdout."""
        done = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout + done.stderr if not check else done.stdout

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        """A blocking admin request (for test set-up); the decoded answer."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def ready(self) -> bool:
        """True when the apiserver answers /readyz."""
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca))
            with urllib.request.urlopen(self.server + "/readyz", context=ctx, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Wait for /readyz."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.ready():
                return
            time.sleep(0.2)
        raise AssertionError(f"apiserver not ready in {timeout_s} s; see {self.dir}/logs")

    def _apiserver_pid(self) -> int:
        return int((self.dir / "kube-apiserver.pid").read_text())

    def apiserver_args(self) -> list[str]:
        """The running apiserver's command line."""
        pid = self._apiserver_pid()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        return [a.decode() for a in raw]

    def restart_apiserver(self, down_s: float = 1.0, extra_args: tuple[str, ...] = ()) -> None:
        """Stop the apiserver (SIGTERM), wait ``down_s``, start it again with the same
        command line (plus ``extra_args``); returns once it is ready."""
        pid = self._apiserver_pid()
        argv = [*self.apiserver_args(), *(a for a in extra_args if a not in self.apiserver_args())]
        # SIGTERM, then SIGKILL after a few seconds: a terminating apiserver waits up to a
        # minute for its long-running requests (the watches) otherwise.
        mine = [p for p in self.procs if p.pid == pid]
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 3
        while time.monotonic() < end and _alive(pid, mine):
            time.sleep(0.1)
        if _alive(pid, mine):
            os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 30
        while time.monotonic() < end and _alive(pid, mine):
            time.sleep(0.05)
        time.sleep(down_s)
        log = open(self.dir / "logs" / "kube-apiserver.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        (self.dir / "kube-apiserver.pid").write_text(f"{proc.pid}\n")
        self.restarts += 1
        self.wait_ready()

    def _etcd(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.etcd_port}{path}",
            data=json.dumps(body).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision (physically); returns that revision.
        Watches and lists from an older resourceVersion then get 410 Gone."""
        key = base64.b64encode(b"/registry").decode()
        revision = int(
            self._etcd("/v3/kv/range", {"key": key, "count_only": True})["header"]["revision"]
        )
        self._etcd("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def create_node(self, name: str, *, cpu: str = "16", memory: str = "64Gi") -> dict[str, Any]:
        """A Ready Node object (there is no kubelet: the test plays its part)."""
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {
                "capacity": {"cpu": cpu, "memory": memory, "pods": "500"},
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "500"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }
        return dict(self.request("POST", "/api/v1/nodes", body))

    def ensure_namespace(self, name: str) -> None:
        """Create namespace ``name`` if absent."""
        try:
            self.request(
                "POST",
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
        except urllib.error.HTTPError as err:
            if err.code != 409:
                raise


def _install_crd(plane: KubePlane) -> None:
    plane.kubectl("apply", "-f", str(CRD))
    plane.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/noderesourcetopologies.topology.node.k8s.io",
    )


def start_plane() -> tuple[KubePlane, subprocess.CompletedProcess[str]]:
    """Start a plane on free ports in a new temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix="corral-kube-plane-"))
    etcd, peer, api, sched = _free_ports(4)
    env = {
        **os.environ,
        "ETCD_PORT": str(etcd),
        "ETCD_PEER_PORT": str(peer),
        "APISERVER_PORT": str(api),
        "SCHED_HEALTH_PORT": str(sched),
        "START_TIMEOUT": "120",
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), "start", "--dir", str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    bin_dir = subprocess.run(
        ["bash", str(SCRIPT), "unpack"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    plane = KubePlane(
        dir=directory,
        env=env,
        kubeconfig=directory / "admin.kubeconfig",
        apiserver_port=api,
        etcd_port=etcd,
        token=(directory / "pki" / "admin.token").read_text().strip()
        if (directory / "pki" / "admin.token").exists()
        else "",
        ca=directory / "pki" / "ca.crt",
        bin=Path(bin_dir),
    )
    return plane, done


def stop_plane(plane: KubePlane) -> None:
    """Stop every process of the plane and remove its directory."""
    for proc in plane.procs:  # apiservers restarted by tests (our children)
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    subprocess.run(
        ["bash", str(SCRIPT), "stop", "--dir", str(plane.dir), "--clean"],
        env=plane.env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    shutil.rmtree(plane.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kube_plane() -> Iterator[KubePlane]:
    """The session's control plane (started on first use, stopped at the end)."""
    why = missing()
    if why is not None:
        pytest.skip(f"no Kubernetes control plane: {why}")
    plane, done = start_plane()
    try:
        if done.returncode != 0:
            raise AssertionError(f"control plane failed to start:\n{done.stderr[-3000:]}")
        _install_crd(plane)
        yield plane
    finally:
        stop_plane(plane)
