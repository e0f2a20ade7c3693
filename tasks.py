"""Root collection for `inv` in this checkout; the installed `ops` command serves the same one."""

from pathlib import Path

from ops_tasks.collection import ns  # noqa: F401
from ops_tasks.cli import preflight

# Invoke loads invoke.yaml right after importing this file, and would die with a
# traceback on broken YAML: check it first, so the user gets one line and exit 2.
preflight(Path(__file__).resolve().parent)
