"""The `ops` console script: an invoke.Program over the same namespace as tasks.py.

What it adds to Invoke's Program (see docs/concepts/command-line.md): `-H/--hosts` for a whole
chain, bad input as one line and exit 2 with the nearest names, a core --help that lists only
the core flags that mean something here, the project directory found upwards from the
current one (where invoke.yaml is), a parser that holds only the tasks argv names (start-up),
and shell completion of the value of --host and -H.
"""

import difflib
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Optional

from invoke import Exit, Program
from invoke.exceptions import ParseError
from invoke.parser import Argument, Parser, ParserContext

from . import __version__
from .collection import ns
from .errors import ConfigError
from .output import CLI_HOST_KEY, check_runtime_config, quit_on_closed_pipe
from .settings import LOCAL, check_project_config

# Invoke's core flags that change nothing in these tasks (they configure c.run(), which no task
# uses): still parsed, so scripts that pass them keep working, but not shown in `ops --help`.
_HIDDEN_CORE_FLAGS = frozenset({"command-timeout", "echo", "hide", "prompt-for-sudo-password", "pty",
                                "warn-only", "write-pyc"})
_UNKNOWN = re.compile(r"^No idea what '(.*)' is!$")
_NEEDS_VALUE = re.compile(r"^Flag <Argument: ([^ >]+)[^>]*> needed value")
# The flags whose value is a host (a task's --host, the core -H/--hosts): completed with host names.
_HOST_FLAGS = frozenset({"--host", "--hosts", "-H"})


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


def host_word(tokens) -> Optional[str]:
    """The word being completed when it is the value of a host flag ('' for a value not begun),
    else None. A word that is already a whole host name is not being completed: what comes next
    is (the shell hands over `--host pod1 ` and `--host pod1` alike)."""
    if tokens and tokens[-1] in _HOST_FLAGS:
        return ""
    if len(tokens) >= 2 and tokens[-2] in _HOST_FLAGS:
        return tokens[-1]
    return None


def host_candidates(word: str, names) -> list:
    """Completions of word among names; in a comma list, of its last item (the others kept)."""
    done, _, _ = word.rpartition(",")
    prefix = f"{done}," if done else ""
    taken = set(done.split(","))
    return [f"{prefix}{name}" for name in sorted(set(names)) if name not in taken]


def host_names(ops_config, ssh_config_path: Path) -> list:
    """What --host takes by name: the built-in local, invoke.yaml's profiles and fleets, the
    fleets pod.up and campaigns recorded (the user's, from any folder), and the Host aliases pod.up
    wrote into ~/.ssh/config."""
    from .ssh_config import pod_up_aliases  # only when completing
    from .state import fleet_names

    ops_config = ops_config or {}
    names = [LOCAL, *(ops_config.get("profiles") or {}), *(ops_config.get("fleets") or {})]
    try:
        names += pod_up_aliases(ssh_config_path)
    except (OSError, ConfigError):  # an unreadable ~/.ssh/config completes with the rest
        pass
    try:
        names += fleet_names()
    except ConfigError:  # a damaged state database completes with the rest
        pass
    return names


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

    def _make_parser(self):
        """Invoke's parser, holding only the tasks argv names: Invoke's builds a context for
        every task of the collection (each from its signature) and its ParseMachine deep-copies
        them all, a fifth of `ops --list`'s start-up for contexts nothing looked at."""
        named = set(self.core.unparsed) | set(self.core.remainder.split())
        if isinstance(self.args.help.value, str):  # `ops --help TASK`
            named.add(self.args.help.value)
        ignore_unknown_help = self.config.tasks.ignore_unknown_help
        contexts = [ParserContext(name=name, aliases=aliases,
                                  args=self.collection[name].get_arguments(ignore_unknown_help=ignore_unknown_help))
                    for name, aliases in self.collection.task_names.items() if named & {name, *aliases}]
        return Parser(initial=self.initial_context, contexts=contexts)

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
        if self.args.complete.value:
            self._complete_a_host()
        try:
            super().parse_cleanup()
        except ParseError as exc:  # `ops --help NAME` of no task
            raise Exit(f"error: {self._explain(exc)}", code=2) from None

    def _complete_a_host(self):
        """`--complete` of a --host/-H value: print the host names and end (Invoke prints
        nothing for a flag's value); anything else is left to Invoke's completion."""
        try:
            tokens = shlex.split(self.core.remainder)
        except ValueError:  # an unclosed quote: nothing to say
            return
        if tokens and tokens[0] in self.binary_names:
            tokens = tokens[1:]
        word = host_word(tokens)
        if word is None:
            return
        names = host_names(self.config.get("ops"), Path("~/.ssh/config").expanduser())
        if word in names:
            return
        for candidate in host_candidates(word, names):
            print(candidate)
        raise Exit

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
            return f"{word}: no such task{nearest(word, self._task_names())} (see ops --list)"
        if context is not None and context.name:
            # The task's own flags first: `--hots` of a task means its --host, not core -H.
            hint = nearest(word, context.flags) or nearest(word, self.initial_context.flags)
            return f"{word}: no such flag of {context.name}{hint} (see ops {context.name} --help)"
        return f"{word}: no such flag of ops{nearest(word, self.initial_context.flags)} (see ops --help)"

    def _task_names(self) -> list:
        """Every task's name and alias (the parser holds only those argv named)."""
        return [name for primary, aliases in self.collection.task_names.items() for name in (primary, *aliases)]

    def update_config(self, merge=True):
        super().update_config(merge=merge)
        if self.cli_host:
            self.config[CLI_HOST_KEY] = self.cli_host

    def execute(self):
        try:
            super().execute()
        finally:
            from .targets import close_all  # here: a listing or --help loads no connection code

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
