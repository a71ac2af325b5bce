"""``corral bench cluster`` in its quick form (8 hollow nodes, 80 pods) on the session's
control plane: both runs bind, the extender run has no misaligned Guaranteed pod, no pod
across sockets and no GPU pod on a full device, and the chart is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.bench.cluster import ClusterBenchConfig, chart, run_cluster_bench
from tests.kube_plane import KubePlane


@pytest.mark.slow
def test_quick_cluster_bench_on_the_real_scheduler(kube_plane: KubePlane, tmp_path: Path) -> None:
    result = run_cluster_bench(
        ClusterBenchConfig.quick(), kubeconfig_dir=kube_plane.dir, kube_bin=kube_plane.bin
    )
    base, ext = result.run("default"), result.run("extender")
    assert base.bound >= 0.8 * base.pods and ext.bound >= 0.8 * ext.pods
    assert ext.misaligned == 0 and ext.cross_socket == 0 and ext.gpu_over == 0
    verbs = ext.extender["verbs"]
    assert verbs["filter"]["calls"] >= ext.bound and verbs["bind"]["calls"] >= ext.bound
    # The targets are 20 ms and 50%; a loaded 2-core CI box gets a generous margin here.
    for verb in ("filter", "prioritize", "bind_decision"):
        assert verbs[verb]["p99_ms"] < 60, verbs
    assert ext.throughput >= 0.35 * base.throughput
    png = chart(result, tmp_path / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(result.to_json()["targets"]) == {
        "zero_misaligned_with_extender",
        "extender_p99_under_20ms",
        "throughput_at_least_half",
    }
