"""Latency sources: histogram quantiles, Prometheus scraping, a file written by the service."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from corral.control.filesource import FileSource
from corral.control.scrape import Fetch, ScrapeSource, parse_metric
from corral.control.signals import Observation, SignalStatus, bucket_delta, quantile_from_buckets


def _text(produce: Callable[[], str]) -> Fetch:
    async def fetch() -> str:
        return produce()

    return fetch


def _read(source: ScrapeSource | FileSource, now: float = 0.0) -> Observation:
    return asyncio.run(source.read(now))


BUCKETS = [(0.0005, 10.0), (0.001, 90.0), (0.005, 99.0), (0.01, 100.0), (float("inf"), 100.0)]


def test_histogram_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    # rank 50 of 100 falls in (0.5 ms, 1 ms] holding ranks 10..90: 40/80 of the way.
    assert quantile_from_buckets(BUCKETS, 0.5) == pytest.approx(0.00075)
    # rank 99: the top of the (1 ms, 5 ms] bucket.
    assert quantile_from_buckets(BUCKETS, 0.99) == pytest.approx(0.005)


def test_histogram_quantile_in_the_inf_bucket_is_the_largest_finite_bound() -> None:
    buckets = [(0.001, 50.0), (float("inf"), 100.0)]
    assert quantile_from_buckets(buckets, 0.99) == 0.001


def test_empty_histogram_has_no_quantile() -> None:
    assert quantile_from_buckets([(0.001, 0.0), (float("inf"), 0.0)], 0.99) is None


def test_bucket_delta_and_counter_reset() -> None:
    before = [(0.001, 10.0), (float("inf"), 20.0)]
    now = [(0.001, 15.0), (float("inf"), 30.0)]
    assert bucket_delta(now, before) == [(0.001, 5.0), (float("inf"), 10.0)]
    assert bucket_delta(before, now) == before  # went down: a restart


def test_scraper_reads_a_real_prometheus_histogram_per_interval() -> None:
    registry = CollectorRegistry()
    hist = Histogram(
        "rpc_latency_seconds", "x", buckets=(0.0005, 0.001, 0.002, 0.005), registry=registry
    )
    source = ScrapeSource(
        fetch=_text(lambda: generate_latest(registry).decode()), metric="rpc_latency_seconds"
    )
    for _ in range(100):
        hist.observe(0.0003)
    first = _read(source, 0.0)
    assert first.latency_ms is not None and first.latency_ms <= 0.5
    assert first.status is SignalStatus.OK
    # Next interval: slow requests only; the old fast ones must not dilute the window.
    for _ in range(50):
        hist.observe(0.004)
    second = _read(source, 2.0)
    assert second.latency_ms is not None and 2.0 < second.latency_ms <= 5.0
    assert second.load_rps == pytest.approx(25.0)
    # An interval without requests says nothing: no data, not a zero latency.
    third = _read(source, 4.0)
    assert third.latency_ms is None and third.status is SignalStatus.NO_DATA
    assert "0 requests since the last scrape" in third.no_signal_reason()


def test_scraper_reads_a_summary_quantile() -> None:
    text = (
        "# TYPE lat summary\n"
        'lat{quantile="0.5"} 0.0002\nlat{quantile="0.99"} 0.0012\nlat_count 10\nlat_sum 0.01\n'
    )
    obs = _read(ScrapeSource(fetch=_text(lambda: text), metric="lat"))
    assert obs.latency_ms == pytest.approx(1.2) and obs.status is SignalStatus.OK


def test_a_scrape_that_fails_times_out_or_lacks_the_metric_is_no_signal() -> None:
    async def down() -> str:
        raise ConnectionRefusedError(111, "Connection refused")

    async def slow() -> str:
        raise TimeoutError("no answer within 1.0 s")

    refused = _read(ScrapeSource(fetch=down, metric="lat", name="api"))
    assert refused.latency_ms is None and refused.status is SignalStatus.FAILED
    assert refused.no_signal_reason() == "api: [Errno 111] Connection refused"
    timed_out = _read(ScrapeSource(fetch=slow, metric="lat", name="api"))
    assert timed_out.status is SignalStatus.SLOW
    assert timed_out.no_signal_reason() == "api: no answer within 1.0 s"
    other = _read(ScrapeSource(fetch=_text(lambda: "other_total 3\n"), metric="lat"))
    assert other.status is SignalStatus.FAILED and "no metric lat" in other.no_signal_reason()


def test_parse_metric_sums_label_sets() -> None:
    text = (
        'h_bucket{le="0.1",path="/a"} 1\nh_bucket{le="0.1",path="/b"} 2\n'
        'h_bucket{le="+Inf",path="/a"} 1\nh_bucket{le="+Inf",path="/b"} 2\n'
        'h_count{path="/a"} 1\nh_count{path="/b"} 2\n'
    )
    parsed = parse_metric(text, "h")
    assert parsed.buckets == ((0.1, 3.0), (float("inf"), 3.0))
    assert parsed.count == 3.0


def test_file_source_reads_the_last_complete_json_line(tmp_path: Path) -> None:
    path = tmp_path / "lat.jsonl"
    path.write_text(
        json.dumps({"p99_ms": 0.4, "rps": 100})
        + "\n"
        + json.dumps({"p99_ms": 0.7, "rps": 200})
        + '\n{"p99'
    )
    obs = _read(FileSource(path))
    assert obs.latency_ms == 0.7 and obs.load_rps == 200 and obs.status is SignalStatus.OK


def test_file_source_ignores_a_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "lat.json"
    path.write_text(json.dumps({"p99_ms": 0.4}))
    old = time.time() - 60
    os.utime(path, (old, old))
    stale = _read(FileSource(path, stale_s=5))
    assert stale.latency_ms is None and stale.status is SignalStatus.FAILED
    assert "not updated for 60 s" in stale.no_signal_reason()
    missing = _read(FileSource(tmp_path / "missing"))
    assert missing.latency_ms is None and missing.status is SignalStatus.FAILED
    assert "does not exist" in missing.no_signal_reason()


def test_file_source_without_a_latency_or_enough_samples_has_no_data(tmp_path: Path) -> None:
    path = tmp_path / "lat.json"
    path.write_text(json.dumps({"p99_ms": None, "rps": 0, "samples": 0}))
    assert _read(FileSource(path)).status is SignalStatus.NO_DATA
    path.write_text(json.dumps({"p99_ms": 0.3, "samples": 4}))
    few = _read(FileSource(path, min_samples=50))
    assert few.status is SignalStatus.NO_DATA and few.latency_ms is None
    assert _read(FileSource(path)).latency_ms == 0.3


def test_a_file_read_that_hangs_is_slow_and_not_started_twice(tmp_path: Path) -> None:
    """A hung read (a stuck network file system, here a FIFO nobody writes) is slow after
    ``timeout_s``; the event loop keeps running and no second thread piles up."""
    fifo = tmp_path / "lat.fifo"
    os.mkfifo(fifo)
    source = FileSource(fifo, timeout_s=0.2, stale_s=3600)

    def release() -> None:
        # Opening the write end unblocks the reading thread; it then reads this record.
        deadline = time.monotonic() + 10
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO: the thread has not opened its end yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        os.write(fd, json.dumps({"p99_ms": 0.5}).encode())
        os.close(fd)

    async def main() -> tuple[Observation, Observation]:
        first = await source.read(0.0)
        try:
            pending = source._pending
            second = await source.read(1.0)
            assert source._pending is pending  # the same read, still waiting
        finally:
            release()  # never leave a thread blocked (asyncio.run would wait for it)
        third = await source.read(2.0)
        assert third.latency_ms == 0.5 and third.status is SignalStatus.OK
        return first, second

    first, second = asyncio.run(main())
    assert first.status is SignalStatus.SLOW and second.status is SignalStatus.SLOW
    assert first.no_signal_reason() == "file: no answer within 0.2 s"


def test_file_source_reads_custom_fields_and_noise(tmp_path: Path) -> None:
    path = tmp_path / "lat.json"
    path.write_text(json.dumps({"lat": {"x": 1}, "tail": 2.5, "stalled": True}))
    obs = _read(FileSource(path, latency_field="tail", rps_field=None, noisy_field="stalled"))
    assert obs.latency_ms == 2.5 and obs.noisy and obs.load_rps is None
