"""The Bitbrains sample shipped inside the package (see ``data/README.md``).

It makes the predictor's benchmark run from a clean clone, with no trace given. This module
imports nothing heavy, so the CLI can name the sample in its help.
"""

from __future__ import annotations

from pathlib import Path

from corral.errors import CorralError
from corral.predict.formats import TraceFormat

#: File name of the sample under ``corral/predict/data/``.
SAMPLE_TRACE_NAME = "bitbrains_rnd_2013-08_20vms.csv.gz"
#: Its format.
SAMPLE_TRACE_FORMAT = TraceFormat.BITBRAINS
#: One line for help texts and reports.
SAMPLE_TRACE_LABEL = "embedded Bitbrains sample (20 VMs, August 2013, 5-minute samples)"


def sample_trace() -> Path:
    """Path of the embedded sample; raises `CorralError` when the install lacks it."""
    path = Path(__file__).resolve().parent / "data" / SAMPLE_TRACE_NAME
    if not path.is_file():
        raise CorralError(
            f"{path}: the embedded sample trace is missing from this install "
            "(reinstall corral, or give a trace with --trace)"
        )
    return path
