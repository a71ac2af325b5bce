"""The node's GPUs, for the NRT's GPU zones: the ``kube.gpus`` config, else ``nvidia-smi``."""

from __future__ import annotations

import logging
import shutil
import subprocess

from corral.kube.config import GpuDevice

log = logging.getLogger(__name__)

QUERY = ["--query-gpu=index,memory.total", "--format=csv,noheader,nounits"]


def parse_nvidia_smi(text: str) -> tuple[GpuDevice, ...]:
    """Devices from ``nvidia-smi --query-gpu=index,memory.total --format=csv,noheader,
    nounits`` output (one ``<index>, <MiB>`` line per GPU); lines it cannot read are skipped."""
    devices = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        devices.append(GpuDevice(index=int(parts[0]), memory_mib=int(parts[1])))
    return tuple(devices)


def discover_gpus(configured: tuple[GpuDevice, ...] | None) -> tuple[GpuDevice, ...]:
    """``configured`` when given; else what nvidia-smi reports (blocking, at most 10 s);
    else none."""
    if configured is not None:
        return configured
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return ()
    try:
        done = subprocess.run(
            [binary, *QUERY], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("kube.gpus_unread", extra={"error": str(err)})
        return ()
    if done.returncode != 0:
        log.warning("kube.gpus_unread", extra={"error": done.stderr.strip()[:200]})
        return ()
    return parse_nvidia_smi(done.stdout)
