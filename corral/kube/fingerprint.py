"""The pod-set fingerprint of the upstream podfingerprint library (k8stopologyawareschedwg),
version ``v001``, as NodeResourceTopology attribute ``nodeTopologyPodsFingerprint``.

A pod is identified by namespace and name only. Algorithm: for each pod,
``h = xxh64(name, seed=xxh64(namespace))``; sort the 64-bit values; feed each, as 8
little-endian bytes, to one new xxh64 (seed 0); the sign is ``"pfp0" + "v001" +`` the
big-endian hex digest. The order pods are given in never matters.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import StrEnum
from typing import Final

import xxhash

PREFIX: Final = "pfp0"
VERSION: Final = "v001"
ATTRIBUTE: Final = "nodeTopologyPodsFingerprint"
ATTRIBUTE_METHOD: Final = "nodeTopologyPodsFingerprintMethod"
ANNOTATION: Final = "topology.node.k8s.io/fingerprint"


class Method(StrEnum):
    """Which pods the fingerprint covers (the ``...FingerprintMethod`` attribute value)."""

    ALL = "all"
    WITH_EXCLUSIVE_RESOURCES = "with-exclusive-resources"


class FingerprintCheck(StrEnum):
    """The result of `check`."""

    MATCH = "match"
    MISMATCH = "mismatch"
    MALFORMED = "malformed"
    INCOMPATIBLE_VERSION = "incompatible-version"


def pod_hash(namespace: str, name: str) -> int:
    """The 64-bit hash of one pod."""
    seed = xxhash.xxh64_intdigest(namespace.encode())
    return xxhash.xxh64_intdigest(name.encode(), seed=seed)


def sign(pods: Iterable[tuple[str, str]]) -> str:
    """The fingerprint of the set of ``(namespace, name)`` pairs."""
    digest = xxhash.xxh64()
    for value in sorted(pod_hash(ns, name) for ns, name in pods):
        digest.update(struct.pack("<Q", value))
    return PREFIX + VERSION + digest.hexdigest()


def check(fingerprint: str, pods: Iterable[tuple[str, str]]) -> FingerprintCheck:
    """Whether ``fingerprint`` is the one of ``pods`` (upstream ``Fingerprint.Check``)."""
    if len(fingerprint) < 16 or fingerprint[:4] != PREFIX:
        return FingerprintCheck.MALFORMED
    if fingerprint[4:8] != VERSION:
        return FingerprintCheck.INCOMPATIBLE_VERSION
    if sign(pods) != fingerprint:
        return FingerprintCheck.MISMATCH
    return FingerprintCheck.MATCH
