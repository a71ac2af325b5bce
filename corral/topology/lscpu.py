"""Parse ``lscpu -p=CPU,CORE,SOCKET,NODE,CACHE`` output.

util-linux prints the CACHE column in one of two shapes: older versions as one field
``L1d:L1i:L2:L3``; newer ones (2.38 here) as an empty field followed by one field per
cache level, with a header comment naming them (``# CPU,Core,Socket,Node,,L1d,L1i,L2,L3``).
Both are read; the L3 id is the last cache field. An empty NODE (no NUMA) reads as 0, and
an empty or missing L3 falls back to the socket.
"""

from __future__ import annotations

from corral.errors import TopologyError
from corral.topology.model import Cpu, Topology


def parse_lscpu(text: str, *, name: str = "lscpu") -> Topology:
    """Build a topology from lscpu's parsable output; errors name the line."""
    records: list[Cpu] = []
    l3_index: int | None = _L3_UNKNOWN
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            header = _cache_names(stripped)
            if header is not None:
                l3_index = header.index("L3") if "L3" in header else None
            continue
        if not stripped:
            continue
        fields = [f.strip() for f in stripped.split(",")]
        where = f"line {number}"
        if len(fields) < 4:
            raise TopologyError(
                where,
                f"expected CPU,CORE,SOCKET,NODE[,CACHE], found {stripped!r}",
                "run lscpu -p=CPU,CORE,SOCKET,NODE,CACHE",
            )
        cpu = _int(fields[0], where, "CPU")
        core = _int(fields[1], where, "CORE")
        socket = _int(fields[2], where, "SOCKET")
        numa = _int(fields[3], where, "NODE") if fields[3] else 0
        caches = [c for f in fields[4:] for c in f.split(":")]
        caches = caches[1:] if caches and caches[0] == "" and len(caches) > 1 else caches
        if l3_index == _L3_UNKNOWN:
            # No header: the classic four levels are L1d, L1i, L2, L3.
            l3_text = caches[3] if len(caches) >= 4 else ""
        elif l3_index is None or l3_index >= len(caches):
            l3_text = ""
        else:
            l3_text = caches[l3_index]
        l3 = _int(l3_text, where, "CACHE L3") if l3_text else socket
        records.append(Cpu(id=cpu, core=core, socket=socket, numa=numa, l3=l3))
    if not records:
        raise TopologyError(
            "lscpu", "no CPU lines found", "run lscpu -p=CPU,CORE,SOCKET,NODE,CACHE"
        )
    return Topology.from_records(records, name=name)


_L3_UNKNOWN = -1


def _cache_names(comment: str) -> list[str] | None:
    """The cache level names of a header comment, or None if it is not the header."""
    body = comment.lstrip("#").strip()
    fields = [f.strip() for f in body.split(",")]
    if len(fields) < 4 or fields[0].upper() != "CPU":
        return None
    return [name for f in fields[4:] for name in f.split(":") if name]


def _int(text: str, where: str, column: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TopologyError(f"{where} {column}", f"{text!r} is not an integer") from None
    if value < 0:
        raise TopologyError(f"{where} {column}", f"{value} is negative")
    return value
