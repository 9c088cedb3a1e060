"""Sentry: every failure, timeout, crash, abandoned run and missed slot as an event, and a
Sentry Crons monitor per job, checked in from its runs.

A job's exception is turned into Sentry's structured form (frames, source lines,
locals) where it happened, in the run's process, and handed to the host with
the run's outcome; the host sends every event and check-in. So a run never
waits on Sentry, a crashed or killed run is reported as well as one that
raised, and each event carries the run's tags and its recent log lines.

Events are grouped by a fingerprint per job and kind (per exception type for
a raised exception), so one broken job is one Sentry issue however often it
fails. Only the last failed attempt of a slot is an event; the earlier ones
are breadcrumbs of it (unless the job says `report_each_attempt=True`).

The parts: `sdk` (the SDK's options, transport and filters), `breadcrumbs` (a slot's
recent log lines), `events` (failure and missed-slot events), `crons` (check-ins, with
the monitors' configs and slug rules in `monitors`), `scrubber` (secrets kept out), and
`reporter`, which composes them into the host's run reporter. This package imports
nothing of the SDK itself: `monitors` is read by every job definition.
"""
