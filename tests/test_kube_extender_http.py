"""The extender's HTTP surface, called directly on a real loopback server: the bodies the
real scheduler sends (shared samples), bad bodies (4xx naming the field, never a 5xx or a
traceback), and the latency target (p99 < 20 ms per call at 16 nodes)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.kube.client import ConnectionFailedError
from corral.kube.extender.config import ExtenderSettings
from corral.kube.extender.reserve import OverReserve
from corral.kube.extender.server import ExtenderApp, percentile
from corral.kube.extender.service import Extender
from corral.kube.extender.view import ClusterView
from corral.kube.watch import Change, ChangeType
from tests.kube_extender_nrt import Z, node_json, nrt_json, pod_json
from tests.kube_plane import SHARED_K8S

SAMPLES = SHARED_K8S / "samples"
NODES = [f"n{i:02d}" for i in range(16)]


class Unreachable:
    """An apiserver that cannot be reached (bad bodies never get this far)."""

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        raise ConnectionFailedError(f"GET {path}: unreachable in this test")

    async def create(self, path: str, body: Any) -> dict[str, Any]:
        raise ConnectionFailedError(f"POST {path}: unreachable in this test")

    async def patch(self, path: str, body: Any) -> dict[str, Any]:
        raise ConnectionFailedError(f"PATCH {path}: unreachable in this test")


class Server:
    def __init__(self, app: ExtenderApp) -> None:
        self.app = app
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=0, lifespan="off", log_level="critical", http="h11"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started and time.monotonic() < end:
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        return resp.status, resp.read()


def make_view() -> ClusterView:
    view = ClusterView(OverReserve())
    for i, name in enumerate(NODES):  # 16 nodes, 8 NUMA zones each (an EPYC in NPS4)
        zones = [Z(32, 32 - (i + z) % 20, z // 4) for z in range(8)]
        view.on_node(Change(ChangeType.ADDED, name, node_json(name, 256, batch_millis=i * 1000)))
        view.on_nrt(Change(ChangeType.ADDED, name, nrt_json(name, zones, threads_per_core=2)))
    for name in ("fake-node-1", "fake-node-2", "fake-node-3"):
        view.on_nrt(Change(ChangeType.ADDED, name, nrt_json(name, [Z(2, 2), Z(2, 2)])))
    return view


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    view = make_view()
    app = ExtenderApp(Extender(view, Unreachable(), ExtenderSettings()), max_body_bytes=2**20)
    with Server(app) as srv:
        yield srv


def test_the_real_schedulers_filter_body_keeps_the_node_list_form(server: Server) -> None:
    body = (SAMPLES / "filter-request.json").read_bytes()
    status, raw = server.call("POST", "/filter", body)
    assert status == 200
    answer = json.loads(raw)
    sent = json.loads(body)
    assert answer["NodeNames"] is None and answer["Error"] == ""
    names = [n["metadata"]["name"] for n in answer["Nodes"]["items"]]
    assert names == [n["metadata"]["name"] for n in sent["Nodes"]["items"]]
    status, raw = server.call(
        "POST", "/prioritize", (SAMPLES / "prioritize-request.json").read_bytes()
    )
    assert status == 200 and {h["Host"] for h in json.loads(raw)} == set(names)


def test_names_form_answers_with_names_and_both_failure_maps(server: Server) -> None:
    pod = pod_json("huge", cpus="200")
    status, raw = server.call(
        "POST", "/filter", json.dumps({"Pod": pod, "NodeNames": NODES[:3]}).encode()
    )
    answer = json.loads(raw)
    assert status == 200 and answer["NodeNames"] == [] and answer["Nodes"] is None
    assert set(answer["FailedAndUnresolvableNodes"]) == set(NODES[:3])
    assert answer["FailedNodes"] == answer["FailedAndUnresolvableNodes"]  # v1.20 reads this
    assert "even when empty" in answer["FailedNodes"]["n00"]


BAD = [
    (b"not json", "body"),
    (b"[]", "ExtenderArgs"),
    (b"{}", "Pod"),
    (b'{"Pod": {"metadata": {"name": "p"}, "spec": {}}, "NodeNames": [1]}', "NodeNames"),
    (b'{"Pod": {"metadata": {"name": "p"}, "spec": {}}}', "NodeNames"),
    (b'{"Pod": {"metadata": {}, "spec": {}}, "NodeNames": ["n00"]}', "Pod.metadata.name"),
    (
        b'{"Pod": {"metadata": {"name": "p"}, "spec": {"containers": 3}}, "NodeNames": []}',
        "Pod.spec.containers",
    ),
    (
        b'{"Pod": {"metadata": {"name": "p"}, "spec": {"containers": [{"resources": {"limits":'
        b' {"cpu": "lots"}}}]}}, "NodeNames": ["n00"]}',
        "resources",
    ),
    (
        b'{"Pod": {"metadata": {"name": "p"}, "spec": {}}, "Nodes": {"items": [{}]}}',
        "Nodes.items[0]",
    ),
]


@pytest.mark.parametrize(("body", "field"), BAD)
@pytest.mark.parametrize("verb", ["filter", "prioritize"])
def test_bad_bodies_get_a_400_naming_the_field(
    server: Server, verb: str, body: bytes, field: str
) -> None:
    status, raw = server.call("POST", f"/{verb}", body)
    assert status == 400, raw
    error = json.loads(raw)["Error"]
    assert field in error and "Traceback" not in error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"PodNamespace": "d", "Node": "n"}', "PodName"),
        (b'{"PodName": "p", "PodNamespace": "d", "PodUID": 5, "Node": "n"}', "PodUID"),
        (b'"x"', "ExtenderBindingArgs"),
    ],
)
def test_bad_bind_bodies_get_a_400_naming_the_field(
    server: Server, body: bytes, field: str
) -> None:
    status, raw = server.call("POST", "/bind", body)
    assert status == 400 and field in json.loads(raw)["Error"]


def test_other_paths_methods_and_sizes(server: Server) -> None:
    assert server.call("GET", "/filter")[0] == 405
    assert server.call("POST", "/nope", b"{}")[0] == 404
    assert server.call("POST", "/filter", b" " * (2**20 + 10))[0] == 413
    assert server.call("GET", "/healthz")[0] == 200
    assert (
        server.call(
            "POST",
            "/corral/filter",
            json.dumps({"Pod": pod_json("p", cpus="1"), "NodeNames": ["n00"]}).encode(),
        )[0]
        == 200
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
pods = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {"name": st.text(min_size=1, max_size=5)}, optional={"annotations": json_values}
        ),
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "containers": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "resources": st.dictionaries(
                                st.sampled_from(["limits", "requests"]), json_values, max_size=2
                            )
                        },
                    ),
                    max_size=2,
                )
            },
        ),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"Pod": pods}, optional={"NodeNames": json_values, "Nodes": json_values}
        ),
    ),
    verb=st.sampled_from(["filter", "prioritize", "bind"]),
)
def test_no_body_gets_a_5xx(server: Server, body: Any, verb: str) -> None:
    status, raw = server.call("POST", f"/{verb}", json.dumps(body).encode())
    assert status < 500, raw
    assert b"Traceback" not in raw


@pytest.mark.slow
@pytest.mark.parametrize("form", ["names", "nodes"])
def test_p99_under_20ms_per_call_at_16_nodes(server: Server, form: str) -> None:
    nodes = {"items": [node_json(n, 256) for n in NODES]}
    timings: dict[str, list[float]] = {"filter": [], "prioritize": []}
    for i in range(300):
        pod = pod_json(f"p{i}", cpus=str(1 + i % 24))
        args = {"Pod": pod, "NodeNames": NODES} if form == "names" else {"Pod": pod, "Nodes": nodes}
        body = json.dumps(args).encode()
        for verb, values in timings.items():
            start = time.perf_counter()
            status, _ = server.call("POST", f"/{verb}", body)
            values.append(time.perf_counter() - start)
            assert status == 200
    for verb, values in timings.items():
        p99_ms = percentile(values, 0.99) * 1000
        print(f"{form} {verb}: p50 {percentile(values, 0.5) * 1000:.2f} ms p99 {p99_ms:.2f} ms")
        assert p99_ms < 20, f"{verb} p99 {p99_ms:.1f} ms"
