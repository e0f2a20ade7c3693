"""One judgement of a run, everywhere: validate, report, runs.status and the teardown check all
ask `run_verdict`, so a run that one calls failed no other calls ok.

The supervisor's status.json decides first (see run_states.py): active states are unfinished,
failed ones are failed whatever the summary says. Then the summary: its `ok` must be a JSON
boolean (`0`, `"false"` and `"true"` are not), and `ok: false` fails a run even when its status
says succeeded. Without a status.json (a run made by hand) the summary alone decides. Both are
read from a pod or a fetched copy, so nothing in them is trusted: a status.json of the wrong
shape is `unknown`, a summary of the wrong shape `bad_summary`. See docs/ARCHITECTURE.md, "Run
contract".
"""

from typing import NamedTuple, Optional

from .run_states import state_class

# What a caller passes for a file that exists but does not parse (None means "there is none").
UNREADABLE = object()
# Verdict states beyond the run states of run_states.STATES.
UNFINISHED, UNKNOWN, BAD_SUMMARY = "unfinished", "unknown", "bad_summary"


class Verdict(NamedTuple):
    """state: a run state (succeeded, failed, timeout...), or unfinished, unknown, bad_summary;
    ok: True only for succeeded; failure_class: why not, in one word (None when ok); reason: in
    words, for a person."""

    state: str
    ok: bool
    failure_class: Optional[str]
    reason: Optional[str]


SUCCEEDED = Verdict("succeeded", True, None, None)


def _word(value) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def _from_status(status) -> Optional[Verdict]:
    """The verdict status.json alone gives, or None when it leaves it to the summary (succeeded)."""
    if not isinstance(status, dict):
        return Verdict(UNKNOWN, False, UNKNOWN, "status.json is not a JSON object")
    state = status.get("state")
    kind = state_class(state)
    if kind == "unknown":
        return Verdict(UNKNOWN, False, UNKNOWN, f"status.json has no known state ({str(state)[:40]!r})")
    if kind == "active":
        return Verdict(UNFINISHED, False, UNFINISHED, f"status.json says {state}: not finished when read")
    if kind == "failed":
        klass = _word(status.get("failure_class")) or state
        return Verdict(state, False, klass, f"status.json says {state}" + (
            f", failure_class {klass}" if klass != state else ""))
    return None


def _from_summary(summary, has_status: bool) -> Verdict:
    if summary is None:
        if has_status:
            return SUCCEEDED
        return Verdict(UNFINISHED, False, UNFINISHED, "no status.json and no summary.json: not finished, or not fetched")
    if summary is UNREADABLE or not isinstance(summary, dict):
        return Verdict(BAD_SUMMARY, False, BAD_SUMMARY, "summary.json is not a JSON object")
    if "ok" not in summary:
        if has_status:  # the supervisor's succeeded stands; a hand-made run must say so itself
            return SUCCEEDED
        return Verdict(BAD_SUMMARY, False, BAD_SUMMARY, "summary.json has no ok (and there is no status.json)")
    ok = summary["ok"]
    if ok is True:
        return SUCCEEDED
    if ok is False:
        klass = _word(summary.get("failure_class")) or "summary_not_ok"
        state = _word(summary.get("state"))
        state = state if state and state_class(state) == "failed" else "failed"
        return Verdict(state, False, klass, "summary.json says ok: false"
                       + (f", failure_class {klass}" if klass != "summary_not_ok" else ""))
    return Verdict(BAD_SUMMARY, False, BAD_SUMMARY,
                   f"summary.json ok is {str(ok)[:20]!r} ({type(ok).__name__}), not true or false")


def run_verdict(status, summary) -> Verdict:
    """The verdict of a run from its parsed status.json and summary.json (None: no such file;
    UNREADABLE: a file that does not parse)."""
    if status is UNREADABLE:
        return Verdict(UNKNOWN, False, UNKNOWN, "status.json does not parse")
    if status is not None:
        decided = _from_status(status)
        if decided is not None:
            return decided
    return _from_summary(summary, status is not None)


def is_unfinished(verdict: Verdict) -> bool:
    return verdict.state == UNFINISHED
