"""The states a run can be in, and what each means: the pod runtime's own table.

runtime/contract.py holds it (the pod applies it); the laptop reads the same module.
See docs/ARCHITECTURE.md, "Run contract".
"""

from .runtime.contract import ACTIVE, COUNTS_AS_FAILURE, FAILED, STATES, TERMINAL

__all__ = ["ACTIVE", "COUNTS_AS_FAILURE", "FAILED", "STATES", "TERMINAL", "state_class"]


def state_class(state) -> str:
    """The class of a state; anything the table does not know (a damaged status) is "unknown"."""
    return STATES.get(state, "unknown") if isinstance(state, str) else "unknown"
