"""out_mode local_sync: the run writes on the pod's own disk; what changed is copied into its run
directory on the volume as it goes and once more before any verdict.
"""

import os
import shutil
import time

from .contract import RECORD_DIR
from .files import makedirs, remove_quietly, stat_is


def work_dir_of(entry):
    """Where an out_mode local_sync run writes on the pod's own disk (run_config.local_work_dir)."""
    if entry.get("out_mode") != "local_sync":
        return None
    return os.path.join(entry["local_dir"], entry["run_id"])


class LocalSync:
    """out_mode local_sync: the run writes into work_dir (the pod's own disk), and its files are
    copied into run_dir on the volume every `interval` and once more after it ends, before its
    verdict: a pod that dies loses at most one interval. Only what changed (size, mtime) is
    copied, each file atomically; the supervisor's own files there (status.json, .ops/,
    attempts/) are never written from work_dir."""

    OWN = ("status.json", RECORD_DIR, "attempts")

    def __init__(self, work_dir, run_dir, interval):
        self.work_dir, self.run_dir, self.interval = work_dir, run_dir, interval
        self.copied = {}  # relative path -> (size, mtime_ns) or the link's target
        self.last = time.monotonic()
        self.count = 0

    def due(self):
        return time.monotonic() - self.last >= self.interval

    def sync(self):
        self.last = time.monotonic()
        for folder, dirs, files in os.walk(self.work_dir):
            relative = os.path.relpath(folder, self.work_dir)
            if relative == ".":
                dirs[:] = [d for d in dirs if d not in self.OWN]
                files = [f for f in files if f not in self.OWN]
            for name in dirs + files:
                self.copy_one(os.path.normpath(os.path.join(relative, name)))
        self.count += 1

    def copy_one(self, relative):
        source, target = os.path.join(self.work_dir, relative), os.path.join(self.run_dir, relative)
        try:
            info = os.lstat(source)
        except OSError:
            return  # gone since the listing
        if stat_is(info, "S_ISDIR"):
            makedirs(target)
            return
        if stat_is(info, "S_ISLNK"):
            seen = os.readlink(source)
        elif stat_is(info, "S_ISREG"):
            seen = (info.st_size, info.st_mtime_ns)
        else:
            return  # a socket or fifo is no file of the contract
        if self.copied.get(relative) == seen:
            return
        makedirs(os.path.dirname(target))
        temporary = "%s.tmp.%d" % (target, os.getpid())
        try:
            if isinstance(seen, str):
                os.symlink(seen, temporary)
            else:
                shutil.copyfile(source, temporary)
            os.replace(temporary, target)
        except FileNotFoundError:
            remove_quietly(temporary)  # the run removed it meanwhile: the next sync sees what is there
            return
        except BaseException:
            remove_quietly(temporary)
            raise
        self.copied[relative] = seen
