"""Workload generators run on client nodes (``python -m edgelab.workload.loadgen``)."""
