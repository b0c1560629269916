"""Services that run on testbed nodes: power meter, BeaglePaaS FaaS, phone workload.

Each is runnable as ``python -m edgelab.services.<name>`` so a backend can start it
inside a node's network namespace, and each has a Python API the experiments call.
"""
