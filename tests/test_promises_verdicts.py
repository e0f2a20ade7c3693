"""ops_tasks/verdicts.py's promises that mutmut (bench/mutmut_fast.py) showed no fast test held: the
verdict's reason, which validate, report and runs.status show a person, says in plain words why a
run is not ok (naming the file, the state and the value it saw), the summary's own failed state is
kept, a summary of the wrong shape is bad_summary, and an active run is unfinished."""

import pytest

from ops_tasks.verdicts import (BAD_SUMMARY, SUCCEEDED, UNFINISHED, UNKNOWN, UNREADABLE, Verdict, is_unfinished,
                                run_verdict)

LONG = "x" * 30 + "y" * 30  # longer than what a reason quotes (40 characters of a state, 20 of an ok)

CASES = [
    # (status, summary) -> the verdict, reason word for word
    ((UNREADABLE, None), Verdict(UNKNOWN, False, UNKNOWN, "status.json does not parse")),
    (([1], None), Verdict(UNKNOWN, False, UNKNOWN, "status.json is not a JSON object")),
    (({"state": "weird"}, None), Verdict(UNKNOWN, False, UNKNOWN, "status.json has no known state ('weird')")),
    (({"state": LONG}, None), Verdict(UNKNOWN, False, UNKNOWN, f"status.json has no known state ({LONG[:40]!r})")),
    (({"state": "running"}, {"ok": True}),
     Verdict(UNFINISHED, False, UNFINISHED, "status.json says running: not finished when read")),
    (({"state": "failed"}, None), Verdict("failed", False, "failed", "status.json says failed")),
    (({"state": "timeout", "failure_class": "oom"}, None),
     Verdict("timeout", False, "oom", "status.json says timeout, failure_class oom")),
    ((None, None), Verdict(UNFINISHED, False, UNFINISHED,
                           "no status.json and no summary.json: not finished, or not fetched")),
    ((None, UNREADABLE), Verdict(BAD_SUMMARY, False, BAD_SUMMARY, "summary.json is not a JSON object")),
    ((None, []), Verdict(BAD_SUMMARY, False, BAD_SUMMARY, "summary.json is not a JSON object")),
    (({"state": "succeeded"}, []), Verdict(BAD_SUMMARY, False, BAD_SUMMARY, "summary.json is not a JSON object")),
    (({"state": "succeeded"}, [1]), Verdict(BAD_SUMMARY, False, BAD_SUMMARY, "summary.json is not a JSON object")),
    ((None, {"score": 1}),
     Verdict(BAD_SUMMARY, False, BAD_SUMMARY, "summary.json has no ok (and there is no status.json)")),
    ((None, {"ok": False}), Verdict("failed", False, "summary_not_ok", "summary.json says ok: false")),
    ((None, {"ok": False, "failure_class": "nan_loss"}),
     Verdict("failed", False, "nan_loss", "summary.json says ok: false, failure_class nan_loss")),
    ((None, {"ok": False, "state": "timeout"}),
     Verdict("timeout", False, "summary_not_ok", "summary.json says ok: false")),
    ((None, {"ok": False, "state": "running"}),
     Verdict("failed", False, "summary_not_ok", "summary.json says ok: false")),
    ((None, {"ok": False, "state": "succeeded"}),
     Verdict("failed", False, "summary_not_ok", "summary.json says ok: false")),
    ((None, {"ok": 0}), Verdict(BAD_SUMMARY, False, BAD_SUMMARY, "summary.json ok is '0' (int), not true or false")),
    ((None, {"ok": LONG}),
     Verdict(BAD_SUMMARY, False, BAD_SUMMARY, f"summary.json ok is {LONG[:20]!r} (str), not true or false")),
    (({"state": "succeeded"}, {"ok": True}), SUCCEEDED),
]


@pytest.mark.parametrize("files, verdict", CASES, ids=[str(i) for i in range(len(CASES))])
def test_a_verdict_says_why_in_plain_words(files, verdict):
    # Promise: validate/report/runs.status show this state, failure class and reason, word for word.
    assert run_verdict(*files) == verdict


def test_a_run_still_running_is_unfinished_and_an_ended_one_is_not():
    # Promise: the teardown check keeps a pod whose run is queued or running, and only then.
    assert is_unfinished(run_verdict({"state": "running"}, None))
    assert is_unfinished(run_verdict({"state": "queued"}, None))
    assert not is_unfinished(run_verdict({"state": "succeeded"}, None))
    assert not is_unfinished(run_verdict({"state": "failed"}, None))
