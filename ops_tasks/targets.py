"""Where remote scripts run: over SSH (one pooled connection per host), locally, or nowhere.

A target runs one rendered script per call over ONE exec channel (`bash -s`, the script on
stdin) and hands back what it printed. Operations never care which kind they were given: every
kind implements `Target` below, and a dry run is just the kind that contacts nothing.
"""

import atexit
import math
import os
import select
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .errors import ConfigError, HostError
from .settings import Profile, parse_destination

# Called with each chunk of a stream as it arrives (progress, followed logs).
Sink = Optional[Callable[[bytes], None]]


@dataclass
class ScriptResult:
    stdout: str
    stderr: str
    exit_code: int
    elapsed_ms: float


class Target:
    """What an operation may ask of the place it works on: `SshTarget`, `LocalTarget` and
    `DryRunTarget` each implement all of it (the SSH and dry-run ones also `openssh_command`,
    the system ssh argv for bulk data, which only a remote host has).

    - `profile`: the resolved host profile (name, destination, volume, defaults).
    - `connect_ms`: how long connecting took; 0 locally, None before contact (and in a dry run).
    - `run_script(script, ...)`: run it with `bash -s`, one exec channel; a `ScriptResult`.
    - `open()`: the live connection (a Fabric Connection; None on this machine) for what
      scripts cannot do (a tunnel).
    - `before_command(argv)`: a local program that reaches the host (rsync over OpenSSH) is
      about to start; only a dry run acts on it, by recording argv and stopping.
    - `describe(**notes)`: what an operation will do besides its scripts; a dry run reports it.
    - `close()`: let go of the connection.
    """

    profile: Profile
    connect_ms: Optional[float] = None

    def run_script(self, script: str, *, stdin_payload: bytes = b"", on_stderr: Sink = None,
                   on_stdout: Sink = None, hold_stdin: bool = False) -> ScriptResult:
        raise NotImplementedError

    def open(self):
        return None  # nothing to open: this machine

    def before_command(self, argv: list) -> None:
        pass  # the command runs, and makes its own contact

    def describe(self, **notes) -> None:
        pass  # only a dry run reports what it would do

    def close(self) -> None:
        pass


class DryRunStop(Exception):
    """How a dry run ends: raised by `DryRunTarget` at the operation's first contact (a script,
    a connection, a command reaching the host), carrying the target and what it recorded.
    `ops_task` catches it and prints the dry-run report instead of the operation's result.
    """

    def __init__(self, target):
        super().__init__("dry run")
        self.target = target


@dataclass
class DryRunTarget(Target):
    """Records what an operation would run, and stops it at its first contact.

    Everything before the first contact (checking flags, rendering scripts) runs for real, so a
    dry run refuses bad input exactly as a real run would; nothing after it runs at all, so the
    operation must make no local change before its first contact either.
    """

    profile: Profile
    invoke_config: object = None
    scripts: list = field(default_factory=list)
    commands: list = field(default_factory=list)
    connect_ms: Optional[float] = None
    notes: dict = field(default_factory=dict)

    def describe(self, **notes):
        """What the operation would do besides its scripts (a manifest, say), for the report."""
        self.notes.update(notes)

    def open(self):
        """Any other contact (a tunnel, say) stops a dry run just the same."""
        raise DryRunStop(self)

    def openssh_command(self) -> list:
        """The ssh argv a real run would hand rsync: built from the ssh config, nothing contacted."""
        return SshTarget(self.profile, self.invoke_config).openssh_command()

    def before_command(self, argv: list) -> None:
        """The local command a real run would start here (rsync): recorded, not run."""
        self.commands.append(shlex.join(argv))
        raise DryRunStop(self)

    def run_script(self, script: str, *, stdin_payload: bytes = b"", on_stderr: Sink = None,
                   on_stdout: Sink = None, hold_stdin: bool = False):
        # The payload (secrets travel there) is never shown.
        self.scripts.append(script)
        raise DryRunStop(self)


class LocalTarget(Target):
    """The `local` profile: this machine, no SSH; its volume is a folder of the checkout."""

    connect_ms = 0.0

    def __init__(self, profile: Profile):
        self.profile = profile

    def run_script(self, script: str, *, stdin_payload: bytes = b"", on_stderr: Sink = None,
                   on_stdout: Sink = None, hold_stdin: bool = False):
        # The local stand-in's volume folder is made by the first script that writes there (the
        # run tool's submit, vllm.start), never here: a read-only task on `local` creates nothing.
        started = time.monotonic()
        proc = subprocess.Popen(
            ["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        proc.stdin.write(script.encode() + stdin_payload)
        proc.stdin.flush()
        if not hold_stdin:
            proc.stdin.close()
        try:
            out, err = _stream_local(proc, on_stdout, on_stderr)
        except KeyboardInterrupt:
            # A held stdin closing is the script's signal to stop (vllm.logs --follow).
            if not proc.stdin.closed:
                proc.stdin.close()
            proc.wait()
            if not hold_stdin:
                raise
            out, err = b"", b""
        elapsed = (time.monotonic() - started) * 1000
        return ScriptResult(out.decode(errors="replace"), err.decode(errors="replace"), proc.returncode, elapsed)


def _stream_local(proc, on_stdout: Sink, on_stderr: Sink):
    out = []
    err = []
    streams = {proc.stdout.fileno(): (out, on_stdout), proc.stderr.fileno(): (err, on_stderr)}
    while streams:
        ready, _, _ = select.select(list(streams), [], [])
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                del streams[fd]
                continue
            chunks, sink = streams[fd]
            chunks.append(chunk)
            if sink is not None:
                sink(chunk)
    proc.wait()
    if not proc.stdin.closed:
        proc.stdin.close()
    return b"".join(out), b"".join(err)


class TrustOnFirstUse:
    """Host-key policy: accept a host never seen before and remember it in known_hosts.

    A host whose key differs from the remembered one never reaches this policy: paramiko
    refuses it with BadHostKeyException, which we turn into a clear error.
    """

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        # Append, never rewrite: the user's other entries and comments stay as they are.
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(line)


class SshTarget(Target):
    """One host over SSH: one paramiko connection, opened on first use, reused after."""

    def __init__(self, profile: Profile, invoke_config=None):
        self.profile = profile
        self.invoke_config = invoke_config
        self.connection = None
        self.connect_ms = None
        self.known_hosts = None  # set when host keys are checked

    # -- connecting

    def _new_connection(self):
        import fabric

        # Fabric trap (fabric#2111): a plain Invoke config loads no ~/.ssh/config.
        if self.invoke_config is not None:
            config = self.invoke_config.clone(into=fabric.Config)
            config.load_ssh_config()
        else:
            config = fabric.Config()
        # Fabric truncates the timeout to an int: never let 0.5 become "no timeout".
        timeout = max(1, math.ceil(self.profile.connect_timeout))
        connection = fabric.Connection(
            self.profile.destination,
            config=config,
            connect_timeout=timeout,
            connect_kwargs={"banner_timeout": timeout, "auth_timeout": timeout},
        )
        self._set_host_key_policy(connection)
        return connection

    def _known_hosts_path(self, connection) -> Path:
        configured = self.profile.known_hosts or (connection.ssh_config.get("userknownhostsfile") or "").split(" ")[0]
        return Path(configured or "~/.ssh/known_hosts").expanduser()

    def _strict_host_keys(self, connection) -> bool:
        if self.profile.strict_host_keys is not None:
            return self.profile.strict_host_keys
        return connection.ssh_config.get("stricthostkeychecking", "").lower() != "no"

    def _set_host_key_policy(self, connection):
        import paramiko

        client = connection.client
        if not self._strict_host_keys(connection):
            # Throwaway pods: accept any key, remember nothing.
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            return
        known_hosts = self._known_hosts_path(connection)
        if known_hosts.is_file():
            client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(TrustOnFirstUse(known_hosts))
        self.known_hosts = known_hosts

    def open(self):
        if self.connection is not None and self.connection.is_connected:
            return self.connection
        connection = self._new_connection()
        started = time.monotonic()
        try:
            connection.open()
        except Exception as exc:
            connection.close()
            raise self._connect_error(connection, exc) from None
        self.connect_ms = (time.monotonic() - started) * 1000
        self.connection = connection
        return connection

    def _connect_error(self, connection, exc) -> Exception:
        """One line naming host and port for each way connecting can fail."""
        import paramiko

        where = f"{connection.host}:{connection.port}"
        label = self.profile.label
        timeout = max(1, math.ceil(self.profile.connect_timeout))
        if isinstance(exc, paramiko.BadHostKeyException):
            name = connection.host if connection.port == 22 else f"[{connection.host}]:{connection.port}"
            return HostError(
                f"{label}: the host key of {where} has CHANGED since it was saved in {self.known_hosts}; "
                f"if the pod was re-created, forget the old key with: ssh-keygen -f {self.known_hosts} -R '{name}'"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return HostError(f"{label}: authentication failed for {connection.user}@{where}")
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return HostError(f"{label}: connection refused by {where}")
        if isinstance(exc, socket.gaierror):
            if exc.errno == socket.EAI_NONAME:
                return ConfigError(f"{label}: unknown host {connection.host!r} (it does not resolve)")
            return HostError(f"{label}: cannot resolve {connection.host!r}: {exc.strerror}")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return HostError(f"{label}: timed out after {timeout}s connecting to {where}")
        if isinstance(exc, paramiko.SSHException):
            text = str(exc)
            # A silent port: the banner never comes, and paramiko reports the missing session.
            if "banner" in text.lower() or "no existing session" in text.lower():
                return HostError(f"{label}: no SSH server answered on {where} within {timeout}s")
            if "no authentication methods" in text.lower():
                return HostError(f"{label}: no SSH key to offer to {where} (set IdentityFile in ~/.ssh/config)")
            return HostError(f"{label}: SSH error with {where}: {text}")
        if isinstance(exc, OSError):
            return HostError(f"{label}: cannot connect to {where}: {exc.strerror or exc}")
        return exc

    def openssh_command(self) -> list:
        """The system `ssh` with this connection's own parameters, for rsync's data plane.

        paramiko moves about a third of what OpenSSH does, so bulk data goes through OpenSSH. It
        reads the same ssh config file as our connection (-F: OpenSSH would otherwise read the
        passwd home's, not $HOME's), under the same name, so ProxyJump, ProxyCommand and the
        jump host's own settings apply as they do for the connection; port, user, keys and the
        host-key policy are given explicitly, as the connection resolved them.
        """
        connection = self.connection or self._new_connection()
        config_file = Path("~/.ssh/config").expanduser()
        timeout = max(1, math.ceil(self.profile.connect_timeout))
        argv = ["ssh", "-F", str(config_file) if config_file.is_file() else "/dev/null",
                "-p", str(connection.port), "-l", connection.user, "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={timeout}", "-o", "ServerAliveInterval=15", "-o", "LogLevel=ERROR"]
        keys = connection.connect_kwargs.get("key_filename") or []
        for key in [keys] if isinstance(keys, str) else keys:
            argv += ["-i", str(Path(key).expanduser())]
        if self.known_hosts is None:  # host keys not checked for this profile
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        else:
            # accept-new is OpenSSH's trust on first use: the same policy as our own connection.
            argv += ["-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={self.known_hosts}"]
        return argv + [parse_destination(self.profile.destination).host]

    # -- running

    def run_script(self, script: str, *, stdin_payload: bytes = b"", on_stderr: Sink = None,
                   on_stdout: Sink = None, hold_stdin: bool = False):
        """Run script with `bash -s` over one exec channel; stream its output to the sinks.

        hold_stdin keeps the script's stdin open until the output ends or Ctrl-C, which then
        closes the channel: the script sees its stdin end and stops (vllm.logs --follow).
        """
        connection = self.open()
        started = time.monotonic()
        channel = None
        try:
            channel = connection.client.get_transport().open_session(timeout=self.profile.connect_timeout)
            channel.exec_command("bash -s")
            # Invoke's in_stream sends one byte per 10 ms; the channel takes the script whole.
            channel.sendall(script.encode() + stdin_payload)
            if not hold_stdin:
                channel.shutdown_write()
            out, err = _drain(channel, on_stdout, on_stderr)
            exit_code = channel.recv_exit_status()
        except KeyboardInterrupt:
            if channel is not None:
                channel.close()
            if not hold_stdin:  # an interrupted script has no answer to read
                raise
            return ScriptResult("", "", 130, (time.monotonic() - started) * 1000)
        except (OSError, EOFError) as exc:
            self.close()
            raise HostError(f"{self.profile.label}: connection lost: {exc or type(exc).__name__}") from None
        except Exception as exc:
            import paramiko

            if not isinstance(exc, paramiko.SSHException):
                raise
            self.close()
            raise HostError(f"{self.profile.label}: connection lost: {exc}") from None
        elapsed = (time.monotonic() - started) * 1000
        return ScriptResult(out.decode(errors="replace"), err.decode(errors="replace"), exit_code, elapsed)

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _drain(channel, on_stdout: Sink, on_stderr: Sink):
    out = []
    err = []
    while True:
        # The channel's fileno is readable when stdout or stderr has data, or at EOF.
        select.select([channel], [], [], 1.0)
        progressed = False
        if channel.recv_ready():
            chunk = channel.recv(65536)
            out.append(chunk)
            if on_stdout is not None:
                on_stdout(chunk)
            progressed = True
        if channel.recv_stderr_ready():
            chunk = channel.recv_stderr(65536)
            err.append(chunk)
            if on_stderr is not None:
                on_stderr(chunk)
            progressed = True
        if not progressed and channel.exit_status_ready() and channel.eof_received:
            break
        if not progressed and channel.closed:
            break
    return b"".join(out), b"".join(err)


# ---------------------------------------------------------------- the pool

_POOL: dict = {}


def target_for(profile: Profile, *, dry_run: bool = False, invoke_config=None):
    """The target for a profile: one SSH connection per host per process, shared by chained tasks."""
    if dry_run:
        return DryRunTarget(profile, invoke_config)
    if profile.is_local:
        return LocalTarget(profile)
    if profile not in _POOL:
        _POOL[profile] = SshTarget(profile, invoke_config)
    return _POOL[profile]


def close_all():
    """Close every pooled connection (at exit, and when the `ops` program finishes)."""
    while _POOL:
        _, target = _POOL.popitem()
        target.close()


atexit.register(close_all)
