"""ops_tasks/operations/validate.py's promises (README "validate and report", docs/ARCHITECTURE.md
"Run contract"), held by direct calls that run in-process (bench/mutmut_fast.py sees them): the run
artifact contract, one verdict per run, links never followed out of a run directory, FIFOs and
devices refused without blocking, lone surrogates, results.jsonl line by line, MAX_JSON_BYTES and
nesting past the parser as unreadable, the winning attempt under attempts/<n>/, and the scope of a
submission (validate_root's run_ids)."""

import json
import os
import signal

import pytest

from ops_tasks.errors import ConfigError
from ops_tasks.operations import validate as v
from ops_tasks.operations.validate import (BadJsonLine, OutsideRunDir, RunListing, TooLarge, attempt_dirs,
                                           checked_root, dir_verdict, first_bad_line, json_error, json_lines,
                                           json_or_unreadable, listing_verdict, load_json, open_run_file,
                                           read_run_file, run_dirs, text_safe, validate_root, winning_attempt,
                                           with_supervisor_record)
from ops_tasks.runtime.contract import MAX_JSON_BYTES
from ops_tasks.verdicts import BAD_SUMMARY, SUCCEEDED, UNFINISHED, UNKNOWN, UNREADABLE, Verdict

OK_SUMMARY = {"ok": True, "avg_reward": 0.5}


def make_run(root, run_id, *, summary=OK_SUMMARY, results=None, status=None, skip=(), raw=None):
    """A complete run directory (the artifact contract) minus skip; raw: {name: text} written as is."""
    run = root / run_id
    run.mkdir(parents=True)
    files = {
        "command.sh": "#!/bin/bash\ntrue\n",
        "run_metadata.json": json.dumps({"run_id": run_id, "model_id": "m"}),
        "summary.json": json.dumps(summary),
        "stdout.log": "done\n",
    }
    if results is not None:
        files["results.jsonl"] = results
    if status is not None:
        files["status.json"] = json.dumps(status)
    files.update(raw or {})
    for name, text in files.items():
        if name not in skip:
            (run / name).write_text(text) if isinstance(text, str) else (run / name).write_bytes(text)
    return run


class Alarm:
    """Fail (not hang) when a call blocks: a FIFO opened without O_NONBLOCK would."""

    def __enter__(self):
        def ring(*_):
            raise TimeoutError("blocked")
        self.old = signal.signal(signal.SIGALRM, ring)
        signal.alarm(3)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def report_of(**kw):
    base = {"ok": False, "runs": 1, "complete": [], "missing": {}, "invalid": [], "failed": [], "unfinished": [],
            "earlier_attempts": {}}
    base.update(kw)
    return base


def without_root(report):
    return {k: val for k, val in report.items() if k != "root"}


# ---------------------------------------------------------------- the root and its runs


def test_a_missing_root_or_a_file_is_refused_in_one_line(tmp_path):
    # Promise: `--root` that is no directory is exit 2 naming the path and why.
    with pytest.raises(ConfigError, match=r"^.*/nope: no such directory$") as missing:
        checked_root(tmp_path / "nope")
    assert missing.value.exit_code == 2
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"^.*/f: not a directory$"):
        checked_root(tmp_path / "f")
    assert checked_root(str(tmp_path)) == tmp_path


def test_runs_are_the_directories_directly_under_the_root_sorted_without_dotfiles(tmp_path):
    # Promise: dotfiles and entries that are not directories are not runs; runs are listed by id.
    for name in ("b", "a", ".hidden", "c"):
        (tmp_path / name).mkdir()
    (tmp_path / "file").write_text("x")
    assert run_dirs(tmp_path) == [("a", str(tmp_path / "a")), ("b", str(tmp_path / "b")), ("c", str(tmp_path / "c"))]


def test_an_empty_root_is_not_a_pass_and_says_so(tmp_path):
    # Promise: exit 1 on an empty root: it is a gate.
    report = validate_root(tmp_path)
    assert report == {"ok": False, "root": str(tmp_path), "runs": 0, "complete": [], "missing": {}, "invalid": [],
                      "failed": [], "unfinished": [], "earlier_attempts": {},
                      "error": f"no run directories under {tmp_path}"}


def test_a_complete_run_passes_with_every_key_of_the_json(tmp_path):
    # Promise: the JSON has ok, root, runs, complete, missing, invalid, failed, unfinished, earlier_attempts.
    make_run(tmp_path, "a", results='{"id": 1}\n\n{"id": 2}\n')
    make_run(tmp_path, "b", status={"state": "succeeded"})
    report = validate_root(tmp_path)
    assert report == {"ok": True, "root": str(tmp_path), "runs": 2, "complete": ["a", "b"], "missing": {},
                      "invalid": [], "failed": [], "unfinished": [], "earlier_attempts": {}}


def test_each_missing_contract_file_is_named_per_run(tmp_path):
    # Promise: command.sh, run_metadata.json, summary.json and stdout.log are each required, named when absent.
    make_run(tmp_path, "a", skip=("command.sh", "stdout.log"), status={"state": "succeeded"})
    make_run(tmp_path, "b", skip=("run_metadata.json",))
    report = validate_root(tmp_path)
    assert without_root(report) == report_of(runs=2, missing={"a": ["command.sh", "stdout.log"],
                                                              "b": ["run_metadata.json"]})


def test_a_run_without_summary_is_missing_it_and_unfinished(tmp_path):
    # Promise: summary.json is a contract file; a run with no status and no summary is not finished.
    make_run(tmp_path, "a", skip=("summary.json",))
    report = validate_root(tmp_path)
    assert without_root(report) == report_of(
        missing={"a": ["summary.json"]}, unfinished=["a"],
        failed=[{"run_id": "a", "state": UNFINISHED, "failure_class": UNFINISHED,
                 "reason": "no status.json and no summary.json: not finished, or not fetched"}])


def test_a_contract_file_that_is_a_directory_is_missing(tmp_path):
    # Promise: the contract's files are files; a directory by that name does not count.
    run = make_run(tmp_path, "a", skip=("stdout.log",))
    (run / "stdout.log").mkdir()
    assert validate_root(tmp_path)["missing"] == {"a": ["stdout.log"]}


def test_an_unparseable_json_file_names_file_line_and_column(tmp_path):
    # Promise: the JSON files must parse (file, line and column are named); the run is then not ok.
    make_run(tmp_path, "a", raw={"run_metadata.json": '{\n  "a": 1,\n  oops\n}'}, status={"state": "succeeded"})
    report = validate_root(tmp_path)
    assert without_root(report) == report_of(invalid=[
        {"run_id": "a", "file": "run_metadata.json", "line": 3, "column": 3,
         "error": "Expecting property name enclosed in double quotes"}])


def test_a_bad_status_json_is_invalid_and_the_run_unknown(tmp_path):
    # Promise: status.json must parse too; one that does not makes the run's state unknown.
    make_run(tmp_path, "a", raw={"status.json": "{"})
    report = validate_root(tmp_path)
    assert report["invalid"] == [{"run_id": "a", "file": "status.json", "line": 1, "column": 2,
                                  "error": "Expecting property name enclosed in double quotes"}]
    assert report["failed"] == [{"run_id": "a", "state": UNKNOWN, "failure_class": UNKNOWN,
                                 "reason": "status.json does not parse"}]
    assert report["ok"] is False and report["complete"] == []


def test_summary_and_metadata_must_be_json_objects(tmp_path):
    # Promise: summary.json and run_metadata.json are JSON objects; a list is invalid, named by its type.
    make_run(tmp_path, "a", raw={"run_metadata.json": "[1]"}, status={"state": "succeeded"})
    make_run(tmp_path, "b", summary=[True])
    report = validate_root(tmp_path)
    assert report["invalid"] == [
        {"run_id": "a", "file": "run_metadata.json", "line": 1, "column": 1, "error": "not a JSON object (list)"},
        {"run_id": "b", "file": "summary.json", "line": 1, "column": 1, "error": "not a JSON object (list)"}]
    assert [f["run_id"] for f in report["failed"]] == ["b"]
    assert report["complete"] == [] and report["ok"] is False


def test_a_status_json_list_is_not_invalid_but_the_run_is_unknown(tmp_path):
    # Promise: a status.json of the wrong shape is `unknown` (a verdict), not a parse error.
    make_run(tmp_path, "a", raw={"status.json": "[]"})
    report = validate_root(tmp_path)
    assert report["invalid"] == []
    assert report["failed"] == [{"run_id": "a", "state": UNKNOWN, "failure_class": UNKNOWN,
                                 "reason": "status.json is not a JSON object"}]


def test_a_failed_run_is_listed_with_state_class_and_reason(tmp_path):
    # Promise: `failed` holds run_id, state, failure_class, reason; ok: false fails the run.
    make_run(tmp_path, "a", summary={"ok": False, "failure_class": "nan_loss"})
    make_run(tmp_path, "b", status={"state": "timeout", "failure_class": "oom"})
    make_run(tmp_path, "c")
    report = validate_root(tmp_path)
    assert without_root(report) == report_of(runs=3, complete=["c"], failed=[
        {"run_id": "a", "state": "failed", "failure_class": "nan_loss",
         "reason": "summary.json says ok: false, failure_class nan_loss"},
        {"run_id": "b", "state": "timeout", "failure_class": "oom",
         "reason": "status.json says timeout, failure_class oom"}])


def test_a_running_run_is_unfinished_and_fails_the_gate(tmp_path):
    # Promise: a run fetched before it finished (queued/running) is unfinished: validate fails.
    make_run(tmp_path, "a", status={"state": "running"})
    report = validate_root(tmp_path)
    assert report["unfinished"] == ["a"] and report["ok"] is False and report["complete"] == []
    assert report["failed"][0]["state"] == UNFINISHED


def test_ok_must_be_a_json_boolean(tmp_path):
    # Promise: 0, 1, "false", null as ok are bad_summary.
    for i, ok in enumerate((1, "true", None)):
        make_run(tmp_path, f"r{i}", summary={"ok": ok})
    report = validate_root(tmp_path)
    assert [f["state"] for f in report["failed"]] == [BAD_SUMMARY] * 3
    assert report["complete"] == [] and report["invalid"] == []


# ---------------------------------------------------------------- results.jsonl, line by line


def test_results_jsonl_names_the_first_bad_line(tmp_path):
    # Promise: results.jsonl must parse line by line; the first bad line is named (blank lines allowed).
    make_run(tmp_path, "a", results='{"id": 1}\n\n   \n{"id": 2}\n{bad\n{also bad\n')
    report = validate_root(tmp_path)
    assert without_root(report) == report_of(invalid=[
        {"run_id": "a", "file": "results.jsonl", "line": 5, "column": 2,
         "error": "Expecting property name enclosed in double quotes"}])


def test_a_results_line_that_is_not_an_object_is_named_with_its_type(tmp_path):
    # Promise: each results.jsonl line is a JSON object.
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": 1}\n[1, 2]\n"x"\n')
    assert first_bad_line(str(path), "r") == {"run_id": "r", "file": "results.jsonl", "line": 2, "column": 1,
                                               "error": "not a JSON object (list)"}
    path.write_text('{"id": 1}\n\n{"id": 2}')
    assert first_bad_line(str(path), "r") is None


def test_a_results_line_with_trailing_json_blanks_is_read_and_other_trailing_text_is_not(tmp_path):
    # Promise: each line is read as json.loads reads it (space, tab, CR allowed around; a form feed is not).
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"id": 1} \t\r\n  {"id": 2}\n')
    assert list(json_lines(str(path), "r")) == [(1, {"id": 1}), (2, {"id": 2})]
    path.write_bytes(b'{"id": 1}\x0c\n')
    assert first_bad_line(str(path), "r") == {"run_id": "r", "file": "results.jsonl", "line": 1, "column": 10,
                                               "error": "Extra data"}
    path.write_bytes(b'{"id": 1} 2\n')
    assert first_bad_line(str(path), "r")["error"] == "Extra data"


def test_a_results_line_that_is_not_utf8_is_named(tmp_path):
    # Promise: a line that is not text is a bad line, named by its number.
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": "\xff"}\n')
    error = first_bad_line(str(path), "r")
    assert (error["line"], error["file"], error["column"]) == (2, "results.jsonl", None)
    assert "utf-8" in error["error"]


def test_a_results_line_nested_past_the_parser_is_a_bad_line(tmp_path):
    # Promise: nesting past what the parser takes is unreadable, not a crash.
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": 1}\n' + "[" * 200000 + "]" * 200000 + "\n")
    assert first_bad_line(str(path), "r") == {"run_id": "r", "file": "results.jsonl", "line": 2, "column": None,
                                               "error": "nested deeper than a JSON parser takes"}
    path.write_text('{"id": 1}\n' + "[" * 200000 + "\n")  # and not closed: the fallback parse
    assert first_bad_line(str(path), "r")["error"] == "nested deeper than a JSON parser takes"


def test_a_missing_results_file_is_an_error_not_a_crash(tmp_path):
    # Promise: a results.jsonl that cannot be opened is named, not raised.
    error = first_bad_line(str(tmp_path / "results.jsonl"), "r")
    assert error["run_id"] == "r" and error["file"] == "results.jsonl" and error["line"] is None
    assert error["column"] is None and "No such file" in error["error"]


def test_json_lines_yields_numbers_and_values_skipping_blank_lines(tmp_path):
    # Promise: a report reads results.jsonl line by line, numbered as a person counts them.
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\n\n \t\n[2]\n"s"\n')
    assert list(json_lines(str(path), "r")) == [(1, {"a": 1}), (4, [2]), (5, "s")]


def test_json_lines_of_a_link_out_of_the_run_is_a_bad_line_naming_the_file(tmp_path):
    # Promise: links are never followed out of a run directory, results.jsonl included.
    (tmp_path / "secret.jsonl").write_text('{"token": "x"}\n')
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").symlink_to(tmp_path / "secret.jsonl")
    with pytest.raises(BadJsonLine) as bad:
        list(json_lines(str(run / "results.jsonl"), "r"))
    assert bad.value.error == {"run_id": "r", "file": "results.jsonl", "line": None, "column": None,
                               "error": "a link leading out of its run directory: refused"}
    assert str(bad.value) == "a link leading out of its run directory: refused"


def test_json_lines_bad_line_error_is_carried(tmp_path):
    # Promise: the first bad line's number and message reach the user.
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\nnope\n')
    with pytest.raises(BadJsonLine) as bad:
        list(json_lines(str(path), "r"))
    assert bad.value.error == {"run_id": "r", "file": "results.jsonl", "line": 2, "column": 1,
                               "error": "Expecting value"}


def test_results_lines_with_lone_surrogates_become_replacement_characters(tmp_path):
    # Promise: a lone surrogate in results.jsonl cannot stop a report with an encoding error.
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "a\\ud800b"}\n{"id": "x"} \x0c\n')
    with pytest.raises(BadJsonLine):
        list(json_lines(str(path), "r"))
    path.write_text('{"id": "a\\ud800b"}\n  {"\\udfff": ["\\uDBFF"]}  \n')
    assert list(json_lines(str(path), "r")) == [(1, {"id": "a\ufffdb"}), (2, {"\ufffd": ["\ufffd"]})]


# ---------------------------------------------------------------- links, FIFOs, devices


def test_a_json_file_linked_out_of_its_run_is_refused(tmp_path):
    # Promise: no laptop file can leak into a report through a link out of the run directory.
    (tmp_path / "outside.json").write_text('{"ok": true}')
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").symlink_to(tmp_path / "outside.json")
    assert load_json(str(run / "summary.json"), "r", "summary.json") == (None, {
        "run_id": "r", "file": "summary.json", "line": None, "column": None,
        "error": "a link leading out of its run directory: refused"})
    with pytest.raises(OutsideRunDir):
        open_run_file(str(run / "summary.json"))


def test_a_link_that_stays_inside_its_run_is_read(tmp_path):
    # Promise: only links out are refused; one to a file of the same run directory is read.
    run = tmp_path / "run"
    run.mkdir()
    (run / "real.json").write_text('{"ok": true}')
    (run / "summary.json").symlink_to("real.json")
    assert load_json(str(run / "summary.json"), "r", "summary.json") == ({"ok": True}, None)
    with open_run_file(str(run / "summary.json")) as handle:
        assert handle.read() == b'{"ok": true}'
    assert read_run_file(str(run / "summary.json"), is_link=True) == b'{"ok": true}'


def test_a_run_directory_that_is_a_link_is_refused(tmp_path):
    # Promise: a run directory that is itself a link is not read (it may lead anywhere).
    real = make_run(tmp_path, "real")
    (tmp_path / "linked").symlink_to(real)
    assert load_json(str(tmp_path / "linked" / "summary.json"), "r", "summary.json")[1]["error"] == \
        "the run directory is a link: refused"
    report = validate_root(tmp_path)
    assert report["complete"] == ["real"] and report["ok"] is False
    assert [e["error"] for e in report["invalid"]] == ["the run directory is a link: refused"] * 2
    assert report["failed"][0]["run_id"] == "linked"


def test_what_a_listing_knows_is_used_and_a_link_swapped_in_is_refused(tmp_path):
    # Promise: a link swapped in for a plain file is refused (O_NOFOLLOW), not followed out.
    (tmp_path / "outside.json").write_text('{"ok": true}')
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").symlink_to(tmp_path / "outside.json")
    with pytest.raises(OSError):
        read_run_file(str(run / "summary.json"), is_link=False)
    with pytest.raises(OutsideRunDir, match="the run directory is a link: refused"):
        read_run_file(str(run / "summary.json"), dir_is_link=True, is_link=False)
    (run / "plain.json").write_text("{}")
    assert read_run_file(str(run / "plain.json"), dir_is_link=False) == b"{}"


def test_a_fifo_is_refused_without_blocking(tmp_path):
    # Promise: a FIFO in a run directory is refused at once, never waited on.
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "summary.json")
    os.mkfifo(run / "results.jsonl")
    with Alarm():
        assert load_json(str(run / "summary.json"), "r", "summary.json")[1]["error"] == \
            "not a regular file: refused"
        with pytest.raises(BadJsonLine, match="not a regular file: refused"):
            list(json_lines(str(run / "results.jsonl"), "r"))
        listing = RunListing(str(run))
        assert json_or_unreadable(listing, "summary.json", "r") is UNREADABLE


def test_a_fifo_run_in_a_root_is_validated_without_blocking(tmp_path):
    # Promise: `ops validate` over a run holding FIFOs ends, naming them, without blocking.
    run = make_run(tmp_path, "a", skip=("summary.json", "run_metadata.json"), status={"state": "succeeded"})
    os.mkfifo(run / "summary.json")
    os.mkfifo(run / "run_metadata.json")
    with Alarm():
        report = validate_root(tmp_path)
    assert report["missing"] == {"a": ["run_metadata.json", "summary.json"]}
    assert report["ok"] is False


def test_a_device_reached_through_a_link_inside_is_refused(tmp_path):
    # Promise: devices are refused like FIFOs (a link inside leading to one, as a run dir could hold).
    run = tmp_path / "run"
    run.mkdir()
    (run / "dev").symlink_to("/dev")
    (run / "summary.json").symlink_to("dev/null")
    # /dev/null is outside the run: refused as a link out, before its type is read
    assert load_json(str(run / "summary.json"), "r", "summary.json")[1]["error"] == \
        "a link leading out of its run directory: refused"
    (run / "sub").mkdir()
    assert load_json(str(run / "sub"), "r", "sub")[1]["error"] == "not a regular file: refused"


# ---------------------------------------------------------------- size, nesting, surrogates


def test_a_json_file_past_max_json_bytes_is_unreadable_and_not_read(tmp_path):
    # Promise: a run's JSON file larger than MAX_JSON_BYTES is unreadable (the pod reads it so too).
    path = tmp_path / "summary.json"
    with open(path, "wb") as handle:
        handle.truncate(MAX_JSON_BYTES + 1)
    value, error = load_json(str(path), "r", "summary.json")
    assert value is None
    assert error == {"run_id": "r", "file": "summary.json", "line": None, "column": None,
                     "error": "64 MiB: larger than the 64 MiB a run's JSON file may be; not read"}


def test_a_json_file_of_exactly_max_json_bytes_is_read(tmp_path):
    # Promise: the limit is MAX_JSON_BYTES itself: a file of that size is read.
    path = tmp_path / "summary.json"
    path.write_bytes(b'{"ok": true}' + b" " * (MAX_JSON_BYTES - 12))
    assert load_json(str(path), "r", "summary.json") == ({"ok": True}, None)


def test_too_large_names_sizes_in_mib(tmp_path):
    # Promise: the size refusal says how large the file is and what a run's JSON file may be.
    path = tmp_path / "f.json"
    path.write_bytes(b"x" * (3 * 2**20))
    with pytest.raises(TooLarge, match=r"^3 MiB: larger than the 2 MiB a run's JSON file may be; not read$"):
        read_run_file(str(path), 2 * 2**20)
    assert read_run_file(str(path), 3 * 2**20) == b"x" * (3 * 2**20)
    assert read_run_file(str(path)) == b"x" * (3 * 2**20)


def test_a_file_that_grew_since_it_was_statted_is_read_to_its_end(tmp_path, monkeypatch):
    # Promise: a file still being written is read whole, not cut at the size first seen.
    path = tmp_path / "summary.json"
    path.write_bytes(b'{"ok": true, "pad": "' + b"x" * 10000 + b'"}')
    real_fstat = os.fstat

    def small_fstat(fd):
        info = real_fstat(fd)
        return os.stat_result((info.st_mode, info.st_ino, info.st_dev, info.st_nlink, info.st_uid, info.st_gid,
                               5, int(info.st_atime), int(info.st_mtime), int(info.st_ctime)))
    monkeypatch.setattr(os, "fstat", small_fstat)
    assert read_run_file(str(path)) == path.read_bytes()
    assert load_json(str(path), "r", "summary.json")[0]["ok"] is True


def test_a_file_of_exactly_its_stat_size_is_read(tmp_path):
    # Promise: a plain small file reads as it is, whatever its size.
    for data in (b"", b"{}", b'{"ok": true}\n'):
        (tmp_path / "f").write_bytes(data)
        assert read_run_file(str(tmp_path / "f")) == data


def test_json_nested_past_the_parser_is_unreadable(tmp_path):
    # Promise: nesting past what the parser takes is unreadable, named, not a crash.
    path = tmp_path / "summary.json"
    path.write_text("[" * 200000 + "]" * 200000)
    assert load_json(str(path), "r", "summary.json") == (None, {
        "run_id": "r", "file": "summary.json", "line": None, "column": None,
        "error": "nested deeper than a JSON parser takes"})


def test_a_json_file_that_is_not_utf8_is_unreadable(tmp_path):
    # Promise: bytes that are not text are an error naming the file, not a crash.
    path = tmp_path / "summary.json"
    path.write_bytes(b'{"ok": "\xff"}')
    value, error = load_json(str(path), "r", "summary.json")
    assert value is None and error["file"] == "summary.json" and error["line"] is None
    assert error["column"] is None and "decode" in error["error"]


def test_a_missing_json_file_is_an_error(tmp_path):
    # Promise: a file that cannot be read is an error dict, not an exception.
    value, error = load_json(str(tmp_path / "none.json"), "r", "none.json")
    assert value is None and error["run_id"] == "r" and "No such file" in error["error"]


def test_json_error_names_file_line_and_column():
    # Promise: the JSON files must parse (file, line and column are named).
    try:
        json.loads('{\n\n "a" 1}')
    except json.JSONDecodeError as exc:
        assert json_error("r", "f.json", exc) == {"run_id": "r", "file": "f.json", "line": 3, "column": 6,
                                                  "error": "Expecting ':' delimiter"}
        assert json_error("r", "f.json", exc, line=7)["line"] == 7
    assert json_error("r", "f", OSError("boom")) == {"run_id": "r", "file": "f", "line": None, "column": None,
                                                     "error": "boom"}
    assert json_error("r", "f", OSError("boom"), line=4)["line"] == 4


@pytest.mark.parametrize("raw, expected", [
    (b'"\\ud800"', "\ufffd"),
    (b'"a\\udc00b"', "a\ufffdb"),
    (b'"\\uDBFF"', "\ufffd"),
    (b'"\\uDfff"', "\ufffd"),
    (b'"\\ud83d\\ude00"', "\U0001f600"),  # a pair is one character, kept
    (b'"\\u00e9"', "\u00e9"),
    (b'{"\\ud800k": {"x": ["\\udbff", 1, {"y": "\\ud800"}]}, "n": 2, "e": "\\ud83d\\ude00"}',
     {"\ufffdk": {"x": ["\ufffd", 1, {"y": "\ufffd"}]}, "n": 2, "e": "\U0001f600"}),
    (b'[["\\ud800"], "\\udfff", {"k": ["\\udc80"]}]', [["\ufffd"], "\ufffd", {"k": ["\ufffd"]}]),
    (b'[1, "\\ud800", null]', [1, "\ufffd", None]),
])
def test_lone_surrogates_become_replacement_characters(tmp_path, raw, expected):
    # Promise: a lone surrogate (\ud800) reads as U+FFFD so report.md/html and the terminal can write it.
    path = tmp_path / "summary.json"
    path.write_bytes(raw)
    value, error = load_json(str(path), "r", "summary.json")
    assert error is None and value == expected
    assert json.dumps(value, ensure_ascii=False).encode("utf-8")  # writable as UTF-8


@pytest.mark.parametrize("raw", [
    b'{"id": "a\xed\xa0\x80b"}',  # a surrogate written as UTF-8 bytes: json.loads passes it (surrogatepass)
    b'{"id": "\\u00e9 a\xed\xb2\x80b"}',  # the same beside an escape that is no surrogate
    '{"id": "a\\ud800b"}'.encode("utf-16-le"),  # a UTF-16 file (json.loads detects it) with the escape
    '{"id": "a\\ud800b"}'.encode("utf-32"),
    '{"id": "a\ud800b"}'.encode("utf-16-le", "surrogatepass"),  # a lone UTF-16 code unit
])
def test_a_lone_surrogate_in_any_encoding_json_loads_reads_becomes_a_replacement_character(tmp_path, raw):
    # Promise: whatever bytes held it, a lone surrogate cannot stop a report (report.md, report.html,
    # the terminal) with an encoding error: summary.json and every results.jsonl line alike.
    path = tmp_path / "summary.json"
    path.write_bytes(raw)
    value, error = load_json(str(path), "r", "summary.json")
    assert error is None and value["id"].endswith("a\ufffdb"), value
    assert json.dumps(value, ensure_ascii=False).encode("utf-8")
    lines = tmp_path / "results.jsonl"
    lines.write_bytes(raw)
    [(number, line)] = json_lines(str(lines), "r")
    assert number == 1 and line == value


def test_lone_surrogates_keep_key_order_and_values(tmp_path):
    # Promise: replacing surrogates keeps the object as written (order of keys, every value).
    raw = b'{"b": 1, "\\ud800": "\\udc00", "a": [true, "\\ud800"], "c": {"\\udfff": null}}'
    value = text_safe(json.loads(raw), raw)
    assert list(value) == ["b", "\ufffd", "a", "c"]
    assert value == {"b": 1, "\ufffd": "\ufffd", "a": [True, "\ufffd"], "c": {"\ufffd": None}}


def test_text_safe_leaves_values_without_surrogate_escapes_alone():
    # Promise: ordinary text (escapes that are no surrogate included) comes through unchanged.
    for raw in (b'"plain"', b'"\\u00e9\\u4e2d"', b'["\\n", "\\\\ud800"]'):
        assert text_safe(json.loads(raw), raw) == json.loads(raw)
    assert text_safe(5, b"\\ud800") == 5


# ---------------------------------------------------------------- listings and verdicts


def test_a_listing_reads_its_entries_once_and_knows_files(tmp_path):
    # Promise: a run's files are what its directory holds; a directory by a file's name is not a file.
    run = make_run(tmp_path, "a", skip=("stdout.log",))
    (run / "stdout.log").mkdir()
    listing = RunListing(str(run))
    assert listing.has("summary.json") and listing.is_file("summary.json")
    assert listing.has("stdout.log") and not listing.is_file("stdout.log")
    assert not listing.has("status.json") and not listing.is_file("status.json")
    assert listing.linked is False
    assert listing.load_json("summary.json", "a") == (OK_SUMMARY, None)
    assert listing.load_json("status.json", "a")[1]["file"] == "status.json"
    assert RunListing(str(tmp_path / "nope")).entries == {}
    (tmp_path / "link").symlink_to(run)
    linked = RunListing(str(tmp_path / "link"))
    assert linked.linked is True
    assert linked.load_json("summary.json", "a")[1]["error"] == "the run directory is a link: refused"


def test_a_listing_refuses_a_link_out_among_its_entries(tmp_path):
    # Promise: links are never followed out of a run directory, whoever lists it.
    (tmp_path / "out.json").write_text('{"ok": true}')
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").symlink_to(tmp_path / "out.json")
    listing = RunListing(str(run))
    assert listing.is_file("summary.json")
    assert listing.load_json("summary.json", "r")[1]["error"] == "a link leading out of its run directory: refused"
    assert json_or_unreadable(listing, "summary.json", "r") is UNREADABLE


def test_json_or_unreadable_tells_absent_from_unreadable(tmp_path):
    # Promise: a run without status.json (made by hand) is judged by its summary; a bad one is unknown.
    run = make_run(tmp_path, "a", raw={"status.json": "{"})
    (run / "x.json").mkdir()
    listing = RunListing(str(run))
    assert json_or_unreadable(listing, "status.json", "a") is UNREADABLE
    assert json_or_unreadable(listing, "x.json", "a") is UNREADABLE
    assert json_or_unreadable(listing, "none.json", "a") is None
    assert json_or_unreadable(listing, "summary.json", "a") == OK_SUMMARY


def test_the_verdict_of_a_run_directory(tmp_path):
    # Promise: one verdict: status.json first, then summary.json.
    make_run(tmp_path, "ok")
    make_run(tmp_path, "st", status={"state": "failed"})
    make_run(tmp_path, "bad", raw={"summary.json": "{"})
    make_run(tmp_path, "none", skip=("summary.json",))
    assert dir_verdict(str(tmp_path / "ok"), "ok") == SUCCEEDED
    assert listing_verdict(RunListing(str(tmp_path / "ok")), "ok") == SUCCEEDED
    assert dir_verdict(str(tmp_path / "st"), "st") == Verdict("failed", False, "failed", "status.json says failed")
    assert dir_verdict(str(tmp_path / "bad"), "bad").state == BAD_SUMMARY
    assert dir_verdict(str(tmp_path / "none"), "none").state == UNFINISHED


# ---------------------------------------------------------------- the supervisor's record


def test_the_supervisor_record_is_merged_under_ops(tmp_path):
    # Promise: validate and report read run_metadata.json with the supervisor's record under `ops`.
    run = make_run(tmp_path, "a")
    (run / ".ops").mkdir()
    record = {"submission": "s1", "files": {"summary.json": "command", "stdout.log": "supervisor", "x": 1}}
    (run / ".ops" / "record.json").write_text(json.dumps(record))
    metadata = {"model_id": "m"}
    merged = with_supervisor_record(metadata, str(run), "a")
    assert merged == {"model_id": "m", "ops": record,
                      "files_written_by": {"summary.json": "command", "stdout.log": "supervisor"}}
    assert metadata == {"model_id": "m"}  # the caller's dict is not changed
    assert with_supervisor_record(None, str(run), "a") == {"ops": record, "files_written_by": {
        "summary.json": "command", "stdout.log": "supervisor"}}
    assert with_supervisor_record([1], str(run), "a")["ops"] == record


def test_a_missing_or_bad_supervisor_record_adds_nothing(tmp_path):
    # Promise: a record that is missing or unreadable adds nothing; None with no record stays None.
    run = make_run(tmp_path, "a")
    assert with_supervisor_record(None, str(run), "a") is None
    assert with_supervisor_record({"m": 1}, str(run), "a") == {"m": 1}
    (run / ".ops").mkdir()
    (run / ".ops" / "record.json").write_text("[1]")
    assert with_supervisor_record({"m": 1}, str(run), "a") == {"m": 1}
    (run / ".ops" / "record.json").write_text("{")
    assert with_supervisor_record(None, str(run), "a") is None
    (run / ".ops" / "record.json").write_text('{"files": ["x"]}')
    assert with_supervisor_record({"m": 1}, str(run), "a") == {"m": 1, "ops": {"files": ["x"]}}


# ---------------------------------------------------------------- earlier attempts


def test_attempts_are_listed_newest_first_by_number(tmp_path):
    # Promise: earlier attempts live under attempts/<n>/; the latest is the highest n (10 after 9).
    run = tmp_path / "run"
    for name in ("1", "2", "9", "10", "x", ".3"):
        (run / "attempts" / name).mkdir(parents=True)
    (run / "attempts" / "4").write_text("a file")
    (run / "attempts" / "5").symlink_to(tmp_path)
    assert attempt_dirs(str(run)) == [(10, str(run / "attempts" / "10")), (9, str(run / "attempts" / "9")),
                                      (2, str(run / "attempts" / "2")), (1, str(run / "attempts" / "1"))]
    assert attempt_dirs(str(tmp_path / "none")) == []


def test_an_attempts_folder_that_is_a_link_is_not_looked_at(tmp_path):
    # Promise: links are never followed out of a run directory, attempts/ included.
    elsewhere = tmp_path / "elsewhere"
    make_run(elsewhere, "7")
    run = make_run(tmp_path, "run", summary={"ok": False})
    (run / "attempts").symlink_to(elsewhere)
    assert attempt_dirs(str(run)) == []
    path, number, verdict = winning_attempt(str(run), "run")
    assert (path, number, verdict.ok) == (str(run), None, False)
    (run / "attempts").unlink()
    (run / "attempts").write_text("a file")
    assert attempt_dirs(str(run)) == []


def test_the_latest_earlier_success_wins_over_a_failed_top(tmp_path):
    # Promise: a run id counts once, by its winning attempt: the latest earlier success under attempts/<n>/.
    run = make_run(tmp_path, "run", summary={"ok": False})
    make_run(run / "attempts", "1")
    make_run(run / "attempts", "2")
    make_run(run / "attempts", "3", summary={"ok": False})
    path, number, verdict = winning_attempt(str(run), "run")
    assert (path, number, verdict) == (str(run / "attempts" / "2"), 2, SUCCEEDED)
    report = validate_root(tmp_path)
    assert without_root(report) == report_of(ok=True, complete=["run"], earlier_attempts={"run": 2})


def test_a_succeeded_top_wins_over_earlier_attempts(tmp_path):
    # Promise: the top of the run directory stands for the run when it succeeded.
    run = make_run(tmp_path, "run")
    make_run(run / "attempts", "1")
    assert winning_attempt(str(run), "run") == (str(run), None, SUCCEEDED)
    assert validate_root(tmp_path)["earlier_attempts"] == {}


def test_a_running_top_stands_even_after_an_earlier_success(tmp_path):
    # Promise: a latest attempt still queued or running is the run's state (unfinished: validate fails).
    run = make_run(tmp_path, "run", status={"state": "queued"})
    make_run(run / "attempts", "1")
    path, number, verdict = winning_attempt(str(run), "run")
    assert (path, number, verdict.state) == (str(run), None, UNFINISHED)
    report = validate_root(tmp_path)
    assert report["ok"] is False and report["unfinished"] == ["run"] and report["earlier_attempts"] == {}


def test_with_no_earlier_success_the_top_stands(tmp_path):
    # Promise: a run none of whose attempts succeeded is failed by its latest attempt.
    run = make_run(tmp_path, "run", status={"state": "stalled"})
    make_run(run / "attempts", "1", summary={"ok": False})
    path, number, verdict = winning_attempt(str(run), "run")
    assert (path, number, verdict.state) == (str(run), None, "stalled")


def test_the_winning_attempt_is_the_one_whose_files_are_checked(tmp_path):
    # Promise: validate checks the files of the attempt that stands for the run.
    run = make_run(tmp_path, "run", summary={"ok": False}, skip=("stdout.log",))
    make_run(run / "attempts", "1", results="bad\n")
    report = validate_root(tmp_path)
    assert report["missing"] == {}
    assert report["invalid"] == [{"run_id": "run", "file": "results.jsonl", "line": 1, "column": 1,
                                  "error": "Expecting value"}]
    assert report["earlier_attempts"] == {"run": 1} and report["failed"] == [] and report["ok"] is False


def test_attempt_zero_is_reported_as_an_earlier_attempt(tmp_path):
    # Promise: earlier_attempts names the attempt that stands for the run.
    run = make_run(tmp_path, "run", summary={"ok": False})
    make_run(run / "attempts", "0")
    path, number, verdict = winning_attempt(str(run), "run")
    assert (number, verdict.ok) == (0, True)


# ---------------------------------------------------------------- the scope of a submission


def test_a_submission_scope_checks_only_its_runs_and_lists_unfetched_ones_missing(tmp_path):
    # Promise: the scope is the submission's runs; an old failed run outside it no longer fails; one never fetched is missing.
    make_run(tmp_path, "old", summary={"ok": False})
    make_run(tmp_path, "a")
    make_run(tmp_path, "b")
    report = validate_root(tmp_path, ["b", "a", "b"])
    assert without_root(report) == report_of(ok=True, runs=2, complete=["b", "a"])
    report = validate_root(tmp_path, ["a", "gone"])
    assert without_root(report) == report_of(complete=["a"], missing={"gone": ["the run directory (not fetched)"]})


def test_a_submission_none_of_whose_runs_is_fetched_says_so(tmp_path):
    # Promise: a scope none of whose runs is under the root fails, saying they were not fetched.
    make_run(tmp_path, "other")
    report = validate_root(tmp_path, ["x", "y"])
    assert report["ok"] is False and report["runs"] == 0
    assert report["missing"] == {"x": ["the run directory (not fetched)"], "y": ["the run directory (not fetched)"]}
    assert report["error"] == f"none of the 2 runs in scope is under {tmp_path} (not fetched?)"


def test_a_submission_naming_no_run_is_no_pass(tmp_path):
    # Promise: an empty scope (a submission naming no run) is not a pass, and says why.
    make_run(tmp_path, "other")
    report = validate_root(tmp_path, [])
    assert without_root(report) == report_of(runs=0, error="no run in scope: the submission names none")


def test_validate_root_takes_a_string_root(tmp_path):
    # Promise: --root is a path given as text.
    make_run(tmp_path, "a")
    assert validate_root(str(tmp_path))["ok"] is True
    assert validate_root(str(tmp_path))["root"] == str(tmp_path)


def test_constants_of_the_contract():
    # Promise: the contract's files, as the README lists them.
    assert v.REQUIRED == ("command.sh", "run_metadata.json", "summary.json", "stdout.log")
    assert v.RESULTS == "results.jsonl"
    assert v.RECORD == (".ops", "record.json")


# ---------------------------------------------------------------- no descriptor left open


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_refused_and_read_files_leave_no_descriptor_open(tmp_path):
    # Promise: a report reads thousands of runs; no refusal or read leaves a file open (no "too many open files").
    run = tmp_path / "run"
    run.mkdir()
    (run / "big.json").write_bytes(b"x" * 100)
    (run / "dir.json").mkdir()
    os.mkfifo(run / "fifo.json")
    (run / "ok.json").write_text("{}")
    before = open_fds()
    for _ in range(50):
        with pytest.raises(TooLarge):
            read_run_file(str(run / "big.json"), 10)
        with pytest.raises(OutsideRunDir):
            read_run_file(str(run / "dir.json"))
        with pytest.raises(OutsideRunDir):
            read_run_file(str(run / "fifo.json"))
        assert read_run_file(str(run / "ok.json")) == b"{}"
        assert load_json(str(run / "ok.json"), "r", "ok.json") == ({}, None)
    assert open_fds() == before


def test_a_grown_file_read_leaves_no_descriptor_open(tmp_path, monkeypatch):
    # Promise: reading a file still being written leaves nothing open either.
    path = tmp_path / "summary.json"
    path.write_bytes(b"{}" + b" " * 100)
    real_fstat = os.fstat

    def small_fstat(fd):
        info = real_fstat(fd)
        return os.stat_result((info.st_mode, info.st_ino, info.st_dev, info.st_nlink, info.st_uid, info.st_gid,
                               1, int(info.st_atime), int(info.st_mtime), int(info.st_ctime)))
    before = open_fds()
    monkeypatch.setattr(os, "fstat", small_fstat)
    for _ in range(20):
        assert read_run_file(str(path)) == path.read_bytes()
    monkeypatch.undo()
    assert open_fds() == before


# ---------------------------------------------------------------- lines as json.loads reads them


def test_a_utf16_results_line_is_read_as_json_loads_reads_it(tmp_path):
    # Promise: each results.jsonl line is read as json.loads reads it (it detects UTF-16), nesting included.
    path = tmp_path / "results.jsonl"
    path.write_bytes('{"id": 1}'.encode("utf-16-le"))
    assert list(json_lines(str(path), "r")) == [(1, {"id": 1})]
    path.write_bytes(("[" * 200000).encode("utf-16-le"))
    assert first_bad_line(str(path), "r") == {"run_id": "r", "file": "results.jsonl", "line": 1, "column": None,
                                               "error": "nested deeper than a JSON parser takes"}


def test_a_results_line_with_trailing_text_is_a_bad_line(tmp_path):
    # Promise: results.jsonl must parse line by line: text after a value is an error, not dropped.
    path = tmp_path / "results.jsonl"
    for tail in (b"X", b"XX", b"\x0b", b" \xc2\xa0"):
        path.write_bytes(b'{"id": 1}\n{"id": 2}' + tail + b"\n")
        error = first_bad_line(str(path), "r")
        assert (error["line"], error["error"]) == (2, "Extra data"), tail


def test_every_json_file_is_checked_when_an_earlier_one_is_missing(tmp_path):
    # Promise: validate names each problem: a missing run_metadata.json does not hide a bad summary or status.
    make_run(tmp_path, "a", skip=("run_metadata.json",), raw={"summary.json": "{", "status.json": "[1"})
    report = validate_root(tmp_path)
    assert report["missing"] == {"a": ["run_metadata.json"]}
    assert [(e["file"], e["line"]) for e in report["invalid"]] == [("summary.json", 1), ("status.json", 1)]


def swapped_in(run):
    """summary.json listed as a plain file, then swapped for a link (to a file inside the run)."""
    (run / "real.json").write_text('{"ok": true}')
    listing = RunListing(str(run))
    (run / "summary.json").unlink()
    (run / "summary.json").symlink_to("real.json")
    return listing


def test_a_link_swapped_in_after_the_listing_is_refused_even_inside(tmp_path):
    # Promise: the open refuses a link swapped in meanwhile (O_NOFOLLOW) for a file a listing saw as plain.
    run = make_run(tmp_path, "a", status={"state": "succeeded"})
    listing = swapped_in(run)
    value, error = listing.load_json("summary.json", "a")
    assert value is None and error["file"] == "summary.json" and "symbolic links" in error["error"]
    assert json_or_unreadable(listing, "summary.json", "a") is UNREADABLE
    assert listing_verdict(listing, "a") == Verdict(BAD_SUMMARY, False, BAD_SUMMARY,
                                                    "summary.json is not a JSON object")
    with pytest.raises(OSError, match="symbolic links"):
        read_run_file(str(run / "summary.json"), is_link=False)
    assert load_json(str(run / "summary.json"), "a", "summary.json", is_link=False)[1] is not None
    assert load_json(str(run / "summary.json"), "a", "summary.json") == ({"ok": True}, None)


def test_open_run_file_uses_what_the_caller_knows(tmp_path):
    # Promise: what a listing knows is trusted: a link swapped in is refused, a run directory known linked is.
    run = tmp_path / "run"
    run.mkdir()
    (run / "real.json").write_text("{}")
    (run / "summary.json").symlink_to("real.json")
    with pytest.raises(OSError, match="symbolic links"):
        open_run_file(str(run / "summary.json"), is_link=False)
    with pytest.raises(OutsideRunDir, match="the run directory is a link: refused"):
        open_run_file(str(run / "real.json"), dir_is_link=True)
    with open_run_file(str(run / "summary.json"), dir_is_link=False, is_link=True) as handle:
        assert handle.read() == b"{}"


def test_an_attempts_entry_with_a_unicode_digit_is_not_an_attempt(tmp_path):
    # A pod's `attempts/²/` (str.isdigit is true, int() refuses it) is no attempt, on either side.
    from ops_tasks.runtime.contract import attempt_number
    from ops_tasks.runtime.rundir import attempts_done

    run = make_run(tmp_path, "run", summary={"ok": False})
    (run / "attempts" / "²").mkdir(parents=True)
    (run / "attempts" / "2").mkdir()
    assert [number for number, _ in attempt_dirs(str(run))] == [2]
    assert validate_root(tmp_path)["failed"][0]["run_id"] == "run"
    assert attempts_done(str(run)) == 2 and attempt_number("²") is None and attempt_number("10") == 10
