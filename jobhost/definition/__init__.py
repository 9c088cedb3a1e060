"""What a job is: its schedule and options, the registry of a host's jobs, their discovery.

Nothing here runs a job or watches a run, so what only reads the definitions (`list`,
`next`, `check`) need not load the engine or the observers.
"""
