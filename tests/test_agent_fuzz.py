"""API fuzzing driven by the agent's own OpenAPI document: no request gets a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.bench.agent_process import AgentProcess

pytestmark = pytest.mark.slow

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
VALID_ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
IDS = st.one_of(VALID_ID, VALID_ID, VALID_ID, st.text(min_size=1, max_size=40))


def _typed(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the schema's types (mostly valid, sometimes out of range)."""
    typed: list[st.SearchStrategy[Any]] = []
    for option in schema.get("anyOf", [schema]):
        kind = option.get("type")
        if "enum" in option:
            typed.append(st.sampled_from(option["enum"]))
        elif "$ref" in option:
            typed.append(st.sampled_from(["LC", "BE", "system", "exclusive", "shared", "numa"]))
        elif kind == "number":
            typed.append(
                st.sampled_from([1, 2, 0.5, 3])
                | st.floats(min_value=-2, max_value=80, allow_nan=False)
            )
        elif kind == "integer":
            typed.append(st.integers(-10, 10**12))
        elif kind == "string":
            typed.append(st.sampled_from(["0-3", "512Mi", "1Gi", "7-2", "x"]) | st.text(max_size=8))
        elif kind == "array":
            typed.append(st.lists(st.integers(-2, 40), max_size=5))
        elif kind == "null":
            typed.append(st.none())
    return st.one_of(*typed) if typed else JSON


def _bodies(spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Bodies shaped by the schema: required fields present, optional ones sometimes, each
    typed (often valid) or anything; and now and then any JSON at all."""
    props = spec["properties"]
    required = set(spec.get("required", []))
    value = {name: _typed(schema) | JSON for name, schema in props.items()}
    typed = {name: _typed(schema) for name, schema in props.items()}
    shaped = st.fixed_dictionaries(
        {name: typed[name] for name in required},
        optional={name: value[name] for name in props if name not in required | {"id"}},
    )
    return st.one_of(shaped, shaped, shaped, JSON)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    settings_ = {"topology": "toy-16", "dry_run": True, "coalesce_window_s": 0.005}
    with AgentProcess(tmp_path_factory.mktemp("fuzz"), settings_) as proc:
        yield proc


@pytest.fixture(scope="module")
def openapi(agent: AgentProcess) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{agent.url}/openapi.json").json()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_the_openapi_document_lists_every_endpoint(openapi: dict[str, Any]) -> None:
    found = {(p, m) for p, m, _ in _operations(openapi)}
    for expected in [
        ("/topology", "get"),
        ("/workloads", "get"),
        ("/workloads/{workload_id}", "put"),
        ("/workloads/{workload_id}", "get"),
        ("/workloads/{workload_id}", "delete"),
        ("/rebalance", "post"),
        ("/assignments", "get"),
        ("/status", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    ]:
        assert expected in found


def _fuzz(
    http: httpx.Client,
    path: str,
    method: str,
    operation: dict[str, Any],
    body_schema: dict[str, Any],
) -> None:
    has_body = "requestBody" in operation
    queries = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]

    @settings(
        max_examples=50 if has_body or "{" in path else 10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(
        workload_id=IDS,
        body=_bodies(body_schema) if has_body else st.none(),
        query=st.fixed_dictionaries(
            {},
            optional={
                q: st.sampled_from(["true", "false", "true", "1", "maybe", ""]) for q in queries
            },
        ),
        truncate=st.sampled_from([False, False, False, True]),
    )
    def check(workload_id: str, body: Any, query: dict[str, str], truncate: bool) -> None:
        url = path.replace("{workload_id}", quote(workload_id, safe=""))
        content = None
        if has_body:
            text = json.dumps(body)
            content = (text[:-1] if truncate else text).encode()
        response = http.request(
            method.upper(),
            url,
            params=query,
            content=content,
            headers={"content-type": "application/json"},
        )
        assert response.status_code < 500, (method, url, body, response.text)
        if response.status_code >= 400 and response.status_code != 405:
            assert "detail" in response.json()

    check()


def test_no_request_built_from_the_openapi_document_gets_a_5xx(
    agent: AgentProcess, openapi: dict[str, Any]
) -> None:
    put = openapi["paths"]["/workloads/{workload_id}"]["put"]
    body_schema = put["requestBody"]["content"]["application/json"]["schema"]
    with httpx.Client(base_url=agent.url, timeout=30) as http:
        for path, method, operation in _operations(openapi):
            _fuzz(http, path, method, operation, body_schema)
        assert http.get("/healthz").status_code == 200
        # The generator reaches the valid path too, not only the error paths.
        assert http.get("/workloads").json()["workloads"]
