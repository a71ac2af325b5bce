"""Latency sources: histogram quantiles, Prometheus scraping, a file written by the service."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from corral.control.filesource import FileSource
from corral.control.scrape import ScrapeSource, parse_metric
from corral.control.signals import bucket_delta, quantile_from_buckets

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
        fetch=lambda: generate_latest(registry).decode(), metric="rpc_latency_seconds"
    )
    for _ in range(100):
        hist.observe(0.0003)
    first = source.read(0.0)
    assert first.latency_ms is not None and first.latency_ms <= 0.5
    # Next interval: slow requests only; the old fast ones must not dilute the window.
    for _ in range(50):
        hist.observe(0.004)
    second = source.read(2.0)
    assert second.latency_ms is not None and 2.0 < second.latency_ms <= 5.0
    assert second.load_rps == pytest.approx(25.0)


def test_scraper_reads_a_summary_quantile() -> None:
    text = (
        "# TYPE lat summary\n"
        'lat{quantile="0.5"} 0.0002\nlat{quantile="0.99"} 0.0012\nlat_count 10\nlat_sum 0.01\n'
    )
    assert ScrapeSource(fetch=lambda: text, metric="lat").read(0.0).latency_ms == pytest.approx(1.2)


def test_scraper_gives_nothing_when_the_endpoint_is_down() -> None:
    def down() -> str:
        raise ConnectionRefusedError

    assert ScrapeSource(fetch=down, metric="lat").read(0.0).latency_ms is None


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
    obs = FileSource(path).read(0.0)
    assert obs.latency_ms == 0.7 and obs.load_rps == 200


def test_file_source_ignores_a_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "lat.json"
    path.write_text(json.dumps({"p99_ms": 0.4}))
    old = time.time() - 60
    os.utime(path, (old, old))
    assert FileSource(path, stale_s=5).read(0.0).latency_ms is None
    assert FileSource(tmp_path / "missing").read(0.0).latency_ms is None


def test_file_source_reads_custom_fields_and_noise(tmp_path: Path) -> None:
    path = tmp_path / "lat.json"
    path.write_text(json.dumps({"lat": {"x": 1}, "tail": 2.5, "stalled": True}))
    obs = FileSource(path, latency_field="tail", rps_field=None, noisy_field="stalled").read(0.0)
    assert obs.latency_ms == 2.5 and obs.noisy and obs.load_rps is None
