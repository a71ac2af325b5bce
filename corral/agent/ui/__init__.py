"""The agent's live web view of its host, served at ``GET /ui``.

The page (``static/``: one HTML file, one script, one style sheet; vanilla JS and SVG, no
build step, nothing fetched from elsewhere) draws the host as the hardware nests it
(sockets > NUMA nodes > L3 groups > physical cores > hyperthreads), each thread coloured by
the workload or pool holding it with its usage as intensity, a workload table with
filters, and, when the agent runs the colocation controller, the LC tail latency against
its SLO, the LC load and BE's share over the last hour with the decisions and events log.
It polls ``/ui/api/host`` and ``/ui/api/history`` (`corral.agent.ui.routes`) with the
API's bearer token, entered once in the page and kept in ``sessionStorage``.
"""

from corral.agent.ui.history import HistoryPoint, HostHistory, LogEntry
from corral.agent.ui.routes import host_json, ui_router

__all__ = ["HistoryPoint", "HostHistory", "LogEntry", "host_json", "ui_router"]
