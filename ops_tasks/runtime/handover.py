"""Which supervisor runs, which contract it speaks, and handing its queue to a newer one.

A running supervisor is never replaced: its runs go on under it. When a submission needs a newer
contract than the live supervisor's, the submit (under the queue lock, before any entry is
queued) asks it to hand over: it writes .ops/handover.json, which a contract-2+ supervisor reads
each loop (it then claims nothing more, finishes the runs it started and exits), and it starts a
successor that waits for the supervisor lock, then runs the whole queue. A supervisor from before
contract 2 knows no hand-over; it never sees .ops/pending/ (store.QUEUE), so it ends the same
way once its own runs are done. Nothing runs twice: an entry is claimed under the queue lock by
the one supervisor that holds the supervisor lock.
"""

import os
import re

from .contract import CONTRACT_VERSION, LEGACY_CONTRACT
from .files import now, read_json, remove_quietly, write_json
from .procs import pid_alive


def lock_holder(path):
    """The pid holding an exclusive flock on path (from /proc/locks), or None."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF" (a blocked waiter's line has "->")
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and "->" not in fields:
            try:
                if int(fields[5].rsplit(":", 1)[1]) == inode:
                    return int(fields[4])
            except (IndexError, ValueError):
                continue
    return None


VERSION_LINE = re.compile(r"^CONTRACT_VERSION = (\d+)$", re.M)


def runtime_of(pid):
    """{"contract", "tool"} of a supervisor process of this package (its argv names the folder it
    was imported from: python_argv), read from that runtime's own contract.py; {} for anything
    else (a release before contract 2 ran a single file)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read().decode("utf-8", "replace").split("\0")
        root, module = argv[3], argv[4]
        if argv[1] != "-c" or not module.endswith(".commands") or "supervise" not in argv[5:7]:
            return {}
        path = os.path.join(root, *module.split(".")[:-1]) + os.sep + "contract.py"
        with open(path) as handle:
            found = VERSION_LINE.search(handle.read(1 << 16))
    except (OSError, IndexError, ValueError):
        return {}
    if not found:
        return {}
    return {"contract": int(found.group(1)), "tool": "ops-tasks-runs/%s" % found.group(1)}


def contract_of(info):
    """The contract a supervisor.json says its supervisor speaks: before contract 2 none was
    written (its tool said ops-tasks-runs/1, whatever it knew): LEGACY_CONTRACT."""
    contract = info.get("contract") if isinstance(info, dict) else None
    return contract if isinstance(contract, int) and not isinstance(contract, bool) else LEGACY_CONTRACT


def live_supervisor(store):
    """None when no supervisor holds the lock; else {"pid", "contract", "tool"} of the one that
    does. supervisor.json counts only when it is the lock holder's (a newer supervisor's file
    outlives it; an older one may not write it)."""
    if not store.supervisor_alive():
        return None
    info = read_json(store.path("supervisor.json"))
    info = info if isinstance(info, dict) else {}
    holder = lock_holder(store.path("supervisor.lock"))
    if holder is not None and info.get("pid") != holder:
        # Not yet written (a supervisor that has just taken the lock), or an older supervisor's
        # file: the holder's own command line says which runtime it runs.
        info = {"pid": holder, **runtime_of(holder)}
    elif holder is None and not (isinstance(info.get("pid"), int) and pid_alive(info["pid"])):
        info = {}
    return {"pid": info.get("pid"), "contract": contract_of(info), "tool": info.get("tool")}


def successor_lock(store):
    from .store import Lock

    return Lock(store.path("successor.lock"))


def successor_waiting(store):
    lock = successor_lock(store)
    if not os.path.exists(lock.path):
        return False
    if lock.acquire(blocking=False, shared=True):
        lock.release()
        return False
    return True


def ask_to_hand_over(store, live, submission_id):
    """Under the queue lock: the live supervisor (`live`, older) is asked to finish what it
    started and exit; the successor, of this contract, takes the queue."""
    write_json(store.path("handover.json"), {
        "contract": CONTRACT_VERSION, "from_contract": live["contract"], "from_pid": live.get("pid"),
        "asked_at": now(), "submission_id": submission_id})


# A successor is started within seconds of being asked for (submit.ensure_supervisor waits 5 s
# for it); a request older than this with no successor waiting was never met (the successor
# died, the pod rebooted) and binds no one.
HANDOVER_START_S = 60.0


def handover_asked(store):
    """The contract a newer supervisor waits with (a hand-over asked of this one), or None."""
    asked = read_json(store.path("handover.json"))
    contract = contract_of(asked) if isinstance(asked, dict) and "contract" in asked else None
    if contract is None or contract <= CONTRACT_VERSION:
        return None
    asked_at = asked.get("asked_at")
    recent = isinstance(asked_at, (int, float)) and 0 <= now() - asked_at < HANDOVER_START_S
    return contract if recent or successor_waiting(store) else None


def handover_done(store):
    """The successor holds the supervisor lock: the request is met (a newer one's stays)."""
    asked = read_json(store.path("handover.json"))
    if isinstance(asked, dict) and contract_of(asked) <= CONTRACT_VERSION:
        remove_quietly(store.path("handover.json"))


def describe(live):
    tool = " (%s)" % live["tool"] if live.get("tool") else ""
    return "contract %d%s, pid %s" % (live["contract"], tool, live.get("pid") or "?")
