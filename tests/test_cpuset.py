from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.topology.cpuset import CpuSet


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("", []),
        ("\n", []),
        ("0", [0]),
        ("0-3", [0, 1, 2, 3]),
        ("0-3,8,10-11", [0, 1, 2, 3, 8, 10, 11]),
        (" 5 , 1-2 \n", [1, 2, 5]),
        ("3,1,2", [1, 2, 3]),
        ("2-2", [2]),
    ],
)
def test_parse_reads_the_kernel_list_format(text: str, ids: list[int]) -> None:
    assert list(CpuSet.parse(text)) == ids


@pytest.mark.parametrize(
    ("cpus", "printed"),
    [
        ([], ""),
        ([0], "0"),
        ([0, 1], "0-1"),
        ([0, 1, 2, 3, 8, 10, 11], "0-3,8,10-11"),
        ([11, 10, 3, 2, 1, 0, 8], "0-3,8,10-11"),
        ([1, 3, 5], "1,3,5"),
    ],
)
def test_printing_is_canonical(cpus: list[int], printed: str) -> None:
    assert str(CpuSet(cpus)) == printed


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("3-1", "reversed range '3-1'"),
        ("a", "'a' is not a CPU id"),
        ("-1", "negative CPU id"),
        ("1,-2", "negative CPU id"),
        ("1,,2", "empty element"),
        ("1-", "not a CPU id"),
        ("0-3x", "not a CPU id"),
        ("99999999", "larger than any host"),
    ],
)
def test_malformed_lists_are_refused_with_the_element_named(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        CpuSet.parse(text)


def test_negative_ids_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        CpuSet([-1])


def test_set_algebra() -> None:
    a, b = CpuSet.parse("0-5"), CpuSet.parse("4-9")
    assert str(a | b) == "0-9"
    assert str(a & b) == "4-5"
    assert str(a - b) == "0-3"
    assert str(a ^ b) == "0-3,6-9"
    assert CpuSet.parse("1-2") <= a and not b <= a
    assert a.isdisjoint(CpuSet.parse("7")) and not a.isdisjoint(b)
    assert str(CpuSet().union(a, b, CpuSet([20]))) == "0-9,20"
    assert str(a.first(2)) == "0-1"


def test_equal_sets_hash_alike_and_are_immutable() -> None:
    assert CpuSet.parse("0-2") == CpuSet([2, 1, 0])
    assert len({CpuSet.parse("0-2"), CpuSet([0, 1, 2])}) == 1
    with pytest.raises(AttributeError):
        CpuSet.parse("0").extra = 1  # type: ignore[attr-defined]


@given(st.sets(st.integers(min_value=0, max_value=2048), max_size=200))
def test_printing_then_parsing_round_trips(ids: set[int]) -> None:
    cpus = CpuSet(ids)
    assert CpuSet.parse(str(cpus)) == cpus
    assert str(CpuSet.parse(str(cpus))) == str(cpus)
