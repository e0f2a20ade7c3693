"""Where remote scripts run: over SSH (one pooled connection per host), locally, or nowhere.

A target runs one rendered script per call over ONE exec channel (`bash -s`, the script on
stdin) and hands back what it printed. Operations never care which kind they were given: every
kind implements `Target` below, and a dry run is just the kind that contacts nothing.
"""

import abc
import atexit
import base64
import contextlib
import hashlib
import logging
import math
import os
import select
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from . import known_hosts
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


class Target(abc.ABC):
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

    @abc.abstractmethod
    def run_script(self, script: str, *, stdin_payload: bytes = b"", on_stderr: Sink = None,
                   on_stdout: Sink = None, hold_stdin: bool = False) -> ScriptResult:
        """Each kind runs it its own way: see the class docstring."""

    def open(self):
        return None  # nothing to open: this machine

    def before_command(self, argv: list) -> None:
        pass  # the command runs, and makes its own contact

    def describe(self, **notes) -> None:
        pass  # only a dry run reports what it would do

    def round_trip_budget(self, seconds: Optional[float]):
        """A block whose round trips end by `seconds` (plus the answer time) whatever the link does;
        for tasks with a time limit of their own (runs.wait --timeout). Only SSH has a link."""
        return contextlib.nullcontext(self)

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
            if not hold_stdin:  # as Ctrl-C stops the whole process group: a signal sent to us alone too
                proc.terminate()
            proc.wait()
            if not hold_stdin:
                raise
            out, err = b"", b""
        elapsed = (time.monotonic() - started) * 1000
        return ScriptResult(out.decode(errors="replace"), err.decode(errors="replace"), proc.returncode, elapsed)


def _stream_local(proc, on_stdout: Sink, on_stderr: Sink):
    """Both streams to their end; stdout handed to a sink is not also kept (flat memory when
    following), stderr always is (error messages quote it)."""
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
            if sink is None or chunks is err:
                chunks.append(chunk)
            if sink is not None:
                sink(chunk)
    proc.wait()
    if not proc.stdin.closed:
        proc.stdin.close()
    return b"".join(out), b"".join(err)


# ---------------------------------------------------------------- host keys

# StrictHostKeyChecking as OpenSSH spells it, to what we do: refuse an unknown host ("yes"; "ask"
# too, since nobody is there to ask), trust it on first use ("accept-new"), or accept any key
# and remember nothing ("no").
HOST_KEY_MODES = {"yes": "yes", "ask": "yes", "accept-new": "accept-new", "no": "no", "off": "no"}
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
_KEY_TYPE_LABELS = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ssh-dss": "DSA"}
_WARNED: set = set()  # known_hosts warnings already printed by this process


def _notice(text: str) -> None:
    """A line for the person at the terminal (stderr): what was trusted, what was skipped."""
    print(text, file=sys.stderr, flush=True)


def fingerprint(key) -> str:
    """As `ssh-keygen -lf` shows it: SHA256: and the unpadded base64 of the key blob's digest."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def key_type_label(key) -> str:
    name = key.get_name()
    return _KEY_TYPE_LABELS.get(name, "ECDSA" if name.startswith("ecdsa") else name)


def _config_files(value, default: tuple, user: str) -> list:
    """A UserKnownHostsFile/GlobalKnownHostsFile value: several files, `~` and `%d`/`%u` expanded."""
    words = " ".join(value).split() if isinstance(value, list) else (value or "").split()
    home = str(Path.home())
    return [Path(w.replace("%d", home).replace("%u", user)).expanduser() for w in words or default]


@dataclass
class HostKeySettings:
    """The host-key policy one host is reached with, by paramiko and OpenSSH alike."""

    mode: str  # yes, accept-new or no (HOST_KEY_MODES' values)
    user_files: list  # UserKnownHostsFile: read, and the first one learns new hosts
    global_files: list  # GlobalKnownHostsFile: read only
    name: str  # the host as known_hosts names it: host, or [host]:port

    @property
    def files(self) -> list:
        return self.user_files + self.global_files


class UnknownHostKey(Exception):
    """A host not in known_hosts under StrictHostKeyChecking yes."""


class RevokedHostKey(Exception):
    def __init__(self, entry):
        super().__init__(entry.where)
        self.entry = entry


class HostKeyPolicy:
    """paramiko's missing-host-key policy, by the mode: it sees only hosts paramiko was given no
    key for (a key that differs from the given ones is refused by paramiko itself)."""

    def __init__(self, settings: HostKeySettings, known, label: str):
        self.settings = settings
        self.known = known
        self.label = label

    def missing_host_key(self, client, hostname, key):
        revoked = self.known.revoked_entry(key)
        if revoked is not None:
            raise RevokedHostKey(revoked)
        if self.settings.mode == "no":
            return  # accept, remember nothing
        if self.settings.mode == "yes":
            raise UnknownHostKey(hostname)
        self._remember(hostname, key)

    def _remember(self, hostname, key):
        known_hosts = self.settings.user_files[0]
        if str(known_hosts) != os.devnull:
            known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Append, never rewrite: the user's other entries and comments stay as they are.
            fd = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        _notice(f"{self.label}: trusted the host key of {hostname} on first use: {key_type_label(key)} "
                f"{fingerprint(key)} (saved in {known_hosts})")


class LinkDown(HostError):
    """The host stopped answering, or the connection dropped, in the middle of a round trip."""

    def with_hint(self, hint: str) -> "LinkDown":
        """The same failure, saying how to pick up where it stopped (the work goes on on the pod)."""
        return type(self)(f"{self}; {hint}")


class NoAnswer(LinkDown):
    """Nothing came back within the deadline: a hung login shell, a stopped sshd, a dead link."""


class ConnectionLost(LinkDown):
    """The connection closed before the script's answer came."""


# Printed by the exec command before `bash -s` starts reading the script: once it arrives, the
# login shell (~/.bashrc and all) is through. Cut out of stderr before anyone sees it.
STARTED_MARK = b"\x1eops-tasks:started\x1e"
_PRINT_MARK = "printf '\\036ops-tasks:started\\036' >&2"
EXEC_COMMAND = f"{_PRINT_MARK}; exec bash -s"


def after_start_mark(command: str) -> str:
    """A remote command that starts the same way: the mark, once the login shell is through."""
    return f"{_PRINT_MARK}; {command}"


RSYNC_PATH = after_start_mark("exec rsync")  # rsync's remote command (--rsync-path)
KEEPALIVE_S = 15  # transport keepalives between round trips (NAT, idle tunnels)
_KEPT_STDERR = 1 << 20  # of a pod's stderr, the last MiB is kept (trust nothing from the pod)


class SshTarget(Target):
    """One host over SSH: one paramiko connection, opened on first use, reused after."""

    def __init__(self, profile: Profile, invoke_config=None):
        self.profile = profile
        self.invoke_config = invoke_config
        self.connection = None
        self.connect_ms = None
        self.host_keys = None  # HostKeySettings, once resolved
        self.budget_s = None  # round_trip_budget: the longest a round trip may take, if set

    @property
    def answer_s(self) -> float:
        """How long the host may take to answer anything: connecting, starting a script, a keepalive."""
        return max(1, math.ceil(self.profile.connect_timeout))

    # -- connecting

    def _new_connection(self):
        import fabric

        from . import ssh_config

        # Fabric trap (fabric#2111): a plain Invoke config loads no ~/.ssh/config.
        if self.invoke_config is not None:
            config = self.invoke_config.clone(into=fabric.Config)
        else:
            config = fabric.Config()
        ssh_config.load_into(config)  # ~/.ssh/config as ssh reads it: fabric's own reading skips Include
        # Fabric truncates the timeout to an int: never let 0.5 become "no timeout".
        timeout = self.answer_s
        # Host, user and port given apart: Fabric cannot split a bracketed IPv6 `user@[::1]:port`.
        destination = parse_destination(self.profile.destination)
        return fabric.Connection(
            destination.host, user=destination.user, port=destination.port,
            config=config,
            connect_timeout=timeout,
            connect_kwargs={"banner_timeout": timeout, "auth_timeout": timeout},
        )

    def host_key_settings(self, connection) -> HostKeySettings:
        """The policy and files for this host, as ~/.ssh/config and the profile say (profile first).

        Strict checking with nothing to check against (every UserKnownHostsFile /dev/null) is a
        configuration error, never a silent trust of whatever key comes."""
        ssh_config = connection.ssh_config
        label = self.profile.label
        if self.profile.strict_host_keys is not None:
            mode = "yes" if self.profile.strict_host_keys else "no"
        else:
            value = str(ssh_config.get("stricthostkeychecking") or "accept-new").lower()
            if value not in HOST_KEY_MODES:
                raise ConfigError(f"{label}: StrictHostKeyChecking {value!r} in ~/.ssh/config is not one of "
                                  f"yes, accept-new, no, off, ask")
            mode = HOST_KEY_MODES[value]
        user = connection.user or ""
        if self.profile.known_hosts:
            user_files = [Path(self.profile.known_hosts).expanduser()]
        else:
            user_files = _config_files(ssh_config.get("userknownhostsfile"), DEFAULT_USER_KNOWN_HOSTS, user)
        global_files = _config_files(ssh_config.get("globalknownhostsfile"), DEFAULT_GLOBAL_KNOWN_HOSTS, user)
        settings = HostKeySettings(mode, user_files, global_files, known_hosts.host_name(connection.host, connection.port))
        if mode == "yes" and all(str(f) == os.devnull for f in user_files):
            known = known_hosts.load(global_files)
            if not known.keys_for(settings.name):
                raise ConfigError(f"{label}: strict host key checking is asked for, but UserKnownHostsFile is "
                                  f"{os.devnull}: no key of {settings.name} can be known, so none can be checked "
                                  f"(give a real known_hosts file, or set strict_host_keys: false for a throwaway pod)")
        return settings

    def _set_host_key_policy(self, connection):
        """Give paramiko only the keys known for this host, and our policy for the rest.

        known_hosts is read by known_hosts.py (paramiko's own loader dies on a marker or a corrupt
        line); its warnings are printed once. A revoked key is never handed over, and refused."""
        settings = self.host_key_settings(connection)
        known = known_hosts.load(settings.files)
        for warning in known.warnings:
            if warning not in _WARNED:
                _WARNED.add(warning)
                _notice(f"warning: {warning}")
        client = connection.client
        if settings.mode != "no":  # "no" accepts any key, changed ones too
            given = client.get_host_keys()
            for entry in known.entries_for(settings.name):
                if known.revoked_entry(entry.key) is not None:
                    continue
                # paramiko keeps one key per type: the first line that names the host wins.
                if entry.key.get_name() not in (given.lookup(settings.name) or {}):
                    given.add(settings.name, entry.key.get_name(), entry.key)
        client.set_missing_host_key_policy(HostKeyPolicy(settings, known, self.profile.label))
        self.host_keys = settings
        self._known = known

    def open(self):
        if self.connection is not None and self.connection.is_connected:
            return self.connection
        _quiet_paramiko()
        connection = self._new_connection()
        self._set_host_key_policy(connection)  # ConfigError here is before any contact
        started = time.monotonic()
        try:
            connection.open()
        except Exception as exc:
            connection.close()
            raise self._connect_error(connection, exc, time.monotonic() - started) from None
        self.connect_ms = (time.monotonic() - started) * 1000
        connection.client.get_transport().set_keepalive(KEEPALIVE_S)
        self.connection = connection
        return connection

    def _connect_error(self, connection, exc, elapsed_s: float) -> Exception:
        """One line naming host and port for each way connecting can fail."""
        import paramiko

        where = f"{connection.host}:{connection.port}"
        label = self.profile.label
        timeout = self.answer_s
        if isinstance(exc, RevokedHostKey):
            return HostError(f"{label}: the host key of {where} is REVOKED ({exc.entry.where}): refused")
        if isinstance(exc, UnknownHostKey):
            return HostError(
                f"{label}: {self.host_keys.name} is not in known_hosts ({', '.join(map(str, self.host_keys.user_files))}) "
                f"and StrictHostKeyChecking is yes: refused (add its key with ssh-keyscan after checking its "
                f"fingerprint, or allow trust on first use)")
        if isinstance(exc, paramiko.BadHostKeyException):
            revoked = self._known.revoked_entry(exc.key)
            if revoked is not None:
                return HostError(f"{label}: the host key of {where} is REVOKED ({revoked.where}): refused")
            saved = self._known.where_saved(self.host_keys.name, exc.expected_key)
            return HostError(
                f"{label}: the host key of {where} has CHANGED since it was saved in {saved}; "
                f"if the pod was re-created, forget the old key with: ssh-keygen -f {saved} -R '{self.host_keys.name}'"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return HostError(f"{label}: authentication failed for {connection.user}@{where}")
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return HostError(f"{label}: connection refused by {where}")
        if isinstance(exc, socket.gaierror):
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                return ConfigError(f"{label}: unknown host {connection.host!r} (it does not resolve)")
            return HostError(f"{label}: cannot resolve {connection.host!r}: {exc.strerror}")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return HostError(f"{label}: timed out after {timeout}s connecting to {where}")
        if isinstance(exc, paramiko.SSHException):
            text = str(exc)
            cause = exc.__context__
            # A port that takes the TCP connection and closes it: the banner read ends in EOF.
            if isinstance(cause, (EOFError, ConnectionError)) or ("banner" in text.lower() and elapsed_s < timeout - 0.5):
                return HostError(f"{label}: {where} closed the connection before SSH began (not an SSH server, "
                                 f"or it refused us)")
            # A silent port: the banner never comes, and paramiko reports the missing session.
            if "banner" in text.lower() or "no existing session" in text.lower():
                return NoAnswer(f"{label}: no answer from {where} within {timeout} s (no SSH server answered)")
            if "no authentication methods" in text.lower():
                return HostError(f"{label}: no SSH key to offer to {where} (set IdentityFile in ~/.ssh/config)")
            return HostError(f"{label}: SSH error with {where}: {text}")
        if isinstance(exc, EOFError):
            return HostError(f"{label}: {where} closed the connection before SSH began")
        if isinstance(exc, OSError):
            return HostError(f"{label}: cannot connect to {where}: {exc.strerror or exc}")
        return exc

    def openssh_command(self) -> list:
        """The system `ssh` with this connection's own parameters, for rsync's data plane.

        paramiko moves about a third of what OpenSSH does, so bulk data goes through OpenSSH. It
        reads the same ssh config file as our connection (-F: OpenSSH would otherwise read the
        passwd home's, not $HOME's), under the same name, so ProxyJump, ProxyCommand and the
        jump host's own settings apply as they do for the connection; port, user, keys and the
        host-key policy (the user's own StrictHostKeyChecking, the same known_hosts files) are
        given explicitly, as the connection resolved them.
        """
        connection = self.connection or self._new_connection()
        config_file = Path("~/.ssh/config").expanduser()
        argv = ["ssh", "-F", str(config_file) if config_file.is_file() else "/dev/null",
                "-p", str(connection.port), "-l", connection.user, "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={self.answer_s}", "-o", f"ServerAliveInterval={self.answer_s}",
                "-o", "ServerAliveCountMax=2", "-o", "LogLevel=ERROR"]
        keys = connection.connect_kwargs.get("key_filename") or []
        for key in [keys] if isinstance(keys, str) else keys:
            argv += ["-i", str(Path(key).expanduser())]
        settings = self.host_key_settings(connection)
        if settings.mode == "no":  # accept any key, remember nothing
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        else:
            argv += ["-o", f"StrictHostKeyChecking={settings.mode}",
                     "-o", f"UserKnownHostsFile={_ssh_file_list(settings.user_files)}",
                     "-o", f"GlobalKnownHostsFile={_ssh_file_list(settings.global_files)}"]
        return argv + [parse_destination(self.profile.destination).host]

    @property
    def bulk_start_s(self) -> float:
        """How long OpenSSH may take to start a bulk transfer's remote command (rsync, through
        RSYNC_PATH's mark): connecting (its ConnectTimeout), then the login shell, answer_s each.
        After the start, its ServerAliveInterval/CountMax end a link that stops answering within
        3 x answer_s; they cannot see a login shell that hangs while sshd answers: the caller
        waits for the mark this long."""
        return 2 * self.answer_s

    @contextlib.contextmanager
    def round_trip_budget(self, seconds: Optional[float]):
        """Round trips in this block end by `seconds` plus the answer time, whatever the link does."""
        previous, self.budget_s = self.budget_s, seconds
        try:
            yield self
        finally:
            self.budget_s = previous

    # -- running

    def run_script(self, script: str, *, stdin_payload: bytes = b"", on_stderr: Sink = None,
                   on_stdout: Sink = None, hold_stdin: bool = False):
        """Run script with `bash -s` over one exec channel; stream its output to the sinks.

        hold_stdin keeps the script's stdin open until the output ends or Ctrl-C, which then
        closes the channel: the script sees its stdin end and stops (vllm.logs --follow).
        Every round trip has a deadline (docs/ARCHITECTURE.md, "Targets"): NoAnswer when the
        script does not start or the host stops answering keepalives within answer_s, or the
        budget runs out; ConnectionLost when the connection drops before the answer.
        """
        connection = self.open()
        started = time.monotonic()
        channel = None
        transport = connection.client.get_transport()
        watch = _Liveness(transport, self.profile.label, self.answer_s, self.budget_s)
        try:
            try:
                channel = transport.open_session(timeout=self.answer_s)
            except Exception:
                if transport.is_active():
                    raise NoAnswer(f"no answer from {self.profile.label} within {self.answer_s} s "
                                   f"(opening a session)") from None
                raise
            channel.settimeout(self.answer_s)
            self._exec_within(channel, transport)
            # Invoke's in_stream sends one byte per 10 ms; the channel takes the script whole.
            channel.sendall(script.encode() + stdin_payload)
            channel.settimeout(None)
            if not hold_stdin:
                channel.shutdown_write()
            out, err = _drain(channel, on_stdout, on_stderr, watch)
            if not channel.exit_status_ready() or (channel.recv_exit_status() == -1 and not transport.is_active()):
                raise ConnectionLost(f"connection to {self.profile.label} lost before the answer came")
            exit_code = channel.recv_exit_status()
        except KeyboardInterrupt:
            if channel is not None:
                channel.close()
            if not hold_stdin:  # an interrupted script has no answer to read
                raise
            return ScriptResult("", "", 130, (time.monotonic() - started) * 1000)
        except LinkDown:
            self.close()
            raise
        except (socket.timeout, TimeoutError):
            self.close()
            raise NoAnswer(f"no answer from {self.profile.label} within {self.answer_s} s") from None
        except (OSError, EOFError) as exc:
            self.close()
            raise ConnectionLost(f"connection to {self.profile.label} lost ({exc or type(exc).__name__})") from None
        except Exception as exc:
            import paramiko

            if not isinstance(exc, paramiko.SSHException):
                raise
            self.close()
            raise ConnectionLost(f"connection to {self.profile.label} lost ({exc})") from None
        elapsed = (time.monotonic() - started) * 1000
        return ScriptResult(out.decode(errors="replace"), err.decode(errors="replace"), exit_code, elapsed)

    def _exec_within(self, channel, transport) -> None:
        """channel.exec_command, ended within answer_s: paramiko waits for the exec's reply with
        no timeout, so a link that dies between opening the session and that reply would hang
        the task for ever. A timer drops the connection instead, and the task says so."""
        timer = threading.Timer(self.answer_s, transport.close)
        timer.daemon = True
        timer.start()
        try:
            channel.exec_command(EXEC_COMMAND)
        except Exception:
            if not timer.is_alive():  # the timer fired: the host never answered
                raise NoAnswer(f"no answer from {self.profile.label} within {self.answer_s} s "
                               f"(starting the script)") from None
            raise
        finally:
            timer.cancel()

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _ssh_file_list(paths: list) -> str:
    """Files for one OpenSSH option value: space-separated, a path with a space double-quoted."""
    return " ".join(f'"{p}"' if " " in str(p) else str(p) for p in paths)


def _quiet_paramiko() -> None:
    """paramiko logs a failed handshake with a traceback through `logging`, which Python prints on
    stderr when nothing is configured: our own one-line error says it all."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


class _Liveness:
    """Deadlines of one round trip: the script must start within answer_s; after that, whenever
    nothing arrived for answer_s, a keepalive (want-reply) must be answered within answer_s; and
    the whole round trip ends by the budget, if there is one. Long waits stay alive; a stopped
    sshd or a dead link answers nothing."""

    def __init__(self, transport, label: str, answer_s: float, budget_s: Optional[float]):
        self.transport = transport
        self.label = label
        self.answer_s = answer_s
        self.budget_s = budget_s
        self.opened = self.heard = time.monotonic()
        self.started = False
        self.probe_sent = None  # when the unanswered keepalive went out

    def heard_from_host(self) -> None:
        self.heard = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if self.budget_s is not None and now - self.opened > self.budget_s + self.answer_s:
            raise NoAnswer(f"no answer from {self.label} within {self.budget_s + self.answer_s:g} s "
                           f"(its own time limit of {self.budget_s:g} s, and {self.answer_s:g} s more)")
        if not self.started and now - self.opened > self.answer_s:
            raise NoAnswer(f"no answer from {self.label} within {self.answer_s:g} s: the login shell "
                           f"did not start the script (a ~/.bashrc that waits?) or the host stopped answering")
        if self.probe_sent is not None and now - self.probe_sent > self.answer_s:
            raise NoAnswer(f"no answer from {self.label} within {self.answer_s:g} s "
                           f"(keepalives unanswered: a dead link, or its sshd stopped)")
        if self.probe_sent is None and now - self.heard > self.answer_s:
            self._probe()

    def _probe(self) -> None:
        self.probe_sent = time.monotonic()
        transport = self.transport

        def ask():  # global_request waits for the reply; a thread, so the drain loop keeps its clock
            try:
                transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:
                return
            if transport.is_active():
                self.heard = time.monotonic()
                self.probe_sent = None

        threading.Thread(target=ask, name="ssh-keepalive", daemon=True).start()


class StartMark:
    """Cuts STARTED_MARK out of the stderr stream; what the login shell printed before it passes on."""

    def __init__(self):
        self.found = False
        self.pending = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        if self.found:
            return chunk
        self.pending += chunk
        at = self.pending.find(STARTED_MARK)
        if at < 0:
            del self.pending[:-_KEPT_STDERR]  # a login shell's noise is kept only so far
            return b""
        self.found = True
        text = bytes(self.pending[:at] + self.pending[at + len(STARTED_MARK):])
        self.pending = bytearray()
        return text


def _drain(channel, on_stdout: Sink, on_stderr: Sink, watch: _Liveness):
    """Read both streams to their end. A stream handed to a sink is not also kept (a followed
    200 MB log must not grow the laptop's memory); stderr keeps its last MiB for messages."""
    out = []
    err = bytearray()
    mark = StartMark()
    while True:
        # The channel's fileno is readable when stdout or stderr has data, or at EOF.
        select.select([channel], [], [], 0.25)
        progressed = False
        if channel.recv_ready():
            chunk = channel.recv(65536)
            if on_stdout is not None:
                on_stdout(chunk)
            else:
                out.append(chunk)
            progressed = True
        if channel.recv_stderr_ready():
            chunk = mark.feed(channel.recv_stderr(65536))
            watch.started = watch.started or mark.found
            if chunk:
                err += chunk
                del err[:-_KEPT_STDERR]
                if on_stderr is not None:
                    on_stderr(chunk)
            progressed = True
        if progressed:
            watch.heard_from_host()
        elif channel.exit_status_ready() and channel.eof_received:
            break
        elif channel.closed:
            break
        else:
            watch.check()
    return b"".join(out), bytes(err)


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
