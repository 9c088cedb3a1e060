"""What watches runs: the events of a run's life, their log lines, metrics, the status page's
run lines and Sentry. The engine emits events; nothing here decides what runs."""
