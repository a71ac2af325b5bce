from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from corral.errors import TopologyError
from corral.topology.cpuset import CpuSet
from corral.topology.file import load_topology_file, parse_topology_document, topology_to_document
from corral.topology.lscpu import parse_lscpu
from corral.topology.model import Cpu, Topology
from corral.topology.presets import PRESETS, preset
from corral.topology.source import load_topology
from corral.topology.sysfs import load_sysfs
from tests.shapes import dual_socket_ht_interleaved
from tests.sysfs_tree import write_sysfs_tree


def test_views_group_cpus_by_core_numa_socket_and_l3() -> None:
    topo = preset("xeon-gold-6230-2s")
    assert len(topo.cpus) == 80 and len(topo.cores) == 40
    assert topo.siblings(3) == CpuSet([3, 43])
    assert topo.core_of(43).cpus == CpuSet([3, 43])
    assert topo.cpus_in_numa(1) == CpuSet.parse("10-19,50-59")
    assert topo.cpus_in_socket(1) == CpuSet.parse("20-39,60-79")
    assert topo.cpus_in_l3(0) == topo.cpus_in_socket(0)
    assert topo.threads_per_core == 2
    assert topo.numa_nodes_of(CpuSet([0, 25])) == (0, 2)
    assert topo.sockets_of(CpuSet([0, 25])) == (0, 1)


def test_free_counts_count_only_available_cpus() -> None:
    topo = dual_socket_ht_interleaved()
    counts = topo.free_counts(CpuSet([0, 6, 2, 1]))
    assert counts.by_socket == {0: 3, 1: 1}
    assert counts.by_numa == {0: 3, 1: 1}
    assert counts.by_core == {0: 2, 2: 1, 1: 1}
    assert topo.whole_cores_within(CpuSet([0, 6, 2, 1])) == CpuSet([0, 6])


@pytest.mark.parametrize(
    ("name", "sockets", "numa", "l3", "cpus"),
    [
        ("toy-16", 2, 2, 2, 16),
        ("r4.16xlarge", 2, 2, 2, 64),
        ("xeon-gold-6230-2s", 2, 4, 2, 80),
        ("epyc-7742-2s", 2, 8, 32, 256),
        ("epyc-9654-2s", 2, 2, 24, 384),
        ("epyc-9754-2s", 2, 4, 32, 512),
    ],
)
def test_presets_have_the_documented_shape(
    name: str, sockets: int, numa: int, l3: int, cpus: int
) -> None:
    topo = preset(name)
    assert (len(topo.sockets), len(topo.numa_nodes), len(topo.l3_domains), len(topo.cpus)) == (
        sockets,
        numa,
        l3,
        cpus,
    )
    assert topo.threads_per_core == 2
    # Linux numbering: a CPU's sibling sits one host's worth of cores above it.
    assert topo.siblings(0) == CpuSet([0, cpus // 2])


def test_epyc_7742_l3_groups_hold_four_cores() -> None:
    topo = preset("epyc-7742-2s")
    assert all(len(topo.cpus_in_l3(l3)) == 8 for l3 in topo.l3_domains)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(TopologyError, match="epyc-7742-2s"):
        preset("epyc-9999")


@pytest.mark.parametrize(
    ("cpus", "fragment"),
    [
        ([], "no CPUs"),
        ([Cpu(0, 0, 0, 0, 0), Cpu(0, 1, 0, 0, 0)], "CPU id 0 appears more than once"),
        ([Cpu(0, 0, 0, 0, 0), Cpu(1, 0, 1, 1, 1)], "core 0 is split across sockets"),
        ([Cpu(0, 0, 0, 0, 0), Cpu(1, 0, 0, 1, 0)], "core 0 is split across NUMA nodes"),
        ([Cpu(0, 0, 0, 0, 0), Cpu(1, 0, 0, 0, 1)], "core 0 is split across L3 domains"),
        ([Cpu(0, 0, 0, 0, 0), Cpu(1, 1, 1, 0, 0)], "L3 domain 0 spans sockets"),
        ([Cpu(-1, 0, 0, 0, 0)], "non-negative"),
    ],
)
def test_inconsistent_topologies_are_refused_with_a_clear_message(
    cpus: list[Cpu], fragment: str
) -> None:
    with pytest.raises(TopologyError, match=fragment):
        Topology.from_records(cpus)


def test_topology_file_round_trips_through_json_and_yaml(tmp_path: Path) -> None:
    topo = preset("xeon-gold-6230-2s")
    doc = topology_to_document(topo)
    (tmp_path / "t.json").write_text(json.dumps(doc))
    assert load_topology_file(tmp_path / "t.json").cpus == topo.cpus
    yaml_text = "cpus:\n" + "".join(
        f"  - {{id: {c['id']}, core: {c['core']}, socket: {c['socket']}, numa: {c['numa']}, "
        f"l3: {c['l3']}}}\n"
        for c in doc["cpus"]
    )
    (tmp_path / "t.yaml").write_text(yaml_text)
    assert load_topology(str(tmp_path / "t.yaml")).cpus == topo.cpus


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "cpus"),
        ({"cpus": "x"}, "cpus"),
        ({"cpus": [{"id": 0, "core": 0, "socket": 0, "numa": 0}]}, r"cpus\[0\]\.l3"),
        ({"cpus": [{"id": 0, "core": 0, "socket": 0, "numa": 0, "l3": "a"}]}, r"cpus\[0\]\.l3"),
        ({"cpus": [{"id": 0, "core": 0, "socket": 0, "numa": 0, "l3": 0, "x": 1}]}, "x"),
        ({"cpus": [], "extra": 1}, "extra"),
    ],
)
def test_bad_topology_documents_name_the_field(doc: object, field: str) -> None:
    with pytest.raises(TopologyError, match=field):
        parse_topology_document(doc)


def test_missing_or_unparsable_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="not 'sysfs', a preset or a file"):
        load_topology(str(tmp_path / "nope.yaml"))
    (tmp_path / "bad.yaml").write_text("cpus: [unclosed")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load_topology(str(tmp_path / "bad.yaml"))


NEW_LSCPU = """\
# The following is the parsable format, which can be fed to other
# programs. Each different item in every column has an unique ID
# starting usually from zero.
# CPU,Core,Socket,Node,,L1d,L1i,L2,L3
0,0,0,0,,0,0,0,0
1,1,1,1,,1,1,1,1
2,0,0,0,,0,0,0,0
3,1,1,1,,1,1,1,1
"""

OLD_LSCPU = """\
# CPU,Core,Socket,Node,L1d:L1i:L2:L3
0,0,0,0,0:0:0:0
1,1,0,0,1:1:1:0
2,2,1,1,2:2:2:1
3,3,1,1,3:3:3:1
"""


def test_lscpu_output_is_read_in_both_cache_column_shapes() -> None:
    new = parse_lscpu(NEW_LSCPU)
    assert new.siblings(0) == CpuSet([0, 2]) and new.cpus_in_l3(1) == CpuSet([1, 3])
    old = parse_lscpu(OLD_LSCPU)
    assert len(old.cores) == 4 and old.cpus_in_l3(1) == CpuSet([2, 3])


def test_lscpu_without_numa_or_l3_falls_back_to_node_0_and_the_socket() -> None:
    topo = parse_lscpu("# CPU,Core,Socket,Node,,L1d,L1i,L2\n0,0,0,,,0,0,0\n1,1,1,,,1,1,1\n")
    assert topo.numa_nodes == (0,) and topo.cpus_in_l3(1) == CpuSet([1])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0,0\n", "line 1"),
        ("# CPU,Core,Socket,Node\n0,x,0,0\n", "line 2 CORE"),
        ("# only comments\n", "no CPU lines"),
    ],
)
def test_malformed_lscpu_output_names_the_line(text: str, fragment: str) -> None:
    with pytest.raises(TopologyError, match=fragment):
        parse_lscpu(text)


def test_sysfs_loader_reads_this_machine() -> None:
    if not Path("/sys/devices/system/cpu/online").exists():
        pytest.skip("no sysfs on this machine")
    topo = load_sysfs("/sys")
    online = CpuSet.parse(Path("/sys/devices/system/cpu/online").read_text())
    assert topo.all_cpus == online
    if shutil.which("lscpu"):
        out = subprocess.run(
            ["lscpu", "-p=CPU,CORE,SOCKET,NODE,CACHE"], capture_output=True, text=True, check=True
        ).stdout
        from_lscpu = parse_lscpu(out)
        # Same CPUs, same sibling groups, sockets and NUMA nodes as lscpu sees them.
        assert from_lscpu.all_cpus == topo.all_cpus
        for cpu in topo.cpus:
            assert topo.siblings(cpu.id) == from_lscpu.siblings(cpu.id)
            other = from_lscpu.cpu(cpu.id)
            assert (cpu.socket, cpu.numa) == (other.socket, other.numa)


@pytest.mark.parametrize("name", ["toy-16", "xeon-gold-6230-2s", "epyc-7742-2s"])
def test_sysfs_loader_rebuilds_larger_hosts_from_their_tree(tmp_path: Path, name: str) -> None:
    topo = preset(name)
    loaded = load_sysfs(write_sysfs_tree(tmp_path, topo))
    assert loaded.cpus == topo.cpus


def test_sysfs_loader_leaves_offline_cpus_out(tmp_path: Path) -> None:
    topo = preset("toy-16")
    loaded = load_sysfs(write_sysfs_tree(tmp_path, topo, offline=CpuSet([3, 11, 12])))
    assert loaded.all_cpus == topo.all_cpus - CpuSet([3, 11, 12])
    assert loaded.siblings(4) == CpuSet([4])  # its sibling 12 is offline
    assert loaded.max_threads_per_core == 2


def test_sysfs_loader_without_l3_or_nodes_uses_socket_and_node_0(tmp_path: Path) -> None:
    topo = preset("toy-16")
    loaded = load_sysfs(write_sysfs_tree(tmp_path, topo, with_l3=False, with_nodes=False))
    assert loaded.numa_nodes == (0,)
    assert [c.l3 for c in loaded.cpus] == [c.socket for c in loaded.cpus]


def test_sysfs_loader_names_a_broken_file(tmp_path: Path) -> None:
    root = write_sysfs_tree(tmp_path, preset("toy-16"))
    (root / "devices/system/cpu/cpu5/topology/core_id").write_text("banana\n")
    with pytest.raises(TopologyError, match="cpu5/topology/core_id"):
        load_sysfs(root)


def test_every_preset_is_listed() -> None:
    assert set(PRESETS) >= {
        "toy-16",
        "r4.16xlarge",
        "xeon-gold-6230-2s",
        "epyc-7742-2s",
        "epyc-9654-2s",
    }
