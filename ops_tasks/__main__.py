"""`python -m ops_tasks` is the `ops` command."""

from .cli import main

main()
