"""corral: keep latency-critical services safe next to best-effort work on one Linux host."""

__version__ = "0.1.0"
