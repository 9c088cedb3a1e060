"""The command line: the same operations a person and a script need, on click.

Exit status: 0 success, 1 a failed run or invalid job definitions, 2 bad usage
(unknown command or job, a bad option or setting).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from jobhost.app import commands_act, commands_plan, commands_read
from jobhost.app.bootstrap import App
from jobhost.config import Configure, StartWitnesses
from jobhost.errors import JobhostError


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run the jobs in jobs/ forever (no command), or one of the commands below."""
    if ctx.invoked_subcommand is None:
        from jobhost.app.serve import serve_forever  # the loop and all it runs jobs with: only here

        sys.exit(serve_forever(ctx.obj))


for command in (
    commands_read.list_jobs,
    commands_read.history,
    commands_read.next_slots,
    commands_read.health,
    commands_read.audit,
    commands_act.check,
    commands_plan.plan,
    commands_act.run,
    commands_act.backfill_command,
    commands_act.pause,
    commands_act.resume,
    commands_act.cancel,
    commands_act.migrate_state,
):
    cli.add_command(command)


def main(
    configure: Configure, witnesses: Callable[[], StartWitnesses] = StartWitnesses, argv: list[str] | None = None
) -> int:
    """Run the command line with the deployment's `configure` (and `witnesses`, told when the forever
    loop refuses to start); return the exit status."""
    try:
        cli.main(args=argv, obj=App(configure, witnesses), prog_name="jobs.py", standalone_mode=True)
    except JobhostError as exc:
        click.echo(f"jobhost: {exc}", err=True)
        return 1
    return 0
