"""The command line and what it starts: the bootstrap every command shares (settings, jobs, the
state store, failing), the commands, and the forever loop with its HTTP server (`serve`, imported
only by the commands that run jobs)."""
