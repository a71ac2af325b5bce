"""Input that cannot poison the agent (issue 12, item 1): bounded workload fields, a bounded
body reader, errors that name the field and the fix, and a 500 that leaks nothing.

The fault cases of the issue are reproduced here: a NUL byte in a cgroup (it used to be
stored and kill the sampler, in a crash loop), a lone surrogate (a 500 that failed the 32
valid requests sharing its decision), 100,000-deep nesting, a 5000-digit integer, a 10 MiB
container id, Infinity, ``cpus: true``, ``9999999999Ei`` and ``../../../etc``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.agent.api import MAX_BODY_BYTES, nested_deeper_than, parse_json_body
from corral.agent.config import settings_from
from corral.bench.agent_process import AgentProcess
from corral.errors import InputError
from corral.placement.workload import (
    MAX_MEMORY_BYTES,
    TooManyDigits,
    json_int,
    parse_bytes,
    workload_from_mapping,
)
from corral.topology.cpuset import CpuSet
from tests.fixtures.asgi_agent import AsgiAgent

HEX = "0123456789abcdef" * 4


# --- the workload model ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ({"cgroup": "a\x00b"}, "cgroup", "control characters"),
        ({"cgroup": "\ud800"}, "cgroup", "surrogate"),
        ({"cgroup": "../../../etc"}, "cgroup", "'..'"),
        ({"cgroup": "a/./b"}, "cgroup", "'.'"),
        ({"cgroup": "a//b"}, "cgroup", "empty"),
        ({"cgroup": "/"}, "cgroup", "empty"),
        ({"cgroup": "a b"}, "cgroup", "whitespace"),
        ({"cgroup": "x\n"}, "cgroup", "whitespace"),
        ({"cgroup": "a/" * 40 + "b"}, "cgroup", "at most 32 components"),
        ({"cgroup": "a" * 256}, "cgroup", "255 bytes"),
        ({"cgroup": "a/" * 2100}, "cgroup", "4096"),
        ({"container_id": "a" * (10 * 2**20)}, "container_id", "not a container id"),
        ({"container_id": "xyz"}, "container_id", "12-64 hex"),
        ({"container_id": "abc"}, "container_id", "12-64 hex"),
        ({"container_id": HEX + "\n"}, "container_id", "not a container id"),
        ({"cpus": True}, "cpus", "got bool"),
        ({"cpus": "2"}, "cpus", "got str"),
        ({"cpus": float("inf")}, "cpus", "finite"),
        ({"cpus": float("nan")}, "cpus", "finite"),
        ({"cpus": 10**5000}, "cpus", "between 0.001 and 4096"),
        ({"cpus": 1e-9}, "cpus", "between 0.001"),
        ({"cpus": 5000}, "cpus", "between 0.001 and 4096"),
        ({"cpus": TooManyDigits(5000)}, "cpus", "5000 digits"),
        ({"predicted_cpus": float("inf")}, "predicted_cpus", "finite"),
        ({"predicted_cpus": float("nan")}, "predicted_cpus", "finite"),
        ({"predicted_cpus": False}, "predicted_cpus", "got bool"),
        ({"memory_limit": "9999999999Ei"}, "memory_limit", "at most"),
        ({"memory_limit": 10**30}, "memory_limit", "at most"),
        ({"memory_limit": 1e300}, "memory_limit", "at most"),
        ({"memory_limit": float("inf")}, "memory_limit", "whole"),
        ({"memory_limit": TooManyDigits(5000)}, "memory_limit", "5000 digits"),
        ({"memory_limit": "1" * 30}, "memory_limit", "quantity"),
        ({"memory_limit": "\u0661\u0662"}, "memory_limit", "quantity"),  # Arabic-Indic digits
        ({"memory_request": "512Mi\n"}, "memory_request", "quantity"),
        ({"policy": "immovable", "cpuset": "0-99999999"}, "cpuset", "0-8191"),
        ({"policy": "immovable", "cpuset": [True]}, "cpuset", "integers"),
        ({"policy": "immovable", "cpuset": [9000]}, "cpuset", "0-8191"),
        ({"policy": "immovable", "cpuset": "0" * 5000}, "cpuset", "CPU list"),
        ({"\ud800": 1}, "'\\ud800'", "unknown key"),
        ({"x" * 1000: 1}, "'xxx", "unknown key"),
    ],
)
def test_poisonous_fields_are_refused_by_name_with_a_fix(
    extra: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(InputError) as err:
        workload_from_mapping({"id": "w", "cpus": 1, **extra}, where="body")
    assert err.value.field.startswith(f"body.{field}"), err.value.field
    assert fragment in err.value.problem, err.value.problem
    assert err.value.fix
    assert len(str(err.value)) < 1000  # a 10 MiB value is never echoed back
    str(err.value).encode("utf-8")  # nor a surrogate


@pytest.mark.parametrize(
    "wid",
    ["", "a" * 254, "web\n", "-web", "w\x00", "w\ud800", "we b", "a/", "/a", "NS/a", "ns/b/c"],
)
def test_bad_ids_are_refused(wid: str) -> None:
    with pytest.raises(InputError) as err:
        workload_from_mapping({"id": wid, "cpus": 1})
    assert err.value.field == "workload.id"


def test_documented_forms_are_accepted_and_normalised() -> None:
    w = workload_from_mapping({"id": "a" * 253, "cpus": 4096, "cgroup": "/kubepods/pod1/c/"})
    assert w.cgroup == "kubepods/pod1/c"
    kube = workload_from_mapping(
        {"id": "kube-system/coredns-7db6d8ff4d-x2x9z", "cpus": 0.001, "predicted_cpus": 0}
    )
    assert kube.id.startswith("kube-system/")
    assert workload_from_mapping({"id": "c", "cpus": 1, "container_id": f"containerd://{HEX}"})
    assert workload_from_mapping({"id": "c", "cpus": 1, "container_id": HEX[:12].upper()})
    cpuset = workload_from_mapping({"id": "p", "cpus": 1, "policy": "immovable", "cpuset": "8191"})
    assert cpuset.cpuset == CpuSet([8191])
    assert parse_bytes("1.5Gi") == 3 * 2**29
    assert parse_bytes("1Pi") == MAX_MEMORY_BYTES
    assert parse_bytes(2**40) == 2**40


def test_the_memory_bound_is_settable_below_the_ceiling_only() -> None:
    spec = {"id": "m", "cpus": 1, "memory_limit": "2Gi"}
    with pytest.raises(InputError, match="at most 1073741824 bytes"):
        workload_from_mapping(spec, max_memory_bytes=2**30)
    big = {**spec, "memory_limit": MAX_MEMORY_BYTES + 1}
    with pytest.raises(InputError, match="at most"):
        workload_from_mapping(big, max_memory_bytes=2**60)


def test_a_stored_spec_reloads_to_the_same_workload() -> None:
    w = workload_from_mapping(
        {"id": "r", "cpus": 2, "policy": "immovable", "cpuset": [1, 0], "memory_limit": "1Mi"}
    )
    assert type(w).model_validate_json(w.model_dump_json(exclude_none=True)) == w


def test_the_config_file_takes_the_same_cgroup_rule() -> None:
    for bad in ("../x", "corral\x00", "a//b"):
        with pytest.raises(InputError, match=r"config\.cgroup_parent"):
            settings_from({"cgroup_parent": bad})
    with pytest.raises(InputError, match=r"config\.state_path"):
        settings_from({"state_path": "/tmp/a\x00b"})
    assert settings_from({"cgroup_parent": "/corral/"}).cgroup_parent == "corral"


# --- the body reader ------------------------------------------------------------------------
def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\x00', max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), inner, max_size=3)
    ),
    max_leaves=30,
)


@given(value=JSON, limit=st.integers(0, 8), ascii_only=st.booleans())
def test_the_depth_scan_agrees_with_the_parsed_depth(
    value: Any, limit: int, ascii_only: bool
) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nested_deeper_than(raw, limit) == (_depth(value) > limit)


def test_deep_nesting_is_refused_before_the_parser_recurses() -> None:
    deep = b'{"cpus": 1, "cgroup": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InputError, match="deeper than 32"):
        parse_json_body(deep)
    brackets_in_a_string = json.dumps({"cgroup": "[" * 1000, "k": ['\\"[{']}).encode()
    assert parse_json_body(brackets_in_a_string)["cgroup"] == "[" * 1000


def test_long_integers_are_never_converted() -> None:
    body = parse_json_body(b'{"memory_limit": ' + b"9" * 100_000 + b', "cpus": -1}')
    assert body == {"memory_limit": TooManyDigits(100_000), "cpus": -1}
    assert json_int("-" + "9" * 20) == -(10**20 - 1)
    with pytest.raises(InputError, match="UTF-8"):
        parse_json_body(b'{"cpus": "\xff"}')
    with pytest.raises(InputError, match="not valid JSON"):
        parse_json_body(b'{"cpus": 1')


# --- the API in-process ---------------------------------------------------------------------
@pytest.fixture
def api(tmp_path: Path) -> Iterator[AsgiAgent]:
    with AsgiAgent(tmp_path) as agent:
        yield agent


POISON: dict[str, tuple[bytes, str]] = {
    "nul": (b'{"cpus": 1, "cgroup": "a\\u0000b"}', "body.cgroup"),
    "surrogate": (b'{"cpus": 1, "cgroup": "\\ud800"}', "body.cgroup"),
    "surrogate key": (b'{"cpus": 1, "\\udfff": 1}', "body.'\\udfff'"),
    "infinity": (b'{"cpus": Infinity}', "body.cpus"),
    "predicted infinity": (b'{"cpus": 1, "predicted_cpus": Infinity}', "body.predicted_cpus"),
    "nan": (b'{"cpus": NaN}', "body.cpus"),
    "bool": (b'{"cpus": true}', "body.cpus"),
    "digits": (b'{"cpus": 1, "memory_limit": ' + b"9" * 5000 + b"}", "body.memory_limit"),
    "exabytes": (b'{"cpus": 1, "memory_limit": "9999999999Ei"}', "body.memory_limit"),
    "escape": (b'{"cpus": 1, "cgroup": "../../../etc"}', "body.cgroup"),
    "container": (b'{"cpus": 1, "container_id": "' + b"a" * 60_000 + b'"}', "body.container_id"),
    "depth": (b'{"cpus": 1, "cgroup": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "body"),
    "not utf-8": (b'{"cpus": "\xc3\x28"}', "body"),
    "not an object": (b"[1, 2]", "body"),
    "id": (b'{"id": "\\ud800", "cpus": 1}', "id"),
}


@pytest.mark.parametrize("case", list(POISON))
def test_poison_bodies_are_a_422_naming_the_field_and_store_nothing(
    api: AsgiAgent, case: str
) -> None:
    raw, field = POISON[case]
    for wait in ("true", "false"):
        response = api.request("PUT", f"/workloads/p?wait={wait}", content=raw)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["field"] == field, body
        assert body["fix"] and body["detail"]
        assert "Traceback" not in response.text
    assert api.request("GET", "/workloads/p").status_code == 404


def test_bodies_over_the_limit_are_a_413_read_no_further(api: AsgiAgent) -> None:
    big = b'{"cpus": 1, "container_id": "' + b"a" * (10 * 2**20) + b'"}'
    declared = api.request("PUT", "/workloads/big", content=big)
    assert declared.status_code == 413, declared.text
    assert declared.json()["field"] == "body" and declared.json()["fix"]

    sent: list[int] = []

    async def chunks() -> Any:  # no Content-Length: the reader counts as it goes
        for _ in range(1000):
            sent.append(1)
            yield b" " * 8192

    streamed = api.request("PUT", "/workloads/big", content=chunks())
    assert streamed.status_code == 413
    assert len(sent) * 8192 <= MAX_BODY_BYTES + 2 * 8192  # stopped at the limit, not at 8 MiB
    exact = b'{"cpus": 1}'.ljust(MAX_BODY_BYTES)
    assert api.request("PUT", "/workloads/big?wait=true", content=exact).status_code == 201


def test_every_refusal_has_the_error_body(api: AsgiAgent) -> None:
    cases = [
        ("PUT", "/workloads/x?wait=maybe", b'{"cpus": 1}', 422, "query.wait"),
        ("GET", "/workloads/ghost", None, 404, None),
        ("PATCH", "/workloads/x", b"{}", 405, None),
        ("GET", "/nowhere", None, 404, None),
        ("PUT", "/workloads/x?wait=true", b'{"cpus": 17, "policy": "exclusive"}', 409, "cpus"),
        ("PUT", "/workloads/x", b'{"id": "y", "cpus": 1}', 422, "id"),
    ]
    for method, url, content, status, field in cases:
        response = api.request(method, url, content=content)
        assert response.status_code == status, (url, response.text)
        body = response.json()
        assert set(body) == {"detail", "field", "fix"}
        assert body["field"] == field and body["fix"], body


def test_an_unexpected_error_is_a_generic_500_logged_once(
    api: AsgiAgent, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api.service is not None

    def broken() -> dict[str, Any]:
        raise RuntimeError("secret internals /etc/shadow")

    monkeypatch.setattr(api.service, "status", broken)  # an injected fault, not input
    with caplog.at_level(logging.ERROR, logger="corral.agent.api"):
        response = api.request("GET", "/status")
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal error; see the agent log",
        "field": None,
        "fix": None,
    }
    assert "secret" not in response.text and "Traceback" not in response.text
    logged = [r for r in caplog.records if r.getMessage() == "api.internal_error"]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert api.request("GET", "/healthz").status_code == 200


# --- the real agent over HTTP ---------------------------------------------------------------
INVALID = {
    "surrogate": b'{"cpus": 0.25, "cgroup": "\\ud800"}',
    "nul": b'{"cpus": 0.25, "cgroup": "a\\u0000b"}',
    "infinity": b'{"cpus": 0.25, "predicted_cpus": Infinity}',
    "depth": b'{"cpus": 0.25, "cgroup": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
}
FIELDS = {
    "surrogate": "body.cgroup",
    "nul": "body.cgroup",
    "infinity": "body.predicted_cpus",
    "depth": "body",
}


@pytest.mark.slow
def test_bad_requests_are_refused_alone_and_poison_nothing(tmp_path: Path) -> None:
    settings = {
        "topology": "toy-16",
        "dry_run": True,
        "coalesce_window_s": 0.05,  # the 36 requests share decisions
        "sample_period_s": 0.2,
    }
    requests = [
        (f"ok-{i}", b'{"cpus": 0.25, "cgroup": "/kubepods/pod%d/c"}' % i) for i in range(32)
    ]
    requests += [(f"bad-{name}", raw) for name, raw in INVALID.items()]
    with AgentProcess(tmp_path, settings) as proc:
        with httpx.Client(base_url=proc.url, timeout=60) as http:

            def put(item: tuple[str, bytes]) -> httpx.Response:
                wid, raw = item
                return http.put(
                    f"/workloads/{wid}?wait=true",
                    content=raw,
                    headers={"content-type": "application/json"},
                )

            with ThreadPoolExecutor(len(requests)) as pool:
                answers = dict(
                    zip((wid for wid, _ in requests), pool.map(put, requests), strict=True)
                )
            for wid, response in answers.items():
                if wid.startswith("ok-"):
                    assert response.status_code == 201, (wid, response.text)
                else:
                    assert response.status_code == 422, (wid, response.text)
                    assert response.json()["field"] == FIELDS[wid.removeprefix("bad-")]
            # The oversized cases, over a real socket: refused without being read.
            huge_id = b'{"cpus": 1, "container_id": "' + b"a" * (10 * 2**20) + b'"}'
            deep = b'{"cpus": 1, "cgroup": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            for raw in (huge_id, deep):
                refused = http.put("/workloads/big?wait=true", content=raw)
                assert refused.status_code == 413, refused.text
                assert refused.json()["field"] == "body"
            # Several sampling periods pass: the sampler reads every stored cgroup path.
            time.sleep(1.0)
            assert http.get("/healthz").status_code == 200
            stored = {w["id"] for w in http.get("/workloads").json()["workloads"]}
            assert stored == {f"ok-{i}" for i in range(32)}
        assert proc.terminate() == 0, proc.log_tail()
    # A restart on the same state file starts cleanly: nothing poisonous was stored.
    with AgentProcess(tmp_path, settings) as again, httpx.Client(base_url=again.url) as http:
        items = http.get("/workloads").json()["workloads"]
        assert len(items) == 32 and {w["status"] for w in items} == {"placed"}
        assert items[0]["spec"]["cgroup"].startswith("kubepods/pod")
        assert again.terminate() == 0, again.log_tail()
    assert "Traceback" not in (tmp_path / "agent.log").read_text()
