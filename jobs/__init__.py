"""The team's jobs: every module here is imported at start, and its @job functions run on their schedules.

Modules whose name starts with ``_`` (helpers) or ``test_`` (tests) are not imported by the host.
"""
