"""The peers the comparison runs, each as a program of its own: `python -m benchmarks.peers.NAME OUT MODE [N] ...`.

MODE says what its jobs are:
- `pinned`: a job due at every wall-clock second (pinned to the second);
- `rate`: a job every second, as the peer's own interval trigger counts them;
- `light`: two no-op jobs due at every wall-clock second;
- `idle`: one job due in an hour;
- `scale`: N jobs due in an hour (registered, not run), as the source of one module of N
  decorated functions (`generated.py`);
- `burst`: N jobs due at the same instant, every 20 s (the next multiple of 20 s of the minute).

Each job's first statement appends its number and `time.time()` to OUT, so every peer is
measured from outside, the same way. A peer prints `ready` once its jobs are registered.
"""

from __future__ import annotations

BURST_EVERY = 20  # seconds: bursts come at :00, :20 and :40
