"""ops_tasks/runtime/contract.py's and keys.py's promises that mutmut (bench/mutmut_fast.py) showed
no fast test held: every refusal of a run key's value reads, word for word, what the key wants and
what it got (the laptop shows it before anything is contacted, the pod fails a queue entry as
bad_input with it: docs/reference/run-keys.md, docs/ARCHITECTURE.md "Run contract"); a duration's
limits hold at their edges; the outputs root's rule judges the folder a path names; report rows and
lm-eval tasks sort naturally."""

import pytest

from ops_tasks.runtime import contract
from ops_tasks.runtime.contract import FAILURE_CLASSES, natural_key, outputs_root_problem
from ops_tasks.runtime.keys import LONGEST_BUDGET_S, run_problem, value_problem

CLASSES = ", ".join(FAILURE_CLASSES)

# -- a refusal says what the key wants and what it got, as the user reads it


@pytest.mark.parametrize("key, value, message", [
    ("command", "  ", "command must be a non-empty string, got '  '"),
    ("command", 5, "command must be a non-empty string, got 5"),
    ("gpus", -1, "gpus must be a whole number >= 0, got -1"),
    ("retries", 1.5, "retries must be a whole number >= 0, got 1.5"),
    ("stop_grace", 0, "stop_grace must be a duration of more than 0 and at most 1e+07 seconds, got 0"),
    ("summary_timeout", "5m", "summary_timeout must be a duration of more than 0 and at most 1e+07 seconds, got '5m'"),
    ("env", {"A B": "1"}, "env: 'A B' is not a valid environment variable name"),
    ("env", {"1X": "1"}, "env: '1X' is not a valid environment variable name"),
    ("retry_on", ["oom", "flaky"], "retry_on must be a list of failure classes (%s), got ['oom', 'flaky']" % CLASSES),
    ("retry_on", "oom", "retry_on must be a list of failure classes (%s), got 'oom'" % CLASSES),
    ("retry_backoff", -1, "retry_backoff must be a duration of 0 or more seconds and less than 1e+07, got -1"),
    ("summary_from", "vf-eval", "summary_from must be verifiers, lm_eval or python:module:function, got 'vf-eval'"),
    ("summary_metric", " ", "summary_metric must be a metric name (or metric,filter), got ' '"),
    ("stop_signal", "STOP",
     "stop_signal must be one of INT, TERM, HUP, QUIT, USR1, USR2 (TERM, then KILL, follow it), got 'STOP'"),
    ("metrics_from_log", "(?P<x",
     "metrics_from_log '(?P<x' does not compile: missing >, unterminated name at position 4"),
    ("expect", {"file": ["x"]}, "expect.file is not known (known: files, log_matches, log_not_matches, wandb_synced)"),
    ("expect", {"wandb_synced": "yes"}, "expect.wandb_synced must be true or false, got 'yes'"),
    ("expect_commit", "main", "expect_commit must be a commit id (7 to 40 hex digits), got 'main'"),
    ("out_mode", "s3", "out_mode must be one of volume, local_sync, got 's3'"),
    ("local_dir", "/etc/runs", "local_dir /etc/runs lies in the system folder /etc"),
    ("local_dir", "/mnt", "local_dir /mnt is / or a folder at the top of the file system: use a folder below the volume"),
])
def test_a_refused_value_is_named_with_what_the_key_wants_and_what_it_got(key, value, message):
    # Promise: a bad value is one line the user can act on, the same on the laptop and on the pod.
    assert value_problem(key, value) == message
    assert run_problem({"command": "true", key: value}) == message


def test_zero_is_a_count_and_a_word_is_a_command():
    # Promise: "integer >= 0" (docs/reference/run-keys.md): gpus 0 is a CPU run, retries 0 no retry.
    for key in ("gpus", "retries"):
        assert value_problem(key, 0) is None and value_problem(key, 3) is None
    assert value_problem("command", "true") is None


def test_a_field_the_supervisor_does_not_know_says_how_to_get_past_it():
    # Promise: an entry of a newer contract is refused naming the field, the version and the way out.
    assert run_problem({"command": "x", "zz": 1}) == (
        "it holds a field this supervisor (contract %d) does not know: zz; upgrade the pod's runtime "
        "(any newer ops submits it)" % contract.CONTRACT_VERSION)


def test_an_outputs_root_that_is_no_absolute_path_is_refused_saying_so():
    # Promise: the outputs root is an absolute path (README: "absolute or `..` refused").
    for root in ("outputs", "", None, "/mnt/out\0puts"):
        assert outputs_root_problem(root) == "must be an absolute path", root


# -- durations: their limits hold at the edges


@pytest.mark.parametrize("key, most", [
    ("summary_timeout", 1e7), ("stop_grace", 1e7), ("sync_interval", 1e7),
    ("timeout", LONGEST_BUDGET_S), ("stall_timeout", LONGEST_BUDGET_S),
])
def test_a_duration_is_taken_up_to_its_limit_and_refused_past_it(key, most):
    # Promise: "more than 0 and at most <limit> seconds": the limit itself is a duration, a second more is not.
    assert value_problem(key, most) is None
    assert value_problem(key, 0.5) is None
    problem = value_problem(key, most + 1)
    assert problem == "%s must be a duration of more than 0 and at most %g seconds, got %r" % (key, most, most + 1)


def test_retry_backoff_is_zero_or_more_seconds_below_its_limit_and_the_refusal_names_the_limit():
    # Promise: the refusal of a too-long backoff says what would be taken, not only "0 or more".
    assert value_problem("retry_backoff", 0) is None
    assert value_problem("retry_backoff", 1e7 - 1) is None
    for value in (1e7, 1e7 + 0.5):
        assert value_problem("retry_backoff", value) == (
            "retry_backoff must be a duration of 0 or more seconds and less than 1e+07, got %r" % (value,))


# -- the outputs root's rule judges the folder a path names


@pytest.mark.parametrize("root, problem", [
    ("//Xetc/outputs", None),  # a folder named Xetc, not /etc
    ("//etc/outputs", "lies in the system folder /etc"),
    ("///mnt/outputs", None),
])
def test_a_leading_double_slash_is_read_as_one_and_nothing_else_is_dropped(root, problem):
    # Promise: POSIX's '//' start names the same folder; the name after it is kept whole.
    assert outputs_root_problem(root) == problem


# -- natural order


def test_a_separator_sorts_before_letters_whatever_their_case():
    # Promise: report rows and lm-eval tasks sort as text with case ignored: arc_easy before arcade
    # and ARCADE alike (an underscore is no letter, wherever upper case would put it).
    assert sorted(["arcade", "arc_easy"], key=natural_key) == ["arc_easy", "arcade"]
    assert sorted(["ARCADE", "ARC_EASY"], key=natural_key) == ["ARC_EASY", "ARCADE"]
    assert sorted(["mmlu_b", "MMLUa", "mmlu_A"], key=natural_key) == ["mmlu_A", "mmlu_b", "MMLUa"]


def test_the_report_sorts_a_number_written_as_text_with_the_number_and_a_missing_value_last():
    # Promise (README, report): rows and groups sort naturally, a number as a number, a missing value
    # last: "10" and 10 are the same place (the rows keep their order), text comes before nothing.
    from ops_tasks.operations.report import natural_order

    assert natural_order("10") == natural_order(10) == natural_order(10.0)
    assert sorted(["10", 10, "9", 9.5], key=natural_order) == ["9", 9.5, "10", 10]
    assert sorted([None, "b", "a10", "a9", 3], key=natural_order) == [3, "a9", "a10", "b", None]
