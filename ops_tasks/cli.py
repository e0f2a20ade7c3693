"""The `ops` console script: an invoke.Program over the same namespace as tasks.py."""

import os

from invoke import Exit, Program

from . import __version__
from .collection import ns
from .errors import ConfigError
from .settings import check_project_config
from .targets import close_all


def preflight(directory) -> None:
    """Refuse a broken invoke.yaml in directory with one line and exit 2."""
    try:
        check_project_config(directory)
    except ConfigError as exc:
        raise Exit(f"error: {exc}", code=2) from None


class OpsProgram(Program):
    """Program with a bundled namespace that still reads ./invoke.yaml.

    Invoke skips project config when the namespace is bundled; `ops` is run from a
    project directory and must honour its profiles, so it loads the file itself.
    """

    def parse_collection(self):
        super().parse_collection()
        cwd = os.getcwd()
        preflight(cwd)
        self.config.set_project_location(cwd)
        self.config.load_project()

    def execute(self):
        try:
            super().execute()
        finally:
            close_all()


program = OpsProgram(namespace=ns, name="ops", binary="ops", version=__version__)


def main():
    program.run()
