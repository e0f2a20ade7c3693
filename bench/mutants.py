"""Does the suite catch real bugs? Plants each bug of a fixed list, one at a time, in a copy of
the checkout, runs the tests named for it, and reports the share caught per area.

    .venv/bin/python bench/mutants.py              # every mutation (`make mutants`)
    .venv/bin/python bench/mutants.py --only runs-  # the mutations whose id starts so
    .venv/bin/python bench/mutants.py --list        # the list, nothing run
    .venv/bin/python bench/mutants.py --head        # on the last commit, not the working tree

A mutation is {id, area, file, original, mutated, tests}: `original` must occur exactly once in
`file` as the working tree has it, or the runner stops at once (the list is kept in step with
the code, never silently skipped). The copy is the checkout's tracked and untracked-but-not-
ignored files as they are now (--head: the last commit, when others' edits are half done);
the tests run with this project's venv Python, the copy first on
PYTHONPATH (so `ops`, `inv` and every subprocess import the mutated package) and as the working
directory. A mutation is caught when its tests fail; it survived when they pass. Before the
mutations, the same tests run once on the unmutated copy: a test that fails there would count
a mutation as caught for nothing, so the runner stops and names it (--no-baseline skips this).
Exit 1 when less than --target (90%) is caught.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
VENV_PYTHON = CHECKOUT / ".venv" / "bin" / "python"
# Generous: each mutation names a few tests; a mutation that hangs them is stopped here and counted
# as caught (the per-test timeout of pytest-timeout would fail them anyway).
MUTATION_TIMEOUT_S = 600


@dataclass(frozen=True)
class Mutation:
    id: str
    area: str
    file: str
    original: str
    mutated: str
    tests: tuple
    why: str = ""


def _m(id, area, file, original, mutated, tests, why=""):
    return Mutation(id, area, file, original, mutated, tuple(tests), why)


# ---------------------------------------------------------------- the planted bugs

RT = "ops_tasks/runtime/"  # the pod runtime: a module per role
STATS = "ops_tasks/operations/stats.py"
REPORT = "ops_tasks/operations/report.py"
T_FAULTS = "tests/test_faults_runs.py::"
T_FOOTING = "tests/test_report_footing.py::"
T_UPGRADE = "tests/test_upgrade.py::"
T_BADRUN = "tests/test_bad_day_runs.py::"
T_VERDICTS = T_FAULTS + "test_verdicts_a_careless_supervisor_gets_wrong"
T_GROUP_KILL = T_FAULTS + "test_a_timeout_or_stall_kills_the_whole_process_group"
VALIDATE = "ops_tasks/operations/validate.py"
VERDICTS = "ops_tasks/verdicts.py"
T_VALIDATE = "tests/test_validate.py::"
T_REDACTION = "tests/test_redaction.py::"
T_HOST_KEYS = "tests/test_host_keys.py::"
T_LIMITS = "tests/test_supervisor_limits.py::"
T_OUTCOMES = "tests/test_runs.py::test_outcomes_each_get_their_state_class_and_a_complete_run_directory"
ARTIFACTS_OP = "ops_tasks/operations/artifacts.py"
T_FETCH_BAD = "tests/test_fetch_bad_day.py::"

MUTATIONS = [
    # -- this round's campaigns, costs, budgets and fleet fetch
    _m("campaign-release-unchecked", "campaign", "ops_tasks/operations/campaign.py",
       "        if check[\"active\"] or check[\"unfetched\"]:\n            names = ",
       "        if False:\n            names = ",
       ["tests/test_campaign.py::test_a_two_pod_campaign_rents_replaces_resumes_refuses_then_releases"],
       "a campaign releases a pod whose runs are not fetched"),
    _m("costs-finished-before-started", "costs", "ops_tasks/operations/costs.py",
       "            \"finished\": finished if finished is not None and finished >= started else None,",
       "            \"finished\": finished if finished is not None else None,",
       ["tests/test_costs.py::test_a_cost_that_cannot_be_known_is_none_never_zero"],
       "a run the pod says finished before it started gets a (negative) cost"),
    _m("config-profile-budgets-ignored", "config", "ops_tasks/operations/run_config.py",
       "    budgets = (getattr(profile, \"run_timeout\", RUN_TIMEOUT_S), getattr(profile, \"run_stall_timeout\", "
       "RUN_STALL_TIMEOUT_S))",
       "    budgets = (RUN_TIMEOUT_S, RUN_STALL_TIMEOUT_S)",
       ["tests/test_run_config.py::test_a_hosts_profile_sets_its_runs_budgets_and_a_bad_one_is_refused_naming_it"],
       "a host's run_timeout / run_stall_timeout are ignored"),
    _m("fleet-fetch-twice-into-one-folder", "fleet", "ops_tasks/artifacts.py",
       "            return [run for run in runs if self.holders[run[\"run_id\"]][0] == pod]",
       "            return list(runs)",
       ["tests/test_fleet_tasks.py::test_one_run_id_fetched_from_two_pods_is_named_and_not_ok"],
       "a run id two pods hold is rsynced from both into one folder at once"),
    # -- the one fan-out (fleet.at_once, under fan_out and pod.up) and the layers
    _m("fleet-ctrl-c-starts-the-next-pod", "fleet", "ops_tasks/fleet.py",
       "        while not stop.is_set():\n            with lock:",
       "        while True:\n            with lock:",
       ["tests/test_fleet.py::test_ctrl_c_reaches_the_caller_at_once_starts_nothing_more_and_leaves_no_thread_to_wait_for"],
       "after Ctrl-C a fan-out goes on contacting (or renting) the pods not started yet"),
    _m("fleet-threads-outlive-ctrl-c", "fleet", "ops_tasks/fleet.py",
       "name=f\"{name}-{n}\", daemon=True)",
       "name=f\"{name}-{n}\", daemon=False)",
       ["tests/test_fleet.py::test_ctrl_c_reaches_the_caller_at_once_starts_nothing_more_and_leaves_no_thread_to_wait_for"],
       "after Ctrl-C the process waits for every call in flight (pod.up: each pod's wait on Lium)"),
    _m("layers-fleet-imports-an-operation", "layers", "ops_tasks/fleet.py",
       "from .targets import DryRunStop, target_for\n",
       "from .targets import DryRunStop, target_for\nfrom .operations import placement  # noqa: F401\n",
       ["tests/test_layers.py::test_no_module_of_ops_tasks_imports_a_layer_above_it"],
       "the low fan-out layer imports an operation (an import pointing up)"),
    # -- workloads: a conversion beside the loop, the run directory's flag, summary values as columns
    _m("sup-conversion-blocks-the-loop", "supervisor", RT + "converters.py",
       "        if code is None:\n            if time.monotonic() < self.deadline:",
       "        if code is None:\n            try:\n                code = self.proc.wait(max(0.0, self.deadline - "
       "time.monotonic()))\n            except subprocess.TimeoutExpired:\n                pass\n"
       "        if code is None:\n            if time.monotonic() < self.deadline:",
       ["tests/test_workloads.py::test_a_hung_converter_ends_at_its_deadline_as_bad_output_while_the_loop_goes_on"],
       "the supervisor waits on a summary_from conversion: other runs' timeouts wait with it"),
    _m("config-run-dir-flag-ignored", "config", "ops_tasks/operations/run_config.py",
       "    flag = run.get(\"run_dir_flag\", \"run_dir\")", "    flag = \"run_dir\"",
       ["tests/test_workloads.py::test_run_dir_flag_renames_or_drops_the_run_directory_argument"],
       "run_dir_flag is not applied: the seed's train.py never gets its out_dir="),
    _m("report-nested-summary-not-columns", "report", RT + "contract.py",
       "            if depth < 3:\n                _collect_leaves(",
       "            if False:\n                _collect_leaves(",
       ["tests/test_workloads.py::test_the_pod_and_the_report_take_the_same_summary_values_as_columns"],
       "nested summary values (last_eval.val) are not report columns"),
    # -- one contract, one runtime (issue 21): versions, the hand-over, the key table, shipping
    _m("contract-queued-where-old-supervisors-look", "contract", RT + "store.py",
       "QUEUE = \"pending\"", "QUEUE = \"queue\"",
       [T_UPGRADE + "test_an_older_supervisor_never_drops_a_gate_and_finishes_its_own_run_once"],
       "entries queued where an older supervisor claims them: a gate it does not know is dropped"),
    _m("contract-no-hand-over-asked", "contract", RT + "submit.py",
       "        behind = live is not None and live[\"contract\"] < need",
       "        behind = False",
       [T_UPGRADE + "test_an_older_supervisor_never_drops_a_gate_and_finishes_its_own_run_once"],
       "an older live supervisor is taken as able: no successor, the runs wait for ever"),
    _m("contract-legacy-taken-for-current", "contract", RT + "handover.py",
       "    return contract if isinstance(contract, int) and not isinstance(contract, bool) else LEGACY_CONTRACT",
       "    return contract if isinstance(contract, int) and not isinstance(contract, bool) else CONTRACT_VERSION",
       [T_UPGRADE + "test_an_older_supervisor_never_drops_a_gate_and_finishes_its_own_run_once"],
       "a supervisor that wrote no version is taken for one of this contract"),
    _m("contract-hand-over-ignored", "contract", RT + "supervisor.py",
       "            contract = handover_asked(self.store)",
       "            contract = None",
       [T_UPGRADE + "test_a_contract_2_supervisor_hands_its_queue_to_a_newer_one"],
       "a supervisor asked for its queue keeps claiming runs a newer one should run"),
    _m("contract-unknown-field-run-anyway", "contract", RT + "supervisor.py",
       "                    if problem:  # never run by rules it does not know",
       "                    if False:  # never run by rules it does not know",
       [T_UPGRADE + "test_an_entry_with_a_field_this_supervisor_does_not_know_fails_as_bad_input"],
       "an entry with a field the supervisor does not know runs, the field ignored"),
    _m("contract-request-version-unchecked", "contract", RT + "commands.py",
       "        if request.get(\"contract\") != CONTRACT_VERSION:",
       "        if False:",
       ["tests/test_contract.py::test_the_runtime_refuses_a_request_of_another_contract"],
       "a request of another contract is served by rules it was not written for"),
    _m("keys-pod-skips-value-checks", "contract", RT + "keys.py",
       "    for name in SENT_KEYS:\n        problem = value_problem(name, run.get(name))",
       "    for name in ():\n        problem = value_problem(name, run.get(name))",
       ["tests/test_contract.py::test_laptop_and_pod_refuse_the_same_bad_value_of_each_key"],
       "the pod takes any value of a run key a laptop sent"),
    _m("runtime-shipped-every-call", "contract", "ops_tasks/operations/runtime.py",
       "    send = not parse or project is None or runtime_id not in runtimes_held(project, identity)",
       "    send = True",
       ["tests/test_runtime_shipping.py"], "the runtime archive travels with every call"),
    _m("runtime-lost-not-sent-again", "contract", "ops_tasks/operations/runtime.py",
       "        if answer.get(\"need_runtime\") == runtime_id and not send:",
       "        if False:",
       ["tests/test_runtime_shipping.py"], "a pod that lost the runtime is never sent it again"),
    # -- a run that misbehaves (issue 22): judged, named, never wedging the queue
    _m("badrun-login-files-read", "supervisor", RT + "supervisor.py",
       "    for name in LOGIN_ONLY:\n        os.environ.pop(name, None)",
       "    for name in ():\n        os.environ.pop(name, None)",
       [T_BADRUN + "test_a_run_reads_no_login_files_even_when_the_supervisor_came_from_a_login"],
       "every run's bash sources the pod's ~/.bashrc (SSH_CLIENT kept from the login)"),
    _m("badrun-evidence-not-restored", "supervisor", RT + "supervisor.py",
       "            running.restored = restore_contract(running)",
       "            running.restored = []",
       [T_BADRUN + "test_a_run_that_cleans_its_folder_first_keeps_the_evidence",
        T_BADRUN + "test_a_run_that_deletes_its_own_directory_is_judged_and_the_next_one_runs"],
       "a run that cleans its folder loses stdout.log, command.sh, run_metadata.json and .ops/"),
    _m("badrun-daemon-outlives-its-run", "supervisor", RT + "supervisor.py",
       "        self.note_processes()\n", "",
       [T_BADRUN + "test_a_daemon_that_leaves_its_group_and_environment_stops_with_its_run"],
       "a setsid + env -i daemon keeps writing into its finished run"),
    _m("badrun-fifo-blocks", "supervisor", RT + "files.py",
       "    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, \"O_CLOEXEC\", 0))",
       "    fd = os.open(path, os.O_RDONLY | getattr(os, \"O_CLOEXEC\", 0))",
       [T_BADRUN + "test_a_summary_no_reader_can_take_is_judged_and_never_wedges_the_queue",
        T_BADRUN + "test_a_pod_turned_hostile_answers_every_read_at_once_and_leaves_nothing_blocked"],
       "a FIFO where a summary belongs blocks the supervisor, and every reader"),
    _m("badrun-huge-summary-read", "supervisor", RT + "files.py",
       "            if os.fstat(handle.fileno()).st_size > limit:\n                return default\n", "",
       [T_BADRUN + "test_a_summary_no_reader_can_take_is_judged_and_never_wedges_the_queue"],
       "a summary past the limit is read (64 MB of it) into the supervisor's memory"),
    _m("badrun-no-status-is-unknown", "supervisor", RT + "reading.py",
       "    if status is None and supervisor_alive and waiting is not None and run_id in waiting:",
       "    if False:",
       [T_BADRUN + "test_a_run_that_cleans_its_folder_first_keeps_the_evidence"],
       "a running run whose status.json it removed reads unknown: the wait ends before it"),
    _m("badrun-deep-json-traceback", "report", VALIDATE,
       "    except RecursionError:\n        return None, json_error(run_id, file, ValueError(\"nested deeper than a JSON parser takes\"))",
       "",
       [T_BADRUN + "test_the_laptop_reads_what_such_runs_leave_in_one_line_each"],
       "validate and report stop with a traceback on a summary nested 200,000 deep"),
    _m("secret-nested-in-a-flag", "masking", "ops_tasks/operations/run_config.py",
       "        secret = nested_secret(value, key) if key not in RESERVED or key == \"meta\" else None",
       "        secret = None",
       ["tests/test_contract.py::test_a_secret_inside_a_structured_flag_is_refused_before_it_reaches_argv"],
       "a secret inside a structured flag (model_args.api_key) reaches argv, command.sh and the manifest"),
    _m("fleet-placed-in-the-order-spelt", "fleet", "ops_tasks/operations/fleet_runs.py",
       "    answered = sorted((p for p in probed if p[\"pod\"] in has), key=lambda p: (order or {}).get(p[\"pod\"], p[\"pod\"]))",
       "    answered = [p for p in probed if p[\"pod\"] in has]",
       ["tests/test_fleet_tasks.py::test_two_checkouts_naming_one_fleet_in_either_order_run_each_run_once"],
       "two checkouts naming one fleet in another order queue every run on two pods"),
    _m("fleet-cancel-missing-elsewhere-fails", "fleet", "ops_tasks/runs.py",
       "    return _said_from_pod(cancel_runs(target, **selected, missing_ok=fleet_requested()))",
       "    return _said_from_pod(cancel_runs(target, **selected))",
       ["tests/test_fleet_tasks.py::test_runs_cancel_of_a_run_on_one_pod_of_a_fleet_is_ok_and_a_run_on_none_is_named"],
       "cancelling a run over a fleet fails because the other pods do not hold it"),
    _m("badrun-cancel-keeps-secrets", "masking", RT + "commands.py",
       "        for submission_id in ended:\n            store.forget_secrets_if_done(submission_id)",
       "        for submission_id in ():\n            store.forget_secrets_if_done(submission_id)",
       [T_BADRUN + "test_after_a_reboot_a_cancel_takes_the_secrets_off_the_pod"],
       "after a reboot and a cancel the secret env file stays on the pod"),
    _m("contract-starting-supervisor-taken-for-legacy", "contract", RT + "handover.py",
       "        info = {\"pid\": holder, **runtime_of(holder)}",
       "        info = {\"pid\": holder}",
       ["tests/test_contract.py::test_a_submission_racing_a_supervisors_start_sees_this_contract",
        "tests/test_faults_runs.py::test_racing_submissions_report_the_supervisor_truthfully"],
       "a submission racing a supervisor's start takes it for a release before contract 2 and hands its queue over"),
    # -- the supervisor (ops_tasks/runtime/): verdicts, limits, retries, killing
    _m("sup-nonzero-exit-with-ok-summary-succeeds", "supervisor", RT + "supervisor.py",
       "            self.finish(running, code)",
       "            summary = os.path.join(running.entry[\"run_dir\"], \"summary.json\")\n"
       "            self.finish(running, 0 if os.path.exists(summary) else code)",
       [T_VERDICTS], "a non-zero exit with an ok summary marked succeeded"),
    _m("sup-timeout-from-last-output", "supervisor", RT + "supervisor.py",
       "time.monotonic() - running.started_mono > entry[\"timeout\"]",
       "time.monotonic() - running.last_output_mono > entry[\"timeout\"]",
       [T_VERDICTS], "the wall-clock timeout measured from the last output"),
    _m("sup-retries-off-by-one", "supervisor", RT + "supervisor.py",
       "        if used >= retries or", "        if used > retries or",
       [T_VERDICTS], "a failed run with no retries runs twice"),
    _m("sup-group-kill-kills-the-leader-only", "supervisor", RT + "procs.py",
       "        os.killpg(pgid, sig)\n    except (ProcessLookupError, PermissionError):",
       "        os.kill(pgid, sig)\n    except (ProcessLookupError, PermissionError):",
       [T_LIMITS + "test_a_timeout_stops_a_child_that_dropped_the_runs_environment", T_GROUP_KILL],
       "a timeout, stall or a run's end signals the command's shell, not its process group"),
    _m("sup-ok-must-be-a-boolean", "supervisor", RT + "rundir.py",
       "    if \"ok\" in summary and not isinstance(summary[\"ok\"], bool):",
       "    if \"ok\" in summary and summary[\"ok\"] is None:",
       [T_VERDICTS], "ok: 0 / \"false\" / 1 taken as success"),
    _m("sup-stall-from-the-start", "supervisor", RT + "supervisor.py",
       "time.monotonic() - running.last_output_mono > entry[\"stall_timeout\"]",
       "time.monotonic() - running.started_mono > entry[\"stall_timeout\"]",
       [T_LIMITS + "test_a_run_that_keeps_printing_outlives_its_stall_timeout"],
       "a run that keeps printing is stalled once stall_timeout has passed since its start"),
    _m("sup-missing-summary-not-written", "supervisor", RT + "rundir.py",
       "    if os.path.exists(path):\n        return\n    write_json(path, {",
       "    if True:\n        return\n    write_json(path, {",
       ["tests/test_runs_units.py", T_OUTCOMES], "a run that wrote no summary.json is left without one"),
    _m("sup-oom-exit-137-not-classed", "supervisor", RT + "rundir.py",
       "    if exit_code == 137:\n        return \"oom\"",
       "    if exit_code == -137:\n        return \"oom\"",
       ["tests/test_runs_units.py"], "exit 137 (the OOM killer) is no longer classed oom"),
    # -- ids and paths on the laptop
    # The one run-id shape (runtime.contract): the laptop and the pod both lose it.
    _m("ids-run-id-with-a-slash", "ids", RT + "contract.py",
       "RUN_ID = re.compile(r\"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$\")",
       "RUN_ID = re.compile(r\"^[A-Za-z0-9./][A-Za-z0-9./_-]{0,127}$\")",
       ["tests/test_faults_runs.py::test_run_ids_with_a_slash_are_refused_on_the_laptop",
        "tests/test_faults_runs.py::test_the_pod_refuses_a_run_outside_its_outputs_root_whatever_the_laptop_sent",
        "tests/test_runs_units.py"],
       "run ids with '/' accepted (path traversal on the volume, a folder outside the laptop's)"),
    _m("ids-tar-dotdot-accepted", "ids", "ops_tasks/operations/artifacts.py",
       "    if path.is_absolute() or \"..\" in path.parts or not path.parts or path.parts[0] not in allowed_tops:",
       "    if path.is_absolute() or not path.parts or path.parts[0] not in allowed_tops:",
       ["tests/test_faults_data.py::test_the_tar_check_refuses_a_path_out_of_the_run",
        "tests/test_faults_data.py::test_without_pythons_tar_filter_the_projects_check_alone_holds"],
       "the project's own `..` check of a tar member dropped"),

    # -- report statistics
    _m("stat-sd-over-n", "report", STATS,
       "        return math.sqrt(self.m2 / (self.n - 1))",
       "        return math.sqrt(self.m2 / self.n)",
       ["tests/test_stats.py"], "the sample sd divides by n"),
    _m("stat-wilson-centre", "report", STATS,
       "    centre = (p + z * z / (2 * n)) / (1 + z * z / n)",
       "    centre = p",
       ["tests/test_stats.py"], "Wilson's interval centred on p"),
    _m("stat-wilson-without-its-correction", "report", STATS,
       "    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)",
       "    half = z * math.sqrt(p * (1 - p) / n) / (1 + z * z / n)",
       ["tests/test_stats.py"], "Wilson's half-width without its z^2/4n^2 term (a point at 0/n)"),
    _m("stat-t-degrees-of-freedom", "report", STATS,
       "    half = t_quantile((1 + level) / 2, acc.n - 1) * acc.sd * math.sqrt(1 + 1 / acc.n)",
       "    half = t_quantile((1 + level) / 2, acc.n) * acc.sd * math.sqrt(1 + 1 / acc.n)",
       ["tests/test_stats_multi.py", "tests/test_report.py::test_group_by_gives_mean_sd_and_n_over_runs"],
       "the over-runs interval with n degrees of freedom, not n - 1"),
    _m("stat-cluster-cr1", "report", STATS,
       "    se = math.sqrt(groups / (groups - 1) * squares) / count",
       "    se = math.sqrt(squares) / count",
       ["tests/test_stats.py"], "the clustered SE without its small-sample correction"),
    _m("stat-mcnemar-one-sided", "report", STATS,
       "    return min(1.0, 2 * tail / 2 ** n)",
       "    return min(1.0, tail / 2 ** n)",
       ["tests/test_stats.py"], "McNemar's p one-sided"),
    _m("stat-t-test-one-sided", "report", STATS,
       "    return min(1.0, 2.0 * t_cdf(-abs(mean / se), df))",
       "    return min(1.0, t_cdf(-abs(mean / se), df))",
       ["tests/test_stats.py"], "the paired t test's p one-sided"),
    _m("report-failed-runs-in-aggregates", "report", REPORT,
       "    rows = [r for r in every_row if r[\"ok\"] or include_failed]",
       "    rows = list(every_row)",
       ["tests/test_report.py::test_report_reads_the_supervisors_status_and_keeps_failed_runs_out_of_groups"],
       "a run that did not succeed enters the statistics"),
    _m("report-group-by-ignores-filter", "report", REPORT,
       "        groups = group_rows(rows, keys, measured, results, spool)",
       "        groups = group_rows([r for r in every_row if r['ok'] or include_failed], keys, measured, results, spool)",
       ["tests/test_report_filters.py"], "--group-by ignores --filter"),
    _m("report-paired-difference-reversed", "report", REPORT,
       "        diff.add(y - x)",
       "        diff.add(x - y)",
       ["tests/test_report.py::test_compare_gives_the_paired_difference_and_mcnemar"], "B - A reported as A - B"),

    _m("report-spool-wrong-run", "report", "ops_tasks/operations/examples.py",
       "        self.index[kind][run_id] = (os.path.basename(self._file.name), offset, len(data), count)",
       "        self.index[kind][run_id] = (os.path.basename(self._file.name), 0, len(data), count)",
       ["tests/test_report_html.py::test_the_examples_kept_while_reading_are_the_page_a_second_reading_gives"],
       "report.html shows another run's examples from the spool"),
    _m("report-lone-surrogate-kept", "report", VALIDATE,
       "    if b\"\\0\" not in raw and (b\"\\\\u\" not in raw and b\"\\xed\" not in raw or not _SURROGATE_ESCAPE.search(raw)):",
       "    if True:",
       ["tests/test_faults_data.py::test_text_no_utf8_can_hold_is_shown_by_validate_and_report_not_a_traceback"],
       "a lone surrogate from the pod stops the report with a traceback"),
    _m("report-results-extra-data-accepted", "report", VALIDATE,
       "        if end == len(text) or not text[end:].strip(JSON_BLANKS):",
       "        if True:",
       ["tests/test_validate.py::test_results_lines_are_read_as_json_loads_reads_each"],
       "a results line with more after its value is read as its value"),
    # issue 23: numbers that cannot mislead
    _m("report-compare-by-pools-mixes", "report", REPORT,
       "    keys = [k for k in dict.fromkeys([*STRATA, *strata]) if k != by]",
       "    keys = []",
       [T_FOOTING + "test_a_confounded_compare_by_pairs_within_models_and_names_what_it_left_out"],
       "--compare-by pools different mixes of models on each side (confounded)"),
    _m("report-strata-not-clustered", "report", REPORT,
       '    clustered = len(strata_order) > 1 or any(r.get("clusters") for side in sides for m in side.values() for r in m)',
       "    clustered = False",
       [T_FOOTING + "test_over_several_models_the_difference_is_clustered_by_example_as_statsmodels"],
       "one question answered by several models counted as independent pairs"),
    _m("report-cluster-field-ignored", "report", REPORT,
       '        if group is None or group == "":',
       "        if True:",
       ["tests/test_report_clusters.py"], "a results line's cluster is ignored: passages' questions as independent"),
    _m("report-unequal-examples-silent", "report", REPORT,
       "        if any(count != shared for count in counts):",
       "        if False:",
       [T_FOOTING + "test_a_model_that_skipped_its_hardest_questions_is_not_ranked_on_its_own_mean"],
       "models scored on different questions ranked silently"),
    _m("report-prediction-called-ci", "report", REPORT,
       "        low, high = stats.clip(*stats.prediction_interval(values), stats.metric_range(min(values), max(values), loss))",
       "        low, high = stats.clip(*acc.interval(stats.t975(acc.n - 1)), stats.metric_range(min(values), max(values), loss))",
       ["tests/test_report.py::test_group_by_gives_mean_sd_and_n_over_runs"],
       "the over-runs interval is the runs' mean's, not where one more run falls"),
    _m("report-missing-bounds-silent", "report", REPORT,
       "    bounds = missing_bounds(row, metric)\n    if bounds:",
       "    bounds = missing_bounds(row, metric)\n    if False:",
       [T_FOOTING + "test_missing_scores_bound_the_mean_when_they_could_move_it_beyond_its_interval"],
       "NaN rewards dropped with no bound on what they could change"),
    _m("report-power-z-for-mcnemar", "report", REPORT,
       "        comparison.update(_power(bounds, mean_a.mean, mean_b.mean, n=diff.n, discordant=(b_count + c_count) / diff.n))",
       "        pass  # the paired t's power (from the differences' sd) left standing",
       [T_FOOTING + "test_at_fifty_examples_the_mcnemar_mde_is_the_exact_tests_not_a_z_formulas"],
       "the MDE of a z test printed for McNemar's exact test (72% power, not 80%, at n = 50)"),
    _m("report-parts-overwrite", "report", "ops_tasks/operations/example_means.py",
       "                        sums[key] = (old_total + total, old_count + count)",
       "                        sums[key] = (total, count)",
       ["tests/test_report.py::test_runs_of_many_examples_pool_and_pair_as_runs_held_in_memory"],
       "a spilled run's rollouts of one example, far apart, not averaged"),
    _m("ranking-no-holm", "report", "ops_tasks/operations/ranking.py",
       "    for pair, value in zip(tested, stats.holm(pair[key] for pair in tested)):",
       "    for pair, value in zip(tested, (pair[key] for pair in tested)):",
       ["tests/test_ranking.py"], "several models compared without Holm's correction"),

    # -- validate (operations/validate.py) and the one verdict it asks (verdicts.py)
    _m("val-missing-files-ignored", "validate", VALIDATE,
       "        absent = [name for name in REQUIRED if not listing.is_file(name)]",
       "        absent = []",
       [T_VALIDATE + "test_missing_files_are_listed_per_run_and_exit_1"], "a run missing contract files passes"),
    _m("val-bad-results-line-ignored", "validate", VALIDATE,
       "            error = first_bad_line(os.path.join(path, RESULTS), run_id)",
       "            error = None",
       [T_VALIDATE + "test_results_jsonl_reports_the_first_bad_line"], "a results.jsonl that does not parse passes"),
    _m("val-empty-root-passes", "validate", VALIDATE,
       "    ok = bool(runs) and not missing and not invalid and not failed",
       "    ok = not missing and not invalid and not failed",
       [T_VALIDATE + "test_an_empty_root_is_not_a_pass"], "a root with no runs passes"),
    _m("val-failed-status-left-to-the-summary", "validate", VERDICTS,
       "    if kind == \"failed\":\n        klass = _word(status.get(\"failure_class\")) or state",
       "    if kind == \"no such class\":\n        klass = _word(status.get(\"failure_class\")) or state",
       [T_VALIDATE + "test_a_supervisor_status_of_timeout_is_failed_even_with_an_ok_summary"],
       "a timed-out run with an ok summary passes"),
    _m("val-truthy-ok", "validate", VERDICTS,
       "    if ok is True:\n        return SUCCEEDED",
       "    if ok:\n        return SUCCEEDED",
       [T_VALIDATE + "test_validate_takes_only_a_json_boolean_ok_as_success"], "ok: 1 or \"false\" passes"),
    _m("val-unfinished-run-passes", "validate", VERDICTS,
       "    if kind == \"active\":",
       "    if kind == \"no such class\":",
       [T_VALIDATE + "test_validate_fails_a_run_fetched_before_it_finished"], "a run fetched while running passes"),
    _m("val-reads-through-a-link-out", "validate", VALIDATE,
       "    if os.path.commonpath([real_dir, real]) != real_dir:",
       "    if False:",
       ["tests/test_faults_data.py::test_validate_and_report_never_read_through_a_link_out"],
       "validate and report read a laptop file through a link in a fetched run"),

    # -- the renderer: values reach shell only quoted
    _m("render-scalar-unquoted", "renderer", "ops_tasks/scripts.py",
       "    return shlex.quote(str(value))",
       "    return str(value)",
       ["tests/test_units.py"], "a script input assigned unquoted"),
    _m("render-list-unquoted", "renderer", "ops_tasks/scripts.py",
       "        return \"(\" + \" \".join(shell_value(item) for item in value) + \")\"",
       "        return \"(\" + \" \".join(str(item) for item in value) + \")\"",
       ["tests/test_units.py"], "an array input's items unquoted"),
    _m("render-placeholder-unquoted", "renderer", "ops_tasks/operations/run_config.py",
       "        return shlex.quote(rendered) if quote else rendered",
       "        return rendered",
       ["tests/test_run_config.py"], "a {placeholder} in a command string unquoted"),
    _m("render-entrypoint-flag-names", "renderer", "ops_tasks/operations/run_config.py",
       "    name = \"--\" + key.replace(\"_\", \"-\") if flag_style == \"--key value\" else key",
       "    name = \"--\" + key if flag_style == \"--key value\" else key",
       ["tests/test_run_config.py"], "entrypoint flags keep their underscores"),
    _m("render-last-line-of-output", "renderer", "ops_tasks/scripts.py",
       "            document = json.loads(lines[-1])",
       "            document = json.loads(lines[0])",
       ["tests/test_noisy_shell.py"], "a shell banner above the result read as the result"),

    # -- secret masking
    _m("mask-emit-unredacted", "masking", "ops_tasks/output.py",
       "    _write(inert(redact(text, _secrets())), stream)",
       "    _write(inert(text), stream)",
       ["tests/test_redaction.py"], "printed output no longer redacted"),
    _m("mask-project-env-forgotten", "masking", "ops_tasks/output.py",
       "        found = secret_values(os.environ, project_env())",
       "        found = secret_values(os.environ)",
       [T_REDACTION + "test_a_runs_output_is_masked_in_every_task_that_prints_it"],
       "secrets of the OPS_PROJECT_ENV file printed"),
    _m("mask-flag-secrets-forgotten", "masking", "ops_tasks/output.py",
       "    context.secrets = context.secrets + tuple(values)",
       "    context.secrets = context.secrets",
       [T_REDACTION + "test_a_servers_log_tail_is_masked_with_the_flag_secret"], "vllm.start --env secrets printed"),
    _m("mask-pass-names", "masking", RT + "contract.py",
       "SECRET_PARTS = re.compile(r\"KEY|TOKEN|SECRET|PASSWORD|PASS|CREDENTIAL\", re.IGNORECASE)",
       "SECRET_PARTS = re.compile(r\"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL\")",
       ["tests/test_units.py", "tests/test_runs_units.py", "tests/test_redaction.py"],
       "DB_PASS and lower-case names no longer secret"),
    _m("mask-shorter-secret-first", "masking", "ops_tasks/output.py",
       "        context.masked = sorted(set(found) | extra, key=len, reverse=True)",
       "        context.masked = sorted(set(found) | extra, key=len)",
       [T_REDACTION + "test_a_secret_that_holds_another_is_masked_whole"],
       "a secret that starts a longer one masked first: the longer one's rest is printed"),
    _m("mask-run-config-env-shown", "masking", "ops_tasks/operations/run_config.py",
       "    return {name: MASK if is_secret_name(name) else value for name, value in env.items()}",
       "    return dict(env)",
       ["tests/test_run_config.py"], "a run config's secret env in the manifest"),
    _m("mask-command-sh-secret", "masking", RT + "rundir.py",
       "        value = MASK if is_secret(name) else env[name]",
       "        value = env[name]",
       ["tests/test_runs.py::test_a_secret_reaches_the_run_but_no_file_listing_output_or_tmux"],
       "command.sh carries a secret's value"),

    # -- targets
    _m("target-dry-run-connects", "targets", "ops_tasks/targets.py",
       "    if dry_run:\n        return DryRunTarget(profile, invoke_config)",
       "    if dry_run and profile.is_local:\n        return DryRunTarget(profile, invoke_config)",
       ["tests/test_runs.py::test_dry_run_prints_the_manifest_and_contacts_nothing"], "--dry-run contacts the host"),
    _m("target-no-pool", "targets", "ops_tasks/targets.py",
       "    if profile not in _POOL:\n        _POOL[profile] = SshTarget(profile, invoke_config)",
       "    if True:\n        _POOL[profile] = SshTarget(profile, invoke_config)",
       ["tests/test_pod_status.py::test_chained_tasks_share_one_connection"],
       "chained tasks open one connection each"),
    _m("target-known-keys-not-given", "targets", "ops_tasks/targets.py",
       "                    given.add(settings.name, entry.key.get_name(), entry.key)",
       "                    pass",
       ["tests/test_connect.py::test_a_changed_host_key_is_refused_with_how_to_forget_it"],
       "a changed host key accepted (known_hosts never handed to paramiko)"),
    _m("target-strict-accepts-unknown", "targets", "ops_tasks/targets.py",
       "        if self.settings.mode == \"yes\":\n            raise UnknownHostKey(hostname)",
       "        if self.settings.mode == \"yes\":\n            return",
       [T_HOST_KEYS + "test_strict_host_key_checking_refuses_an_unknown_host_and_remembers_nothing"],
       "StrictHostKeyChecking yes accepts an unknown host"),
    _m("target-revoked-accepted", "targets", "ops_tasks/targets.py",
       "        if revoked is not None:\n            raise RevokedHostKey(revoked)",
       "        if False:\n            raise RevokedHostKey(revoked)",
       ["tests/test_host_keys.py"], "a @revoked host key accepted"),
    _m("target-tofu-not-saved", "targets", "ops_tasks/targets.py",
       "                handle.write(f\"{hostname} {key.get_name()} {key.get_base64()}\\n\")",
       "                pass",
       ["tests/test_connect.py::test_first_contact_saves_the_host_key_and_later_ones_check_it"],
       "a key trusted on first use is not remembered"),
    # -- campaigns on a bad day (issue 22): every run once in the report, whatever breaks
    _m("campaign-ids-stamped-again", "campaign", "ops_tasks/operations/campaign.py",
       "        submissions = {t.profile.name: state.env.submission(t.profile, now=ids_at) for t in targets}",
       "        submissions = {t.profile.name: state.env.submission(t.profile) for t in targets}",
       ["tests/test_campaign_bad_day.py::test_generated_run_ids_are_fixed_once_so_a_campaign_killed_mid_submit_runs_each_run_once"],
       "generated run ids stamped anew on a rerun: a campaign killed mid-submit queues every run twice"),
    _m("campaign-no-resume", "campaign", "ops_tasks/operations/campaign.py",
       "                              resume=True, keep_alone=True, only_there=only_there)",
       "                              resume=False, keep_alone=True, only_there=only_there)",
       ["tests/test_campaign_bad_day.py::test_a_pod_rebooted_mid_wait_has_its_lost_runs_resumed_by_the_campaign_itself"],
       "a rebooted pod's lost runs never taken up: the campaign stops, and so does every rerun"),
    _m("runtime-resume-keeps-claimed-entry", "campaign", RT + "commands.py",
       "                if left[\"run_id\"] == run_id:\n                    remove_quietly(left[\"_file\"])",
       "                if left[\"run_id\"] == run_id:\n                    pass",
       ["tests/test_campaign_bad_day.py::test_a_run_claimed_but_not_started_when_its_pod_rebooted_is_resumed_once"],
       "a run claimed but not started when its pod rebooted keeps its queue entry: resumed, it runs twice"),
    _m("campaign-lost-at-first-silence", "campaign", "ops_tasks/operations/campaign.py",
       "        steering = FleetSteer(targets, state.manifest(), state.env.project_dir, lost_after_s=spec.ready_timeout_s,",
       "        steering = FleetSteer(targets, state.manifest(), state.env.project_dir, lost_after_s=0.0,",
       ["tests/test_campaign_bad_day.py::test_an_unattended_campaign_rides_out_a_lost_link_and_stops_saying_so_past_its_deadline"],
       "an unattended campaign gives up on a pod at its first lost connection"),
    _m("campaign-lone-pod-marked-lost", "campaign", "ops_tasks/operations/campaign.py",
       "                              resume=True, keep_alone=True, only_there=only_there)",
       "                              resume=True, keep_alone=False, only_there=only_there)",
       ["tests/test_campaign_bad_day.py::test_an_unattended_campaign_rides_out_a_lost_link_and_stops_saying_so_past_its_deadline"],
       "a lone pod silent past --ready-timeout marked lost for good: a rerun, once it answers, waits for nothing"),
    _m("campaign-lost-pod-kept-for-ever", "campaign", "ops_tasks/operations/fleet_runs.py",
       "            if self.keep_alone and not [h for h in self._live_pods() if h != hid]:",
       "            if self.keep_alone:",
       ["tests/test_campaign_bad_day.py::test_a_two_pod_campaign_that_loses_a_pod_for_good_places_its_runs_on_the_other"],
       "a campaign over two pods never places a lost pod's runs on the other"),
    _m("campaign-ended-runs-lost-with-pod", "campaign", "ops_tasks/operations/campaign.py",
       "                              resume=True, keep_alone=True, only_there=only_there)",
       "                              resume=True, keep_alone=True, only_there=None)",
       ["tests/test_campaign_bad_day.py::test_a_two_pod_campaign_that_loses_a_pod_for_good_places_its_runs_on_the_other"],
       "a run that ended on a pod lost before its fetch is never run again: missing from the report for good"),
    _m("campaign-twice-at-once", "campaign", "ops_tasks/operations/campaign.py",
       "            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
       "            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)",
       ["tests/test_campaign_bad_day.py::test_the_same_campaign_started_twice_from_one_checkout_refuses_the_second_naming_the_first"],
       "the same campaign started twice from one checkout runs twice at once"),
    _m("campaign-held-runs-not-adopted", "campaign", "ops_tasks/operations/campaign.py",
       "    if not unplaced:\n        return []",
       "    if True:\n        return []",
       ["tests/test_campaign_bad_day.py::test_one_campaign_from_two_checkouts_at_once_runs_each_run_once_and_both_report_every_run"],
       "runs another checkout's campaign queued are not taken up: 'wait ok: no runs', validate fails for ever"),
    _m("campaign-retry-not-asked", "campaign", "ops_tasks/operations/campaign.py",
       "        return submit_runs(target, replace(submission, runs=share), submission_id=submission_id, retry_failed=True)",
       "        return submit_runs(target, replace(submission, runs=share), submission_id=submission_id)",
       ["tests/test_campaign_bad_day.py::test_a_campaign_whose_run_failed_runs_it_again_with_retry_failed_and_goes_on"],
       "--retry-failed sends the failed runs without asking the pod to run them again: refused, nothing runs"),
    # -- promises the hidden set found untested
    _m("promise-html-table-cells-unescaped", "report", "ops_tasks/operations/report_html.py",
       "    body = \"\".join(\"<tr>\" + \"\".join(f\"<td>{_e(cell(r.get(c)))}</td>\" for cell, c in zip(cells, columns))",
       "    body = \"\".join(\"<tr>\" + \"\".join(f\"<td>{cell(r.get(c))}</td>\" for cell, c in zip(cells, columns))",
       ["tests/test_promises_units.py::test_report_html_shows_a_pods_strings_in_every_table_as_text_never_as_html"],
       "report.html's table cells written unescaped: a model name from the pod is HTML"),
    _m("promise-gpu-held-memory-free-for-placement", "fleet", "ops_tasks/operations/fleet_runs.py",
       "    if probed[\"gpus\"]:\n        left = min(left, sum(gpu_is_free(g) for g in probed[\"gpus\"]))\n",
       "",
       ["tests/test_promises_units.py::test_a_gpu_whose_memory_is_in_use_is_not_free_for_a_fleets_placement"],
       "a fleet places runs on GPUs whose memory another process holds (only our own runs counted)"),
    _m("promise-gpu-any-memory-is-free", "fleet", "ops_tasks/fleet.py",
       "    return used <= FREE_GPU_MEMORY_FRACTION * total",
       "    return used <= total",
       ["tests/test_promises_units.py::test_a_gpu_whose_memory_is_in_use_is_not_free_for_a_fleets_placement", "tests/test_fleet.py::test_totals_count_pods_up_gpus_free_and_runs_by_state"],
       "a GPU with busy memory counted free (probe, placement and the fleet's totals)"),
    _m("promise-paired-t-with-unpaired-se", "report", "ops_tasks/operations/report.py",
       "\"paired t\", stats.t_test_p(diff.mean, diff.se, diff.n - 1)",
       "\"paired t\", stats.t_test_p(diff.mean, math.sqrt(mean_a.se ** 2 + mean_b.se ** 2), diff.n - 1)",
       ["tests/test_promises_units.py::test_compare_of_scores_not_0_1_is_the_paired_t_test_on_the_differences"],
       "report --compare's paired t test computed with the two samples' unpaired standard error"),
    _m("promise-token-key-case-sensitive", "masking", "ops_tasks/secrets.py",
       "    words = name.lower().split(\"_\")",
       "    words = name.split(\"_\")",
       ["tests/test_promises_units.py::test_a_token_named_run_key_is_refused_as_a_secret_and_pointed_at_env"],
       "a run key GITHUB_TOKEN (upper case) is not a secret: it reaches argv"),
    _m("promise-token-key-not-a-secret-word", "masking", "ops_tasks/secrets.py",
       "_SECRET_WORDS = frozenset({\"key\", \"apikey\", \"token\", \"secret\", \"password\", \"passwd\", \"pass\", \"credential\",\n                           \"credentials\"})\n_SECRET_ENDINGS = (\"apikey\", \"token\", \"secret\", \"password\", \"passwd\")",
       "_SECRET_WORDS = frozenset({\"key\", \"apikey\", \"secret\", \"password\", \"passwd\", \"pass\", \"credential\",\n                           \"credentials\"})\n_SECRET_ENDINGS = (\"apikey\", \"secret\", \"password\", \"passwd\")",
       ["tests/test_promises_units.py::test_a_token_named_run_key_is_refused_as_a_secret_and_pointed_at_env"],
       "TOKEN dropped from the secret words: github_token reaches argv (hf_token only by its full name)"),
    _m("promise-cpu-run-on-gpu-pod-free", "costs", "ops_tasks/operations/costs.py",
       "        return min(gpus, pod_gpus) / pod_gpus if gpus else None",
       "        return min(gpus or 0, pod_gpus) / pod_gpus",
       ["tests/test_promises_units.py::test_a_cpu_run_on_a_gpu_pod_is_never_priced_at_zero"],
       "a CPU run (gpus: 0) on a GPU pod costs $0"),
    _m("promise-fetch-without-safe-links", "fetch", "ops_tasks/operations/artifacts.py",
       "\"--no-specials\", \"--safe-links\", \"--delete\"",
       "\"--no-specials\", \"--delete\"",
       ["tests/test_promises_pods.py::test_a_link_out_a_device_or_a_fifo_never_lands_on_the_laptop_even_when_the_fetch_fails"],
       "fetch without --safe-links: a link out of a run directory lands on the laptop (swept only when rsync ends well)"),
    _m("promise-fetch-copies-unsafe-links", "fetch", "ops_tasks/operations/artifacts.py",
       "\"--no-specials\", \"--safe-links\", \"--delete\"",
       "\"--no-specials\", \"--copy-unsafe-links\", \"--delete\"",
       ["tests/test_faults_data.py::test_a_hostile_run_directory_lands_safely_on_both_planes", "tests/test_promises_pods.py::test_a_link_out_a_device_or_a_fifo_never_lands_on_the_laptop_even_when_the_fetch_fails"],
       "fetch follows a link out of a run directory and copies what it points at"),
    _m("promise-fetch-takes-devices-and-specials", "fetch", "ops_tasks/operations/artifacts.py",
       "\"rsync\", \"-a\", \"--no-devices\", \"--no-specials\", \"--safe-links\"",
       "\"rsync\", \"-a\", \"--safe-links\"",
       ["tests/test_promises_pods.py::test_a_link_out_a_device_or_a_fifo_never_lands_on_the_laptop_even_when_the_fetch_fails"],
       "fetch without --no-devices --no-specials: the pod's device nodes and FIFOs are made on the laptop"),
    _m("promise-fetch-exit-23-taken-whole", "fetch", "ops_tasks/operations/artifacts.py",
       "elif proc.returncode == 23 and absent and not other_errors:",
       "elif proc.returncode == 23:",
       ["tests/test_promises_pods.py::test_a_fetch_rsync_could_not_finish_is_not_recorded_as_fetched_so_the_pod_is_kept"],
       "rsync's exit 23 (some files not transferred) recorded as a whole fetch: pod.down would release the pod"),
    _m("promise-fetch-exit-23-a-warning", "fetch", "ops_tasks/operations/artifacts.py",
       "    if proc.returncode == 24:",
       "    if proc.returncode in (23, 24):",
       ["tests/test_promises_pods.py::test_a_fetch_rsync_could_not_finish_is_not_recorded_as_fetched_so_the_pod_is_kept"],
       "rsync's exit 23 taken like 24 (files vanished): a warning, and the run recorded fetched"),
    _m("promise-cancel-retried", "supervisor", "ops_tasks/runtime/contract.py",
       "RETRYABLE = tuple(s for s in COUNTS_AS_FAILURE if s != \"lost\")",
       "RETRYABLE = tuple(s for s in FAILED if s != \"lost\")",
       ["tests/test_promises_pods.py::test_a_cancelled_run_is_never_retried_whatever_its_retries"],
       "a cancelled run with retries is queued again"),
    _m("promise-cancel-retried-any-end", "supervisor", "ops_tasks/runtime/supervisor.py",
       "retried = state in RETRYABLE and self.retry(entry, klass, status)",
       "retried = state != \"succeeded\" and self.retry(entry, klass, status)",
       ["tests/test_promises_pods.py::test_a_cancelled_run_is_never_retried_whatever_its_retries"],
       "every run that did not succeed (a cancelled one too) is retried"),
    _m("promise-retry-on-ignored", "supervisor", "ops_tasks/runtime/supervisor.py",
       "        if used >= retries or (retry_on is not None and klass not in retry_on):",
       "        if used >= retries:",
       ["tests/test_promises_pods.py::test_retry_on_limits_retries_to_the_classes_it_names"],
       "retry_on ignored: every failure retried"),
    _m("promise-pin-not-checked-at-start", "supervisor", "ops_tasks/runtime/supervisor.py",
       "        moved = pin_problem(entry.get(\"expect_commit\")",
       "        moved = None and pin_problem(entry.get(\"expect_commit\")",
       ["tests/test_promises_pods.py::test_the_commit_pin_is_checked_again_when_a_queued_run_starts"],
       "the commit pin is checked at submit only: a run queued before the repo moved runs on another commit"),
    _m("promise-campaign-release-before-validate", "campaign", "ops_tasks/operations/campaign.py",
       "unmet = [phase for phase in (\"fetch\", \"validate\", \"report\") if state.outcome(phase) != \"ok\"]",
       "unmet = [phase for phase in (\"fetch\", \"report\") if state.outcome(phase) != \"ok\"]",
       ["tests/test_promises_pods.py::test_a_campaign_whose_validate_failed_keeps_its_rented_pod"],
       "a campaign releases its pods though validate did not pass"),
    _m("promise-campaign-release-on-not-ok", "campaign", "ops_tasks/operations/campaign.py",
       "unmet = [phase for phase in (\"fetch\", \"validate\", \"report\") if state.outcome(phase) != \"ok\"]",
       "unmet = [phase for phase in (\"fetch\", \"validate\", \"report\") if state.outcome(phase) == \"failed\"]",
       ["tests/test_promises_pods.py::test_a_campaign_whose_validate_failed_keeps_its_rented_pod"],
       "a campaign takes validate's not_ok (a failed run) as passed and releases its pods"),
    _m("promise-fleet-move-without-withdraw", "fleet", "ops_tasks/operations/fleet_runs.py",
       "\"withdrawn\": withdraw_runs(\n",
       "\"withdrawn\": by_source[by_name[t.profile.name]] or withdraw_runs(\n",
       ["tests/test_promises_pods.py::test_a_queued_run_moved_to_an_idle_pod_runs_once_and_leaves_the_first_pods_queue"],
       "a move recorded and queued on the idle pod without the withdraw: the run is queued on two pods"),
    # -- hostile strings (issue 22): a pod's strings never reach what people read raw
    _m("hostile-text-output-raw", "hostile", "ops_tasks/output.py",
       "    _write(inert(redact(text, _secrets())), stream)",
       "    _write(redact(text, _secrets()), stream)",
       ["tests/test_hostile_strings.py::test_report_and_validate_print_no_terminal_control",
        "tests/test_hostile_strings.py::test_runs_status_list_and_logs_print_what_a_run_wrote_inert"],
       "terminal escapes from a pod (OSC 52, CSI 2J, C1) reach the terminal through a task's text output"),
    _m("hostile-markdown-raw-html", "hostile", "ops_tasks/tables.py",
       "    text = _BACKSLASHED.sub(r\"\\\\\\g<0>\", text).replace(\"<\", \"&lt;\")",
       "    text = _BACKSLASHED.sub(r\"\\\\\\g<0>\", text)",
       ["tests/test_hostile_strings.py::test_markdown_writer_escapes_what_would_act",
        "tests/test_hostile_strings.py::test_report_md_keeps_every_value_in_its_cell_as_inert_text"],
       "a model id's raw HTML (<img>, <script>, an autolink) is HTML in report.md"),
    _m("hostile-csv-formula-kept", "hostile", "ops_tasks/operations/report.py",
       "    if _FORMULA_LED.match(text) and not _PLAIN_NUMBER.fullmatch(text):",
       "    if False:",
       ["tests/test_hostile_strings.py::test_csv_writer_neutralises_each_led_cell",
        "tests/test_hostile_strings.py::test_report_csv_neutralises_formula_cells"],
       "report --format csv writes a pod's =HYPERLINK(...) as a formula a spreadsheet runs"),
    # -- fetch on a bad day (issue 22): what the laptop holds stays, a fetch ends by its deadlines
    _m("fetch-another-hosts-copy-replaced", "fetch", ARTIFACTS_OP,
       "    return {\"copy\": current} if going or _holds_files(local) else None",
       "    return None",
       [T_FETCH_BAD + "test_a_run_fetched_from_another_pod_is_refused_naming_both_and_the_ways_to_keep_both",
        T_FETCH_BAD + "test_every_caller_of_the_fetch_operation_keeps_the_first_pods_copy"],
       "a run fetched from a second pod replaces (rsync --delete) the copy the first pod sent"),
    _m("fetch-claim-not-kept", "fetch", "ops_tasks/records.py",
       "        if refuse(current):\n            return False, current",
       "        if False:\n            return False, current",
       [T_FETCH_BAD + "test_a_fleets_fetch_of_every_run_keeps_one_pods_copy_of_a_run_id_both_hold"],
       "two pods of a fleet fetched with --all write one run id's folder at once (a mix of both)"),
    _m("fetch-users-file-replaced", "fetch", ARTIFACTS_OP,
       "    if local.exists() and not local.is_dir():\n        return {\"user\":",
       "    if False:\n        return {\"user\":",
       [T_FETCH_BAD + "test_a_file_or_link_of_the_users_named_like_a_run_is_never_replaced_nor_followed"],
       "a file of the user's named like a run is replaced by the fetched folder"),
    _m("fetch-users-link-replaced", "fetch", ARTIFACTS_OP,
       "    if local.is_symlink():\n        return {\"user\":",
       "    if False:\n        return {\"user\":",
       [T_FETCH_BAD + "test_a_file_or_link_of_the_users_named_like_a_run_is_never_replaced_nor_followed"],
       "a link of the user's named like a run is removed (or written through) by the fetch"),
    _m("fetch-rsync-outlives-its-fetch", "fetch", ARTIFACTS_OP,
       "        pass\n    rsync.terminate()\n",
       "        pass\n    return\n",
       [T_FETCH_BAD + "test_a_killed_fetch_stops_its_rsync_and_the_next_fetch_leaves_nothing_of_it"],
       "a killed fetch's rsync goes on writing into the run folder (a rerun races it)"),
    _m("fetch-stale-partials-kept", "fetch", ARTIFACTS_OP,
       "            elif entry.name == PARTIAL_DIR and entry.is_dir(follow_symlinks=False):",
       "            elif False:",
       [T_FETCH_BAD + "test_a_killed_fetch_stops_its_rsync_and_the_next_fetch_leaves_nothing_of_it"],
       "a partial folder an interrupted fetch left stays in the run folder after a fetch that ended"),
    _m("fetch-killed-leftovers-kept", "fetch", ARTIFACTS_OP,
       "            if match is None or _alive(int(match.group(1) or match.group(2))):",
       "            if True:",
       [T_FETCH_BAD + "test_a_killed_fetch_stops_its_rsync_and_the_next_fetch_leaves_nothing_of_it"],
       "the rsync log a SIGKILLed fetch left beside the run folders stays for good"),
    _m("fetch-rsync-start-not-awaited", "fetch", ARTIFACTS_OP,
       "        start_s = getattr(target, \"bulk_start_s\", None)",
       "        start_s = None",
       [T_FETCH_BAD + "test_a_login_that_hangs_only_for_rsyncs_session_ends_the_fetch_naming_the_pod"],
       "a login that hangs only for rsync's session hangs the fetch for good"),
    _m("fetch-silent-link-never-noticed", "fetch", "ops_tasks/targets.py",
       "\"-o\", f\"ServerAliveInterval={self.answer_s}\",",
       "\"-o\", \"ServerAliveInterval=0\",",
       [T_FETCH_BAD + "test_a_link_that_goes_silent_mid_fetch_ends_it_in_bounded_time_and_a_rerun_resumes"],
       "a link that goes silent mid-fetch (no RST) hangs it until TCP gives up (hours)"),
    # pod.sync --workdir (issue 24): what is sent, what is removed, and the record the pin reads.
    _m("workdir-sends-ignored-files", "workdir", "ops_tasks/operations/workdir.py",
       "\"--others\", \"--exclude-standard\",\n                             git_dir",
       "\"--others\",\n                             git_dir",
       ["tests/test_pod_sync_workdir.py::test_what_is_sent_is_what_git_shows_links_as_links_and_no_git_folder"],
       "the sync sends what .gitignore ignores (a .venv, logs, data)"),
    _m("workdir-laptop-owner-kept", "workdir", "ops_tasks/operations/workdir.py",
       "\"rsync\", \"-a\", \"--no-owner\", \"--no-group\", ",
       "\"rsync\", \"-a\", ",
       ["tests/test_pod_sync_workdir.py::test_what_is_sent_is_what_git_shows_links_as_links_and_no_git_folder"],
       "files on the pod owned by the laptop's uid, a user the pod does not have"),
    _m("workdir-quick-check-to-the-second", "workdir", "ops_tasks/operations/workdir.py",
       "\"--no-specials\", \"--modify-window=-1\",",
       "\"--no-specials\",",
       ["tests/test_pod_sync_workdir.py::test_a_second_sync_sends_the_change_and_removes_what_left_the_checkout_only"],
       "an edit of the same size within the second of the last sync is not sent, and recorded as sent"),
    _m("workdir-nothing-left-removed", "workdir", "ops_tasks/runtime/workdir.py",
       "remove_left(repo, sorted(set(earlier) - set(sent)), sent)",
       "remove_left(repo, [], sent)",
       ["tests/test_pod_sync_workdir.py::test_a_second_sync_sends_the_change_and_removes_what_left_the_checkout_only"],
       "a file deleted from the checkout stays on the pod, and a run still imports it"),
    _m("workdir-removal-through-links", "workdir", "ops_tasks/runtime/workdir.py",
       "flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, \"O_NOFOLLOW\", 0)",
       "flags = os.O_RDONLY | os.O_DIRECTORY",
       ["tests/test_pod_sync_workdir.py::test_nothing_outside_the_repo_is_written_or_removed_through_a_link_on_the_pod"],
       "removing what left the checkout follows a link on the pod and deletes a file outside the repo"),
    _m("workdir-home-through-link", "workdir", "remote_scripts/pod_workdir_receive.sh",
       "\"/:the root of the file system\" \"$HOME:the home folder\" ",
       "\"/:the root of the file system\" ",
       ["tests/test_pod_sync_workdir.py::test_a_repo_that_is_the_pods_home_through_a_link_is_refused_there_and_nothing_is_written"],
       "a repo that is the pod's home through a link is synced into (the checkout over ~/.bashrc, ~/.ssh)"),
    _m("workdir-pin-any-commit", "workdir", RT + "gates.py",
       "    if not at.startswith(commit):\n        return (\"the pod's repo %s holds",
       "    if False:\n        return (\"the pod's repo %s holds",
       ["tests/test_pod_sync_workdir.py::test_runs_record_the_sync_they_ran_and_the_pin_takes_the_laptops_head_with_its_change"],
       "a run pinned to the laptop's HEAD runs a workdir sync of another commit"),
    _m("workdir-changed-since-ignored", "workdir", RT + "workdir.py",
       "    changed = changed_files(folder, record[\"files\"])",
       "    changed = []",
       ["tests/test_pod_sync_workdir.py::test_runs_record_the_sync_they_ran_and_the_pin_takes_the_laptops_head_with_its_change"],
       "a synced file edited on the pod afterwards runs under the sync's commit and hash"),
    _m("workdir-hash-without-content", "workdir", "ops_tasks/operations/workdir.py",
       "+ (b\"\" if gone else _content_digest(path / name)))",
       "+ b\"\")",
       ["tests/test_pod_sync_workdir.py::test_the_change_hash_follows_the_content_of_what_differs_from_head"],
       "two different uncommitted edits of one file get one hash: runs cannot tell which code they ran"),
]


# ---------------------------------------------------------------- running them


class WorkingTree:
    """The checkout's files as they are now: tracked, and untracked but not ignored."""

    def __init__(self):
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=CHECKOUT, capture_output=True, check=True).stdout
        self.files = sorted({name for name in listed.decode().split("\0") if name})

    def read(self, name: str) -> str:
        return (CHECKOUT / name).read_text()

    def exists(self, name: str) -> bool:
        return (CHECKOUT / name).is_file()

    def copy_to(self, destination: Path) -> None:
        for name in self.files:
            source = CHECKOUT / name
            if not source.is_file():  # deleted in the working tree, not yet in the index
                continue
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


class LastCommit:
    """The checkout's files as HEAD has them."""

    def read(self, name: str) -> str:
        return subprocess.run(["git", "show", f"HEAD:{name}"], cwd=CHECKOUT, capture_output=True, text=True,
                              check=True).stdout

    def exists(self, name: str) -> bool:
        return subprocess.run(["git", "cat-file", "-e", f"HEAD:{name}"], cwd=CHECKOUT,
                              capture_output=True).returncode == 0

    def copy_to(self, destination: Path) -> None:
        destination.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=CHECKOUT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)


def check_snippets(mutations: list, source) -> list:
    """One line per mutation whose original snippet is not exactly once in its file."""
    problems = []
    for mutation in mutations:
        if not source.exists(mutation.file):
            problems.append(f"{mutation.id}: {mutation.file} does not exist")
            continue
        count = source.read(mutation.file).count(mutation.original)
        if count != 1:
            problems.append(f"{mutation.id}: the original snippet occurs {count} times in {mutation.file} "
                            f"(it must occur once): {mutation.original[:70]!r}")
        if mutation.original == mutation.mutated:
            problems.append(f"{mutation.id}: the mutated snippet is the original")
    return problems


def apply(mutation: Mutation, tree: Path) -> None:
    path = tree / mutation.file
    text = path.read_text()
    if text.count(mutation.original) != 1:  # the snapshot was checked; this guards the runner itself
        raise SystemExit(f"{mutation.id}: the original snippet is not once in the copy of {mutation.file}")
    path.write_text(text.replace(mutation.original, mutation.mutated, 1))


def run_tests(tree: Path, tests, *, stop_at_first: bool = True) -> tuple:
    """(outcome, seconds, tail of output): outcome is the pytest exit code, or 'timeout'."""
    basetemp = tree.parent / "t"
    shutil.rmtree(basetemp, ignore_errors=True)
    argv = [str(VENV_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(basetemp),
            *(["-x"] if stop_at_first else []), *tests]
    env = dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("CI", None)  # a skip here is not a catch, nor a failure of the mutation
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=MUTATION_TIMEOUT_S)
        outcome = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the tests' pods and their children
        output, _ = proc.communicate()
        outcome = "timeout"
    return outcome, time.monotonic() - started, output.strip().splitlines()[-12:]


class Snapshot:
    """A copy of the source taken once, so that every mutation (and the baseline) runs on the same
    code while others go on editing the checkout."""

    def __init__(self, source, path: Path):
        self.path = path
        source.copy_to(path)

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    def copy_to(self, destination: Path) -> None:
        shutil.copytree(self.path, destination, symlinks=True)


def fresh_tree(workdir: Path, source, name: str) -> Path:
    tree = workdir / name / "src"
    shutil.rmtree(tree.parent, ignore_errors=True)
    source.copy_to(tree)
    return tree


def verdict(outcome) -> str:
    if outcome == "timeout":
        return "caught (timeout)"
    if outcome == 1:
        return "caught"
    if outcome == 0:
        return "SURVIVED"
    return f"error (pytest exit {outcome})"  # 2-5: a usage error or no test: the list is wrong


def baseline(workdir: Path, source, mutations: list) -> bool:
    """Run every named test once, unmutated; False (and what failed) if any fails."""
    tests = list(dict.fromkeys(test for mutation in mutations for test in mutation.tests))
    tree = fresh_tree(workdir, source, "baseline")
    outcome, seconds, tail = run_tests(tree, tests, stop_at_first=False)
    print(f"baseline: {len(tests)} test selections, pytest exit {outcome} in {seconds:.0f} s", flush=True)
    if outcome != 0:
        print("the unmutated tests do not pass, so no mutation can be judged:\n  " + "\n  ".join(tail))
        return False
    return True


def run_all(mutations: list, workdir: Path, source, *, verbose: bool) -> list:
    results = []
    for number, mutation in enumerate(mutations, 1):
        tree = fresh_tree(workdir, source, "mutant")
        apply(mutation, tree)
        outcome, seconds, tail = run_tests(tree, mutation.tests)
        result = verdict(outcome)
        results.append((mutation, result, seconds))
        print(f"[{number:2}/{len(mutations)}] {result:<18} {seconds:5.0f} s  {mutation.area:<10} {mutation.id}",
              flush=True)
        if verbose or result == "SURVIVED" or result.startswith("error"):
            print("      " + "\n      ".join(tail[-4:]), flush=True)
    return results


def is_caught(result: str) -> bool:
    return result.startswith("caught")


def report(results: list) -> float:
    areas = {}
    for mutation, result, _ in results:
        areas.setdefault(mutation.area, []).append(is_caught(result))
    print(f"\n{'area':<12} {'caught':>6} {'of':>4} {'share':>7}")
    for area, caught in areas.items():
        print(f"{area:<12} {sum(caught):>6} {len(caught):>4} {sum(caught) / len(caught):>7.0%}")
    total = sum(is_caught(r) for _, r, _ in results)
    share = total / len(results) if results else 0.0
    print(f"{'total':<12} {total:>6} {len(results):>4} {share:>7.0%}")
    survivors = [m.id for m, r, _ in results if not is_caught(r)]
    if survivors:
        print("not caught: " + ", ".join(survivors))
    return share


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run the mutations whose id starts with this")
    parser.add_argument("--list", action="store_true", help="list the mutations and check their snippets")
    parser.add_argument("--head", action="store_true", help="mutate the last commit, not the working tree")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated tests")
    parser.add_argument("--target", type=float, default=0.9, help="share to catch (default 0.9)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the end of every test run")
    args = parser.parse_args(argv)

    mutations = [m for m in MUTATIONS if not args.only or any(m.id.startswith(p) for p in args.only)]
    workdir = Path(tempfile.mkdtemp(prefix="mut"))  # short: sockets under it must fit 108 bytes
    try:
        return run_checked(args, mutations, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_checked(args, mutations: list, workdir: Path) -> int:
    source = Snapshot(LastCommit() if args.head else WorkingTree(), workdir / "snapshot")
    problems = check_snippets(mutations, source)
    if problems:
        print("the mutation list is out of step with the code:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.list or not mutations:
        for m in mutations:
            print(f"{m.area:<10} {m.id:<36} {m.file}  [{' '.join(m.tests)}]")
        return 0 if mutations else 2
    if not VENV_PYTHON.exists():
        print(f"no project venv at {VENV_PYTHON}: run `make install` first", file=sys.stderr)
        return 2
    if not args.no_baseline and not baseline(workdir, source, mutations):
        return 2
    share = report(run_all(mutations, workdir, source, verbose=args.verbose))
    return 0 if share >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
