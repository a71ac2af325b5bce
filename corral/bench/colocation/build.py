"""Compile the open-loop C load generator (gcc is part of the benchmark's set-up)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from corral.errors import CorralError

SOURCE = "loadgen.c"


def loadgen_source() -> bytes:
    """The generator's C source shipped with corral."""
    return resources.files("corral.bench.colocation").joinpath(SOURCE).read_bytes()


def build_loadgen(cache_dir: Path) -> Path:
    """The compiled generator in ``cache_dir`` (rebuilt only when the source changed)."""
    source = loadgen_source()
    digest = hashlib.sha256(source).hexdigest()[:16]
    binary = cache_dir / f"corral-loadgen-{digest}"
    if binary.exists():
        return binary
    gcc = shutil.which("gcc")
    if gcc is None:
        raise CorralError("gcc not found: install it (apt-get install gcc) to build the client")
    cache_dir.mkdir(parents=True, exist_ok=True)
    src = cache_dir / f"corral-loadgen-{digest}.c"
    src.write_bytes(source)
    tmp = binary.with_suffix(".tmp")
    result = subprocess.run(
        [gcc, "-O2", "-Wall", "-o", str(tmp), str(src), "-lm"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise CorralError(f"compiling the load generator failed:\n{result.stderr.strip()}")
    tmp.rename(binary)
    return binary
