"""BE antagonists: stress-ng stressors and their own throughput metric (bogo ops)."""

from __future__ import annotations

import re

from corral.errors import InputError

ANTAGONISTS = ("cpu", "cache", "vm", "stream", "matrix")
_EXTRA = {"vm": ["--vm-bytes", "64M"], "stream": ["--stream-l3-size", "4M"]}
_METRIC = re.compile(r"metrc:\s*\[\d+\]\s+(?P<name>[a-z0-9-]+)\s+(?P<ops>\d+)\s+(?P<real>[\d.]+)")


def check_antagonists(names: tuple[str, ...]) -> None:
    """`InputError` naming the first unknown antagonist."""
    for i, name in enumerate(names):
        if name not in ANTAGONISTS:
            raise InputError(
                f"--antagonist[{i}]",
                f"unknown antagonist {name!r}",
                f"use {', '.join(ANTAGONISTS)}",
            )


def stress_argv(antagonist: str, workers: int, seconds: float) -> list[str]:
    """A stress-ng command running ``workers`` instances of ``antagonist``."""
    return [
        "stress-ng",
        f"--{antagonist}",
        str(workers),
        *_EXTRA.get(antagonist, []),
        "--metrics-brief",
        "--timeout",
        f"{max(1, round(seconds))}s",
    ]


def bogo_ops(output: str, antagonist: str) -> float | None:
    """Total bogo ops stress-ng reported for ``antagonist`` (None if it reported none)."""
    for match in _METRIC.finditer(output):
        if match["name"] == antagonist:
            return float(match["ops"])
    return None
