"""corral's kube-scheduler extender: NUMA-aware filter, topology scores, GPU-memory sharing,
and a bind that writes the chosen NUMA zones and GPU on the pod.

Layout (one concern per module): `podspec` (pod -> request), `topo` (NRT -> zone state),
`fit` (the filter decision), `score` (one module per strategy), `gpu` (device choice),
`reserve` (the stale-data reservation caches), `view` (the cluster as watched), `wire`
(extender protocol bodies), `service` (the verbs), `server` (HTTP and the watches).
"""
