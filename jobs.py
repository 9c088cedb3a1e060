#!/usr/bin/env python3
"""The job host's entry point: `python jobs.py` runs the jobs in jobs/ forever.

`python jobs.py --help` lists the commands. The deployment's settings come from
the environment (see configuration/settings.py); the engine is jobhost/.
"""

import sys

from configuration.deployment import configure, witnesses
from jobhost.app.cli import main

if __name__ == "__main__":
    sys.exit(main(configure, witnesses))
