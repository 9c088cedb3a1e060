"""The peers the comparison runs, each as a program of its own: `python -m benchmarks.peers.NAME OUT MODE`.

MODE `pinned`: a job due at every wall-clock second; `idle`: one job due in an hour.
Each job's first statement appends `time.time()` to OUT, so lateness is measured
from outside, the same way for every peer.
"""
