"""Render remote scripts from remote_scripts/, and read back the JSON document they print.

Values never enter shell text raw: each becomes a quoted variable assignment in a header
above the template, and the template refers to "$name". Nothing is str.format-ed into shell.
"""

import json
import re
import shlex
from functools import lru_cache
from pathlib import Path

from .errors import HostError

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
LIBRARY = "lib.sh"


def scripts_dir() -> Path:
    """remote_scripts/ of the checkout, else the copy installed inside the package."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "tasks.py").is_file() and (checkout / "remote_scripts").is_dir():
        return checkout / "remote_scripts"
    return Path(__file__).resolve().parent / "remote_scripts"


@lru_cache(maxsize=None)
def _template(name: str) -> str:
    return (scripts_dir() / name).read_text()


def shell_value(value) -> str:
    """A Python value as bash assignment text: quoted scalars, bash arrays for lists."""
    if value is None or value is False:
        return "''"
    if value is True:
        return "1"
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(shell_value(item) for item in value) + ")"
    if isinstance(value, dict):
        return shlex.quote(json.dumps(value, sort_keys=True))
    return shlex.quote(str(value))


def render_script(name: str, *, include=(), **values) -> str:
    """The full text of remote_scripts/<name>: shared helpers, quoted inputs, then the body.

    `include` names further helper files (e.g. vllm_lib.sh), placed after the inputs so
    that they may use them.
    """
    helpers = "".join(f"{_template(extra)}\n" for extra in include)
    return (
        f"# ops-tasks remote script: {name}\n"
        f"{_template(LIBRARY)}\n"
        f"# ---- inputs (each value shell-quoted)\n{_inputs(values)}\n"
        f"{helpers}"
        f"# ---- {name}\n{_template(name)}"
    )


def render_command(name: str, **values) -> str:
    """remote_scripts/<name> as a short command of its own (an rsync's --rsync-path): the quoted
    inputs, then the body, without the shared helpers (it runs before any script does) and
    without its whole-line comments (they are for the file's reader; a command is short)."""
    body = "\n".join(line for line in _template(name).splitlines() if not line.startswith("#"))
    return f"{_inputs(values)}\n{body}\n"


def _inputs(values: dict) -> str:
    """Each value as a quoted shell assignment, one a line."""
    for key in values:
        if not _NAME.match(key):
            raise ValueError(f"script input {key!r} is not a lower-case shell name")
    return "\n".join(f"{key}={shell_value(value)}" for key, value in values.items())


def parse_document(result, label: str, script: str) -> dict:
    """The one JSON object a script printed last on stdout; HostError when there is none.

    Only the last line is read, so a noisy shell profile printing above it does no harm.
    """
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if lines:
        try:
            document = json.loads(lines[-1])
        except json.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            return document
    detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise HostError(f"{label}: remote script {script} failed (exit {result.exit_code}): {detail}")
