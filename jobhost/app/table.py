"""The commands' tables for a person: a header and aligned columns, or `(none)`."""

from __future__ import annotations

import click


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Each column as wide as its widest cell, two spaces between columns, no trailing blanks."""
    if not rows:
        click.echo("(none)")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
