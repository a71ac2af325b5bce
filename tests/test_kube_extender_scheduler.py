"""corral's extender driven by the REAL kube-scheduler v1.20.2 on the session's control
plane: a second kube-scheduler per node form (profiles ``corral-names`` with
nodeCacheCapable true and ``corral-nodes`` with false), both calling one ``corral kube
extender`` process. Nodes and NRT objects are created by the tests (no node agent); each
test labels its nodes and pins its pods to them with a nodeSelector."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.bench.cluster import Process, extender_process, scheduler_process
from corral.kube import nrt
from tests.kube_extender_nrt import Z, node_json, nrt_json, pod_json
from tests.kube_plane import KubePlane

NAMES, NODES = "corral-names", "corral-nodes"
NS = "default"


class Env:
    """The extender and the two schedulers."""

    def __init__(self, plane: KubePlane, port: int) -> None:
        self.plane = plane
        self.port = port
        self.created_nodes: list[str] = []
        self.created_pods: list[str] = []

    def clean(self) -> None:
        """Delete what the tests created (pods at once: there is no kubelet)."""
        for name in self.created_pods:
            with contextlib.suppress(urllib.error.HTTPError):
                self.plane.request(
                    "DELETE", f"/api/v1/namespaces/{NS}/pods/{name}", {"gracePeriodSeconds": 0}
                )
        for name in self.created_nodes:
            for path in (f"/api/v1/nodes/{name}", f"{nrt.PATH}/{name}"):
                with contextlib.suppress(urllib.error.HTTPError):
                    self.plane.request("DELETE", path)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return dict(json.loads(r.read()))

    def post(self, verb: str, body: Any) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/{verb}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def nodes(self, tag: str, specs: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Create Nodes + NRTs (spec: cpus, zones, gpus, ...); wait for the extender to see
        them. Returns the nodeSelector for pods."""
        before = self.stats()["topologies"]
        for name, spec in specs.items():
            self.created_nodes.append(name)
            self.plane.request(
                "POST",
                "/api/v1/nodes",
                node_json(
                    name, spec["cpus"], labels={"corral-test": tag}, gpu_mib=spec.get("gpu_mib", 0)
                ),
            )
            self.plane.request(
                "POST",
                nrt.PATH,
                nrt_json(
                    name,
                    spec["zones"],
                    gpus=spec.get("gpus", ()),
                    threads_per_core=spec.get("tpc", 1),
                ),
            )
        wait(
            "extender sees the topologies",
            lambda: self.stats()["topologies"] >= before + len(specs),
        )
        return {"corral-test": tag}

    def pod(self, name: str) -> dict[str, Any]:
        return dict(self.plane.request("GET", f"/api/v1/namespaces/{NS}/pods/{name}"))

    def bound(self, name: str, timeout_s: float = 30) -> dict[str, Any]:
        return wait(
            f"pod {name} bound",
            lambda: (p := self.pod(name))["spec"].get("nodeName") and p,
            timeout_s,
        )

    def create(self, body: dict[str, Any]) -> None:
        self.created_pods.append(body["metadata"]["name"])
        self.plane.request("POST", f"/api/v1/namespaces/{NS}/pods", body)

    def events(self, name: str) -> list[str]:
        data = self.plane.request(
            "GET", f"/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name={name}"
        )
        return [str(e.get("message")) for e in data.get("items") or []]


def wait(
    what: str,
    check: Callable[[], Any],
    timeout_s: float = 30,
    describe: Callable[[], str] = lambda: "",
) -> Any:
    end = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}) {describe()}")


@pytest.fixture(scope="module")
def env(kube_plane: KubePlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = Path(tmp_path_factory.mktemp("extender"))
    procs: list[Process] = []
    try:
        ext, port = extender_process(kube_plane.kubeconfig, work)
        procs.append(ext)
        url = f"http://127.0.0.1:{port}"
        for name, cache_capable in ((NAMES, True), (NODES, False)):
            procs.append(
                scheduler_process(
                    kube_plane.bin,
                    kube_plane.dir,
                    work,
                    extender_url=url,
                    scheduler_name=name,
                    node_cache_capable=cache_capable,
                )
            )
        environment = Env(kube_plane, port)
        yield environment
        environment.clean()
    finally:
        for proc in reversed(procs):
            proc.stop()


def annotation(pod: dict[str, Any], name: str) -> str | None:
    return (pod["metadata"].get("annotations") or {}).get(name)


@pytest.mark.slow
@pytest.mark.parametrize("form", [NAMES, NODES])
def test_guaranteed_pod_lands_where_one_numa_zone_holds_it(env: Env, form: str) -> None:
    tag = f"align-{form}"
    # a: 8 CPUs free in all but split 4+4; b: 6 free on zone 1. Default Fit sees both.
    sel = env.nodes(
        tag,
        {
            f"{tag}-a": {"cpus": 16, "zones": [Z(8, 4), Z(8, 4)]},
            f"{tag}-b": {"cpus": 16, "zones": [Z(8, 1), Z(8, 6)]},
        },
    )
    env.create(pod_json(f"{tag}-p", cpus="5", scheduler=form, selector=sel))
    pod = env.bound(f"{tag}-p")
    assert pod["spec"]["nodeName"] == f"{tag}-b"
    assert annotation(pod, "corral.io/numa-nodes") == "1"


@pytest.mark.slow
@pytest.mark.parametrize("form", [NAMES, NODES])
def test_prioritize_picks_the_node_whose_zone_keeps_most_room(env: Env, form: str) -> None:
    tag = f"score-{form}"
    sel = env.nodes(
        tag,
        {
            f"{tag}-a": {"cpus": 16, "zones": [Z(8, 5), Z(8, 5)]},
            f"{tag}-b": {"cpus": 16, "zones": [Z(8, 8), Z(8, 2)]},
        },
    )
    calls = env.stats()["verbs"]["prioritize"]["calls"]
    env.create(pod_json(f"{tag}-p", cpus="4", scheduler=form, selector=sel))
    pod = env.bound(f"{tag}-p")
    # LeastAllocated on the zone corral would use: b keeps 4 of 8 CPUs, a only 1 of 5.
    assert (pod["spec"]["nodeName"], annotation(pod, "corral.io/numa-nodes")) == (f"{tag}-b", "0")
    assert env.stats()["verbs"]["prioritize"]["calls"] == calls + 1


@pytest.mark.slow
def test_two_quick_binds_on_stale_topology_never_share_a_zone(env: Env) -> None:
    tag = "stale"
    sel = env.nodes(tag, {f"{tag}-a": {"cpus": 16, "zones": [Z(8, 6), Z(8, 6)]}})
    before = env.stats()["reservations"]
    for i in range(3):
        env.create(pod_json(f"{tag}-{i}", cpus="5", scheduler=NAMES, selector=sel))
    zones = sorted(
        annotation(env.bound(f"{tag}-{i}"), "corral.io/numa-nodes") or "" for i in range(2)
    )
    assert zones == ["0", "1"]  # the NRT still says 6+6 free: the reservations said no
    assert env.stats()["reservations"] == before + 2
    wait(
        "third pod refused",
        lambda: [m for m in env.events(f"{tag}-2") if "corral: no NUMA zone" in m],
        describe=lambda: f"events {env.events(f'{tag}-2')}, stats {env.stats()}",
    )
    assert not env.pod(f"{tag}-2")["spec"].get("nodeName")
    # The node catches up: its fingerprint now covers both pods -> reservations dropped.
    fresh = nrt_json(f"{tag}-a", [Z(8, 1), Z(8, 1)], pods=[(NS, f"{tag}-0"), (NS, f"{tag}-1")])
    current = env.plane.request("GET", f"{nrt.PATH}/{tag}-a")
    fresh["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    env.plane.request("PUT", f"{nrt.PATH}/{tag}-a", fresh)
    wait("reservations dropped", lambda: env.stats()["reservations"] == before)


@pytest.mark.slow
def test_bind_retry_is_idempotent_and_refusal_books_nothing(env: Env) -> None:
    tag = "retry"
    sel = env.nodes(tag, {f"{tag}-a": {"cpus": 16, "zones": [Z(8, 8), Z(8, 3)]}})
    env.create(pod_json(f"{tag}-p", cpus="4", scheduler=NAMES, selector=sel))
    pod = env.bound(f"{tag}-p")
    reservations = env.stats()["reservations"]
    args = {
        "PodName": f"{tag}-p",
        "PodNamespace": NS,
        "PodUID": pod["metadata"]["uid"],
        "Node": f"{tag}-a",
    }
    assert env.post("bind", args) == (200, {"Error": ""})  # the scheduler's retry
    assert env.stats()["reservations"] == reservations
    # A pod no scheduler handles, bound by hand through the extender, twice.
    env.create(pod_json(f"{tag}-q", cpus="6", scheduler="nobody"))
    uid = env.pod(f"{tag}-q")["metadata"]["uid"]
    q = {"PodName": f"{tag}-q", "PodNamespace": NS, "PodUID": uid, "Node": f"{tag}-a"}
    status, body = env.post("bind", q)  # zone 0 has 8 - 4 (reserved) = 4 left: refused
    assert status == 200 and "corral: no NUMA zone" in body["Error"]
    assert env.stats()["reservations"] == reservations
    assert not env.pod(f"{tag}-q")["spec"].get("nodeName")
    small = pod_json(f"{tag}-r", cpus="2", scheduler="nobody")
    env.create(small)
    r = {**q, "PodName": f"{tag}-r", "PodUID": env.pod(f"{tag}-r")["metadata"]["uid"]}
    assert env.post("bind", r) == (200, {"Error": ""})
    assert env.post("bind", r) == (200, {"Error": ""})
    bound = env.pod(f"{tag}-r")
    assert bound["spec"]["nodeName"] == f"{tag}-a"
    assert annotation(bound, "corral.io/numa-nodes") == "1"  # best fit: 3 free beats 4
    assert env.stats()["reservations"] == reservations + 1
    gone = {**q, "PodName": f"{tag}-missing", "PodUID": "x"}
    assert "not found" in env.post("bind", gone)[1]["Error"]


@pytest.mark.slow
def test_gpu_pods_binpack_onto_the_fullest_device_that_fits(env: Env) -> None:
    tag = "gpu"
    sel = env.nodes(
        tag,
        {
            f"{tag}-a": {
                "cpus": 16,
                "zones": [Z(16, 16)],
                "gpus": [(16384, 8000), (16384, 3000)],
                "gpu_mib": 32768,
            },
            f"{tag}-b": {"cpus": 16, "zones": [Z(16, 16)]},
        },
    )
    first = pod_json(
        f"{tag}-1",
        cpus="1",
        guaranteed=False,
        extra={"corral.io/gpu-mem": "2048"},
        scheduler=NAMES,
        selector=sel,
    )
    env.create(first)
    p1 = env.bound(f"{tag}-1")
    assert (p1["spec"]["nodeName"], annotation(p1, "corral.io/gpu-index")) == (f"{tag}-a", "1")
    second = pod_json(
        f"{tag}-2",
        cpus="1",
        guaranteed=False,
        extra={"corral.io/gpu-mem": "2048"},
        scheduler=NAMES,
        selector=sel,
    )
    env.create(second)  # gpu-1 now has 952 MiB left (reserved): gpu-0 it is
    assert annotation(env.bound(f"{tag}-2"), "corral.io/gpu-index") == "0"
    big = pod_json(
        f"{tag}-3",
        cpus="1",
        guaranteed=False,
        extra={"corral.io/gpu-mem": "9000"},
        scheduler=NAMES,
        selector=sel,
    )
    env.create(big)  # 32 GiB in total on the node, but no device has 9000 MiB free
    wait(
        "gpu pod refused",
        lambda: any("no GPU has 9000MiB free" in m for m in env.events(f"{tag}-3")),
    )
    assert not env.pod(f"{tag}-3")["spec"].get("nodeName")


@pytest.mark.slow
def test_unschedulable_pod_stays_pending_with_a_readable_reason(env: Env) -> None:
    tag = "big"
    sel = env.nodes(
        tag,
        {
            f"{tag}-a": {"cpus": 16, "zones": [Z(8, 8, 0), Z(8, 8, 1)], "tpc": 2},
            f"{tag}-b": {"cpus": 16, "zones": [Z(8, 8, 0), Z(8, 8, 1)], "tpc": 2},
        },
    )
    env.create(pod_json(f"{tag}-p", cpus="12", scheduler=NODES, selector=sel))
    messages = wait(
        "FailedScheduling", lambda: [m for m in env.events(f"{tag}-p") if "corral" in m]
    )
    assert "no NUMA zone or socket of this node is big enough for 6 free whole cores" in messages[0]
    assert "0/" in messages[0]  # the scheduler's own "0/N nodes are available" summary
    time.sleep(1)
    assert not env.pod(f"{tag}-p")["spec"].get("nodeName")
    allowed = pod_json(
        f"{tag}-q",
        cpus="12",
        scheduler=NODES,
        selector=sel,
        annotations={"corral.io/allow-cross-socket": "true"},
    )
    env.create(allowed)
    assert annotation(env.bound(f"{tag}-q"), "corral.io/numa-nodes") == "0-1"
