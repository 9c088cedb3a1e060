"""How one attempt executes: in a forked process or a thread, watched by the loop without blocking it."""
