"""Hypothesis against the API in-process (a real service, store and dry-run enforcer behind
``httpx.ASGITransport``): bodies built to poison it (surrogates, NUL and control characters,
huge and non-finite numbers, booleans for numbers, deep nesting, cut-off JSON, raw bytes)
never get a 5xx; every refusal has the error body; an accepted body reads back as the spec
it asked for; and after the run a restart on the same state file loads everything stored.

tests/test_agent_fuzz.py drives the subprocess agent from its OpenAPI document with mostly
well-typed values; this one goes after the values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.errors import InputError
from corral.placement.workload import workload_from_mapping
from tests.fixtures.asgi_agent import AsgiAgent

pytestmark = pytest.mark.slow

NASTY_TEXT = st.text(
    alphabet=st.characters(codec=None, categories=["Cs", "Cc", "Zs", "Lu", "Nd", "Po"])
    | st.sampled_from(list('/.:-_\x00\n\\"')),
    max_size=12,
)
NUMBERS = (
    st.integers(-(10**25), 10**25)
    | st.integers(10**19, 10**400)  # past 20 digits: refused unconverted
    | st.floats()  # NaN and +-Infinity included: JSON text "NaN", "Infinity"
    | st.sampled_from([0, 1, 2, 0.5, 16, 4096, 4097, 0.0001, 1e308, -1])
    | st.booleans()
)
SCALARS = st.none() | NUMBERS | NASTY_TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NASTY_TEXT, inner, max_size=3),
    max_leaves=8,
)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "id": st.sampled_from(["w0", "w1", "other"]) | NASTY_TEXT,
    "qos": st.sampled_from(["LC", "BE", "system", "lc", ""]),
    "cpus": NUMBERS | st.sampled_from(["2", "1.5"]),
    "policy": st.sampled_from(["exclusive", "numa", "shared", "immovable", "pinned"]),
    "memory_request": NUMBERS | st.sampled_from(["512Mi", "1.5Gi", "9999999999Ei", "1e3", "0.1Ki"]),
    "memory_limit": NUMBERS | st.sampled_from(["1Gi", "2G", "1Pi", "1.1Pi", "12Q", " 1Mi"]),
    "predicted_cpus": NUMBERS,
    "cpuset": st.sampled_from(["0-1", "0-99999999", "8191", "3-1", ""])
    | st.lists(st.integers(-1, 9000) | st.booleans(), max_size=4)
    | NUMBERS,
    "cgroup": st.sampled_from(["/kubepods/pod1/c", "a/b/", "../../../etc", "a//b", "/", "a\x00b"])
    | NASTY_TEXT,
    "container_id": st.sampled_from(["ab12" * 16, "containerd://" + "f" * 64, "ab" * 5, "xyz"])
    | NASTY_TEXT,
}
SHAPED = st.fixed_dictionaries(
    {"cpus": VALUES["cpus"]},
    optional={name: values | JSON for name, values in VALUES.items() if name != "cpus"},
)
# Mostly valid: each accepted body must read back as the spec it asked for.
VALID = st.fixed_dictionaries(
    {"cpus": st.sampled_from([0.5, 1, 2, 0.001, 3.25])},
    optional={
        "qos": st.sampled_from(["LC", "BE", "system"]),
        "policy": st.sampled_from(["shared", "numa"]),
        "memory_request": st.sampled_from(["512Mi", 2**20, "0.5Gi"]),
        "memory_limit": st.sampled_from(["1Gi", 2**31, "1Pi"]),
        "predicted_cpus": st.floats(0, 4096),
        "cgroup": st.sampled_from(["/kubepods/pod1/c", "a/b/", "system.slice/x.scope"]),
    },
)
IDS = st.sampled_from(["w0", "w1", "w2", "ns/w3"]) | NASTY_TEXT


def _encode(body: Any, how: str) -> bytes:
    if isinstance(body, bytes):
        return body
    if how == "raw":
        return b"\xff" + json.dumps(body).encode()
    text = json.dumps(body)  # ASCII with \\u escapes: surrogates and NUL travel as JSON
    if how == "cut":
        return text[: len(text) // 2].encode()
    if how == "deep":
        return ('{"cpus": 1, "cgroup": ' + "[" * 200 + "]" * 200 + "}").encode()
    return text.encode()


def _expected_spec(workload_id: str, body: Any) -> dict[str, Any] | None:
    """What the agent must store for ``body``, or None when it must refuse it."""
    if not isinstance(body, dict) or ("id" in body and body["id"] != workload_id):
        return None
    try:
        workload = workload_from_mapping({**body, "id": workload_id})
    except InputError:
        return None
    return workload.model_dump(mode="json", exclude_none=True)


def test_no_body_gets_a_5xx_and_accepted_ones_read_back(tmp_path: Path) -> None:
    accepted: dict[str, dict[str, Any]] = {}
    refused = 0
    examples = 0
    with AsgiAgent(tmp_path) as agent:

        @settings(
            max_examples=200,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            workload_id=IDS,
            body=st.one_of(VALID, SHAPED, SHAPED, JSON, st.binary(max_size=40)),
            how=st.sampled_from(["json", "json", "json", "json", "cut", "deep", "raw"]),
            wait=st.booleans(),
        )
        def check(workload_id: str, body: Any, how: str, wait: bool) -> None:
            nonlocal refused, examples
            examples += 1
            raw = _encode(body, how)
            path = f"/workloads/{quote(workload_id, safe='', errors='surrogatepass')}"
            url = f"{path}?wait={str(wait).lower()}"
            response = agent.request("PUT", url, content=raw)
            assert response.status_code < 500, (url, raw[:300], response.text)
            assert agent.request("GET", path).status_code in (200, 307, 404, 422)
            if response.status_code >= 400:
                refused += 1
                error = response.json()
                assert set(error) == {"detail", "field", "fix"}, error
                if response.status_code in (413, 422):
                    assert error["field"] and error["fix"], error
                return
            if response.status_code >= 300:  # /workloads/ redirects to /workloads
                return
            expected = _expected_spec(workload_id, body if how == "json" else None)
            assert expected is not None, (url, raw[:300], response.text)
            got = agent.request("GET", path).json()
            assert got["spec"] == expected
            assert got["spec"]["cpus"] == float(body["cpus"])
            accepted[workload_id] = expected

        check()
        assert agent.request("GET", "/healthz").status_code == 200
        listed = agent.request("GET", "/workloads").json()["workloads"]
        assert {w["id"] for w in listed} == set(accepted)
    assert examples >= 150  # the run was not cut short
    assert len(accepted) >= 2 and refused >= 20  # both paths were reached
    # Whatever was stored loads again: nothing poisonous reached the state file.
    with AsgiAgent(tmp_path) as again:
        reloaded = again.request("GET", "/workloads").json()["workloads"]
        assert {w["id"]: w["spec"] for w in reloaded} == accepted
