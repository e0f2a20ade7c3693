"""entry"""

from .contract import RUN_ID
from .files import read_json

def read_entry(path):
    """A queue or active entry: a JSON object naming a valid run id, its run_dir, attempt and
    submission, else None (a damaged file is skipped, never a crash of every listing or loop)."""
    entry = read_json(path)
    if not isinstance(entry, dict) or not isinstance(entry.get("run_id"), str) or not RUN_ID.match(entry["run_id"]):
        return None
    shapes = (("run_dir", str), ("submission_id", str), ("attempt", int))
    return entry if all(isinstance(entry.get(key), kind) for key, kind in shapes) else None
