"""Per-workload metrics and build info of a real agent on this host's cgroup v1
hierarchies: cpuset size, request, sampled usage and CFS throttling of a workload whose
quota a busy process exhausts; a removed workload's series are gone at the next scrape."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral import __version__
from corral.agent.throttling import ThrottleReader, Throttling, parse_throttling
from corral.bench.agent_process import AgentProcess
from corral.enforce.detect import detect_cgroups
from tests.polling import wait_for
from tests.real_cgroups import CGROUP_ROOT, v1_skip_reason

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _scrape(http: httpx.Client) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def _value(samples: Samples, name: str, workload: str) -> float | None:
    for labels, value in samples.get(name, []):
        if labels.get("workload") == workload:
            return value
    return None


def test_parse_throttling_reads_v1_and_v2_cpu_stat() -> None:
    v1 = "nr_periods 120\nnr_throttled 80\nthrottled_time 2500000000\nnr_bursts 0\nburst_time 0\n"
    assert parse_throttling(v1) == Throttling(120, 80, 2.5)
    v2 = (
        "usage_usec 900\nuser_usec 600\nsystem_usec 300\nnr_periods 10\nnr_throttled 4\n"
        "throttled_usec 1500000\nnr_bursts 0\nburst_usec 0\n"
    )
    assert parse_throttling(v2) == Throttling(10, 4, 1.5)
    # A v2 cgroup without the cpu controller: usage only, no throttling (never zeros).
    assert parse_throttling("usage_usec 900\nuser_usec 600\nsystem_usec 300\n") is None
    with pytest.raises(ValueError, match="negative"):
        parse_throttling("nr_periods -1\nnr_throttled 0\nthrottled_time 0\n")


def test_throttle_reader_on_a_v2_tree_without_and_with_the_cpu_controller(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cgroup"
    (root / "a").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset memory\n")
    (root / "cgroup.procs").write_text("")
    (root / "a" / "cpu.stat").write_text("usage_usec 5\nuser_usec 3\nsystem_usec 2\n")
    assert not ThrottleReader(detect_cgroups(root)).available
    (root / "cgroup.controllers").write_text("cpuset cpu memory\n")
    (root / "a" / "cpu.stat").write_text(
        "usage_usec 5\nnr_periods 7\nnr_throttled 3\nthrottled_usec 250000\n"
    )
    reader = ThrottleReader(detect_cgroups(root))
    assert reader.read("a") == Throttling(7, 3, 0.25)
    assert reader.read("missing") is None


def test_build_info_names_the_versions(tmp_path: Path) -> None:
    with (
        AgentProcess(tmp_path, {"topology": "toy-16", "dry_run": True}).start(
            timeout_s=180
        ) as agent,
        httpx.Client(base_url=agent.url, timeout=30) as http,
    ):
        samples = _scrape(http)
    (labels, value), *_ = samples["corral_build_info"]
    assert value == 1
    assert labels["version"] == __version__
    assert labels["python"] == platform.python_version()
    assert labels["highspy"] not in ("", "none")
    assert {"numpy", "fastapi", "kernel"} <= set(labels)


_SKIP = v1_skip_reason(["cpu", "cpuacct", "cpuset"])


@pytest.mark.root
@pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))
def test_a_throttled_workload_shows_its_cpus_usage_and_throttling(
    tmp_path: Path, parent: str
) -> None:
    settings = {
        "topology": "sysfs",
        "cgroup_parent": parent,
        "coalesce_window_s": 0.01,
        "sample_period_s": 0.3,
        "downsample_s": 1.0,
        "allocator": "greedy",
    }
    with (
        AgentProcess(tmp_path, settings).start(timeout_s=180) as agent,
        httpx.Client(base_url=agent.url, timeout=30) as http,
    ):
        assert http.get("/status").json()["dry_run"] is False
        # qos system gets a CFS quota equal to its request: 0.1 cores = 10 ms per 100 ms.
        http.put("/workloads/capped?wait=true", json={"qos": "system", "cpus": 0.1})
        web = http.put(
            "/workloads/web?wait=true", json={"qos": "LC", "cpus": 1, "policy": "exclusive"}
        ).json()
        cpu_dir = CGROUP_ROOT / "cpu" / parent / "capped"
        assert int((cpu_dir / "cpu.cfs_quota_us").read_text()) == 10000
        busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
        try:
            (cpu_dir / "cgroup.procs").write_text(str(busy.pid))
            acct = CGROUP_ROOT / "cpuacct" / parent / "capped"
            acct.mkdir(parents=True, exist_ok=True)
            (acct / "cgroup.procs").write_text(str(busy.pid))

            def throttled() -> Samples | None:
                samples = _scrape(http)
                periods = _value(samples, "corral_workload_cpu_throttled_periods_total", "capped")
                usage = _value(samples, "corral_workload_cpu_usage_cores", "capped")
                ok = periods and periods >= 3 and usage is not None and usage > 0
                return samples if ok else None

            samples = wait_for("throttling of the capped workload", throttled, interval_s=0.2)
        finally:
            busy.kill()
            busy.wait()
        seconds = _value(samples, "corral_workload_cpu_throttled_seconds_total", "capped")
        periods = _value(samples, "corral_workload_cpu_periods_total", "capped")
        throttled_periods = _value(samples, "corral_workload_cpu_throttled_periods_total", "capped")
        usage = _value(samples, "corral_workload_cpu_usage_cores", "capped")
        print(
            f"capped at 0.1 cores: usage {usage:.3f} cores, {throttled_periods:.0f} of "
            f"{periods:.0f} periods throttled, {seconds:.3f} s throttled"
        )
        assert seconds is not None and seconds > 0
        assert periods is not None and throttled_periods is not None
        assert periods >= throttled_periods
        assert usage is not None and usage < 0.5  # the quota holds it near 0.1 cores
        # Counters agree with the kernel's own file (read after, so at least as large).
        kernel = parse_throttling((cpu_dir / "cpu.stat").read_text())
        assert kernel is not None and kernel.throttled >= throttled_periods
        labels = next(
            lab for lab, _ in samples["corral_workload_cpus"] if lab["workload"] == "capped"
        )
        assert labels == {"workload": "capped", "qos": "system", "policy": "shared"}
        now = http.get("/workloads/capped").json()["cpuset"]  # the exclusive web took one
        assert _value(samples, "corral_workload_cpus", "capped") == len(_cpus(now))
        assert _value(samples, "corral_workload_cpus", "web") == 1 == len(_cpus(web["cpuset"]))
        assert _value(samples, "corral_workload_cpu_request_cores", "capped") == 0.1

        assert http.delete("/workloads/capped").status_code == 204
        after = _scrape(http)
        gone = [
            name
            for name, rows in after.items()
            if name.startswith("corral_workload_")
            and any(lab.get("workload") == "capped" for lab, _ in rows)
        ]
        assert gone == [], gone
        assert _value(after, "corral_workload_cpus", "web") == 1


def _cpus(cpuset: str) -> set[int]:
    out: set[int] = set()
    for part in cpuset.split(","):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out
