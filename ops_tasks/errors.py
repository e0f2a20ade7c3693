"""The two kinds of expected failure, each with its exit code
(docs/ARCHITECTURE.md, "Output contract")."""


class OpsError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    exit_code = 1


class ConfigError(OpsError):
    """Bad input or configuration, found before anything is contacted."""

    exit_code = 2


class HostError(OpsError):
    """The host could not be reached or refused us (refused, timed out, auth, host key)."""

    exit_code = 1


class Interrupted(OpsError):
    """Ctrl-C: stopped on request (exit 130, as a shell reports SIGINT)."""

    exit_code = 130
