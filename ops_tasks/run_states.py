"""The states a run can be in, and what each means: the laptop's copy of the pod's table.

The pod's supervisor (remote_scripts/ops_runs.py, which travels alone and cannot import this)
holds the same table as `STATES`, and derives the same tuples from it;
tests/test_run_states.py checks that the two agree.
See docs/ARCHITECTURE.md, "Run contract".
"""

# state -> class: "active" (not over yet), "succeeded", or "failed" (over, and not a success).
STATES = {
    "queued": "active",
    "running": "active",
    "succeeded": "succeeded",
    "failed": "failed",
    "timeout": "failed",
    "stalled": "failed",
    "cancelled": "failed",
    "lost": "failed",
}

ACTIVE = tuple(s for s, kind in STATES.items() if kind == "active")
TERMINAL = tuple(s for s, kind in STATES.items() if kind != "active")
FAILED = tuple(s for s, kind in STATES.items() if kind == "failed")
# A cancelled run was stopped on request: it does not fail its submission (runs.wait's and
# runs.status's verdict, the failed count, --fail-fast on the pod).
COUNTS_AS_FAILURE = tuple(s for s in FAILED if s != "cancelled")


def state_class(state) -> str:
    """The class of a state; anything the table does not know (a damaged status) is "unknown"."""
    return STATES.get(state, "unknown") if isinstance(state, str) else "unknown"
