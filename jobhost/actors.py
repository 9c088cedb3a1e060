"""Who did it: the actor an operator action is recorded under.

On the command line it is the OS user (and, through sudo, the person who typed it);
over HTTP it is the name of the bearer token (jobhost.web.api). Written into the audit
trail and onto runs asked for by hand, so a 2 a.m. change has a name on it.
"""

from __future__ import annotations

import os
import pwd


def command_line_actor() -> str:
    """The OS user running this command: 'alice', or 'root (sudo by alice)' through sudo."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no passwd entry (a container's arbitrary user)
        user = f"uid {os.geteuid()}"
    by = os.environ.get("SUDO_USER")
    return f"{user} (sudo by {by})" if by and by != user else user
