"""The extender's pure parts: pod requests, NRT reading, the filter decision, the scoring
strategies, the reservation cache, the watched view and the wire bodies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.errors import InputError
from corral.kube.extender.fit import Placement, Refusal, fit
from corral.kube.extender.podspec import ALLOW_CROSS_SOCKET, pod_request
from corral.kube.extender.reserve import OverReserve, Passthrough, Reservation
from corral.kube.extender.score import (
    Strategy,
    balanced_allocation,
    least_allocated,
    least_numa,
    prioritize,
    strategy_score,
)
from corral.kube.extender.score.common import Weights, to_extender
from corral.kube.extender.topo import node_topo
from corral.kube.extender.view import ClusterView
from corral.kube.extender.wire import parse_args, parse_binding
from corral.kube.fingerprint import sign
from corral.kube.nrt import nrt_from_json
from corral.kube.watch import Change, ChangeType
from corral.placement.workload import Policy, Qos
from tests.kube_extender_nrt import GIB, Z, nrt_json, pod_json


def topo(zones, **kw):
    return node_topo(nrt_from_json(nrt_json("n1", zones, **kw)))


def req(**kw):
    return pod_request(pod_json("p", **kw))


# --- pods -------------------------------------------------------------------------
def test_guaranteed_pod_with_whole_cpus_is_exclusive_lc():
    r = req(cpus="4")
    assert (r.policy, r.qos, r.managed, r.cpu_millis, r.memory_bytes) == (
        Policy.EXCLUSIVE,
        Qos.LC,
        True,
        4000,
        GIB,
    )


def test_fractional_guaranteed_and_burstable_pods_are_not_managed():
    assert not req(cpus="1500m").managed
    assert not req(cpus="2", guaranteed=False).managed


def test_numa_annotation_makes_a_burstable_pod_managed():
    r = req(cpus="2", guaranteed=False, annotations={"corral.io/cpuset-policy": "numa"})
    assert r.policy is Policy.NUMA and r.managed


def test_batch_cpu_makes_a_pod_be():
    r = pod_request(pod_json("p", extra={"corral.io/batch-cpu": "2000"}))
    assert r.qos is Qos.BE and r.batch_cpu_millis == 2000 and not r.managed


def test_bad_policy_annotation_is_kept_as_a_problem_naming_it():
    r = req(cpus="2", annotations={"corral.io/cpuset-policy": "bogus"})
    assert "corral.io/cpuset-policy" in r.problem and r.policy is Policy.EXCLUSIVE


def test_bad_quantity_names_the_field():
    pod = pod_json("p", cpus="two")
    with pytest.raises(InputError) as err:
        pod_request(pod)
    assert "resources" in str(err.value)


# --- topology -----------------------------------------------------------------------
def test_sockets_come_from_distances_when_not_published():
    t = topo([Z(8, 8, 0), Z(8, 8, 0), Z(8, 8, 1), Z(8, 8, 1)])
    assert {s: [z.id for z in zs] for s, zs in t.sockets.items()} == {0: [0, 1], 1: [2, 3]}


def test_no_distances_means_one_socket_per_zone():
    data = nrt_json("n", [Z(8, 8), Z(8, 8)])
    for z in data["zones"]:
        z.pop("costs")
    assert len(node_topo(nrt_from_json(data)).sockets) == 2


# --- filter -------------------------------------------------------------------------
def test_single_zone_best_fit_is_chosen():
    t = topo([Z(8, 6), Z(8, 4), Z(8, 8)])
    got = fit(t, req(cpus="4"))
    assert isinstance(got, Placement) and got.zones == (1,)


def test_node_with_room_only_across_zones_is_refused_resolvably():
    t = topo([Z(8, 3, 0), Z(8, 3, 1)])
    got = fit(t, req(cpus="4"))
    assert isinstance(got, Refusal) and not got.unresolvable
    assert "4 free CPUs" in got.reason


def test_exclusive_pods_count_free_whole_cores_on_smt():
    t = topo([Z(8, 3)], threads_per_core=2)  # 3 free threads = 1 whole core
    assert isinstance(fit(t, req(cpus="2")), Placement)
    refused = fit(t, req(cpus="3"))
    assert isinstance(refused, Refusal) and "2 free whole cores" in refused.reason
    numa = req(cpus="3", guaranteed=False, annotations={"corral.io/cpuset-policy": "numa"})
    assert isinstance(fit(t, numa), Placement)  # numa pods count CPUs, not cores


def test_big_pod_takes_zones_of_one_socket_never_two():
    t = topo([Z(8, 8, 0), Z(8, 2, 0), Z(8, 8, 1), Z(8, 8, 1)])
    got = fit(t, req(cpus="12"))
    assert isinstance(got, Placement) and got.zones == (2, 3) and got.sockets == 1
    t2 = topo([Z(8, 8, 0), Z(8, 2, 0), Z(8, 2, 1), Z(8, 8, 1)])
    refused = fit(t2, req(cpus="12"))
    assert isinstance(refused, Refusal) and not refused.unresolvable
    allowed = fit(t2, req(cpus="12", annotations={ALLOW_CROSS_SOCKET: "true"}))
    assert isinstance(allowed, Placement) and allowed.sockets == 2


def test_pod_bigger_than_any_socket_is_unresolvable():
    t = topo([Z(8, 8, 0), Z(8, 8, 1)])
    got = fit(t, req(cpus="12"))
    assert isinstance(got, Refusal) and got.unresolvable and "even when empty" in got.reason


def test_unmanaged_pods_pass_and_missing_topology_refuses_managed_ones():
    assert fit(None, req(cpus="1500m")) == Placement()
    got = fit(None, req(cpus="2"))
    assert isinstance(got, Refusal) and not got.unresolvable


def test_gpu_binpack_picks_the_fitting_device_with_least_free():
    t = topo([Z(8, 8)], gpus=[(16384, 8000), (16384, 3000), (16384, 1000)])
    got = fit(t, pod_request(pod_json("g", extra={"corral.io/gpu-mem": "2048"})))
    assert isinstance(got, Placement) and got.gpu == 1
    none = fit(t, pod_request(pod_json("g", extra={"corral.io/gpu-mem": "9000"})))
    assert isinstance(none, Refusal) and not none.unresolvable
    never = fit(t, pod_request(pod_json("g", extra={"corral.io/gpu-mem": "20000"})))
    assert isinstance(never, Refusal) and never.unresolvable


# --- scores -------------------------------------------------------------------------
def test_least_allocated_prefers_room_most_allocated_prefers_packing():
    roomy, tight = topo([Z(16, 16)]), topo([Z(16, 5)])
    pod = req(cpus="4")
    w = Weights()
    la = {
        n: strategy_score(t, pod, Strategy.LEAST_ALLOCATED, w)
        for n, t in (("r", roomy), ("t", tight))
    }
    ma = {
        n: strategy_score(t, pod, Strategy.MOST_ALLOCATED, w)
        for n, t in (("r", roomy), ("t", tight))
    }
    assert la["r"] > la["t"] and ma["t"] > ma["r"]


def test_upstream_zone_formulas():
    w = Weights()
    assert (
        least_allocated.zone_score({"cpu": 2, "memory": 1}, {"cpu": 4, "memory": 4}, w)
        == (50 + 75) // 2
    )
    # fractions 0.5 and 0.25: sample variance 0.03125 -> (1 - 0.03125) * 100
    assert balanced_allocation.zone_score({"cpu": 2, "memory": 1}, {"cpu": 4, "memory": 4}, w) == 96
    assert least_allocated.zone_score({"cpu": 5}, {"cpu": 4}, w) == 0


def test_least_numa_nodes_scores_one_zone_above_two():
    one = topo([Z(8, 8, 0), Z(8, 8, 0)])
    two = topo([Z(8, 4, 0), Z(8, 4, 0)])
    pod = req(cpus="6")
    assert least_numa.score(one, pod) == 100 - 12 + 6
    assert least_numa.score(two, pod) == 100 - 24 + 6
    assert to_extender(least_numa.score(one, pod)) > to_extender(least_numa.score(two, pod))


def test_be_pods_prefer_most_batch_cpu_left():
    pod = pod_request(pod_json("b", extra={"corral.io/batch-cpu": "1000"}))
    scores = prioritize(
        pod,
        {"a": None, "b": None},
        {"a": 2000, "b": 8000},
        strategy=Strategy.LEAST_ALLOCATED,
        weights=Weights(),
    )
    assert scores == {"a": 2, "b": 10}


@settings(max_examples=60, deadline=None)
@given(
    frees=st.lists(st.integers(0, 64), min_size=1, max_size=8),
    cpus=st.integers(1, 40),
    strategy=st.sampled_from(list(Strategy)),
)
def test_every_score_is_within_the_protocol_range(frees, cpus, strategy):
    t = topo([Z(64, f, i % 2) for i, f in enumerate(frees)])
    scores = prioritize(req(cpus=str(cpus)), {"n": t}, {}, strategy=strategy, weights=Weights())
    assert 0 <= scores["n"] <= 10


@settings(max_examples=60, deadline=None)
@given(
    frees=st.lists(st.integers(0, 16), min_size=1, max_size=6),
    cpus=st.integers(1, 40),
    smt=st.sampled_from([1, 2]),
)
def test_a_placement_never_books_more_than_the_zones_have(frees, cpus, smt):
    t = topo([Z(16, f, i % 2) for i, f in enumerate(frees)], threads_per_core=smt)
    got = fit(t, req(cpus=str(cpus)))
    if isinstance(got, Placement):
        for zone_id, millis in got.cpu_by_zone:
            zone = t.zone(zone_id)
            assert zone is not None and millis <= zone.cpu_available
        assert got.sockets == 1


# --- reservations ---------------------------------------------------------------------
def _reserve(cache, name, zone, millis, node="n1"):
    cache.reserve(
        Reservation(
            "default",
            name,
            f"uid-{name}",
            node,
            Placement(zones=(zone,), cpu_by_zone=((zone, millis),)),
        )
    )


def test_overreserve_keeps_reservations_until_the_fingerprint_matches():
    cache = OverReserve()
    t = topo([Z(8, 8), Z(8, 8)], fingerprint=sign([]))
    _reserve(cache, "a", 0, 6000)
    assert cache.effective(t).zones[0].cpu_available == 2000
    assert cache.resync("n1", sign([]), []) == 0  # stale: does not count pod a
    assert cache.resync("n1", None, []) == 0  # no fingerprint: keep
    assert cache.resync("n1", sign([("default", "a")]), [("default", "a")]) == 1
    assert cache.effective(t).zones[0].cpu_available == 8000


def test_passthrough_keeps_nothing():
    cache = Passthrough()
    _reserve(cache, "a", 0, 6000)
    t = topo([Z(8, 8)])
    assert cache.effective(t) is t and cache.get("default/a") is None


def test_view_drops_reservations_of_deleted_pods_and_resyncs_on_nrt():
    view = ClusterView(OverReserve())
    view.on_nrt(Change(ChangeType.ADDED, "n1", nrt_json("n1", [Z(8, 8)], pods=[])))
    _reserve(view.cache, "a", 0, 4000)
    pod = pod_json("a", cpus="4")
    pod["spec"]["nodeName"] = "n1"
    view.on_pod(Change(ChangeType.ADDED, "default/a", pod))
    assert view.topo("n1").zones[0].cpu_available == 4000
    fresh = nrt_json("n1", [Z(8, 4)], pods=[("default", "a")])
    view.on_nrt(Change(ChangeType.MODIFIED, "n1", fresh))
    assert view.cache.get("default/a") is None and view.topo("n1").zones[0].cpu_available == 4000
    _reserve(view.cache, "b", 0, 1000)
    view.on_pod(Change(ChangeType.DELETED, "default/b", pod_json("b")))
    assert view.cache.get("default/b") is None


# --- wire ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "ExtenderArgs"),
        ({}, "Pod"),
        ({"Pod": 3, "NodeNames": []}, "Pod"),
        ({"Pod": {}, "NodeNames": "n1"}, "NodeNames"),
        ({"Pod": {}}, "NodeNames"),
        ({"Pod": {}, "Nodes": {"items": [{"metadata": {}}]}}, "Nodes.items[0].metadata.name"),
    ],
)
def test_bad_extender_args_name_the_field(body, field):
    with pytest.raises(InputError) as err:
        parse_args(body)
    assert err.value.field == field


def test_keys_match_case_insensitively_and_both_forms_parse():
    a = parse_args({"pod": {"metadata": {"name": "p"}}, "nodenames": ["n1"], "Nodes": None})
    assert a.names_form and a.node_names == ("n1",)
    b = parse_args(
        {"Pod": {}, "NodeNames": None, "Nodes": {"items": [{"metadata": {"name": "x"}}]}}
    )
    assert not b.names_form and b.node_names == ("x",)
    with pytest.raises(InputError) as err:
        parse_binding({"PodName": "p", "PodNamespace": "d", "Node": ""})
    assert err.value.field == "Node"


# --- bind ---------------------------------------------------------------------------
class Api:
    """An apiserver answering GETs from a dict and failing Binding creation as told."""

    def __init__(self, pods, fail):
        self.pods, self.fail, self.created = pods, fail, []

    async def get(self, path, **params):
        return self.pods[path.rsplit("/", 1)[-1]]

    async def create(self, path, body):
        if self.fail is not None:
            raise self.fail
        self.created.append(body)
        return body


def _bind_env(fail):
    import asyncio

    from corral.kube.extender.config import ExtenderSettings
    from corral.kube.extender.service import Extender
    from corral.kube.extender.wire import BindingArgs

    view = ClusterView(OverReserve())
    view.on_nrt(Change(ChangeType.ADDED, "n1", nrt_json("n1", [Z(8, 8), Z(8, 8)])))
    pod = pod_json("p", cpus="4")
    pod["metadata"]["uid"] = "u1"
    view.on_pod(Change(ChangeType.ADDED, "default/p", pod))
    api = Api({"p": pod}, fail)
    ext = Extender(view, api, ExtenderSettings())
    result = asyncio.run(ext.bind(BindingArgs("p", "default", "u1", "n1")))
    return view, api, result


def test_bind_sends_the_zones_on_the_binding_itself():
    view, api, result = _bind_env(None)
    assert result == {"Error": ""}
    assert api.created[0]["metadata"]["annotations"] == {"corral.io/numa-nodes": "0"}
    assert api.created[0]["target"]["name"] == "n1"
    assert view.cache.get("default/p") is not None


def test_a_refused_binding_releases_its_reservation():
    from corral.kube.client import ApiError

    view, _, result = _bind_env(ApiError(403, "Forbidden", "no"))
    assert "Forbidden" in result["Error"] or "no" in result["Error"]
    assert view.cache.get("default/p") is None


def test_an_unreachable_apiserver_keeps_the_reservation_for_the_retry():
    from corral.kube.client import ConnectionFailedError

    view, _, result = _bind_env(ConnectionFailedError("down"))
    assert "down" in result["Error"]
    assert view.cache.get("default/p") is not None


# --- manifests ----------------------------------------------------------------------
def test_scheduler_configs_send_every_pod_and_ignore_gpu_mem_in_fit():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
    for version in ("v1", "v1beta1"):
        doc = yaml.safe_load(
            (root / "scheduler" / f"kube-scheduler-config-{version}.yaml").read_text()
        )
        assert doc["apiVersion"] == f"kubescheduler.config.k8s.io/{version}"
        main, resources = doc["extenders"]
        assert main["bindVerb"] == "bind" and "managedResources" not in main
        assert resources["managedResources"] == [
            {"name": "corral.io/gpu-mem", "ignoredByScheduler": True}
        ]
        assert not {"filterVerb", "prioritizeVerb", "bindVerb"} & set(resources)
    rbac = list(yaml.safe_load_all((root / "extender" / "rbac.yaml").read_text()))
    rules = next(d for d in rbac if d["kind"] == "ClusterRole")["rules"]
    assert any("pods/binding" in r["resources"] and r["verbs"] == ["create"] for r in rules)
    kinds = {
        d["kind"] for d in yaml.safe_load_all((root / "extender" / "deployment.yaml").read_text())
    }
    assert kinds == {"Deployment", "Service", "ConfigMap"}
