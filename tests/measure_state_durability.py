"""Measure what ``Durability.FULL`` costs against ``NORMAL`` for ``put_pending``.

Run: ``.venv/bin/python -m tests.measure_state_durability [DIR] [N]`` (DIR defaults to a
new temporary directory under ~/.cache, on the disk the default state lives on; /tmp may be a
tmpfs, where fsync is free). Prints the median and p99 of N commits per setting, in ms.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from corral.agent.state import Durability, LoggedEvent, StateStore, Status, StoredWorkload
from corral.placement.workload import Workload


def measure(directory: Path, durability: Durability, n: int) -> list[float]:
    """Milliseconds of each of ``n`` put_pending commits on a new store in ``directory``."""
    store = StateStore(directory / f"{durability.value}.db", durability=durability)
    times: list[float] = []
    try:
        for i in range(n):
            stored = StoredWorkload(Workload(id=f"w{i}", cpus=1), Status.PENDING, "", i + 1, 1, 1)
            started = time.perf_counter()
            store.put_pending(stored, event=LoggedEvent("queued", stored.workload.id))
            times.append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
    return times


def main() -> None:
    """Print the cost of each durability setting."""
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    parent = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache"
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        for durability in (Durability.NORMAL, Durability.FULL, Durability.NORMAL, Durability.FULL):
            times = sorted(measure(Path(tmp), durability, n))
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(
                f"{durability.value:>6}: median {statistics.median(times):.3f} ms, "
                f"p99 {p99:.3f} ms, {n} commits in {sum(times) / 1000:.2f} s ({tmp})"
            )
            for suffix in ("", ".lock"):  # the lock file remembers the database: drop both
                (Path(tmp) / f"{durability.value}.db{suffix}").unlink()


if __name__ == "__main__":
    main()
