"""This deployment's knobs: settings from the environment (settings.py), logging
(log_setup.py), and `configure()` that hands them to the engine (deployment.py)."""
