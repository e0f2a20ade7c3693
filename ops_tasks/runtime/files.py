"""Files on the volume: JSON read whatever it holds, every write atomic (a temporary, then a
rename; none left behind when it fails), syncs batched, the end of a log read without reading it all.
"""

import errno
import json
import os
import re
import stat
import time

from .contract import MAX_JSON_BYTES, RECORD_DIR


WRITE_RETRY_S = 2.0  # a bookkeeping write that failed (a full volume) is tried again this often
TAIL_BYTES = 256 * 1024
# A log is searched line by line in pieces of at most this much: one line of 1 GB (a `\r` progress
# bar, no newline) costs a piece, not a gigabyte.
LINE_PIECE = 1024 * 1024


def now():
    return time.time()


def open_regular(path):
    """path opened for reading in binary when it is a regular file (links followed); a FIFO, a
    socket or a device in its place is an OSError at once: a run that leaves one where its status,
    summary or log belongs never blocks the supervisor or a reader."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_json(path, default=None, limit=MAX_JSON_BYTES):
    """A JSON file's value; `default` when it is missing, not a regular file, larger than `limit`,
    not JSON, or nested past what the parser takes (a summary 200,000 levels deep)."""
    try:
        with open_regular(path) as handle:
            if os.fstat(handle.fileno()).st_size > limit:
                return default
            data = handle.read(limit + 1)
        if len(data) > limit:  # it grew since
            return default
        return json.loads(data)
    except (OSError, ValueError, RecursionError):
        return default


def pieces(handle, size=LINE_PIECE):
    """A file's lines, each in pieces of at most `size` bytes (a longer line is several pieces)."""
    while True:
        piece = handle.readline(size)
        if not piece:
            return
        yield piece


class BatchedSync:
    """`with BatchedSync():` the writes inside skip their own fsync and the file system is synced
    once at the end: a submission or cancel of thousands of runs pays one sync, not thousands,
    and is as durable once it answers."""

    active = False

    def __enter__(self):
        BatchedSync.active = True
        return self

    def __exit__(self, *exc):
        BatchedSync.active = False
        os.sync()


def write_json(path, data, mode=0o644):
    """Atomic: a reader sees the old file or the new one, never half of one."""
    write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n", mode,
               sync=not BatchedSync.active)


def write_text(path, text, mode=0o644, sync=False):
    """Atomic; a write that fails (a full volume) leaves the old file and no temporary behind."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def write_failure(exc, where):
    """An OSError of a write, as people read it: a full volume is named as such, with where."""
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return "the volume holding %s is full (%s): free space there, then submit again" % (
            where, os.strerror(exc.errno))
    return str(exc)


def makedirs(path, mode=0o755):
    os.makedirs(path, mode=mode, exist_ok=True)


def remove_quietly(path):
    """Remove a bookkeeping file that another process may have removed first."""
    try:
        os.remove(path)
    except OSError:
        pass


def tail_text(path, lines):
    """The last `lines` lines of a file, reading at most TAIL_BYTES from its end."""
    try:
        with open_regular(path) as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read()
    except OSError:
        return None
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


def last_line(path):
    """The last non-empty line of a file (read from its last 2 KiB), for the status table."""
    try:
        with open_regular(path) as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 2048))
            lines = [line for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1][-300:] if lines else None


TEMPORARY = re.compile(r"\.tmp\.\d+$")  # write_text's, while it writes


def stat_is(info, test):
    import stat

    return getattr(stat, test)(info.st_mode)


def record_path(run_dir, name="record.json"):
    return os.path.join(run_dir, RECORD_DIR, name)


def write_if_absent(path, text, mode=0o644):
    """The contract's file, only where the command has not written its own: never overwritten."""
    if not os.path.lexists(path):
        write_text(path, text, mode)


def file_digest(path):
    import hashlib

    digest = hashlib.sha256()
    try:
        with open_regular(path) as handle:
            for block in iter(lambda: handle.read(LINE_PIECE), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
