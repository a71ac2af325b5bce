"""Session-wide fixtures shared by several test modules."""

from tests.kube_plane import kube_plane
from tests.real_cgroups import parent

__all__ = ["kube_plane", "parent"]
