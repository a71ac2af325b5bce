"""``corral bench cluster``: the real kube-scheduler v1.20.2 on a real control plane with
8-16 hollow nodes (`corral.bench.hollow`), a realistic pod mix arriving in Poisson bursts,
scheduled once by the default scheduler alone and once with corral's extender.

Figures per run: pods bound; Guaranteed pods on a node that could not give them one NUMA
zone (misaligned: kubelet's topology manager would refuse them); pods spanning sockets;
BE pods beyond the node's real BE capacity; GPU pods on a device without room;
throughput (pods bound per second from the first arrival to the last bind); and, with the
extender, its server-side latency p50/p99 per verb.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import yaml

from corral.bench.hollow import HOLLOW_LABEL, Admission, HollowCluster, HollowSpec
from corral.errors import CorralError, InputError
from corral.kube import annotations as ann
from corral.kube.client import ApiError, KubeClient, load_kubeconfig, pods_path
from corral.kube.config import GpuDevice

PRESETS: Final = ("toy-16", "r4.16xlarge", "xeon-gold-6230-2s", "epyc-7742-2s")
CORRAL_SCHEDULER: Final = "corral-scheduler"
DEFAULT_SCHEDULER: Final = "default-scheduler"
REPO: Final = Path(__file__).resolve().parents[2]
SCHEDULER_TEMPLATE: Final = REPO / "deploy/kubernetes/scheduler/kube-scheduler-config-v1beta1.yaml"
GUARANTEED_CPUS: Final = (1, 1, 2, 2, 2, 4, 4, 4, 6, 8, 8, 12, 16, 24, 32)
DECISION_VERBS: Final = ("filter", "prioritize", "bind_decision")
GPU_DEVICE_MIB: Final = (16384, 24576)


def shared_k8s() -> Path:
    """The shared Kubernetes binaries and scripts (``$CORRAL_SHARED_K8S`` or ../shared/k8s)."""
    return Path(os.environ.get("CORRAL_SHARED_K8S", REPO.parent / "shared" / "k8s"))


def free_port() -> int:
    """A free loopback TCP port."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback TCP ports (all held open while chosen)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


# --- processes ------------------------------------------------------------------------
@dataclass
class Process:
    """A child process with its log file; `stop` sends SIGTERM, then SIGKILL."""

    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start it (stdout and stderr to the log)."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        """True while it runs."""
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The end of its log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop it and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, proc: Process) -> None:
    """Poll ``check``; `CorralError` naming ``what`` (with the log tail) on timeout or exit."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return
        if not proc.alive():
            raise CorralError(f"{what}: the process exited:\n{proc.tail()}")
        time.sleep(0.1)
    raise CorralError(f"{what}: not after {timeout_s} s:\n{proc.tail()}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def get_json(url: str) -> Any:
    """GET ``url`` and decode its JSON."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def extender_process(
    kubeconfig: Path, work: Path, *, port: int | None = None, config: Path | None = None
) -> tuple[Process, int]:
    """Start ``corral kube extender`` and wait for its /healthz; (process, port)."""
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "corral.cli",
        "kube",
        "extender",
        "--kubeconfig",
        str(kubeconfig),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    if config is not None:
        argv += ["--config", str(config)]
    proc = Process(argv, work / f"extender-{port}.log")
    proc.start({**os.environ, "PYTHONUNBUFFERED": "1"})
    wait_until(
        "the extender's /healthz", lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), 90, proc
    )
    return proc, port


def scheduler_config(
    *,
    kubeconfig: Path,
    extender_url: str | None,
    scheduler_name: str,
    health_port: int,
    node_cache_capable: bool = True,
    template: Path = SCHEDULER_TEMPLATE,
) -> dict[str, Any]:
    """corral's v1beta1 KubeSchedulerConfiguration (deploy/kubernetes/scheduler) pointed at
    ``extender_url`` (None: no extenders), with one profile named ``scheduler_name``."""
    doc: dict[str, Any] = yaml.safe_load(template.read_text())
    doc["clientConnection"] = {"kubeconfig": str(kubeconfig)}
    doc["leaderElection"] = {"leaderElect": False}
    doc["healthzBindAddress"] = f"127.0.0.1:{health_port}"
    doc["metricsBindAddress"] = f"127.0.0.1:{health_port}"
    doc["profiles"] = [{"schedulerName": scheduler_name}]
    if extender_url is None:
        doc.pop("extenders", None)
        return doc
    main, resources = doc["extenders"]
    main["urlPrefix"] = extender_url
    main["nodeCacheCapable"] = node_cache_capable
    resources["urlPrefix"] = extender_url + "/resources"
    return doc


def scheduler_process(
    kube_bin: Path,
    plane_dir: Path,
    work: Path,
    *,
    extender_url: str | None,
    scheduler_name: str,
    node_cache_capable: bool = True,
) -> Process:
    """Start a second real kube-scheduler (profile ``scheduler_name``) against the plane
    in ``plane_dir`` (its scheduler.kubeconfig), and wait for its /healthz."""
    port = free_port()
    cfg = work / f"scheduler-{scheduler_name}-{port}.yaml"
    doc = scheduler_config(
        kubeconfig=plane_dir / "scheduler.kubeconfig",
        extender_url=extender_url,
        scheduler_name=scheduler_name,
        health_port=port,
        node_cache_capable=node_cache_capable,
    )
    cfg.write_text(yaml.safe_dump(doc))
    proc = Process(
        [
            str(kube_bin / "kube-scheduler"),
            f"--config={cfg}",
            "--secure-port=0",
            "--logtostderr=true",
            "--v=2",
        ],
        work / f"scheduler-{scheduler_name}-{port}.log",
    )
    proc.start()
    wait_until(
        "kube-scheduler /healthz", lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), 60, proc
    )
    return proc


@dataclass
class Plane:
    """A control plane started by control-plane.sh (owned: stopped by `stop`)."""

    dir: Path
    env: dict[str, str]
    bin: Path
    owned: bool = True

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig."""
        return self.dir / "admin.kubeconfig"

    def stop(self) -> None:
        """Stop its processes and remove its directory (only when this bench started it)."""
        if not self.owned:
            return
        subprocess.run(
            [
                "bash",
                str(shared_k8s() / "control-plane.sh"),
                "stop",
                "--dir",
                str(self.dir),
                "--clean",
            ],
            env=self.env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def start_plane() -> Plane:
    """Start etcd + kube-apiserver + kube-scheduler on free ports, with the NRT CRD."""
    script = shared_k8s() / "control-plane.sh"
    if not script.exists():
        raise InputError("CORRAL_SHARED_K8S", f"no {script}", "point it at ../shared/k8s")
    directory = Path(tempfile.mkdtemp(prefix="corral-bench-cluster-"))
    etcd, peer, api, sched = free_ports(4)
    env = {
        **os.environ,
        "ETCD_PORT": str(etcd),
        "ETCD_PEER_PORT": str(peer),
        "APISERVER_PORT": str(api),
        "SCHED_HEALTH_PORT": str(sched),
        "START_TIMEOUT": "120",
    }
    kube_bin = Path(
        subprocess.run(
            ["bash", str(script), "unpack"], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    plane = Plane(directory, env, kube_bin)
    done = subprocess.run(
        ["bash", str(script), "start", "--dir", str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    if done.returncode != 0:
        plane.stop()
        raise CorralError(f"control plane failed to start:\n{done.stderr[-2000:]}")
    crd = shared_k8s() / "samples" / "nrt-crd.yaml"
    kubectl = [str(kube_bin / "kubectl"), "--kubeconfig", str(plane.kubeconfig)]
    for args in (
        ["apply", "-f", str(crd)],
        [
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/noderesourcetopologies.topology.node.k8s.io",
        ],
    ):
        subprocess.run([*kubectl, *args], capture_output=True, timeout=120, check=True)
    return plane


# --- workload -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClusterBenchConfig:
    """The bench's knobs."""

    nodes: int = 16
    """Hollow nodes, presets in turn (toy-16, r4.16xlarge, xeon-gold-6230-2s, epyc-7742-2s)."""
    pods: int = 320
    gpu_node_every: int = 3
    """Every n-th node gets 2-4 GPUs of 16/24 GiB."""
    burst_mean: float = 24.0
    """Mean pods per burst (Poisson)."""
    burst_gap_s: float = 0.5
    """Mean seconds between bursts (exponential)."""
    publish_interval_s: float = 1.0
    """Hollow node agents publish at most this often (the agent's default)."""
    settle_s: float = 15.0
    """After the last arrival, stop when no pod was bound for this long."""
    timeout_s: float = 240.0
    seed: int = 0

    @classmethod
    def quick(cls) -> ClusterBenchConfig:
        """The CI form: 8 nodes, 80 pods."""
        return cls(nodes=8, pods=80, burst_mean=10.0, burst_gap_s=0.4, settle_s=8.0, timeout_s=90.0)


def hollow_specs(config: ClusterBenchConfig) -> list[HollowSpec]:
    """The nodes: presets in turn; every ``gpu_node_every``-th gets GPUs."""
    rng = random.Random(config.seed)
    specs = []
    for i in range(config.nodes):
        gpus: tuple[GpuDevice, ...] = ()
        if config.gpu_node_every and i % config.gpu_node_every == config.gpu_node_every - 1:
            size = rng.choice(GPU_DEVICE_MIB)
            gpus = tuple(GpuDevice(index=d, memory_mib=size) for d in range(rng.choice((2, 4))))
        specs.append(HollowSpec(f"hollow-{i:02d}", PRESETS[i % len(PRESETS)], gpus))
    return specs


def _container(requests: dict[str, str], limits: dict[str, str]) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"name": "main", "image": "registry.k8s.io/pause:3.2", "resources": resources}


def pod_mix(config: ClusterBenchConfig, *, namespace: str, scheduler: str) -> list[dict[str, Any]]:
    """The pods, in arrival order: ~45% Guaranteed (whole CPUs 1-32), ~20% Burstable, ~25% BE
    (batch-cpu), ~10% GPU (gpu-mem 2-16 GiB)."""
    rng = random.Random(config.seed + 1)
    pods = []
    for i in range(config.pods):
        draw = rng.random()
        if draw < 0.45:
            cpus = rng.choice(GUARANTEED_CPUS)
            mem = f"{cpus * 2}Gi"
            kind, c = "guaranteed", _container({}, {"cpu": str(cpus), "memory": mem})
        elif draw < 0.65:
            cpu = rng.choice(("500m", "1", "2", "4"))
            kind, c = "burstable", _container({"cpu": cpu, "memory": "2Gi"}, {"memory": "8Gi"})
        elif draw < 0.90:
            batch = str(rng.choice((1000, 2000, 4000, 8000)))
            kind, c = "be", _container({ann.BATCH_CPU: batch}, {ann.BATCH_CPU: batch})
        else:
            mib = str(rng.choice((2048, 4096, 8192, 16384)))
            kind, c = (
                "gpu",
                _container(
                    {"cpu": "1", "memory": "4Gi", ann.GPU_MEM: mib},
                    {"memory": "8Gi", ann.GPU_MEM: mib},
                ),
            )
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{kind}-{i:04d}",
                    "namespace": namespace,
                    "labels": {"corral.io/bench": kind},
                },
                "spec": {
                    "schedulerName": scheduler,
                    "nodeSelector": {HOLLOW_LABEL: "true"},
                    "containers": [c],
                    "terminationGracePeriodSeconds": 0,
                },
            }
        )
    return pods


def bursts(config: ClusterBenchConfig, count: int) -> list[tuple[float, int]]:
    """(start offset s, pods) of Poisson-sized bursts with exponential gaps."""
    rng = random.Random(config.seed + 2)
    out, t, left = [], 0.0, count
    while left > 0:
        size = min(left, max(1, _poisson(rng, config.burst_mean)))
        out.append((t, size))
        left -= size
        t += rng.expovariate(1 / config.burst_gap_s)
    return out


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


# --- runs -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunResult:
    """One scheduler configuration's figures."""

    name: str
    pods: int
    bound: int
    by_kind: dict[str, int]
    misaligned: int
    multi_zone: int
    cross_socket: int
    be_over: int
    gpu_over: int
    seconds: float
    throughput: float
    pod_latency_p50_s: float = 0.0
    pod_latency_p99_s: float = 0.0
    """Seconds from a pod's creation to its admission on a hollow node."""
    extender: dict[str, Any] = field(default_factory=dict)
    pending_reasons: dict[str, int] = field(default_factory=dict)


def summarize(
    *,
    name: str,
    pods: int,
    admissions: Sequence[Admission],
    start: float,
    created: dict[str, float],
    extender: dict[str, Any],
    reasons: dict[str, int],
) -> RunResult:
    """The run's figures from the hollow nodes' admissions."""
    last = max((a.at for a in admissions), default=start)
    seconds = max(1e-6, last - start)
    by_kind: dict[str, int] = {}
    for a in admissions:
        by_kind[a.kind] = by_kind.get(a.kind, 0) + 1
    waits = sorted(a.at - created[a.key] for a in admissions if a.key in created)
    return RunResult(
        pod_latency_p50_s=round(_quantile(waits, 0.5), 3),
        pod_latency_p99_s=round(_quantile(waits, 0.99), 3),
        name=name,
        pods=pods,
        bound=len(admissions),
        by_kind=by_kind,
        misaligned=sum(a.misaligned for a in admissions),
        multi_zone=sum(a.multi_zone for a in admissions),
        cross_socket=sum(a.cross_socket for a in admissions),
        be_over=sum(a.be_over for a in admissions),
        gpu_over=sum(a.gpu_over for a in admissions),
        seconds=round(seconds, 2),
        throughput=round(len(admissions) / seconds, 2),
        extender=extender,
        pending_reasons=reasons,
    )


def _quantile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


async def _create_pods(
    client: KubeClient,
    pods: Sequence[dict[str, Any]],
    plan: Sequence[tuple[float, int]],
    start: float,
    created: dict[str, float],
) -> None:
    i = 0
    for offset, size in plan:
        delay = start + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        batch = pods[i : i + size]
        i += size
        now = time.monotonic()
        for p in batch:
            created[f"{p['metadata']['namespace']}/{p['metadata']['name']}"] = now
        await asyncio.gather(
            *(client.create(pods_path(p["metadata"]["namespace"]), p) for p in batch)
        )


async def _pending_reasons(client: KubeClient, namespace: str) -> dict[str, int]:
    """The scheduler's last FailedScheduling message per pending pod, counted."""
    events = await client.get(
        f"/api/v1/namespaces/{namespace}/events", fieldSelector="reason=FailedScheduling"
    )
    pods = await client.get(pods_path(namespace), fieldSelector="spec.nodeName=")
    pending = {p["metadata"]["name"] for p in pods.get("items") or []}
    last: dict[str, str] = {}
    for e in events.get("items") or []:
        name = str((e.get("involvedObject") or {}).get("name") or "")
        if name in pending:
            last[name] = str(e.get("message") or "")[:300]
    counts: dict[str, int] = {}
    for message in last.values():
        counts[message] = counts.get(message, 0) + 1
    return counts


async def run_once(
    client: KubeClient,
    hollow: HollowCluster,
    config: ClusterBenchConfig,
    *,
    name: str,
    namespace: str,
    scheduler: str,
    extender_stats: Callable[[], dict[str, Any]] | None,
    progress: Callable[[str], None],
) -> RunResult:
    """Create the mix in ``namespace`` for ``scheduler``; wait until bound or settled."""
    with contextlib.suppress(ApiError):
        await client.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
    pods = pod_mix(config, namespace=namespace, scheduler=scheduler)
    plan = bursts(config, len(pods))
    first = len(hollow.admissions)
    start = time.monotonic()
    created: dict[str, float] = {}
    creating = asyncio.create_task(_create_pods(client, pods, plan, start, created))
    deadline = start + config.timeout_s
    last_count, last_change = 0, time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        mine = [a for a in hollow.admissions[first:] if a.key.startswith(namespace + "/")]
        if len(mine) != last_count:
            last_count, last_change = len(mine), time.monotonic()
        if creating.done():
            creating.result()
            if len(mine) >= len(pods) or time.monotonic() - last_change > config.settle_s:
                break
    if not creating.done():
        creating.cancel()
    mine = [a for a in hollow.admissions[first:] if a.key.startswith(namespace + "/")]
    progress(f"{name}: {len(mine)}/{len(pods)} bound")
    reasons = await _pending_reasons(client, namespace)
    stats = extender_stats() if extender_stats else {}
    return summarize(
        name=name,
        pods=len(pods),
        admissions=mine,
        start=start,
        created=created,
        extender=stats,
        reasons=reasons,
    )


async def clear_namespace(client: KubeClient, hollow: HollowCluster, namespace: str) -> None:
    """Delete the namespace's pods at once and wait until the hollow nodes freed them."""
    with contextlib.suppress(ApiError):
        await client.request(
            "DELETE",
            pods_path(namespace),
            body={"gracePeriodSeconds": 0, "propagationPolicy": "Background"},
        )
    end = time.monotonic() + 60
    while time.monotonic() < end:
        held = sum(
            1 for n in hollow.nodes.values() for k in n.held if k.startswith(namespace + "/")
        )
        if held == 0:
            break
        await asyncio.sleep(0.3)
    await asyncio.sleep(hollow.publish_interval_s * 2.5)  # let the nodes publish the freed room


@dataclass(frozen=True, slots=True)
class ClusterBenchResult:
    """Both runs and the targets."""

    config: ClusterBenchConfig
    runs: tuple[RunResult, ...]

    def run(self, name: str) -> RunResult:
        """The run called ``name``."""
        return next(r for r in self.runs if r.name == name)

    def targets(self) -> dict[str, bool]:
        """The issue's targets: 0 misaligned with the extender, p99 < 20 ms per call
        (filter, prioritize, and bind's own work -- its two apiserver writes are reported
        apart, as ``bind``), throughput with it >= 50% of the default scheduler's."""
        base, ext = self.run("default"), self.run("extender")
        verbs = ext.extender.get("verbs", {})
        decided = [v for n, v in verbs.items() if n in DECISION_VERBS and v["calls"]]
        return {
            "zero_misaligned_with_extender": ext.misaligned == 0,
            "extender_p99_under_20ms": bool(decided) and all(v["p99_ms"] < 20 for v in decided),
            "throughput_at_least_half": ext.throughput >= 0.5 * base.throughput,
        }

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON."""
        return {
            "config": asdict(self.config),
            "runs": [asdict(r) for r in self.runs],
            "targets": self.targets(),
        }


async def _bench(
    config: ClusterBenchConfig, plane: Plane, work: Path, progress: Callable[[str], None]
) -> ClusterBenchResult:
    async with KubeClient(load_kubeconfig(plane.kubeconfig)) as client:
        hollow = HollowCluster(client, hollow_specs(config), config.publish_interval_s)
        await hollow.create()
        await hollow.start()
        try:
            progress(f"{config.nodes} hollow nodes up; default scheduler run")
            base = await run_once(
                client,
                hollow,
                config,
                name="default",
                namespace="bench-default",
                scheduler=DEFAULT_SCHEDULER,
                extender_stats=None,
                progress=progress,
            )
            await clear_namespace(client, hollow, "bench-default")
            progress("extender run")
            ext_proc, port = extender_process(plane.kubeconfig, work)
            sched = None
            try:
                sched = scheduler_process(
                    plane.bin,
                    plane.dir,
                    work,
                    extender_url=f"http://127.0.0.1:{port}",
                    scheduler_name=CORRAL_SCHEDULER,
                )
                ext = await run_once(
                    client,
                    hollow,
                    config,
                    name="extender",
                    namespace="bench-corral",
                    scheduler=CORRAL_SCHEDULER,
                    extender_stats=lambda: get_json(f"http://127.0.0.1:{port}/stats"),
                    progress=progress,
                )
            finally:
                if sched is not None:
                    sched.stop()
                ext_proc.stop()
            await clear_namespace(client, hollow, "bench-corral")
        finally:
            await hollow.stop()
            await hollow.delete()
    return ClusterBenchResult(config, (base, ext))


def run_cluster_bench(
    config: ClusterBenchConfig,
    *,
    kubeconfig_dir: Path | None = None,
    kube_bin: Path | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> ClusterBenchResult:
    """Run the bench. ``kubeconfig_dir``: a running plane's directory (admin.kubeconfig,
    scheduler.kubeconfig; its binaries in ``kube_bin``); None: start one and stop it."""
    if kubeconfig_dir is not None:
        if kube_bin is None:
            raise InputError("kube_bin", "needed with a running plane", "pass the binaries dir")
        plane = Plane(kubeconfig_dir, dict(os.environ), kube_bin, owned=False)
    else:
        progress("starting the control plane")
        plane = start_plane()
    work = Path(tempfile.mkdtemp(prefix="corral-bench-cluster-work-"))
    try:
        return asyncio.run(_bench(config, plane, work, progress))
    finally:
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)


def chart(result: ClusterBenchResult, path: Path) -> Path:
    """A PNG: placement errors per run, throughput, extender latency per verb."""
    import matplotlib  # noqa: PLC0415 - only the chart needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    runs = result.runs
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    labels = ["misaligned", "cross-socket", "BE over", "GPU over"]
    width = 0.8 / len(runs)
    for i, r in enumerate(runs):
        values = [r.misaligned, r.cross_socket, r.be_over, r.gpu_over]
        axes[0].bar([x + i * width for x in range(len(labels))], values, width, label=r.name)
    axes[0].set_xticks([x + width / 2 for x in range(len(labels))], labels)
    axes[0].set_title("placement errors (pods)")
    axes[0].legend()
    axes[1].bar([r.name for r in runs], [r.throughput for r in runs], color=["gray", "teal"])
    axes[1].set_title("throughput (pods bound / s)")
    verbs = result.run("extender").extender.get("verbs", {})
    names = list(verbs)
    axes[2].bar(
        [x - 0.2 for x in range(len(names))], [verbs[n]["p50_ms"] for n in names], 0.4, label="p50"
    )
    axes[2].bar(
        [x + 0.2 for x in range(len(names))], [verbs[n]["p99_ms"] for n in names], 0.4, label="p99"
    )
    axes[2].axhline(20, color="red", linestyle="--", linewidth=1, label="20 ms target")
    axes[2].set_xticks(range(len(names)), names)
    axes[2].set_yscale("log")
    axes[2].set_title(f"extender latency (ms, log), {result.config.nodes} nodes")
    axes[2].legend()
    fig.suptitle(
        f"corral bench cluster: {result.config.pods} pods on {result.config.nodes} "
        "hollow nodes, kube-scheduler v1.20.2"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = [
    "ClusterBenchConfig",
    "ClusterBenchResult",
    "RunResult",
    "chart",
    "replace",
    "run_cluster_bench",
]
