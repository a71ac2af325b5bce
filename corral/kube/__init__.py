"""Kubernetes integration: scheduler extender and NodeResourceTopology."""
