"""A repo that pod.sync --workdir filled from the laptop's checkout, and its record.

Such a repo is not a git checkout of one commit (or no git checkout at all), so the sync leaves a
record at its top (contract.WORKDIR_RECORD): the laptop's HEAD (null outside git), a hash of the
uncommitted change, its branch and origin, the laptop's folder, when, and each file sent as the pod
saw it just after (kind, size, mtime). The record is the one rule both sides read:

- the next sync removes the files that left the checkout (in the last record, not in this sync):
  never a file the pod made itself, never through a link, never a folder that still holds anything;
- while no recorded file changed on the pod since, the repo's facts are the record's
  (`facts`: rundir.git_facts returns them, so submit, the supervisor's launch and
  run_metadata.json see them), and the commit pin accepts the laptop's HEAD with its recorded
  uncommitted change (gates.pin_problem).

While a sync runs, its record is set aside (contract.WORKDIR_SET_ASIDE, by the rsync's remote
command, remote_scripts/pod_workdir_receive.sh): a half-sent tree has no record to vouch for it.
"""

import os
import re
import stat

from .contract import COMMIT, TOOL_VERSION, WORKDIR_RECORD, WORKDIR_SET_ASIDE, outputs_root_problem
from .files import now, read_json, remove_quietly, write_failure, write_json
from .store import BadRequest

CHANGE = re.compile(r"^sha256:[0-9a-f]{64}$")  # the laptop's hash of the uncommitted change
SHOWN_CHANGED = 5  # changed files a repo's facts name (the count says how many in all)


def record_folder(repo):
    """The folder of repo's record: repo itself or the nearest above it, up to a folder holding
    .git (a checkout of its own below a synced tree keeps git's facts); None when there is none."""
    folder = os.path.abspath(repo)
    while True:
        if os.path.lexists(os.path.join(folder, WORKDIR_RECORD)):
            return folder
        parent = os.path.dirname(folder)
        if os.path.lexists(os.path.join(folder, ".git")) or parent == folder:
            return None
        folder = parent


def read_record(folder):
    """The record at the top of folder, checked ({"error": why} when it is not one of ours)."""
    record = read_json(os.path.join(folder, WORKDIR_RECORD))
    problem = record_problem(record)
    return {"error": problem} if problem else record


def record_problem(record):
    """Why a value is not a record a sync wrote (its shape, its fields), or None."""
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        return "not a record of pod.sync --workdir"
    commit, change = record.get("commit"), record.get("change")
    if commit is not None and not (isinstance(commit, str) and COMMIT.match(commit)):
        return "its commit %r is not a commit id" % (commit,)
    if change is not None and not (isinstance(change, str) and CHANGE.match(change)):
        return "its change %r is not a sha256 hash" % (change,)
    for seen in record["files"].values():
        if not (isinstance(seen, list) and len(seen) == 3 and all(isinstance(v, int) for v in seen)):
            return "a file's entry %r is not [kind, size, mtime]" % (seen,)
    return None


def seen(path):
    """[kind, size, mtime in ns] of a path as lstat sees it (kind: stat's S_IFMT bits), or None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return [stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns]


def changed_files(folder, files):
    """The recorded files that are not as the sync left them (changed, replaced or gone), sorted."""
    return sorted(name for name, was in files.items() if seen(os.path.join(folder, name)) != was)


def facts(repo):
    """A synced repo's facts, in git_facts' shape plus `workdir`, or None where no record applies.

    commit, branch and origin are the laptop's at the sync; dirty: an uncommitted change was sent,
    or a recorded file changed on the pod since (then `workdir.changed` names the first ones)."""
    folder = record_folder(repo)
    if folder is None:
        return None
    record = read_record(folder)
    if "error" in record:
        return {"commit": None, "branch": None, "dirty": True, "origin": None,
                "workdir": {"repo": folder, "error": record["error"]}}
    changed = changed_files(folder, record["files"])
    return {
        "commit": record.get("commit"), "branch": record.get("branch"), "origin": record.get("origin"),
        "dirty": bool(record.get("change") or changed),
        "workdir": {"repo": folder, "change": record.get("change"), "files": len(record["files"]),
                    "bytes": record.get("bytes"), "synced_at": record.get("synced_at"),
                    "source": record.get("source"), "changed": changed[:SHOWN_CHANGED],
                    "changed_count": len(changed)},
    }


# ---------------------------------------------------------------- the command a sync ends with


def receive(request):
    """After the sync's rsync: remove what left the checkout, record what came (one round trip).

    request: {repo, sync: {commit, change, branch, origin, source, bytes}, files: [relative path]}."""
    repo = checked_repo(request.get("repo"))
    sync, sent = request.get("sync"), request.get("files")
    if not isinstance(sync, dict) or not isinstance(sent, list) or not all(isinstance(f, str) for f in sent):
        raise BadRequest("a workdir request holds sync (a dict) and files (a list of paths)")
    for name in sent:
        parts_of(name)  # a path that would leave the repo is refused before anything changes
    last = read_json(os.path.join(repo, WORKDIR_SET_ASIDE)) or read_json(os.path.join(repo, WORKDIR_RECORD))
    earlier = last.get("files") if isinstance(last, dict) and isinstance(last.get("files"), dict) else {}
    removed = remove_left(repo, sorted(set(earlier) - set(sent)), sent)
    files = {name: seen(os.path.join(repo, name)) for name in sent}
    missing = sorted(name for name, state in files.items() if state is None)
    record = {
        "by": "pod.sync --workdir", "tool": TOOL_VERSION, "synced_at": now(),
        "commit": sync.get("commit"), "change": sync.get("change"), "branch": sync.get("branch"),
        "origin": sync.get("origin"), "source": sync.get("source"), "bytes": sync.get("bytes"),
        "files": {name: state for name, state in files.items() if state is not None},
    }
    problem = record_problem(record)
    if problem:
        raise BadRequest("the sync's record: %s" % problem)
    try:
        write_json(os.path.join(repo, WORKDIR_RECORD), record)
    except OSError as exc:  # a full volume: the files are there, the record is not (no pin accepts them)
        return {"error": "the record of the sync in %s: %s" % (repo, write_failure(exc, repo))}
    remove_quietly(os.path.join(repo, WORKDIR_SET_ASIDE))
    return {"repo": repo, "files": len(record["files"]), "removed": len(removed), "removed_files": removed[:20],
            "missing": missing[:20], "missing_count": len(missing), "synced_at": record["synced_at"]}


def checked_repo(repo):
    """The request's repo: an existing folder that is no place to write a checkout into is
    refused (the outputs root's rule: /, the top of the file system, a home, system or key
    folders), also with its links resolved."""
    if not isinstance(repo, str) or not os.path.isdir(repo):
        raise BadRequest("repo %r is not a folder on this pod" % (repo,))
    for candidate in (repo, os.path.realpath(repo)):
        problem = outputs_root_problem(candidate, os.path.expanduser("~"))
        if problem:
            raise BadRequest("repo %r %s" % (repo, problem))
    return repo


def parts_of(name):
    """A relative path's parts; BadRequest for one that is absolute, empty or climbs (..)."""
    parts = name.split("/")
    if not name or "\0" in name or any(part in ("", ".", "..") for part in parts):
        raise BadRequest("%r is not a path inside the repo" % (name,))
    return parts


def remove_left(repo, names, kept):
    """Remove these files (and the folders that held only them): each reached from the repo one
    folder at a time without following a link, a folder never removed while it holds anything.
    What is not there, or is a folder now, is left alone. The names removed."""
    removed = []
    for name in names:
        try:
            parts = parts_of(name)
        except BadRequest:
            continue  # a record no sync wrote (edited by hand): a name out of the repo is never reached
        if _unlink_inside(repo, parts, folder=False):
            removed.append(name)
    still_needed = {"/".join(parts[:i]) for parts in (n.split("/") for n in kept) for i in range(1, len(parts))}
    emptied = {"/".join(parts[:i]) for parts in (n.split("/") for n in removed) for i in range(1, len(parts))}
    for folder in sorted(emptied - still_needed, key=lambda f: -f.count("/")):  # the deepest first
        _unlink_inside(repo, folder.split("/"), folder=True)
    return removed


def _unlink_inside(repo, parts, folder):
    """Remove repo/<parts> (a file or link; folder=True: an empty folder), walking down with
    O_NOFOLLOW: a link on the way ends the walk (nothing outside the repo is ever reached)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(repo, flags)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, flags, dir_fd=fd)
            except OSError:
                return False
            os.close(fd)
            fd = inner
        try:
            info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode) != folder:
                return False
            if folder:
                os.rmdir(parts[-1], dir_fd=fd)
            else:
                os.unlink(parts[-1], dir_fd=fd)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)
