"""Placement: workloads, kubelet-compatible greedy allocation, pools and assignments."""
