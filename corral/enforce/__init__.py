"""Enforcement: cgroup v1/v2 and resctrl writers, idempotent and checked for drift."""
