"""The forever loop and its parts: one `Attempt` per claimed attempt, moved through named steps."""
