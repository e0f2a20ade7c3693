"""A queue entry read back: a run as the laptop sent it, with what the queue added (keys.ENTRY_FIELDS).
A damaged entry is skipped, never a crash of every listing or loop.
"""

from .contract import CONTRACT_VERSION, RUN_ID, masked_env
from .files import now, read_json


def read_entry(path):
    """A queue or active entry: a JSON object naming a valid run id, its run_dir, attempt and
    submission, else None (a damaged file is skipped, never a crash of every listing or loop)."""
    entry = read_json(path)
    if not isinstance(entry, dict) or not isinstance(entry.get("run_id"), str) or not RUN_ID.match(entry["run_id"]):
        return None
    shapes = (("run_dir", str), ("submission_id", str), ("attempt", int))
    return entry if all(isinstance(entry.get(key), kind) for key, kind in shapes) else None


def new_entry(run, request, attempt):
    """A run of a request as the queue keeps it: secrets masked (their values wait in the pod's
    private env file), the contract it was written under, and what the queue adds
    (keys.ENTRY_FIELDS; a supervisor fails an entry holding any other field as bad_input)."""
    return dict(run, env=masked_env(run["env"]), contract=CONTRACT_VERSION, submission_id=request["submission_id"],
                fail_fast=bool(request.get("fail_fast")), retries_used=0, attempt=attempt, queued_at=now(),
                not_before=0, host=request.get("host"), tmux_session=request.get("tmux_session"))
