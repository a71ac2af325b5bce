from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import InputError
from corral.placement.workload import (
    Policy,
    Qos,
    load_workloads,
    parse_bytes,
    parse_workloads_document,
    workload_from_mapping,
)
from corral.topology.cpuset import CpuSet

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1024, 1024),
        ("512Mi", 512 * 2**20),
        ("2G", 2 * 10**9),
        ("1.5Gi", 3 * 2**29),
        ("100", 100),
        ("1k", 1000),
        (2.0, 2),
    ],
)
def test_memory_quantities_are_read_as_bytes(value: object, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", ["-1", -5, "12Q", "0.5", True, [1], 1.5])
def test_bad_memory_quantities_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_bytes(value)


def test_a_full_workload_is_read_with_defaults() -> None:
    w = workload_from_mapping({"id": "cache", "cpus": 3, "memory_limit": "1Gi"})
    assert (w.qos, w.policy, w.memory_limit) == (Qos.BE, Policy.SHARED, 2**30)
    assert w.expected_use == 3
    p = workload_from_mapping(
        {"id": "agent", "cpus": 0.5, "policy": "immovable", "cpuset": "0-1", "predicted_cpus": 0.1}
    )
    assert p.cpuset == CpuSet([0, 1]) and p.expected_use == 0.1


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({"cpus": 1}, "workload.id", "Field required"),
        ({"id": "a b", "cpus": 1}, "workload.id", "letters, digits"),
        ({"id": "a", "cpus": 0}, "workload.cpus", "greater than 0"),
        ({"id": "a", "cpus": "many"}, "workload.cpus", "number"),
        ({"id": "a", "cpus": 2.5, "policy": "exclusive"}, "workload.cpus", "whole number"),
        ({"id": "a", "cpus": 1, "policy": "pinned"}, "workload.policy", "exclusive"),
        ({"id": "a", "cpus": 1, "qos": "gold"}, "workload.qos", "'LC'"),
        ({"id": "a", "cpus": 1, "policy": "immovable"}, "workload.cpuset", "fixed CPUs"),
        ({"id": "a", "cpus": 1, "cpuset": "0"}, "workload.cpuset", "only immovable"),
        (
            {"id": "a", "cpus": 1, "policy": "immovable", "cpuset": "3-1"},
            "workload.cpuset",
            "reversed range",
        ),
        ({"id": "a", "cpus": 1, "memory_limit": "lots"}, "workload.memory_limit", "quantity"),
        (
            {"id": "a", "cpus": 1, "memory_request": "2Gi", "memory_limit": "1Gi"},
            "workload.memory_request",
            "must not exceed",
        ),
        ({"id": "a", "cpus": 1, "cpu": 2}, "workload.cpu", "unknown key"),
        (
            {"id": "a", "cpus": 1, "cgroup": "/x", "container_id": "abc" * 4},
            "workload.cgroup",
            "not both",
        ),
    ],
)
def test_invalid_workloads_name_the_field(
    data: dict[str, object], field: str, fragment: str
) -> None:
    with pytest.raises(InputError) as err:
        workload_from_mapping(data)
    assert err.value.field == field
    assert fragment in str(err.value)


def test_documents_need_unique_ids_and_only_known_top_level_keys() -> None:
    with pytest.raises(InputError, match=r"workloads\[1\]\.id.*already used"):
        parse_workloads_document({"workloads": [{"id": "a", "cpus": 1}, {"id": "a", "cpus": 1}]})
    with pytest.raises(InputError, match="unknown top-level"):
        parse_workloads_document({"workloads": [], "pods": []})
    with pytest.raises(InputError, match="top-level 'workloads' list"):
        parse_workloads_document([])


def test_the_examples_load(tmp_path: Path) -> None:
    assert len(load_workloads(EXAMPLES / "workloads.yaml")) == 10
    assert len(load_workloads(EXAMPLES / "workloads-small.yaml")) == 2
    (tmp_path / "bad.yaml").write_text("workloads: [{id: a, cpus: 1}, {id: b}]")
    with pytest.raises(InputError, match=r"workloads\[1\]\.cpus"):
        load_workloads(tmp_path / "bad.yaml")
