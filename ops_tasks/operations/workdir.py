"""pod.sync --workdir: this machine's checkout onto a pod's repo, without a commit or a push.

What is sent is what git shows of the folder: its tracked files and the untracked ones no ignore
rule covers (`git ls-files`: every .gitignore down the tree, .git/info/exclude, core.excludesFile),
never .git itself. A folder outside git is listed by git all the same, against an empty repository
of its own: every file but what its .gitignore files ignore. A git checkout inside the folder (a
submodule, a nested repository) is not sent, and named.

The data goes through the system's rsync over OpenSSH with the connection's own parameters, as
fetch does (artifacts.rsync_over_ssh, run_rsync): the exact list (--files-from), links as links,
no owners, no devices; rsync's quick check (size, mtime) and delta send little when little
changed. rsync's remote command (remote_scripts/pod_workdir_receive.sh) refuses a repo that is /,
the pod's home or its volume once links are resolved, and sets the repo's last record aside.
Then one round trip (the pod runtime's `workdir` command, runtime/workdir.py) removes the files
that left the checkout since the last sync and writes the new record: the commit, the hash of
the uncommitted change, each file as the pod holds it. rsync itself deletes nothing: a file the
pod made (a .venv, outputs, caches) is never touched.
"""

import hashlib
import os
import shlex
import socket
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, HostError
from ..runtime.contract import WORKDIR_RECORD, WORKDIR_SET_ASIDE, outputs_root_problem
from ..runtime.rundir import checkout_facts
from ..scripts import render_command
from ..targets import after_start_mark
from .artifacts import REMOTE_REFUSAL, RemoteRsyncMissing, rsync_over_ssh, run_rsync
from .pod import human_bytes, pod_sync

# The tracked files that differ from HEAD, below the folder, each with its modes and status, the
# same whatever the user's diff settings are (renames would change the list). Not the patch: a
# binary patch of a large file costs seconds, its content's hash milliseconds.
CHANGED_FILES = ("diff", "HEAD", "--raw", "-z", "--no-abbrev", "--no-renames", "--relative", "--")
SHOWN_NAMES = 10  # skipped or missing files a warning names (it counts the rest)


@dataclass(frozen=True)
class Checkout:
    """A local folder as a sync sends it: files (relative, sorted) and what the pod records."""
    path: str
    files: tuple
    bytes: int
    commit: Optional[str]
    branch: Optional[str]
    origin: Optional[str]
    change: Optional[str]  # "sha256:<hex>" of the uncommitted change; None: none (a clean checkout)
    skipped: tuple  # (name, why) of what git listed and is not sent

    def sync_fields(self) -> dict:
        """What the pod's record holds of this sync besides its files (runtime/workdir.py)."""
        return {"commit": self.commit, "change": self.change, "branch": self.branch, "origin": self.origin,
                "source": f"{socket.gethostname()}:{self.path}", "bytes": self.bytes}

    def shown(self) -> dict:
        """The sync as a dry run and the result show it."""
        return {"path": self.path, "files": len(self.files), "bytes": self.bytes, "commit": self.commit,
                "branch": self.branch, "change": self.change,
                "skipped": [f"{name} ({why})" for name, why in self.skipped]}


def read_checkout(folder: Optional[str]) -> Checkout:
    """The folder's files as git shows them, its HEAD and the hash of its uncommitted change.
    None: the top of the git checkout holding the current folder, else the current folder.
    Bad input (no such folder, no git, nothing to send) is a ConfigError: nothing is contacted."""
    if folder is None:
        folder = os.fsdecode(_git(Path.cwd(), "rev-parse", "--show-toplevel", check=False).strip()) or "."
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"--workdir: {folder} is not a folder")
    path = path.resolve()
    in_git = _git(path, "rev-parse", "--is-inside-work-tree", check=False).strip() == b"true"
    facts = checkout_facts(str(path)) if in_git else {"commit": None, "branch": None, "origin": None}
    with tempfile.TemporaryDirectory(prefix="ops-workdir-") as empty:
        if not in_git:  # an empty repository of its own: git lists every file, ignore rules applied
            _git(Path(empty), "init", "--quiet", "--bare", ".")
        listed = _names(_git(path, "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                             git_dir=None if in_git else empty))
    files, skipped, size = [], [], 0
    for name in sorted(set(listed)):
        kind = _kind(path / name)
        if kind is None:
            continue  # a tracked file deleted here: the pod's copy goes with the next record
        if name in (WORKDIR_RECORD, WORKDIR_SET_ASIDE):
            skipped.append((name, "the name of the sync's own record on the pod"))
        elif kind == "folder":
            skipped.append((name, "a git checkout of its own: a submodule or nested repository"))
        else:
            files.append(name)
            size += os.lstat(path / name).st_size
    if not files:
        raise ConfigError(f"--workdir: nothing to send: git shows no file in {path}")
    sent = set(files)
    if facts["commit"]:
        fields = _git(path, *CHANGED_FILES).split(b"\0")
        tracked = [(fields[i], os.fsdecode(fields[i + 1])) for i in range(0, len(fields) - 1, 2)]
        untracked = [n for n in _names(_git(path, "ls-files", "-z", "--others", "--exclude-standard")) if n in sent]
    else:  # no commit (outside git, or none made yet): every file is the uncommitted change
        tracked, untracked = [], files
    return Checkout(path=str(path), files=tuple(files), bytes=size, commit=facts["commit"],
                    branch=facts["branch"], origin=facts["origin"], change=change_hash(path, tracked, untracked),
                    skipped=tuple(skipped))


def change_hash(path: Path, tracked: list, untracked: list) -> Optional[str]:
    """sha256 of the uncommitted change, None when there is none: each tracked file that differs
    from HEAD (git's modes, blob and status, then its content here unless deleted), then each
    untracked file's name and content (a link: its target), in name order."""
    if not tracked and not untracked:
        return None
    digest = hashlib.sha256()
    for raw, name in sorted(tracked, key=lambda item: item[1]):
        gone = raw.endswith(b"D") or _kind(path / name) not in ("file", "link")
        digest.update(b"tracked\0" + raw + b"\0" + os.fsencode(name) + b"\0"
                      + (b"" if gone else _content_digest(path / name)))
    for name in sorted(untracked):
        digest.update(b"untracked\0" + os.fsencode(name) + b"\0" + _content_digest(path / name))
    return "sha256:" + digest.hexdigest()


def _content_digest(file: Path) -> bytes:
    if file.is_symlink():
        return hashlib.sha256(os.fsencode(os.readlink(file))).digest()
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _kind(file: Path) -> Optional[str]:
    """file, link, folder, or None (gone, or a FIFO, socket or device: never sent)."""
    try:
        mode = os.lstat(file).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "folder"
    return "file" if stat.S_ISREG(mode) else None


def _names(output: bytes) -> list:
    return [os.fsdecode(name) for name in output.split(b"\0") if name]


def _git(folder: Path, *args, git_dir: Optional[str] = None, check: bool = True) -> bytes:
    where = ["--git-dir", git_dir, "--work-tree", "."] if git_dir else []
    try:
        done = subprocess.run(["git", "-C", str(folder), *where, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=300)
    except FileNotFoundError:
        raise ConfigError("--workdir lists the folder's files with git: install git on this machine") from None
    if check and done.returncode != 0:
        reason = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise ConfigError(f"--workdir: git {args[0]} failed in {folder}: {reason}")
    return done.stdout


# ---------------------------------------------------------------- onto a pod


def checked_remote_repo(repo: str, profile) -> str:
    """The pod's repo for a workdir sync, refused before contact when it is no place to write a
    checkout into: the outputs root's rule (/, a folder at the top, a home, system or key
    folders) and the volume itself. The pod checks again with links resolved."""
    problem = outputs_root_problem(repo)
    if problem is None and profile.volume and os.path.normpath(repo) == os.path.normpath(profile.volume):
        problem = "is the volume itself"
    if problem:
        raise ConfigError(f"--remote-repo {repo!r} {problem}: pod.sync --workdir writes there")
    return repo


def sync_workdir(target, checkout: Checkout, *, remote_repo: str, install: Optional[str] = None) -> dict:
    """rsync the checkout into remote_repo, then record it there (runtime/workdir.py); then, if
    asked, pod.sync's install step (a round trip of its own: it takes minutes anyway)."""
    from .runtime import run_command
    profile = target.profile
    receiver = render_command("pod_workdir_receive.sh", repo=remote_repo, volume=profile.volume,
                              record=WORKDIR_RECORD, set_aside=WORKDIR_SET_ASIDE, refused=REMOTE_REFUSAL)
    transport, host, start_s = rsync_over_ssh(
        target, after_start_mark(f"exec bash -c {shlex.quote(receiver)} pod_workdir_receive"))
    listing = Path(tempfile.gettempdir()) / f"ops-workdir-{os.getpid()}-{threading.get_native_id()}.list"
    # --modify-window=-1: rsync's quick check compares mtimes to the nanosecond (by default to the
    # second: an edit of the same size within the second of the last sync would not be sent).
    argv = ["rsync", "-a", "--no-owner", "--no-group", "--no-devices", "--no-specials", "--modify-window=-1",
            "--from0", f"--files-from={listing}", "--stats", *transport, checkout.path + "/",
            f"{host}:{remote_repo}/"]
    target.describe(workdir=checkout.shown())
    target.before_command(argv)  # a dry run shows the command and stops: the listing is not written
    # The record's round trip needs a connection of its own (rsync has its ssh): opened while rsync
    # runs, as connecting takes several round trips a pod far away would otherwise add.
    opening = threading.Thread(target=_open_quietly, args=(target,), name="workdir-connect", daemon=True)
    opening.start()
    listing.write_bytes(b"".join(os.fsencode(name) + b"\0" for name in checkout.files))
    try:
        stats, _, warning = run_rsync(argv, None, label=profile.label, start_s=start_s)
    except RemoteRsyncMissing:
        raise HostError(f"{profile.label}: the pod has no rsync: install it there (apt-get install -y rsync), "
                        f"then sync again") from None
    finally:
        listing.unlink(missing_ok=True)
    opening.join()
    answer = run_command(target, "workdir", {"repo": remote_repo, "sync": checkout.sync_fields(),
                                              "files": list(checkout.files)}, label=profile.label)
    report = _report(target, checkout, remote_repo, stats, warning, answer)
    if install and report["ok"]:
        installed = pod_sync(target, remote_repo=remote_repo, install=install, workdir=True)
        report["steps"] += installed["steps"]
        if not installed["ok"]:
            report.update(ok=False, error=installed["error"])
    return report


def _open_quietly(target) -> None:
    """Open target's connection ahead of its use; a failure is said by the call that needs it."""
    try:
        target.open()
    except Exception:
        pass


def _report(target, checkout: Checkout, remote_repo: str, stats: dict, warning, answer: dict) -> dict:
    """The sync's result; the pod's answer is checked before it is believed."""
    label = target.profile.label
    sent = (f"{stats['files']} of {len(checkout.files)} files sent, {human_bytes(stats['literal_bytes'])} "
            f"of {human_bytes(checkout.bytes)} as new data")
    steps = [{"step": "rsync", "state": "ok", "detail": sent}]
    warnings = [warning] if warning else []
    warnings += [_named(f"not sent: {len(checkout.skipped)} name(s)", [f"{n} ({why})" for n, why in checkout.skipped])
                 ] if checkout.skipped else []
    recorded = _recorded(answer)
    if recorded is None:
        reason = answer.get("error") if isinstance(answer.get("error"), str) else "an answer of the wrong shape"
        steps.append({"step": "record", "state": "failed", "detail": reason})
    else:
        what = f"{checkout.commit[:12]}" if checkout.commit else "no commit (outside git)"
        what += f" + uncommitted change {checkout.change[7:19]}" if checkout.change else ""
        steps.append({"step": "record", "state": "ok",
                      "detail": f"{remote_repo}/{WORKDIR_RECORD}: {what}; {recorded['removed']} file(s) removed "
                                f"that left the checkout"})
        if recorded["missing_count"]:
            warnings.append(_named(f"{recorded['missing_count']} file(s) vanished here during the sync (not on "
                                   f"the pod, not recorded)", recorded["missing"], recorded["missing_count"]))
    failed = [s for s in steps if s["state"] == "failed"]
    report = {"ok": not failed, "host": target.profile.name, "steps": steps, "remote_repo": remote_repo,
              "commit": checkout.commit, "branch": checkout.branch, "dirty": checkout.change is not None,
              "workdir": dict(checkout.shown(), sent_files=stats["files"], sent_bytes=stats["literal_bytes"],
                              removed=recorded["removed"] if recorded else None,
                              record=f"{remote_repo}/{WORKDIR_RECORD}"),
              "warnings": warnings}
    if failed:
        report["error"] = f"{label}: " + "; ".join(f"{s['step']}: {s['detail']}" for s in failed)
    return report


def _recorded(answer) -> Optional[dict]:
    """The pod's answer to the record, when it has the shape of one (else None)."""
    if not isinstance(answer, dict) or "error" in answer:
        return None
    counts = ("files", "removed", "missing_count")
    if not all(isinstance(answer.get(k), int) and not isinstance(answer.get(k), bool) for k in counts):
        return None
    missing = answer.get("missing")
    if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
        return None
    return {"removed": answer["removed"], "missing": missing, "missing_count": answer["missing_count"]}


def _named(what: str, names: list, count: Optional[int] = None) -> str:
    count = len(names) if count is None else count
    more = f" and {count - SHOWN_NAMES} more" if count > SHOWN_NAMES else ""
    return f"{what}: {', '.join(names[:SHOWN_NAMES])}{more}"
