"""The node agent: HTTP API, persistent state, reconcile and metrics."""
