"""Processes, process groups and signals: is it still the process we started (its start time),
stopping a whole group in stages, and finding a run's processes by their owner marker.
"""

import os
import signal
import time

from .files import now


KILL_GRACE_S = 10.0  # TERM, then KILL this long after


def pid_alive(pid, start_ticks=None):
    """True while pid runs (zombies count as gone); with start_ticks, only that very process."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return False
    if fields[0] == "Z":
        return False
    return start_ticks is None or int(fields[19]) == int(start_ticks)


def start_ticks_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def group_alive(pgid):
    """True while a process of the group runs. Zombies do not count: a container whose init
    reaps nobody keeps them forever, and they hold no GPU."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group_fully(pgid, grace=KILL_GRACE_S):
    """TERM the group, then KILL what is left after grace."""
    kill_group(pgid, signal.SIGTERM)
    deadline = now() + grace
    while group_alive(pgid) and now() < deadline:
        time.sleep(0.1)
    if group_alive(pgid):
        kill_group(pgid, signal.SIGKILL)


def owner_marker(run_id, submission_id, attempt):
    """The value of OPS_RUN_OWNER in a run's environment: every process the run starts inherits
    it, also one that leaves the process group (setsid), so the run's processes can be found."""
    return "%s/%s/%s" % (submission_id, run_id, attempt)


def marked_pids(marker):
    """Pids of this user's live processes whose environment carries OPS_RUN_OWNER=marker."""
    needle = ("OPS_RUN_OWNER=%s" % marker).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if os.stat("/proc/" + name).st_uid != os.getuid():
                continue
            with open("/proc/%s/environ" % name, "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if needle in environ and pid_alive(int(name)):
            found.append(int(name))
    return found


def kill_marked(marker, grace=2.0):
    """Stop every process carrying the run's marker (TERM, KILL after grace). Returns their pids."""
    return stop_pids([(pid, None) for pid in marked_pids(marker)], grace)


def signal_quietly(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def process_table():
    """{pid: (parent pid, start ticks)} of the processes this user can see (one pass of /proc)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            table[int(name)] = (int(fields[1]), int(fields[19]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def descendants(table, root):
    """{pid: start ticks} of root's descendants in a process_table (root left out)."""
    children = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, stack = {}, list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found[pid] = table[pid][1]
            stack.extend(children.get(pid, ()))
    return found


def stop_pids(pids, grace=2.0):
    """TERM each (pid, start ticks) still the process it was, KILL what is left after grace;
    the pids that were stopped."""
    alive = [(pid, ticks) for pid, ticks in pids if pid_alive(pid, ticks)]
    for pid, _ in alive:
        signal_quietly(pid, signal.SIGTERM)
    deadline = now() + grace
    while now() < deadline and any(pid_alive(pid, ticks) for pid, ticks in alive):
        time.sleep(0.05)
    for pid, ticks in alive:
        if pid_alive(pid, ticks):
            signal_quietly(pid, signal.SIGKILL)
    return [pid for pid, _ in alive]
