"""Text tables for people, by tabulate, imported at the first table drawn.

Importing tabulate costs about 35 ms (it reads its own package metadata); `ops --list`, `--help`,
`--json` and `--dry-run` draw no table, and every task's start-up would pay it otherwise.
"""


def tabulate(rows, *args, **kwargs) -> str:
    """tabulate.tabulate(rows, ...), the same arguments."""
    from tabulate import tabulate as draw

    return draw(rows, *args, **kwargs)
