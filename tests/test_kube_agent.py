"""The agent in Kubernetes mode against the real control plane (tests/kube_plane.py):
pods created through the API are placed and annotated, the NRT and batch resources are
published, refusals and bad annotations give Events, and crashes, apiserver restarts and
compacted watches are survived."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from corral.kube import annotations as ann
from corral.kube import fingerprint, nrt
from corral.topology.cpuset import CpuSet
from corral.topology.presets import epyc_7742_2s
from tests.kube_agent import (
    AgentProcess,
    annotations_of,
    create_pods,
    events_for,
    get_or_none,
    list_pods,
    pod_body,
    wait_for,
)
from tests.kube_plane import KubePlane

pytestmark = pytest.mark.slow
TOPOLOGY = epyc_7742_2s()
_names = itertools.count()


@pytest.fixture
def node(kube_plane: KubePlane) -> str:
    """A fresh Node (and namespace of the same name) for one test."""
    name = f"node-{next(_names)}-{id(kube_plane) % 1000}"
    kube_plane.create_node(name, cpu="256", memory="512Gi")
    kube_plane.ensure_namespace(name)
    return name


@pytest.fixture
def agent(kube_plane: KubePlane, node: str, tmp_path: Path) -> Any:
    """A running agent for ``node``; stopped after the test."""
    proc = AgentProcess(kube_plane, node, tmp_path)
    proc.start()
    yield proc
    proc.stop()


def _cpusets(plane: KubePlane, node: str) -> dict[str, str]:
    return {
        k: a[ann.CPUSET]
        for k, a in annotations_of(list_pods(plane, node)).items()
        if ann.CPUSET in a
    }


def _all_annotated(plane: KubePlane, node: str, count: int) -> dict[str, str] | None:
    sets = _cpusets(plane, node)
    return sets if len(sets) >= count else None


def _converged(plane: KubePlane, agent: AgentProcess, count: int) -> dict[str, str] | None:
    """The pods' cpusets once they all equal the agent's placements (None before)."""
    sets = _cpusets(plane, agent.node)
    views = {w["id"]: w["cpuset"] for w in agent.api("/workloads")["workloads"]}
    same = len(sets) >= count and all(views.get(k) == v for k, v in sets.items())
    return sets if same else None


def _nrt(plane: KubePlane, node: str) -> nrt.NodeResourceTopology | None:
    data = get_or_none(plane, f"{nrt.PATH}/{node}")
    return None if data is None else nrt.nrt_from_json(data)


def _assert_no_cpu_twice(plane: KubePlane, node: str, exclusive: set[str]) -> None:
    sets = _cpusets(plane, node)
    seen: dict[int, str] = {}
    for key in sorted(exclusive):
        for cpu in CpuSet.parse(sets[key]):
            assert cpu not in seen, f"CPU {cpu} held by {seen[cpu]} and {key}"
            seen[cpu] = key


def test_pods_are_placed_annotated_and_published(
    kube_plane: KubePlane, node: str, agent: AgentProcess
) -> None:
    ns = node
    create_pods(
        kube_plane,
        [
            pod_body("g4", node, namespace=ns, cpu="4", memory="1Gi", guaranteed=True),
            pod_body("g2", node, namespace=ns, cpu="2", memory="1Gi", guaranteed=True),
            pod_body("burst", node, namespace=ns, cpu="500m"),
            pod_body("be", node, namespace=ns),
            pod_body("batch", node, namespace=ns, extra={ann.BATCH_CPU: "2000"}),
            pod_body(
                "pinned",
                node,
                namespace=ns,
                cpu="2",
                annotations={ann.CPUSET_POLICY: "immovable", ann.PIN_CPUS: "40-41"},
            ),
            pod_body(
                "numa1",
                node,
                namespace=ns,
                cpu="3",
                memory="1Gi",
                guaranteed=True,
                annotations={ann.NUMA_NODES: "1"},
            ),
            pod_body("bad", node, namespace=ns, cpu="1", annotations={ann.CPUSET_POLICY: "fast"}),
            pod_body("badqos", node, namespace=ns, cpu="1", annotations={ann.QOS: "gold"}),
        ],
    )
    wait_for("every pod annotated", lambda: _all_annotated(kube_plane, node, 9))
    sets = wait_for("annotations equal to placements", lambda: _converged(kube_plane, agent, 9))
    pods = annotations_of(list_pods(kube_plane, node))
    # Guaranteed integer pods are exclusive: their CPUs are theirs alone.
    assert len(CpuSet.parse(sets[f"{ns}/g4"])) == 4
    assert len(CpuSet.parse(sets[f"{ns}/g2"])) == 2
    _assert_no_cpu_twice(kube_plane, node, {f"{ns}/g4", f"{ns}/g2", f"{ns}/pinned", f"{ns}/numa1"})
    assert sets[f"{ns}/pinned"] == "40-41"
    # corral.io/numa-nodes is honoured: its CPUs come from NUMA node 1 and the annotation stays.
    assert CpuSet.parse(sets[f"{ns}/numa1"]) <= TOPOLOGY.cpus_in_numa(1)
    assert len(CpuSet.parse(sets[f"{ns}/numa1"])) == 3
    assert pods[f"{ns}/numa1"][ann.NUMA_NODES] == "1"
    # The agent writes corral.io/numa-nodes where absent, from the CPUs it gave.
    g4_nodes = TOPOLOGY.numa_nodes_of(CpuSet.parse(sets[f"{ns}/g4"]))
    assert pods[f"{ns}/g4"][ann.NUMA_NODES] == ann.format_ids(list(g4_nodes))
    # Shared pods are kept off the exclusive CPUs (a NUMA-bound pod is pinned, not
    # exclusive: see README, Kubernetes).
    exclusive = CpuSet().union(*(CpuSet.parse(sets[f"{ns}/{n}"]) for n in ("g4", "g2")))
    assert CpuSet.parse(sets[f"{ns}/burst"]).isdisjoint(exclusive)

    # Bad annotations: an Event naming the annotation and the fix; the defaults applied.
    def bad_events() -> list[dict[str, Any]] | None:
        found = events_for(kube_plane, ns, ann.REASON_INVALID_ANNOTATION)
        return found if len(found) >= 2 else None

    events = wait_for("CorralInvalidAnnotation events", bad_events)
    by_pod = {e["involvedObject"]["name"]: e["message"] for e in events}
    assert (
        ann.CPUSET_POLICY in by_pod["bad"] and "exclusive, numa, shared, immovable" in by_pod["bad"]
    )
    assert ann.QOS in by_pod["badqos"] and "LC or BE" in by_pod["badqos"]
    assert all(e["type"] == "Warning" for e in events)

    # The NRT: one zone per NUMA node, cpu and memory, batch, costs absent (a preset).
    def published() -> nrt.NodeResourceTopology | None:
        obj = _nrt(kube_plane, node)
        pods_now = [(ns, p["metadata"]["name"]) for p in list_pods(kube_plane, node)]
        if obj is None or obj.attribute(nrt.ATTR_FINGERPRINT) != fingerprint.sign(pods_now):
            return None
        return obj

    obj = wait_for("the NRT of this node with the fingerprint of its pods", published)
    assert [z.name for z in obj.numa_zones] == [f"node-{i}" for i in range(8)]
    assert obj.attribute(nrt.ATTR_SCOPE) == "pod"
    assert obj.attribute(nrt.ATTR_POLICY) == "none"
    assert obj.attribute(nrt.ATTR_FINGERPRINT_METHOD) == "all"
    zone1 = obj.zone("node-1")
    assert zone1 is not None
    cpu1 = zone1.resource("cpu")
    assert cpu1 is not None and cpu1.capacity == "32" and cpu1.allocatable == "32"
    # numa1's 3 exclusive CPUs are not available on node-1 any more.
    from corral.kube.quantity import cpu_millis

    assert cpu_millis(cpu1.available) <= 29000
    for zone in obj.numa_zones:
        names = {r.name for r in zone.resources}
        assert {"cpu", "memory", ann.BATCH_CPU, ann.BATCH_MEMORY} <= names
    # The node's status carries the batch resources (BE pods can request them).
    status = kube_plane.request("GET", f"/api/v1/nodes/{node}")["status"]
    assert int(status["allocatable"][ann.BATCH_CPU]) > 0
    assert int(status["capacity"][ann.BATCH_MEMORY]) > 0

    # Too big for what is left: CorralPlacementFailed, with the reason.
    create_pods(
        kube_plane, [pod_body("huge", node, namespace=ns, cpu="250", memory="1Gi", guaranteed=True)]
    )
    failed = wait_for(
        "CorralPlacementFailed", lambda: events_for(kube_plane, ns, ann.REASON_PLACEMENT_FAILED)
    )
    assert failed[0]["involvedObject"]["name"] == "huge" and failed[0]["message"]
    assert ann.CPUSET not in annotations_of(list_pods(kube_plane, node))[f"{ns}/huge"]

    # A deleted pod's workload goes, and its CPUs come back in the NRT.
    before = cpu_millis(cpu1.available)
    kube_plane.request("DELETE", f"/api/v1/namespaces/{ns}/pods/numa1?gracePeriodSeconds=0")
    wait_for(
        "numa1 gone from the agent",
        lambda: all(w["id"] != f"{ns}/numa1" for w in agent.api("/workloads")["workloads"]),
    )

    def node1_available() -> int | None:
        obj = _nrt(kube_plane, node)
        zone = None if obj is None else obj.zone("node-1")
        res = None if zone is None else zone.resource("cpu")
        return None if res is None else cpu_millis(res.available)

    def freed() -> bool:
        now = node1_available()
        return now is not None and now == before + 3000

    wait_for("node-1's CPUs available again", freed)


def test_kill9_mid_burst_then_restart_converges(
    kube_plane: KubePlane, node: str, tmp_path: Path
) -> None:
    ns = node
    proc = AgentProcess(kube_plane, node, tmp_path)
    proc.start()
    try:
        bodies = [
            pod_body(
                f"p{i}", node, namespace=ns, cpu=str(1 + i % 2), memory="64Mi", guaranteed=True
            )
            for i in range(60)
        ] + [pod_body(f"s{i}", node, namespace=ns, cpu="250m") for i in range(20)]
        create_pods(kube_plane, bodies[:40])
        wait_for("some pods annotated", lambda: len(_cpusets(kube_plane, node)) >= 5, every_s=0.05)
        proc.kill9()
        create_pods(kube_plane, bodies[40:])  # more arrive while it is down
        proc.start()
        wait_for("all 80 pods annotated", lambda: _all_annotated(kube_plane, node, 80), 120)

        wait_for("annotations equal to placements", lambda: _converged(kube_plane, proc, 80), 60)
        _assert_no_cpu_twice(kube_plane, node, {f"{ns}/p{i}" for i in range(60)})
    finally:
        proc.stop()


def test_apiserver_restart_and_compaction_are_survived(
    kube_plane: KubePlane, node: str, agent: AgentProcess
) -> None:
    ns = node
    create_pods(
        kube_plane,
        [pod_body("before", node, namespace=ns, cpu="1", guaranteed=True, memory="64Mi")],
    )
    wait_for("the first pod annotated", lambda: _all_annotated(kube_plane, node, 1))
    # The apiserver goes away mid-watch and comes back: the agent reconnects and resumes.
    kube_plane.restart_apiserver()
    create_pods(
        kube_plane,
        [pod_body("after-restart", node, namespace=ns, cpu="1", guaranteed=True, memory="64Mi")],
    )
    wait_for(
        "a pod created after the restart annotated", lambda: _all_annotated(kube_plane, node, 2), 90
    )
    # Frozen while pods come and go and etcd is compacted: its resourceVersion is gone (410).
    agent.pause()
    try:
        create_pods(
            kube_plane,
            [
                pod_body(
                    f"while-paused-{i}", node, namespace=ns, cpu="1", guaranteed=True, memory="64Mi"
                )
                for i in range(3)
            ],
        )
        kube_plane.request("DELETE", f"/api/v1/namespaces/{ns}/pods/before?gracePeriodSeconds=0")
        kube_plane.compact_etcd()
        kube_plane.restart_apiserver(down_s=0.5)
    finally:
        agent.resume()
    wait_for("pods created while paused annotated", lambda: _all_annotated(kube_plane, node, 4), 90)
    wait_for(
        "the deleted pod's workload removed (seen through the relist)",
        lambda: all(w["id"] != f"{ns}/before" for w in agent.api("/workloads")["workloads"]),
        60,
    )


def test_be_pods_are_evicted_when_batch_capacity_stays_short(
    kube_plane: KubePlane, node: str, tmp_path: Path
) -> None:
    ns = node
    for name, value in (("corral-test-low", 10), ("corral-test-high", 1000)):
        try:
            kube_plane.request(
                "POST",
                "/apis/scheduling.k8s.io/v1/priorityclasses",
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": name},
                    "value": value,
                },
            )
        except Exception as err:
            assert "409" in str(err), err
    # 90 % margin: batch-cpu is about 25 CPUs on the 255 allocatable; BE pods ask for 40.
    proc = AgentProcess(
        kube_plane,
        node,
        tmp_path,
        kube={"batch_cpu_margin": 0.9, "evict_after_s": 1.0, "evict_interval_s": 1.0},
    )
    proc.start()
    try:
        be = {ann.BATCH_CPU: "10000"}
        create_pods(
            kube_plane,
            [
                pod_body("lc", node, namespace=ns, cpu="8", memory="1Gi", guaranteed=True),
                pod_body(
                    "be-high-1", node, namespace=ns, extra=be, priority_class="corral-test-high"
                ),
                pod_body(
                    "be-high-2", node, namespace=ns, extra=be, priority_class="corral-test-high"
                ),
                pod_body(
                    "be-low-1", node, namespace=ns, extra=be, priority_class="corral-test-low"
                ),
                pod_body(
                    "be-low-2", node, namespace=ns, extra=be, priority_class="corral-test-low"
                ),
            ],
        )

        def evicted() -> list[str] | None:
            events = events_for(kube_plane, ns, ann.REASON_EVICTED)
            names = sorted(e["involvedObject"]["name"] for e in events)
            return names if len(names) >= 2 else None

        names = wait_for("two evictions", evicted, 60)
        assert names == ["be-low-1", "be-low-2"]
        pods = {p["metadata"]["name"]: p for p in list_pods(kube_plane, node)}
        # Evicted through the Eviction API: the pods are terminating (no kubelet ends them).
        assert all("deletionTimestamp" in pods[n]["metadata"] for n in names)
        for keep in ("lc", "be-high-1", "be-high-2"):
            assert "deletionTimestamp" not in pods[keep]["metadata"]
        message = events_for(kube_plane, ns, ann.REASON_EVICTED)[0]["message"]
        assert ann.BATCH_CPU in message and "short" in message
        time.sleep(3)  # capacity now covers the rest: no third eviction
        assert len(events_for(kube_plane, ns, ann.REASON_EVICTED)) == 2
    finally:
        proc.stop()
