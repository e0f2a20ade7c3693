"""known_hosts files as people have them: several files, hashed names, patterns, markers.

paramiko's own loader stops with a traceback on one corrupt line or an `@cert-authority` line
and knows no patterns, so the SSH target reads the files here and gives paramiko only the keys
of the host it is about to reach. OpenSSH's format (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"):

    [marker] hostpatterns keytype base64-key [comment]

- hostpatterns: comma-separated names, `*`/`?` wildcards, `!negated`, `[host]:port` for a port
  other than 22, or one hashed name `|1|salt|hash`.
- `@revoked`: the key is refused for every host it is presented by.
- `@cert-authority`: a CA for host certificates. paramiko cannot verify host certificates, so
  such lines vouch for nothing here (a host they would cover is treated as unknown).
"""

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional


def host_name(host: str, port: int) -> str:
    """How known_hosts names a host: bare for port 22, `[host]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def _hashed_match(name: str, hashed: str) -> bool:
    parts = hashed.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


def _glob(pattern: str, name: str) -> bool:
    """OpenSSH's wildcards: `*` and `?` only (`[` is literal, as in `[host]:port`)."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, name) is not None


def patterns_match(patterns: str, name: str) -> bool:
    """OpenSSH's rule: some pattern matches and no negated one does (names compare lowercased)."""
    name = name.lower()
    if patterns.startswith("|"):
        return _hashed_match(name, patterns)
    matched = False
    for pattern in patterns.lower().split(","):
        negated = pattern.startswith("!")
        if _glob(pattern[1:] if negated else pattern, name):
            if negated:
                return False
            matched = True
    return matched


@dataclass
class Entry:
    patterns: str
    key: object  # paramiko.PKey
    where: str  # file:line, for messages


@dataclass
class KnownHosts:
    entries: List[Entry] = field(default_factory=list)
    revoked: List[Entry] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    files: List[Path] = field(default_factory=list)

    def entries_for(self, name: str) -> List[Entry]:
        """The lines that know this host (as known_hosts names it), in file order."""
        return [e for e in self.entries if patterns_match(e.patterns, name)]

    def keys_for(self, name: str) -> list:
        """The keys known for this host, in file order."""
        return [e.key for e in self.entries_for(name)]

    def where_saved(self, name: str, key) -> str:
        """The file that holds this key for this host (for `ssh-keygen -f FILE -R`)."""
        blob = key.asbytes() if key is not None else None
        for entry in self.entries_for(name):
            if entry.key.asbytes() == blob:
                return entry.where.rsplit(":", 1)[0]
        return str(self.files[0]) if self.files else "~/.ssh/known_hosts"

    def revoked_entry(self, key) -> Optional[Entry]:
        """The @revoked line that names this key, if any."""
        blob = key.asbytes()
        return next((e for e in self.revoked if e.key.asbytes() == blob), None)


def _parse_key(key_type: str, data: str):
    import paramiko

    return paramiko.PKey.from_type_string(key_type, base64.b64decode(data, validate=True))


def parse_line(text: str):
    """(marker, patterns, key) of one line; None for a blank or comment line; ValueError if broken."""
    line = text.strip()
    if not line or line.startswith("#"):
        return None
    fields = line.split()
    marker = fields.pop(0) if fields[0].startswith("@") else None
    if marker not in (None, "@revoked", "@cert-authority"):
        raise ValueError(f"unknown marker {marker}")
    if len(fields) < 3:
        raise ValueError("too few fields")
    patterns, key_type, data = fields[:3]
    try:
        key = _parse_key(key_type, data)
    except Exception as exc:  # paramiko raises several kinds for a damaged or unknown key
        raise ValueError(f"unreadable {key_type} key ({type(exc).__name__})") from None
    return marker, patterns, key


def load(paths: Iterable) -> KnownHosts:
    """Read every existing file of paths; a line that cannot be read is skipped with a warning."""
    known = KnownHosts()
    for path in paths:
        path = Path(path).expanduser()
        if not path.is_file():
            continue
        known.files.append(path)
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, text in enumerate(handle, 1):
                where = f"{path}:{number}"
                try:
                    parsed = parse_line(text)
                except ValueError as exc:
                    known.warnings.append(f"{where}: skipped a known_hosts line ({exc})")
                    continue
                if parsed is None:
                    continue
                marker, patterns, key = parsed
                if marker == "@revoked":
                    known.revoked.append(Entry(patterns, key, where))
                elif marker is None:
                    known.entries.append(Entry(patterns, key, where))
    return known
