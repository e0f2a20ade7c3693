"""The `ops` console script: an invoke.Program over the same namespace as tasks.py.

What it adds to Invoke's Program (see README, "The command line"): `-H/--hosts` for a whole
chain, bad input as one line and exit 2 with the nearest names, a core --help that lists only
the core flags that mean something here, and the project directory found upwards from the
current one (where invoke.yaml is).
"""

import difflib
import os
import re
import sys
from pathlib import Path

from invoke import Exit, Program
from invoke.exceptions import ParseError
from invoke.parser import Argument

from . import __version__
from .collection import ns
from .errors import ConfigError
from .output import CLI_HOST_KEY, check_runtime_config, quit_on_closed_pipe
from .settings import check_project_config
from .targets import close_all

# Invoke's core flags that change nothing in these tasks (they configure c.run(), which no task
# uses): still parsed, so scripts that pass them keep working, but not shown in `ops --help`.
_HIDDEN_CORE_FLAGS = frozenset({"command-timeout", "echo", "hide", "prompt-for-sudo-password", "pty",
                                "warn-only", "write-pyc"})
_UNKNOWN = re.compile(r"^No idea what '(.*)' is!$")
_NEEDS_VALUE = re.compile(r"^Flag <Argument: ([^ >]+)[^>]*> needed value")


def preflight(directory) -> None:
    """Refuse a broken invoke.yaml in directory with one line and exit 2."""
    try:
        check_project_config(directory)
    except ConfigError as exc:
        raise Exit(f"error: {exc}", code=2) from None


def _hidden(flags: str) -> bool:
    """True for a help row ("-e, --echo") of a flag `ops --help` leaves out."""
    names = (re.split(r"[=\[ ]", part.strip(), maxsplit=1)[0].lstrip("-") for part in flags.split(","))
    return any(name in _HIDDEN_CORE_FLAGS for name in names)


def project_directory(start) -> Path:
    """The nearest folder at or above start holding invoke.yaml (as git finds its checkout);
    start itself when there is none."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "invoke.yaml").is_file():
            return folder
    return start


def chain_hosts(value):
    """The hosts of `-H`, as --host takes them: one host, a fleet's name, or a comma list (repeats
    and empty items ignored); exit 2 when it names none. A task not wired for fleets refuses
    several (output.target_of), naming itself."""
    if value is None:
        return None
    hosts = list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not hosts:
        raise Exit(f"error: -H/--hosts {value!r} names no host", code=2)
    return ",".join(hosts)


def nearest(word: str, names) -> str:
    """'; did you mean X?' for the closest of names, or nothing."""
    close = difflib.get_close_matches(word, sorted(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


class OpsProgram(Program):
    """Program with a bundled namespace that still reads the project's invoke.yaml.

    Invoke skips project config when the namespace is bundled; `ops` is run from a project
    directory (or below it) and must honour its profiles, so it loads the file itself.
    """

    def core_args(self):
        args = [arg for arg in super().core_args() if arg.name != "config"]
        args.append(Argument(names=("config", "f"), help="Invoke's runtime config file (YAML/JSON/Python); "
                             "not a run config, which is runs.submit --config FILE."))
        args.append(Argument(names=("hosts", "H"), help="Host for every task of the chain: one, a comma list "
                             "or a fleet's name (a task's own --host wins for that task)."))
        return args

    def print_help(self):
        print(f"Usage: {self.binary} [--core-opts] <task> [--task-opts] ... <task> [--task-opts]")
        print("")
        print("Core options:")
        print("")
        self.print_columns([row for row in self.initial_context.help_tuples() if not _hidden(row[0])])
        self.list_tasks()

    def parse_collection(self):
        super().parse_collection()
        project = project_directory(os.getcwd())
        preflight(project)
        self.config.set_project_location(str(project))
        self.config.load_project()

    def parse_tasks(self):
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(f"error: {self._explain(exc)}", code=2) from None

    def parse_cleanup(self):
        # Before --list/--help end the program: a bad -f or -H is refused whatever follows.
        try:
            check_runtime_config(self.args.config.value)
        except ConfigError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        self.cli_host = chain_hosts(self.args.hosts.value)
        try:
            super().parse_cleanup()
        except ParseError as exc:  # `ops --help NAME` of no task
            raise Exit(f"error: {self._explain(exc)}", code=2) from None

    def _explain(self, exc: ParseError) -> str:
        """Invoke's parse error as one line naming what is wrong, with the nearest name."""
        message = str(exc)
        needs_value = _NEEDS_VALUE.match(message)
        if needs_value:
            return f"--{needs_value.group(1).replace('_', '-')} needs a value (see ops TASK --help)"
        unknown = _UNKNOWN.match(message)
        if not unknown:
            return message
        word = unknown.group(1).split("=", 1)[0]
        context = getattr(exc, "context", None)
        if not word.startswith("-"):
            return f"{word}: no such task{nearest(word, self.parser.contexts)} (see ops --list)"
        if context is not None and context.name:
            # The task's own flags first: `--hots` of a task means its --host, not core -H.
            hint = nearest(word, context.flags) or nearest(word, self.initial_context.flags)
            return f"{word}: no such flag of {context.name}{hint} (see ops {context.name} --help)"
        return f"{word}: no such flag of ops{nearest(word, self.initial_context.flags)} (see ops --help)"

    def update_config(self, merge=True):
        super().update_config(merge=merge)
        if self.cli_host:
            self.config[CLI_HOST_KEY] = self.cli_host

    def execute(self):
        try:
            super().execute()
        finally:
            close_all()


program = OpsProgram(namespace=ns, name="ops", binary="ops", version=__version__)


def main():
    try:
        program.run()
        sys.stdout.flush()  # here, not at exit: a closed pipe is one more quiet exit, below
    except BrokenPipeError:  # Invoke's own output (--list, --help) into `head`
        try:
            quit_on_closed_pipe()
        except Exit as stop:
            sys.exit(stop.code)
