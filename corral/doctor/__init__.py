"""``corral doctor``: what corral can and cannot do on this host, each finding with its fix.

Layers inside the package: `findings` (the result values) and `observations` (what the
probes saw) are plain data; `evaluate` turns observations into findings and the verdict
without touching the OS; `probes` are the readers, each taking the root path the host is
seen under, so the same checks run on the real kernel and on directory trees; `run` wires
them together.
"""

from corral.doctor.findings import Area, Finding, Report, Status
from corral.doctor.run import diagnose

__all__ = ["Area", "Finding", "Report", "Status", "diagnose"]
