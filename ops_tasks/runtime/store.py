"""The outputs root: its locks, the queue and the bookkeeping under .ops/.

The queue is .ops/pending/ (contract 2 on). .ops/queue/ is where releases before it queued: a
supervisor of theirs reads only that folder, so what is queued for a newer one stays out of its
sight (the hand-over, handover.py); a newer supervisor takes up both.
"""

import errno
import fcntl
import os

from .contract import RUN_ID, manifest_order, outputs_root_problem
from .entry import read_entry
from .files import TEMPORARY, makedirs, now, open_regular, read_json, write_json, write_text


QUEUE = "pending"
LEGACY_QUEUE = "queue"


class Lock:
    """An flock on a file: exclusive, blocking or not."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self, blocking=True, shared=False):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self.fd = fd
        return True

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------- the store


class BadRequest(ValueError):
    """A request the tool refuses whole before it changes anything (bad input: exit 2)."""


def check_outputs_root(root):
    """The request's outputs root, refused (BadRequest) when it is no place for run directories;
    symlinks are resolved first, so a link cannot lead the root into /etc."""
    for candidate in (root, os.path.realpath(root) if isinstance(root, str) else root):
        problem = outputs_root_problem(candidate, os.path.expanduser("~"))
        if problem:
            raise BadRequest("outputs root %r %s" % (root, problem))
    return root


def check_run(run_id, run_dir, root):
    """A run id of the one pattern and a run directory strictly below the outputs root (also once
    symlinks are resolved) and outside .ops/: BadRequest otherwise, whatever the laptop sent."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise BadRequest("run id %r: a run id is letters, digits, '.', '_' and '-' (at most 128, starting "
                         "with a letter or digit)" % (run_id,))
    if not isinstance(run_dir, str) or not run_dir.startswith("/"):
        raise BadRequest("%s: run_dir %r must be an absolute path under the outputs root %s" % (run_id, run_dir, root))
    for base, path in ((os.path.normpath(root), os.path.normpath(run_dir)),
                       (os.path.realpath(root), os.path.realpath(run_dir))):
        inside = path.startswith(base.rstrip("/") + "/")
        if not inside or path == os.path.join(base, ".ops") or path.startswith(os.path.join(base, ".ops") + "/"):
            raise BadRequest("%s: run_dir %s is not a run directory under the outputs root %s" % (run_id, run_dir, root))
    return run_id, run_dir


def private_dir():
    """This user's bookkeeping on the pod's own disk, beside no outputs root: secret env files, and
    where the latest submission went."""
    return os.path.join(os.path.expanduser("~"), ".ops", "runs")


def last_submission_root():
    """The outputs root of this user's last submission on the pod (any root: a config names its
    own), as submit noted it; None before any."""
    pointer = read_json(os.path.join(private_dir(), "last_submission.json"))
    root = pointer.get("outputs_dir") if isinstance(pointer, dict) else None
    return root if isinstance(root, str) else None


class Store:
    """The outputs root: run directories and the queue's bookkeeping under .ops/.

    Only the commands that change things create it (`create`): reading a root that does not
    exist creates nothing and finds no runs.
    """

    def __init__(self, root, create=False):
        self.root = check_outputs_root(root).rstrip("/") or "/"
        self.ops = os.path.join(self.root, ".ops")
        self.private = private_dir()
        if create:
            for sub in (QUEUE, "active", "cancel", "submissions", "specs"):
                makedirs(os.path.join(self.ops, sub))
            makedirs(os.path.join(self.private, "env"), 0o700)
            os.chmod(os.path.join(self.private, "env"), 0o700)

    def names(self, sub):
        """File names in .ops/<sub>/ (none when it does not exist), our temporaries left out."""
        try:
            return sorted(n for n in os.listdir(self.path(sub)) if not TEMPORARY.search(n))
        except OSError:
            return []

    def path(self, *parts):
        return os.path.join(self.ops, *parts)

    def queue_lock(self):
        return Lock(self.path("queue.lock"))

    def supervisor_alive(self):
        """True while some supervisor holds supervisor.lock (the kernel drops it if it dies).

        A shared probe: a supervisor that is starting retries its exclusive lock for a while,
        so a probe in the same instant never makes it give up.
        """
        if not os.path.exists(self.path("supervisor.lock")):
            return False  # never created: no supervisor ever ran here (and a probe creates nothing)
        lock = Lock(self.path("supervisor.lock"))
        if lock.acquire(blocking=False, shared=True):
            lock.release()
            return False
        return True

    # -- queue entries

    def queued(self):
        """The queued entries in the order they were queued (their names begin with the time),
        the legacy queue's with them; each with its file as `_file`."""
        named = [(name, sub) for sub in (QUEUE, LEGACY_QUEUE) for name in self.names(sub) if name.endswith(".json")]
        entries = []
        for name, sub in sorted(named):
            entry = read_entry(self.path(sub, name))
            if entry is not None:
                entry["_file"] = self.path(sub, name)
                entries.append(entry)
        return entries

    def enqueue(self, entry):
        """Queue a run; its spec is also kept (specs/) for runs.resume after a supervisor dies."""
        seq = "%017.6f" % now()
        name = "%s-%s.json" % (seq, entry["run_id"])
        entry = {key: value for key, value in entry.items() if key != "_file"}
        write_json(self.path("specs", entry["run_id"] + ".json"), entry)
        write_json(self.path(QUEUE, name), entry)
        return self.path(QUEUE, name)

    def active(self):
        entries = []
        for name in self.names("active"):
            entry = read_entry(self.path("active", name)) if name.endswith(".json") else None
            if entry is not None:
                entries.append(entry)
        return entries

    def waiting_ids(self, queued=None):
        """Run ids that are queued or claimed by a supervisor: the ones a status may say are waiting."""
        ids = {e["run_id"] for e in (self.queued() if queued is None else queued)}
        ids.update(n[:-5] for n in self.names("active") if n.endswith(".json"))
        return ids

    # -- submissions

    def latest_submission(self):
        """The newest manifest under .ops/submissions/ (contract.manifest_order), or None."""
        newest = None
        for name in self.names("submissions"):
            manifest = read_json(self.path("submissions", name)) if name.endswith(".json") else None
            if isinstance(manifest, dict) and manifest.get("submission_id") == name[:-5] and (
                    newest is None or manifest_order(manifest) > manifest_order(newest)):
                newest = manifest
        return newest

    def note_last_submission(self):
        """Say where this user's last submission went, for a laptop folder that has no record of
        it (reading.with_latest_submission). A home that cannot take it costs only that."""
        try:
            write_json(os.path.join(self.private, "last_submission.json"), {"outputs_dir": self.root})
        except OSError:
            pass

    # -- secrets

    def secret_env(self, submission_id, run_id):
        """The run's secret env values, or None when the file holding them is gone."""
        data = read_json(os.path.join(self.private, "env", submission_id + ".json"))
        return None if data is None else data.get(run_id, {})

    def write_slots(self, slots):
        """The CPU slot count a live supervisor re-reads each loop (runs.submit --slots)."""
        write_text(self.path("slots"), "%d\n" % slots)

    def read_slots(self):
        try:
            with open_regular(self.path("slots")) as handle:
                value = int(handle.read(64).strip())
        except (OSError, ValueError):
            return None
        return value if value >= 1 else None

    def forget_secrets_if_done(self, submission_id):
        """Under the queue lock: a submission's secret env file goes once none of its runs is
        queued or claimed (a resume after that asks for a new submission, which brings them)."""
        if not isinstance(submission_id, str) or not RUN_ID.match(submission_id):
            return
        if any(e.get("submission_id") == submission_id for e in self.queued() + self.active()):
            return
        try:
            os.remove(os.path.join(self.private, "env", submission_id + ".json"))
        except OSError:
            pass

    def save_secret_env(self, submission_id, secrets):
        if not secrets:
            return
        path = os.path.join(self.private, "env", submission_id + ".json")
        write_json(path, secrets, mode=0o600)
