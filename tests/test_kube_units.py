"""The pure parts of the Kubernetes node integration: annotations, quantities, the pod ->
workload mapping (QoS classes, kubelet's init-container rule), the upstream pod
fingerprint, NRT JSON, published capacity, kubelet's files, sysfs NUMA data, eviction order.

The fingerprint vector is the one the upstream podfingerprint library publishes
(k8stopologyawareschedwg/podfingerprint, Apache-2.0: its testdata/pods.json and the
fingerprint its TestCheck pins for it); tests/fixtures/podfingerprint_pods.json is that
pod list."""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from corral.agent.config import AgentSettings
from corral.errors import InputError
from corral.kube import annotations as ann
from corral.kube import fingerprint, nrt
from corral.kube.capacity import NodeSnapshot, PlacedPod, build_nrt, compute
from corral.kube.config import GpuDevice, KubeSettings, StaticCpuManager, kube_settings
from corral.kube.evict import shortfall, victim
from corral.kube.kubelet import read_cpu_manager_state, read_kubelet_config, reserved_from
from corral.kube.mode import prepare
from corral.kube.numa import numa_distances, numa_memory
from corral.kube.podmap import KubeQos, effective_request, kube_qos, pod_to_workload
from corral.kube.quantity import cpu_millis, format_cpu_millis, parse_quantity, whole_units
from corral.kube.watch import Backoff
from corral.placement.workload import Policy, Qos
from corral.topology.cpuset import CpuSet
from corral.topology.presets import epyc_7742_2s, toy_16

FIXTURES = Path(__file__).parent / "fixtures"
TOY = toy_16()
EPYC = epyc_7742_2s()


def _container(
    cpu: str | None = None,
    memory: str | None = None,
    *,
    limits: bool = False,
    name: str = "c",
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    requests.update(extra or {})
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = dict(requests)
    return {"name": name, "image": "x", "resources": resources}


def _pod(
    *containers: dict[str, Any],
    init: tuple[dict[str, Any], ...] = (),
    annotations: dict[str, str] | None = None,
    name: str = "p",
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": "n", "containers": list(containers)}
    if init:
        spec["initContainers"] = list(init)
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": "u1",
            "annotations": annotations or {},
        },
        "spec": spec,
        "status": status or {},
    }


# --- quantities ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Fraction(1, 2)),
        ("2", Fraction(2)),
        ("1.5", Fraction(3, 2)),
        ("1Gi", Fraction(2**30)),
        ("1k", Fraction(1000)),
        ("1e3", Fraction(1000)),
        ("100u", Fraction(1, 10**4)),
        (3, Fraction(3)),
    ],
)
def test_quantities_parse_exactly(text: str | int, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", "5Q", "1e3Gi", True])
def test_bad_quantities_name_the_field(bad: Any) -> None:
    with pytest.raises(InputError, match=r"requests\.cpu"):
        parse_quantity(bad, field="requests.cpu")


def test_cpu_millis_round_up_and_format() -> None:
    assert cpu_millis("0.0001") == 1
    assert cpu_millis("1500m") == 1500
    assert whole_units("1.5Ki") == 1536
    assert format_cpu_millis(2000) == "2"
    assert format_cpu_millis(1500) == "1500m"


# --- annotations ---------------------------------------------------------------------
def test_annotation_parsers_accept_the_documented_forms() -> None:
    assert ann.parse_policy(" Exclusive ") is Policy.EXCLUSIVE
    assert ann.parse_qos("be") is Qos.BE
    assert ann.parse_pin_cpus("0-3,8") == CpuSet.parse("0-3,8")
    assert ann.parse_numa_nodes("0-1") == (0, 1)
    assert ann.parse_gpu_index("0,2") == (0, 2)
    assert ann.format_ids([3, 1, 2]) == "1-3"
    assert ann.corral_annotations({"corral.io/qos": "LC", "other": "x"}) == {"corral.io/qos": "LC"}


@pytest.mark.parametrize(
    ("parse", "value", "name", "fix"),
    [
        (ann.parse_policy, "fast", ann.CPUSET_POLICY, "exclusive, numa, shared, immovable"),
        (ann.parse_qos, "gold", ann.QOS, "LC or BE"),
        (ann.parse_pin_cpus, "3-1", ann.PIN_CPUS, "kernel CPU list"),
        (ann.parse_pin_cpus, "", ann.PIN_CPUS, "kernel CPU list"),
        (ann.parse_numa_nodes, "x", ann.NUMA_NODES, "NUMA node ids"),
        (ann.parse_gpu_index, "0-99999", ann.GPU_INDEX, "GPU indices"),
    ],
)
def test_bad_annotations_name_the_annotation_and_the_fix(
    parse: Any, value: str, name: str, fix: str
) -> None:
    with pytest.raises(ann.AnnotationError) as err:
        parse(value)
    assert err.value.annotation == name
    assert name in str(err.value) and fix in str(err.value)


# --- pod -> workload -----------------------------------------------------------------
def test_qos_classes_follow_kubelet() -> None:
    assert kube_qos(_pod(_container())["spec"]) is KubeQos.BEST_EFFORT
    assert kube_qos(_pod(_container("1", "1Gi", limits=True))["spec"]) is KubeQos.GUARANTEED
    assert kube_qos(_pod(_container("1", limits=True))["spec"]) is KubeQos.BURSTABLE  # no memory
    assert kube_qos(_pod(_container("1", "1Gi"))["spec"]) is KubeQos.BURSTABLE
    two = _pod(_container("1", "1Gi", limits=True), _container(name="d"))
    assert kube_qos(two["spec"]) is KubeQos.BURSTABLE


def test_effective_request_takes_the_largest_init_container() -> None:
    pod = _pod(_container("1"), _container("500m", name="d"), init=(_container("3", name="i"),))
    assert effective_request(pod["spec"], "cpu") == 3
    pod = _pod(_container("2"), _container("2", name="d"), init=(_container("3", name="i"),))
    assert effective_request(pod["spec"], "cpu") == 4
    pod["spec"]["overhead"] = {"cpu": "250m"}
    assert effective_request(pod["spec"], "cpu") == Fraction(17, 4)


def test_default_policies_by_qos_class() -> None:
    g = pod_to_workload(_pod(_container("2", "1Gi", limits=True)), TOY).workload
    assert (g.qos, g.policy, g.cpus, g.memory_request) == (Qos.LC, Policy.EXCLUSIVE, 2.0, 2**30)
    frac = pod_to_workload(_pod(_container("1500m", "1Gi", limits=True)), TOY).workload
    assert (frac.qos, frac.policy) == (Qos.LC, Policy.SHARED)
    b = pod_to_workload(_pod(_container("500m")), TOY).workload
    assert (b.qos, b.policy, b.cpus) == (Qos.LC, Policy.SHARED, 0.5)
    be = pod_to_workload(_pod(_container()), TOY).workload
    assert (be.qos, be.policy) == (Qos.BE, Policy.SHARED)
    batch = pod_to_workload(
        _pod(_container(extra={ann.BATCH_CPU: "1500", ann.BATCH_MEMORY: "1Gi"})), TOY
    )
    assert batch.workload.qos is Qos.BE and batch.workload.cpus == 1.5
    assert batch.requests.batch_cpu_millis == 1500 and batch.workload.memory_request == 2**30
    assert batch.workload.id == "ns/p"


def test_annotations_override_and_bad_ones_keep_the_defaults() -> None:
    pinned = pod_to_workload(_pod(_container("1"), annotations={ann.PIN_CPUS: "2-3"}), TOY)
    assert pinned.workload.policy is Policy.IMMOVABLE and pinned.workload.cpuset == CpuSet.parse(
        "2-3"
    )
    assert not pinned.problems
    lc = pod_to_workload(
        _pod(_container(), annotations={ann.QOS: "LC", ann.CPUSET_POLICY: "numa"}), TOY
    )
    assert (lc.workload.qos, lc.workload.policy) == (Qos.LC, Policy.NUMA)
    bad = pod_to_workload(
        _pod(
            _container("2", "1Gi", limits=True),
            annotations={ann.CPUSET_POLICY: "fast", ann.QOS: "gold", ann.NUMA_NODES: "7"},
        ),
        TOY,
    )
    assert (bad.workload.qos, bad.workload.policy) == (Qos.LC, Policy.EXCLUSIVE)
    assert sorted(p.annotation for p in bad.problems) == sorted(
        [ann.CPUSET_POLICY, ann.QOS, ann.NUMA_NODES]
    )
    assert bad.numa_nodes is None
    frac = pod_to_workload(
        _pod(_container("1500m"), annotations={ann.CPUSET_POLICY: "exclusive"}), TOY
    )
    assert frac.workload.policy is Policy.SHARED
    assert "whole number" in str(frac.problems[0])
    nopin = pod_to_workload(
        _pod(_container("1"), annotations={ann.CPUSET_POLICY: "immovable"}), TOY
    )
    assert nopin.workload.policy is Policy.SHARED and ann.PIN_CPUS in str(nopin.problems[0])
    offline = pod_to_workload(_pod(_container("1"), annotations={ann.PIN_CPUS: "99"}), TOY)
    assert offline.workload.policy is Policy.SHARED and "not on this node" in str(
        offline.problems[0]
    )
    numa = pod_to_workload(_pod(_container("1"), annotations={ann.NUMA_NODES: "1"}), EPYC)
    assert numa.numa_nodes == (1,)


def test_container_ids_become_the_workloads_container() -> None:
    cid = "containerd://" + "ab" * 32
    one = pod_to_workload(
        _pod(_container("1"), status={"containerStatuses": [{"containerID": cid}]}), TOY
    )
    assert one.workload.container_id == cid and one.container_ids == (cid,)
    located = pod_to_workload(_pod(_container("1")), TOY, cgroup="kubepods/burstable/podu1")
    assert located.workload.cgroup == "kubepods/burstable/podu1"
    assert located.workload.container_id is None


def test_random_pods_always_map() -> None:
    rng = random.Random(7)
    values = ["fast", "LC", "BE", "exclusive", "immovable", "0-3", "3-1", "", "x", "99", "1"]
    names = [ann.CPUSET_POLICY, ann.QOS, ann.PIN_CPUS, ann.NUMA_NODES, ann.GPU_INDEX]
    for _ in range(300):
        annotations = {n: rng.choice(values) for n in rng.sample(names, rng.randint(0, 5))}
        cpu = rng.choice([None, "1", "2", "250m", "1500m"])
        mem = rng.choice([None, "1Gi"])
        mapped = pod_to_workload(
            _pod(_container(cpu, mem, limits=rng.random() < 0.5), annotations=annotations), TOY
        )
        assert mapped.workload.id == "ns/p"
        assert all(p.annotation in names for p in mapped.problems)


# --- fingerprint ---------------------------------------------------------------------
def test_fingerprint_matches_the_upstream_vector() -> None:
    pods = json.loads((FIXTURES / "podfingerprint_pods.json").read_text())
    pairs = [(p["namespace"], p["name"]) for p in pods]
    assert len(pairs) == 259
    assert fingerprint.sign(pairs) == "pfp0v001e477a4e3b2fc0ec6"
    shuffled = list(pairs)
    random.Random(1).shuffle(shuffled)
    assert fingerprint.sign(shuffled) == "pfp0v001e477a4e3b2fc0ec6"
    assert (
        fingerprint.check("pfp0v001e477a4e3b2fc0ec6", pairs) is fingerprint.FingerprintCheck.MATCH
    )
    assert (
        fingerprint.check("pfp0v001e477abb123fc0ec1", pairs)
        is fingerprint.FingerprintCheck.MISMATCH
    )
    assert (
        fingerprint.check("pfp0v000e477a4e3b2fc0ec6", pairs)
        is fingerprint.FingerprintCheck.INCOMPATIBLE_VERSION
    )
    assert fingerprint.check("x", pairs) is fingerprint.FingerprintCheck.MALFORMED
    assert (
        fingerprint.check("wrngv001e477a4e3b2fc0ec6", pairs)
        is fingerprint.FingerprintCheck.MALFORMED
    )
    assert fingerprint.sign(pairs[1:]) != fingerprint.sign(pairs)


# --- NRT -----------------------------------------------------------------------------
def _placed(
    pod: dict[str, Any], cpus: str | None, topology: Any = EPYC, predicted: float | None = None
) -> PlacedPod:
    return PlacedPod(
        pod_to_workload(pod, topology), None if cpus is None else CpuSet.parse(cpus), predicted
    )


def test_capacity_and_nrt_of_a_placed_node() -> None:
    exclusive = _placed(_pod(_container("4", "1Gi", limits=True), name="g"), "16-17,144-145")
    shared = _placed(_pod(_container("2"), name="s"), "0-15")
    be = _placed(_pod(_container(extra={ann.BATCH_CPU: "1000"}), name="b"), "0-15")
    snapshot = NodeSnapshot(
        topology=EPYC,
        reserved=CpuSet.parse("0"),
        kubelet_held=CpuSet(),
        memory_by_numa=dict.fromkeys(range(8), 64 * 2**30),
        pods=[exclusive, shared, be],
        cpu_margin=0.1,
        memory_margin=0.1,
        distances={a: {b: 10 if a == b else 32 for b in range(8)} for a in range(8)},
        gpus=(GpuDevice(index=0, memory_mib=16384, numa_node=1),),
    )
    cap = compute(snapshot)
    z0, z1 = cap.zones[0], cap.zones[1]
    assert (z0.cpu_capacity, z0.cpu_allocatable, z0.cpu_available) == (32000, 31000, 31000)
    assert (z1.cpu_allocatable, z1.cpu_available) == (32000, 28000)
    # BE capacity: allocatable - LC use - 10 % margin, per zone.
    assert z1.batch_cpu == 32000 - 4000 - 3200
    assert z0.batch_cpu == (31000 - 2000 - 3100)
    assert z1.memory_available == 63 * 2**30
    assert cap.batch_cpu == sum(z.batch_cpu for z in cap.zones)
    obj = build_nrt(
        "n",
        cap,
        distances=snapshot.distances,
        policy="single-numa-node",
        fingerprint=fingerprint.sign([("ns", "g")]),
        topology=EPYC,
    )
    again = nrt.nrt_from_json(json.loads(json.dumps(obj.to_json())))
    # What the extender needs for whole-core and one-socket fits.
    assert again.attribute(nrt.ATTR_THREADS_PER_CORE) == "2"
    sockets = {z.name: z.attribute(nrt.ATTR_SOCKET) for z in again.numa_zones}
    assert sockets == {f"node-{n}": "0" if n < 4 else "1" for n in range(8)}
    assert again.same_content(obj)
    zone = again.zone("node-1")
    assert zone is not None and zone.numa_id == 1
    cpu = zone.resource("cpu")
    assert cpu is not None and (cpu.capacity, cpu.allocatable, cpu.available) == ("32", "32", "28")
    assert [c.value for c in zone.costs][:2] == [32, 10]
    assert again.attribute(nrt.ATTR_SCOPE) == "pod"
    gpu = again.zone("gpu-0")
    assert gpu is not None and gpu.type == nrt.ZONE_TYPE_GPU and gpu.attribute("numa-node") == "1"
    assert cap.gpu_mem_mib == 16384


def test_prediction_and_controller_change_batch_capacity() -> None:
    base = dict(
        topology=TOY,
        reserved=CpuSet(),
        kubelet_held=CpuSet(),
        memory_by_numa={0: 2**30},
        cpu_margin=0.0,
        memory_margin=0.0,
    )
    by_request = compute(NodeSnapshot(pods=[_placed(_pod(_container("4")), "0-15", TOY)], **base))
    by_prediction = compute(
        NodeSnapshot(pods=[_placed(_pod(_container("4")), "0-15", TOY, 1.0)], **base)
    )
    assert by_request.batch_cpu == 12000 and by_prediction.batch_cpu == 15000
    controlled = compute(NodeSnapshot(pods=[], be_cpus=CpuSet.parse("12-15"), **base))
    assert controlled.batch_cpu == 4000


def test_nrt_from_json_names_malformed_fields() -> None:
    with pytest.raises(InputError, match=r"zones\[0\].resources\[0\].capacity"):
        nrt.nrt_from_json(
            {
                "metadata": {"name": "n"},
                "zones": [
                    {
                        "name": "node-0",
                        "type": "Node",
                        "resources": [
                            {"name": "cpu", "capacity": "x", "allocatable": "1", "available": "1"}
                        ],
                    }
                ],
            }
        )


# --- kubelet -------------------------------------------------------------------------
def test_kubelet_state_and_config(tmp_path: Path) -> None:
    assert read_cpu_manager_state(tmp_path) is None
    (tmp_path / "cpu_manager_state").write_text(
        json.dumps(
            {
                "policyName": "static",
                "defaultCpuSet": "0,3-15",
                "entries": {"uid1": {"app": "1-2"}},
                "checksum": 1,
            }
        )
    )
    state = read_cpu_manager_state(tmp_path)
    assert (
        state is not None
        and state.policy == "static"
        and state.exclusive_cpus == CpuSet.parse("1-2")
    )
    (tmp_path / "config.yaml").write_text(
        "kind: KubeletConfiguration\ncpuManagerPolicy: static\nkubeReserved: {cpu: 500m}\n"
        "systemReserved: {cpu: '1'}\ntopologyManagerPolicy: single-numa-node\n"
    )
    config = read_kubelet_config(tmp_path / "config.yaml")
    assert config is not None and config.reserved_cpu_count == 2
    assert config.topology_manager_policy == "single-numa-node"
    assert (
        reserved_from(config, reserved_cpus=None, kube_reserved_cpu=None, system_reserved_cpu=None)
        == 2
    )
    assert (
        reserved_from(config, reserved_cpus="0,8", kube_reserved_cpu=None, system_reserved_cpu=None)
        == "0,8"
    )
    assert (
        reserved_from(None, reserved_cpus=None, kube_reserved_cpu="1", system_reserved_cpu="1500m")
        == 3
    )
    (tmp_path / "cpu_manager_state").write_text("{not json")
    with pytest.raises(InputError, match="cpu_manager_state"):
        read_cpu_manager_state(tmp_path)


def test_static_cpu_manager_refused_or_avoided(tmp_path: Path) -> None:
    (tmp_path / "cpu_manager_state").write_text(
        json.dumps(
            {"policyName": "static", "defaultCpuSet": "0,3-15", "entries": {"u": {"c": "4-5"}}}
        )
    )
    agent = AgentSettings(topology="toy-16", state_path=tmp_path / "s.db")
    kube = KubeSettings(node_name="n", kubelet_root=tmp_path, reserved_cpus="0")
    with pytest.raises(InputError, match="--cpu-manager-policy=none"):
        prepare(agent, kube)
    avoided = prepare(agent, kube.model_copy(update={"static_cpu_manager": StaticCpuManager.AVOID}))
    assert avoided.kubelet_held == CpuSet.parse("4-5")
    assert avoided.agent.reserved_cpus == "0,4-5"
    assert any("keeps off" in n for n in avoided.notes)


def test_node_name_from_the_downward_api(tmp_path: Path) -> None:
    agent = AgentSettings(topology="toy-16", state_path=tmp_path / "s.db")
    kube = kube_settings({"kubelet_root": str(tmp_path)}, {"node_name": None})
    with pytest.raises(InputError, match="NODE_NAME"):
        prepare(agent, kube, env={})
    assert prepare(agent, kube, env={"NODE_NAME": "w1"}).kube.node_name == "w1"
    with pytest.raises(InputError, match=r"kube\.batch_cpu_margin"):
        kube_settings({"batch_cpu_margin": 2}, {})


# --- sysfs NUMA ----------------------------------------------------------------------
def test_numa_memory_and_distances_from_sysfs(tmp_path: Path) -> None:
    nodes = tmp_path / "devices/system/node"
    for n in (0, 1):
        (nodes / f"node{n}").mkdir(parents=True)
        (nodes / f"node{n}/meminfo").write_text(
            f"Node {n} MemTotal:       {1024 * (n + 1)} kB\nNode {n} MemFree: 1 kB\n"
        )
        (nodes / f"node{n}/distance").write_text("10 21\n" if n == 0 else "21 10\n")
    assert numa_memory(tmp_path, [0, 1], None) == {0: 2**20, 1: 2 * 2**20}
    assert numa_distances(tmp_path, [0, 1]) == {0: {0: 10, 1: 21}, 1: {0: 21, 1: 10}}
    # A preset with other nodes than the host: memory split evenly, distances unknown.
    assert numa_memory(tmp_path, [0, 1, 2, 3], 4 * 2**30) == dict.fromkeys(range(4), 2**30)
    assert numa_distances(tmp_path, [0, 1, 2, 3]) is None


# --- eviction ------------------------------------------------------------------------
def test_eviction_picks_the_lowest_priority_be_pod_never_lc() -> None:
    def be(name: str, millis: str, priority: int) -> Any:
        pod = _pod(_container(extra={ann.BATCH_CPU: millis}), name=name)
        pod["spec"]["priority"] = priority
        return pod_to_workload(pod, TOY)

    lc = pod_to_workload(_pod(_container("2", "1Gi", limits=True), name="lc"), TOY)
    pods = [lc, be("a", "2000", 10), be("b", "1000", 0), be("c", "3000", 0)]
    assert shortfall(pods, 5000, 0).cpu_millis == 1000
    assert not shortfall(pods, 6000, 0).short
    created = {"ns/b": "2026-01-01T00:00:00Z", "ns/c": "2026-01-01T00:00:00Z"}
    assert victim(pods, created).key == "ns/c"  # type: ignore[union-attr]
    created["ns/b"] = "2026-01-02T00:00:00Z"  # younger goes first
    assert victim(pods, created).key == "ns/b"  # type: ignore[union-attr]
    assert victim([lc], {}) is None


def test_backoff_grows_to_its_cap() -> None:
    rng = random.Random(3)
    delays = [Backoff(0.2, 5.0).delay(i, rng) for i in range(12)]
    assert 0.1 <= delays[0] <= 0.2
    assert all(2.5 <= d <= 5.0 for d in delays[6:])


def test_gpus_from_config_or_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from corral.kube.gpus import discover_gpus, parse_nvidia_smi

    assert parse_nvidia_smi("0, 16384\n1, 24576\ngarbage\n") == (
        GpuDevice(index=0, memory_mib=16384),
        GpuDevice(index=1, memory_mib=24576),
    )
    configured = (GpuDevice(index=3, memory_mib=8192, numa_node=1),)
    assert discover_gpus(configured) == configured
    # A real executable on PATH answering like nvidia-smi does.
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n[ \"$1\" = --query-gpu=index,memory.total ] && printf '0, 40960\\n'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert discover_gpus(None) == (GpuDevice(index=0, memory_mib=40960),)
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert discover_gpus(None) == ()
