"""Host profiles and settings: which host a task talks to, and with what paths and limits.

Precedence (docs/ARCHITECTURE.md, "Hosts and configuration"): task flag > environment variable > invoke.yaml profile > built-in
default. Environment variables may also come from the file named by OPS_PROJECT_ENV, which
only fills in what the real environment leaves unset.
"""

import functools
import getpass
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Optional

import yaml

from . import defaults
from .runtime.keys import LONGEST_BUDGET_S
from .errors import ConfigError
from .names import POD_NAME

LOCAL = "local"
LOCAL_POD_DIR = ".local-pod"
PROJECT_CONFIG_NAMES = ("invoke.yaml", "invoke.yml")

# Every key a profile may carry, with the types it accepts. Unknown keys are refused,
# so that a typo ("volumne") is an error instead of a silently ignored setting.
PROFILE_SCHEMA = {
    "destination": (str,),
    "volume": (str,),
    "volume_must_be_mount": (bool,),
    "outputs_dir": (str,),
    "remote_repo": (str,),
    "connect_timeout": (int, float),
    "strict_host_keys": (bool,),
    "known_hosts": (str,),
    "tmux_socket": (str,),
    "vllm": (dict,),
    "archive_patterns": (list,),
    "price_per_hour": (int, float),
    "run_timeout": (int, float),
    "run_stall_timeout": (int, float),
}
# A profile's `vllm:` defaults for vllm.start (flags win over them).
VLLM_PROFILE_SCHEMA = {
    "model_id": (str,),
    "vllm_bin": (str,),
    "port": (int,),
    "bind_host": (str,),
    "session": (str,),
    "served_model_name": (str,),
    "tensor_parallel_size": (int,),
    "pipeline_parallel_size": (int,),
    "gpu_memory_utilization": (int, float),
    "max_model_len": (int,),
    "dtype": (str,),
    "quantization": (str,),
    "trust_remote_code": (bool,),
    "extra_args": (str,),
    "env": (dict,),
}
# The range of each numeric key: (low, high, low excluded).
PROFILE_RANGES = {"connect_timeout": (0, 3600, True), "price_per_hour": (0, math.inf, False),
                  # a run's own budget may reach as far (the key table's rule)
                  "run_timeout": (0, LONGEST_BUDGET_S, True), "run_stall_timeout": (0, LONGEST_BUDGET_S, True)}
VLLM_PROFILE_RANGES = {
    "port": (1, 65535, False),
    "tensor_parallel_size": (1, math.inf, False),
    "pipeline_parallel_size": (1, math.inf, False),
    "gpu_memory_utilization": (0, 1, True),
    "max_model_len": (1, math.inf, False),
}
OPS_SCHEMA = {"default_host": (str,), "profiles": (dict,), "fleets": (dict,)}
# ops.fleets.NAME: a list of hosts (profiles, aliases, user@host:port) named as one (ops_tasks/fleet.py);
# named like the pods pod.up rents, whose sets it records as fleets.
FLEET_NAME = POD_NAME
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "a number", float: "a number", dict: "a mapping",
               list: "a list"}
# artifacts.archive globs: a file-name pattern, nothing a shell could read as more.
_ARCHIVE_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]-]+$")

# user@host:port, host may be a bracketed IPv6 address. A leading '-' is never allowed:
# it would be read as an option by ssh or rsync.
_DESTINATION = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
    r"(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]+))?$"
)


# ---------------------------------------------------------------- environment


@functools.lru_cache(maxsize=8)
def _read_env_file(path: str) -> dict:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def project_env() -> dict:
    """The KEY=VALUE defaults from the OPS_PROJECT_ENV file ({} when unset)."""
    path = os.environ.get("OPS_PROJECT_ENV")
    if not path:
        return {}
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ConfigError(f"OPS_PROJECT_ENV={path}: no such file")
    return _read_env_file(str(resolved))


def env_value(name: str, default=None):
    """An environment setting: the real environment first, then OPS_PROJECT_ENV's file."""
    value = os.environ.get(name)
    if value:
        return value
    return project_env().get(name) or default


# ---------------------------------------------------------------- invoke.yaml


def find_project_config(directory) -> Optional[Path]:
    for name in PROJECT_CONFIG_NAMES:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    return None


def check_project_config(directory) -> Optional[Path]:
    """Refuse an invoke.yaml that is not valid YAML, or whose `ops` section is malformed.

    Runs before Invoke loads the file, which would otherwise die with a traceback.
    """
    path = find_project_config(directory)
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    check_ops_config((data or {}).get("ops"), source=str(path))
    return path


def _check_types(mapping: dict, schema: dict, where: str, source: str) -> None:
    for key, value in mapping.items():
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{source}: unknown key {where}.{key} (known: {known})")
        types = schema[key]
        # bool is an int in Python; a timeout of `true` is still a mistake.
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise ConfigError(
                f"{source}: {where}.{key} must be {_TYPE_NAMES[types[0]]}, got {value!r}"
            )


def _check_ranges(mapping: dict, ranges: dict, where: str, source: str) -> None:
    """Every numeric key a finite number in its range: YAML's .nan and .inf are floats too."""
    for key, (low, high, low_open) in ranges.items():
        value = mapping.get(key)
        if value is None:
            continue
        below = value <= low if low_open else value < low
        if not math.isfinite(value) or below or value > high:
            bound = ("positive" if low == 0 else f"more than {low:g}") if low_open else f"at least {low:g}"
            upper = f" and at most {high:g}" if math.isfinite(high) else ""
            raise ConfigError(f"{source}: {where}.{key} must be {bound}{upper}, got {value!r}")


def check_ops_config(ops, source: str = "invoke.yaml") -> dict:
    """Validate the `ops` config section; returns it (or {})."""
    if ops is None:
        return {}
    if not isinstance(ops, dict):
        raise ConfigError(f"{source}: ops must be a mapping, got {ops!r}")
    _check_types(ops, OPS_SCHEMA, "ops", source)
    for name, profile in (ops.get("profiles") or {}).items():
        where = f"ops.profiles.{name}"
        if not isinstance(profile, dict):
            raise ConfigError(f"{source}: {where} must be a mapping, got {profile!r}")
        _check_types(profile, PROFILE_SCHEMA, where, source)
        _check_types(profile.get("vllm") or {}, VLLM_PROFILE_SCHEMA, f"{where}.vllm", source)
        for pattern in profile.get("archive_patterns") or []:
            if not isinstance(pattern, str) or not _ARCHIVE_PATTERN.match(pattern):
                raise ConfigError(f"{source}: {where}.archive_patterns: {pattern!r} is not a file-name glob")
        _check_ranges(profile, PROFILE_RANGES, where, source)
        _check_ranges(profile.get("vllm") or {}, VLLM_PROFILE_RANGES, f"{where}.vllm", source)
        for key in ("volume", "outputs_dir"):
            path = profile.get(key)
            if path is not None and name != LOCAL and not path.startswith("/"):
                raise ConfigError(f"{source}: {where}.{key} must be an absolute path, got {path!r}")
    _check_fleets(ops.get("fleets") or {}, ops.get("profiles") or {}, source)
    return ops


def _check_fleets(fleets: dict, profiles: dict, source: str) -> None:
    """Each fleet a non-empty list of host names; a fleet name is never also a profile's."""
    for name, hosts in fleets.items():
        where = f"ops.fleets.{name}"
        if not isinstance(name, str) or not FLEET_NAME.match(name):
            raise ConfigError(f"{source}: {where}: not a fleet name (letters, digits, '.', '_', '-')")
        if name in profiles or name == LOCAL:
            raise ConfigError(f"{source}: {where}: {name!r} is also a profile; give the fleet another name")
        if not isinstance(hosts, list) or not hosts:
            raise ConfigError(f"{source}: {where} must be a non-empty list of host names, got {hosts!r}")
        for index, host in enumerate(hosts):
            if not isinstance(host, str) or not host or "," in host:
                raise ConfigError(f"{source}: {where}[{index}] must be a host name (a profile, an SSH alias "
                                  f"or user@host:port), got {host!r}")


# ---------------------------------------------------------------- destinations


@dataclass(frozen=True)
class Destination:
    """Where SSH goes: an alias or host name, with the user and port when given."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None

    def __str__(self):
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port else text


def parse_destination(text: str) -> Destination:
    """Parse `alias`, `host`, `user@host` or `user@host:port`; refuse anything else."""
    match = _DESTINATION.match(text or "")
    if not match:
        raise ConfigError(f"malformed host {text!r}: expected a profile, an SSH alias or user@host:port")
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise ConfigError(f"malformed host {text!r}: port {port} is out of range")
    return Destination(host=match["host"].strip("[]"), user=match["user"], port=int(port) if port else None)


def ssh_config_paths():
    return [Path("~/.ssh/config").expanduser(), Path("/etc/ssh/ssh_config")]


def ssh_config_knows(alias: str) -> bool:
    """True when a Host pattern of ~/.ssh/config (or the system one), or of a file either
    Includes, names this alias, as ssh reads them (ssh_config.defines).

    The catch-all `Host *` does not count: it matches anything, known or not.
    """
    from . import ssh_config

    return any(ssh_config.defines(alias, path, user=index == 0) for index, path in enumerate(ssh_config_paths()))


def _looks_like_address(host: str) -> bool:
    # A dotted name or an IP address is taken as DNS/IP; a bare word must be a known alias.
    return "." in host or ":" in host or host == "localhost"


# ---------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """Everything a task needs to know about one host."""

    name: str
    destination: str  # "local", or an SSH destination (alias, host, user@host:port)
    volume: str = defaults.VOLUME
    volume_must_be_mount: bool = True
    outputs_dir: str = f"{defaults.VOLUME}/{defaults.OUTPUTS_SUBDIR}"
    remote_repo: Optional[str] = None
    connect_timeout: float = defaults.CONNECT_TIMEOUT_S
    strict_host_keys: Optional[bool] = None  # None: follow ~/.ssh/config, else check
    known_hosts: Optional[str] = None  # None: ~/.ssh/known_hosts
    tmux_socket: Optional[str] = None  # tmux -L NAME; None: the default socket
    # artifacts.archive: raw eval files at the top of the volume to move into run directories.
    archive_patterns: tuple = ("eval_*",)
    # What the host costs per hour, for a host not rented on Lium (operations/costs.py); None: unknown.
    price_per_hour: Optional[float] = field(default=None, hash=False, compare=False)
    # Each run's budgets on this host unless its config says (`timeout: null` opts a run out).
    run_timeout: float = field(default=defaults.RUN_TIMEOUT_S, hash=False, compare=False)
    run_stall_timeout: float = field(default=defaults.RUN_STALL_TIMEOUT_S, hash=False, compare=False)
    # Defaults for vllm.start; not part of the profile's identity (the connection pool key).
    vllm: Mapping = field(default_factory=lambda: MappingProxyType({}), hash=False, compare=False)

    @property
    def is_local(self) -> bool:
        return self.destination == LOCAL

    @property
    def label(self) -> str:
        """How errors name this host: the name given, and where it leads when different."""
        if self.name == self.destination:
            return self.name
        return f"{self.name} ({self.destination})"


def builtin_local_profile(project_dir) -> dict:
    """The `local` profile: this machine, no SSH, its volume a folder of the checkout."""
    volume = Path(project_dir).resolve() / LOCAL_POD_DIR / "mnt"
    return {
        "destination": LOCAL,
        "volume": str(volume),
        "volume_must_be_mount": False,
        # Runs on this machine run in the checkout itself.
        "remote_repo": str(Path(project_dir).resolve()),
        # Its own tmux server, so the user's own tmux sessions are never touched.
        "tmux_socket": "ops-local",
    }


def default_host_name(ops: dict) -> str:
    return env_value("OPS_DEFAULT_HOST") or ops.get("default_host") or defaults.HOST


def resolve_profile(ops_config, host: Optional[str], project_dir) -> Profile:
    """Turn --host (or its defaults) into a Profile; ConfigError for anything unusable."""
    ops = check_ops_config(ops_config)
    name = host or default_host_name(ops)
    user_profiles = ops.get("profiles") or {}
    profiles = dict(user_profiles)
    profiles[LOCAL] = {**builtin_local_profile(project_dir), **user_profiles.get(LOCAL, {})}

    fields = dict(profiles.get(name, {}))
    destination = fields.pop("destination", name)
    if destination != LOCAL:
        parsed = parse_destination(destination)
        bare_word = parsed.user is None and parsed.port is None and not _looks_like_address(parsed.host)
        if bare_word and not ssh_config_knows(parsed.host):
            if name in profiles:
                raise ConfigError(
                    f"profile {name!r}: its destination {parsed.host!r} is not a Host in ~/.ssh/config "
                    f"(rent a pod with pod.up, or set the destination to user@host:port)"
                )
            raise ConfigError(
                f"unknown host {name!r}: not a profile in invoke.yaml (profiles: {', '.join(sorted(profiles))}) "
                f"nor a fleet, nor a Host in ~/.ssh/config; use user@host:port for a raw address"
            )
    if destination == LOCAL:
        volume = Path(fields.get("volume", defaults.VOLUME))
        fields["volume"] = str(volume if volume.is_absolute() else Path(project_dir).resolve() / volume)

    volume = fields.get("volume", defaults.VOLUME).rstrip("/") or "/"
    fields["volume"] = volume
    fields["outputs_dir"] = env_value("OPS_REMOTE_OUTPUTS_DIR") or fields.get(
        "outputs_dir", f"{volume.rstrip('/')}/{defaults.OUTPUTS_SUBDIR}"
    )
    remote_repo = env_value("OPS_REMOTE_REPO") or fields.get("remote_repo")
    fields["remote_repo"] = remote_repo
    fields["connect_timeout"] = float(fields.get("connect_timeout", defaults.CONNECT_TIMEOUT_S))
    fields["vllm"] = MappingProxyType(dict(fields.get("vllm") or {}))
    if "archive_patterns" in fields:
        fields["archive_patterns"] = tuple(fields["archive_patterns"])
    return Profile(name=name, destination=destination, **fields)


def project_dir_of(config) -> Path:
    """The checkout an Invoke config was loaded from (tasks.py / invoke.yaml), else cwd."""
    # Invoke keeps it only privately, as set by Config.set_project_location().
    prefix = getattr(config, "_project_prefix", None)
    return Path(prefix) if prefix else Path.cwd()


# ---------------------------------------------------------------- identity


def host_identity(profile: Profile) -> str:
    """The host's stable name in the laptop's records: `user@hostname:port` as ssh resolves the
    destination through ~/.ssh/config, so an alias and the address it leads to are one host;
    `local` for this machine. What the user typed (profile.name) can change, this does not."""
    if profile.is_local:
        return LOCAL
    destination = parse_destination(profile.destination)
    resolved = _ssh_config_options(destination.host)
    user = destination.user or resolved.get("user") or getpass.getuser()
    port = destination.port or int(resolved.get("port") or 22)
    hostname = (resolved.get("hostname") or destination.host).lower()
    return f"{user}@[{hostname}]:{port}" if ":" in hostname else f"{user}@{hostname}:{port}"


def _ssh_config_options(host: str) -> dict:
    """hostname, user and port that ssh would take for host: the first value found wins, the
    user's config before the system's, as in ssh itself."""
    import paramiko  # only here: most tasks that need no identity start faster without it

    found = {}
    from . import ssh_config

    for index, path in enumerate(ssh_config_paths()):
        if not path.is_file():
            continue
        try:  # the file as ssh reads it: what it Includes too
            options = ssh_config.paramiko_config([(path, index == 0)]).lookup(host)
        except (OSError, ValueError, paramiko.SSHException):
            continue  # an unreadable config resolves nothing; connecting reports it properly
        for key in ("hostname", "user", "port"):
            if options.get(key) and key not in found:
                found[key] = options[key]
    return found
