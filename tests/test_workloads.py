"""Real workloads, natively (issue "Real workloads, natively"; /work/shared/cases/real-workloads.md):
a training script that writes its own contract files, and the real vf-eval 0.4.0 and lm-eval
0.4.13 output (tests/fixtures/real_tools, written by the tools themselves) turned into the
contract's summary.json and results.jsonl by `summary_from`. One real sshd pod for the module;
the expected numbers are computed here from the fixture files with plain Python, independently
of the converters."""

import json
import math
import shlex
import statistics
import time
from pathlib import Path

import pytest

from conftest import module_client, module_pod, needs_isolation, one_line_error, run_ops
from test_faults_runs import processes_matching
from ops_tasks.runtime import contract as rt_contract
from ops_tasks.runtime import converters as rt_converters
from ops_tasks.runtime import interpreter as rt_interpreter
from ops_tasks.runtime import metrics as rt_metrics

CHECKOUT = Path(__file__).resolve().parent.parent
WORKLOADS = CHECKOUT / "tests" / "workloads"
FIXTURES = CHECKOUT / "tests" / "fixtures" / "real_tools"
TRAIN = WORKLOADS / "train_like.py"
LOSS_LINE = r"iter (?P<iter>\d+): loss (?P<loss>[\d.]+)"




# ---------------------------------------------------------------- what the fixtures say, by hand


def traces_by_example(path: Path) -> dict:
    """{task id: [reward of each rollout, None if it errored]} from vf-eval's traces.jsonl."""
    found = {}
    for line in path.read_text().splitlines():
        episode = json.loads(line)
        trace = episode["traces"][0]
        reward = None if not episode["ok"] else sum(r["score"] * r["weight"] for r in trace["rewards"].values())
        found.setdefault(episode["task"]["data"]["id"], []).append(reward)
    return found


def lm_eval_files():
    model_dir = next((FIXTURES / "lm_eval").iterdir())
    results = json.loads(next(model_dir.glob("results_*.json")).read_text())
    samples = [json.loads(line) for line in next(model_dir.glob("samples_ops_arith_*.jsonl")).read_text().splitlines()]
    return results, samples


# ---------------------------------------------------------------- the converters, on the real output


def test_verifiers_output_becomes_one_result_per_example_with_its_rollouts_grouped():
    by_hand = traces_by_example(FIXTURES / "verifiers" / "arith-10x2" / "traces.jsonl")
    means = {key: sum(r) / len(r) for key, r in by_hand.items()}

    summary, results = rt_converters.convert_verifiers(str(FIXTURES / "verifiers" / "arith-10x2"))

    assert {r["id"]: r["reward"] for r in results} == means  # the task's id, not the rollout's
    assert all(r["n_rollouts"] == 2 for r in results) and len(results) == 10
    assert summary["ok"] is True and summary["avg_reward"] == pytest.approx(statistics.mean(means.values()))
    assert (summary["num_examples"], summary["rollouts_per_example"]) == (10, 2)
    assert (summary["model_id"], summary["env_id"]) == ("ops-stub/arith-4B", "ops-arith")


def test_verifiers_rollouts_that_errored_make_the_summary_not_ok_though_vf_eval_exited_0():
    summary, results = rt_converters.convert_verifiers(str(FIXTURES / "verifiers" / "arith-errored"))
    assert summary["ok"] is False and summary["errored_rollouts"] == 6 and summary["num_examples"] == 3
    assert all(r["reward"] is None and r["rollouts"][0]["errors"] == ["ProviderError"] for r in results)


def test_lm_eval_output_becomes_the_metric_with_its_stderr_and_the_documents_own_ids():
    results_file, samples = lm_eval_files()
    scores = [s["exact_match"] for s in samples]

    summary, results = rt_converters.convert_lm_eval(str(FIXTURES / "lm_eval"))

    assert summary["avg_reward"] == pytest.approx(statistics.mean(scores))
    assert summary["metric_stderr"] == pytest.approx(statistics.stdev(scores) / math.sqrt(len(scores)))
    assert (summary["metric"], summary["filter"], summary["num_examples"]) == ("exact_match", "strict-match", 10)
    assert [r["id"] for r in results] == [s["doc"]["id"] for s in samples]
    assert [r["reward"] for r in results] == scores
    assert summary["model_id"] == "ops-stub/arith-4B" and summary["env_id"] == "ops_arith"


def test_both_frameworks_give_the_same_example_ids_and_scores():
    _, verifiers = rt_converters.convert_verifiers(str(FIXTURES / "verifiers" / "arith-10x2"))
    _, lm_eval = rt_converters.convert_lm_eval(str(FIXTURES / "lm_eval"))
    assert {r["id"]: r["reward"] for r in verifiers} == {r["id"]: r["reward"] for r in lm_eval}


def test_a_metric_lm_eval_did_not_compute_is_bad_output_naming_the_ones_it_did():
    with pytest.raises(rt_converters.BadOutput, match="exact_match,strict-match"):
        rt_converters.convert_lm_eval(str(FIXTURES / "lm_eval"), "f1")


def test_a_damaged_traces_file_is_bad_output_naming_the_line(tmp_path):
    lines = (FIXTURES / "verifiers" / "arith-10x2" / "traces.jsonl").read_text().splitlines()
    (tmp_path / "traces.jsonl").write_text("\n".join(lines[:3] + [lines[3][:50]]) + "\n")
    with pytest.raises(rt_converters.BadOutput, match="line 4"):
        rt_converters.convert_verifiers(str(tmp_path))


def test_the_latest_step_of_a_metrics_file_is_read_whole_however_many_metrics_it_holds(tmp_path):
    step = {"iter": 7, **{f"metric_{i}": i * 0.5 for i in range(40)}}
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iter": 6}) + "\n" + json.dumps(step) + "\n")
    assert len(json.dumps(step)) > 300
    assert rt_metrics.MetricsWatch(str(tmp_path), str(tmp_path / "stdout.log"), None).look() == step


def test_metrics_from_log_gives_the_last_match_and_numbers(tmp_path):
    log = tmp_path / "stdout.log"
    log.write_text("warmup\niter 0: loss 4.0000\niter 1: loss 3.5000\nstep done\niter 2: lo")
    watch = rt_metrics.MetricsWatch(str(tmp_path), str(log), LOSS_LINE)
    assert watch.look() == {"iter": 1, "loss": 3.5}  # the partial last line is not a step yet
    with log.open("a") as handle:
        handle.write("ss 3.2500\n")
    assert watch.look() == {"iter": 2, "loss": 3.25}


# ---------------------------------------------------------------- the run directory's flag


def entrypoint_of(tmp_path, **run):
    """The command line the entrypoint form renders for one run (key=value, Python literals)."""
    from ops_tasks.operations.run_config import load_submission
    from ops_tasks.settings import Profile

    config = tmp_path / "runs.json"
    config.write_text(json.dumps({"remote_repo": "/r", "remote_outputs_dir": "/mnt/o", "runs": [
        {"run_id": "a", "entrypoint": "python train.py", "flag_style": "key=value", "value_style": "python",
         "wandb_log": False, **run}]}))
    profile = Profile(name="p", destination="x", outputs_dir="/mnt/o", remote_repo="/r")
    return load_submission(config, profile=profile).runs[0].command


def test_run_dir_flag_renames_or_drops_the_run_directory_argument(tmp_path):
    assert entrypoint_of(tmp_path).endswith("wandb_log=False run_dir=/mnt/o/a")
    assert entrypoint_of(tmp_path, run_dir_flag="out_dir").endswith("wandb_log=False out_dir=/mnt/o/a")
    assert entrypoint_of(tmp_path, run_dir_flag=None) == "python train.py wandb_log=False"


@pytest.mark.parametrize("run, expected", [
    ({"run_dir_flag": "out dir"}, "run_dir_flag must be a flag name"),
    ({"run_dir_flag": 3}, "run_dir_flag must be a flag name"),
    ({"run_dir_flag": "out_dir", "out_dir": "x"}, "run_dir_flag 'out_dir' is also a flag of the run"),
    ({"run_dir_flag": "out_dir", "entrypoint": None, "command": "true"}, "run_dir_flag is for the entrypoint form"),
])
def test_a_bad_run_dir_flag_is_refused_naming_it(tmp_path, run, expected):
    from ops_tasks.errors import ConfigError

    with pytest.raises(ConfigError, match=expected) as caught:
        entrypoint_of(tmp_path, **run)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)


# ---------------------------------------------------------------- on a real pod


client = module_client()
pod = module_pod("wpod")


def write_config(project, outputs, runs, **top):
    path = project / f"runs-{len(list(project.glob('runs-*')))}.json"
    path.write_text(json.dumps({"remote_repo": str(WORKLOADS), "remote_outputs_dir": outputs, "runs": runs, **top}))
    return str(path)


def submit_and_wait(ops, pod, path, *extra):
    submitted = ops("runs.submit", "--host", pod.alias, "--config", path, "--json", *extra)
    assert submitted.json is not None and submitted.json["ok"], submitted.stderr
    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json")
    assert waited.json is not None, waited.stderr
    return submitted.json, {r["run_id"]: r for r in waited.json["runs"]}


def pod_json(pod, path):
    return json.loads(pod.sh(f"cat {shlex.quote(path)}").stdout)


def loss(learning_rate, seed, step, split="train"):
    """train_like.py's losses, by its formula."""
    return round(4.0 * math.exp(-learning_rate * step) + 0.01 * seed + (0.05 if split == "val" else 0.0), 6)


SWEEP_OUT = "/mnt/w-sweep/out"
CANARY = "w1-canary-7f3a"


@pytest.fixture(scope="module")
def sweep(pod, client, tmp_path_factory):
    """A 2x2 sweep (learning rate x seed) of the training stand-in, plus a run with a secret."""
    project = tmp_path_factory.mktemp("workloads-project")

    def ops(*args):
        proc = run_ops(args, cwd=project, env=client.env())
        proc.json = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
        return proc

    path = write_config(project, SWEEP_OUT, [
        # The seed's train.py way: key=value flags with Python literals, the run directory as out_dir.
        {"run_id": "train-lr{learning_rate}-s{seed}", "gpus": 0, "metrics_from_log": LOSS_LINE,
         "entrypoint": f"python3 {TRAIN}", "flag_style": "key=value", "value_style": "python",
         "run_dir_flag": "out_dir", "max_iters": 6, "wandb_log": False,
         "matrix": {"learning_rate": [0.1, 0.2], "seed": [1, 2]}, "meta": {"purpose": "sweep"}},
        {"run_id": "bad-flag", "gpus": 0, "command": f"python3 {TRAIN} out_dir={{run_dir}} --learning-rate=0.1"},
        {"run_id": "no-script", "gpus": 0, "command": "python3 tarin_like.py out_dir={run_dir}"},
        {"run_id": "secret", "gpus": 0, "env": {"WANDB_API_KEY": CANARY},
         "command": "echo key-len=${#WANDB_API_KEY}; printf '{\"ok\": true}' > \"$OPS_RUN_DIR/summary.json\""},
    ])
    submitted, runs = submit_and_wait(ops, pod, path, "--slots", "2")
    return {"ops": ops, "project": project, "submission_id": submitted["submission_id"], "runs": runs}


SWEEP = [(0.1, 1), (0.1, 2), (0.2, 1), (0.2, 2)]


@needs_isolation
def test_a_script_writing_its_own_contract_files_loses_nothing(pod, sweep):
    for learning_rate, seed in SWEEP:
        run_id = f"train-lr{learning_rate}-s{seed}"
        run_dir = f"{SWEEP_OUT}/{run_id}"
        assert sweep["runs"][run_id]["state"] == "succeeded", sweep["runs"][run_id]
        # The script's own files stay as it wrote them.
        command = pod.sh(f"cat {run_dir}/command.sh").stdout
        assert command.startswith(f"python {TRAIN} ") and command.endswith(f" out_dir={run_dir}\n")
        assert "wandb_log=False" in command and "run_dir=" not in command
        effective = pod_json(pod, f"{run_dir}/config_effective.json")  # what its configurator read
        assert (effective["wandb_log"], effective["learning_rate"], effective["seed"]) == (False, learning_rate, seed)
        assert pod_json(pod, f"{run_dir}/run_metadata.json")["written_by"] == "train_like.py"
        summary = pod_json(pod, f"{run_dir}/summary.json")
        assert summary["last_eval"] == {"train": loss(learning_rate, seed, 5), "val": loss(learning_rate, seed, 5, "val")}
        # The supervisor's record, beside them.
        record = pod_json(pod, f"{run_dir}/.ops/record.json")
        assert (record["submission_id"], record["attempt"], record["state"]) == (sweep["submission_id"], 1, "succeeded")
        assert (record["config"]["learning_rate"], record["config"]["seed"]) == (learning_rate, seed)
        assert record["meta"] == {"purpose": "sweep"} and record["finished_at"] >= record["started_at"]
        assert record["files"] == {"command.sh": "command", "run_metadata.json": "command",
                                   "summary.json": "command", "metrics.jsonl": "supervisor"}


@needs_isolation
def test_a_wrong_command_line_is_a_usage_error_not_a_data_failure(sweep):
    for run_id in ("bad-flag", "no-script"):
        run = sweep["runs"][run_id]
        assert (run["state"], run["failure_class"]) == ("failed", "usage"), run


@needs_isolation
@pytest.mark.parametrize("key, value, expected", [
    ("summary_from", "vf_eval", "summary_from must be"), ("stop_signal", "STOP", "stop_signal must be one of"),
    ("summary_timeout", "soon", "summary_timeout must be"),
    ("metrics_from_log", "iter (", "does not compile"), ("stop_grace", "-3s", "stop_grace must be")])
def test_a_bad_workload_value_is_one_line_exit_2_and_the_pod_is_not_contacted(pod, sweep, key, value, expected):
    path = write_config(sweep["project"], "/mnt/w-bad/out", [{"run_id": "a", "command": "true", key: value}])
    before = pod.accepted_connections()
    result = sweep["ops"]("runs.submit", "--host", pod.alias, "--config", path)
    one_line_error(result, 2, expected)
    assert pod.accepted_connections() == before


@needs_isolation
def test_run_metadata_names_the_runs_own_python(pod, sweep):
    python = pod.sh("python3 -c 'import platform, sys; print(platform.python_version(), sys.executable)'").stdout.split()
    record = pod_json(pod, f"{SWEEP_OUT}/train-lr0.1-s1/.ops/record.json")
    assert [record["python"], record["python_executable"]] == python
    assert set(record["packages"]) <= set(rt_interpreter.PACKAGES)


@needs_isolation
def test_the_log_gives_the_metric_curve_and_the_latest_step(pod, sweep):
    lines = pod.sh(f"cat {SWEEP_OUT}/train-lr0.2-s2/metrics.jsonl").stdout.splitlines()
    assert [json.loads(line) for line in lines] == [{"iter": i, "loss": float(f"{loss(0.2, 2, i):.4f}")} for i in range(6)]
    status = sweep["ops"]("runs.status", "--host", pod.alias, "--remote-outputs-dir", SWEEP_OUT,
                          "--run-id", "train-lr0.2-s2", "--json")
    assert status.json["run"]["metrics"] == json.loads(lines[-1])
    assert status.json["run"]["summary_metrics"] == {  # its nested summary, flattened, in the file's order
        "best_val_loss": loss(0.2, 2, 5, "val"), "iter": 5, "last_eval.train": loss(0.2, 2, 5),
        "last_eval.val": loss(0.2, 2, 5, "val"), "learning_rate": 0.2, "seed": 2}
    assert status.json["run"]["files_written_by"]["metrics.jsonl"] == "supervisor"


@needs_isolation
def test_report_groups_by_the_runs_config_from_the_supervisors_record(pod, sweep):
    ops = sweep["ops"]
    run_ids = ",".join(f"train-lr{lr}-s{seed}" for lr, seed in SWEEP)
    fetched = ops("artifacts.fetch", "--host", pod.alias, "--remote-outputs-dir", SWEEP_OUT, "--run-id", run_ids,
                  "--json")
    assert fetched.returncode == 0, fetched.stderr
    report = ops("report", "--run-id", run_ids, "--group-by", "learning_rate", "--metric", "last_eval.val",
                 "--lower-is-better", "true", "--json")
    assert report.returncode == 0, report.stderr
    groups = {g["learning_rate"]: g for g in report.json["groups"]}
    assert {lr: g["runs"] for lr, g in groups.items()} == {0.1: 2, 0.2: 2}
    for learning_rate, group in groups.items():  # over the seeds, by hand
        by_seed = [loss(learning_rate, seed, 5, "val") for seed in (1, 2)]
        assert group["last_eval.val_mean"] == pytest.approx(statistics.mean(by_seed))
        assert group["last_eval.val_sd"] == pytest.approx(statistics.stdev(by_seed))
        # Where a third seed would fall, t(0.975, 1) = 12.7062: wide, as two seeds are.
        half = 12.706204736174707 * statistics.stdev(by_seed) * math.sqrt(1 + 1 / 2)
        assert group["last_eval.val_n"] == 2
        assert group["last_eval.val_interval"] == "student t prediction of one more run from 2 runs"
        assert group["last_eval.val_pi95_low"] == pytest.approx(max(0.0, statistics.mean(by_seed) - half))
        assert group["last_eval.val_pi95_high"] == pytest.approx(statistics.mean(by_seed) + half)
    # A loss (said so: `val` names none): lowest first. Each run's nested summary values are columns, the metric first.
    assert [g["learning_rate"] for g in report.json["groups"]] == [0.2, 0.1]
    rows = {r["run_id"]: r for r in report.json["rows"]}
    assert rows["train-lr0.1-s2"]["last_eval.train"] == loss(0.1, 2, 5)
    assert report.json["columns"].index("last_eval.val") < report.json["columns"].index("last_eval.train")
    table = report.json["markdown"]  # what `ops report` prints
    assert "last_eval.val" in table and f"{loss(0.2, 1, 5, 'val'):.4f}" in table
    commit = pod.sh(f"git -C {WORKLOADS} rev-parse HEAD").stdout.strip()
    assert [c[:12] for c in report.json["header"]["commits"]] == [commit[:12]]  # from the record
    validated = ops("validate", "--run-id", run_ids, "--json")
    assert validated.returncode == 0, validated.stdout + validated.stderr


@needs_isolation
def test_runs_status_shows_each_runs_nested_summary_values_as_columns(pod, sweep):
    table = sweep["ops"]("runs.status", "--host", pod.alias, "--submission", sweep["submission_id"]).stdout
    header = next(line for line in table.splitlines() if line.startswith("run "))
    # The first four, in the file's order (train_like.py writes its keys sorted).
    assert header.split()[6:11] == ["best_val_loss", "iter", "last_eval.train", "last_eval.val", "last"]
    row = next(line for line in table.splitlines() if line.startswith("train-lr0.2-s1 "))
    assert f"{loss(0.2, 1, 5, 'val'):.6g}" in row.split()
    bad = next(line for line in table.splitlines() if line.startswith("bad-flag "))
    assert bad.split(" cpu")[1].split(None, 1)[1].startswith("error: unrecognized")  # no value: nothing measured


def test_the_pod_and_the_report_take_the_same_summary_values_as_columns():
    from ops_tasks.operations.report import summary_columns

    summary = {"ok": True, "avg_reward": 0.5, "run_id": "a", "exit_code": 1, "iter": 7, "flag": True, "name": "x",
               "last_eval": {"val": 3.0, "deep": {"a": 1, "deeper": {"b": 2}}}, "run_metadata": {"seed": 1},
               "nan": float("nan"), **{f"m{i}": i for i in range(10)}}
    on_pod = rt_contract.summary_leaves(summary, limit=100)
    assert on_pod[:4] == [("avg_reward", 0.5), ("iter", 7), ("last_eval.val", 3.0), ("last_eval.deep.a", 1)]
    assert [leaf for leaf in on_pod if leaf[0] != "avg_reward"] == summary_columns(summary, limit=100)
    assert len(rt_contract.summary_leaves(summary)) == len(summary_columns(summary)) == 8


@needs_isolation
def test_the_supervisors_command_replays_the_run_in_a_clean_environment(pod, sweep):
    run_dir = f"{SWEEP_OUT}/train-lr0.2-s1"
    before = pod.sh(f"cat {run_dir}/summary.json {run_dir}/metrics.jsonl").stdout
    log = pod.sh(f"grep '^iter' {run_dir}/stdout.log").stdout
    replay = pod.sh(f"cd / && rm {run_dir}/summary.json && env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin "
                    f"bash {run_dir}/.ops/command.sh")
    assert replay.stdout == log
    assert pod.sh(f"cat {run_dir}/summary.json {run_dir}/metrics.jsonl").stdout == before


@needs_isolation
def test_a_replay_never_holds_a_secret_and_names_the_one_to_export(pod, sweep):
    script = f"{SWEEP_OUT}/secret/.ops/command.sh"
    assert CANARY not in pod.sh(f"cat {script} {SWEEP_OUT}/secret/.ops/record.json").stdout
    bare = pod.sh(f"env -i HOME=/root PATH=/usr/bin:/bin bash {script}", check=False)
    assert bare.returncode != 0 and "export WANDB_API_KEY" in bare.stderr and "key-len" not in bare.stdout
    given = pod.sh(f"env -i HOME=/root PATH=/usr/bin:/bin WANDB_API_KEY=abc bash {script}")
    assert given.stdout.strip() == "key-len=3"


@needs_isolation
def test_a_cancel_with_stop_signal_int_keeps_the_scripts_own_partial_summary(pod, sweep):
    ops, out = sweep["ops"], "/mnt/w-int/out"
    path = write_config(sweep["project"], out, [
        {"run_id": "long", "gpus": 0, "stop_signal": "INT", "stop_grace": "5s", "metrics_from_log": LOSS_LINE,
         # A child of the run that ignores SIGINT (bash's background jobs do): TERM and KILL follow.
         "command": f"sleep 3071 & exec python3 {TRAIN} out_dir={{run_dir}} max_iters=100000 iter_sleep=0.05"}])
    submitted = ops("runs.submit", "--host", pod.alias, "--config", path, "--json")
    assert submitted.returncode == 0, submitted.stderr
    deadline = time.monotonic() + 30
    while "metrics" not in pod.sh(f"cat {out}/long/status.json", check=False).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    shown = ops("runs.status", "--host", pod.alias, "--remote-outputs-dir", out, "--run-id", "long")
    assert "latest step" in shown.stdout and "iter=" in shown.stdout  # while the run goes
    seen = int(shown.stdout.split("iter=")[1].split()[0])

    cancelled = ops("runs.cancel", "--host", pod.alias, "--remote-outputs-dir", out, "--run-id", "long", "--json")

    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert pod_json(pod, f"{out}/long/status.json")["state"] == "cancelled"
    assert processes_matching(pod, "sleep 3071") == []  # the run's whole process tree is stopped
    summary = pod_json(pod, f"{out}/long/summary.json")
    assert summary["interrupted"] is True and summary["iter"] >= seen and summary["ok"] is False
    assert "SIGINT" in pod.sh(f"cat {out}/.ops/supervisor.log").stdout
    assert pod_json(pod, f"{out}/long/.ops/record.json")["files"]["summary.json"] == "command"


FRAMEWORKS_OUT = "/mnt/w-frameworks/out"


@pytest.fixture(scope="module")
def frameworks(pod, sweep):
    """vf-eval's and lm-eval's real output copied into run directories by the runs' commands, and
    the user's own summary function; all converted by summary_from."""
    copy = "mkdir -p {{run_dir}}/{dest} && cp -r {source}/. {{run_dir}}/{dest}/"
    path = write_config(sweep["project"], FRAMEWORKS_OUT, [
        # A converter that hangs, and a run whose timeout falls while it does: first, so both start at once.
        {"run_id": "hung-summary", "summary_from": "python:own_summary:hang", "summary_timeout": "3s",
         "command": "true"},
        {"run_id": "meanwhile", "timeout": "1s", "command": "sleep 30"},
        {"run_id": "vf", "summary_from": "verifiers",
         "command": copy.format(source=FIXTURES / "verifiers" / "arith-10x2", dest="vf_out/arith-10x2")},
        {"run_id": "vf-errored", "summary_from": "verifiers",
         "command": copy.format(source=FIXTURES / "verifiers" / "arith-errored", dest="vf_out/arith-errored")},
        {"run_id": "vf-nothing", "summary_from": "verifiers", "command": "echo vf-eval wrote nothing"},
        {"run_id": "lm", "summary_from": "lm_eval", "summary_metric": "exact_match",
         "command": copy.format(source=FIXTURES / "lm_eval", dest="lm_eval_out")},
        {"run_id": "own", "summary_from": "python:own_summary:summarize",
         "command": "printf '1\\n0\\n1\\n1\\n' > {run_dir}/answers.txt"},
        {"run_id": "own-broken", "summary_from": "python:own_summary:summarize", "command": "true"},
    ], defaults={"gpus": 0})
    _, runs = submit_and_wait(sweep["ops"], pod, path, "--slots", "4")
    return runs


def results_of(pod, run_id):
    return [json.loads(line) for line in pod.sh(f"cat {FRAMEWORKS_OUT}/{run_id}/results.jsonl").stdout.splitlines()]


@needs_isolation
def test_verifiers_output_is_converted_on_the_pod_after_the_command(pod, frameworks):
    by_hand = traces_by_example(FIXTURES / "verifiers" / "arith-10x2" / "traces.jsonl")
    means = {key: sum(r) / len(r) for key, r in by_hand.items()}
    assert frameworks["vf"]["state"] == "succeeded", frameworks["vf"]
    summary = pod_json(pod, f"{FRAMEWORKS_OUT}/vf/summary.json")
    assert summary["avg_reward"] == pytest.approx(statistics.mean(means.values())) and summary["num_examples"] == 10
    assert {r["id"]: r["reward"] for r in results_of(pod, "vf")} == means

    errored = frameworks["vf-errored"]
    assert (errored["state"], errored["failure_class"]) == ("failed", "summary_not_ok")
    assert pod_json(pod, f"{FRAMEWORKS_OUT}/vf-errored/summary.json")["errored_rollouts"] == 6
    nothing = frameworks["vf-nothing"]
    assert (nothing["state"], nothing["failure_class"]) == ("failed", "bad_output")
    assert "traces.jsonl" in nothing["error"]


@needs_isolation
def test_lm_eval_output_is_converted_on_the_pod_after_the_command(pod, frameworks):
    results_file, samples = lm_eval_files()
    assert frameworks["lm"]["state"] == "succeeded", frameworks["lm"]
    summary = pod_json(pod, f"{FRAMEWORKS_OUT}/lm/summary.json")
    assert summary["avg_reward"] == results_file["results"]["ops_arith"]["exact_match,strict-match"]
    assert summary["metric_stderr"] == results_file["results"]["ops_arith"]["exact_match_stderr,strict-match"]
    assert [(r["id"], r["reward"]) for r in results_of(pod, "lm")] == [(s["doc"]["id"], s["exact_match"]) for s in samples]


@needs_isolation
def test_the_users_own_summary_function_runs_with_the_runs_python(pod, frameworks):
    assert frameworks["own"]["state"] == "succeeded", frameworks["own"]
    summary = pod_json(pod, f"{FRAMEWORKS_OUT}/own/summary.json")
    python = pod.sh("python3 -c 'import sys; print(sys.executable)'").stdout.strip()
    assert (summary["avg_reward"], summary["num_examples"], summary["python"]) == (0.75, 4, python)
    assert [r["reward"] for r in results_of(pod, "own")] == [1.0, 0.0, 1.0, 1.0]
    broken = frameworks["own-broken"]
    assert (broken["state"], broken["failure_class"]) == ("failed", "bad_output")
    assert "answers.txt" in broken["error"]
    status = pod_json(pod, f"{FRAMEWORKS_OUT}/own-broken/summary.json")
    assert status["ok"] is False  # the contract still holds: the supervisor's summary, ok false


@needs_isolation
def test_a_hung_converter_ends_at_its_deadline_as_bad_output_while_the_loop_goes_on(pod, frameworks):
    hung = frameworks["hung-summary"]
    assert (hung["state"], hung["failure_class"]) == ("failed", "bad_output"), hung
    assert "deadline of 3s (summary_timeout)" in hung["error"]
    assert processes_matching(pod, "own_summary hang") == []  # the converter is stopped, not left behind
    assert pod_json(pod, f"{FRAMEWORKS_OUT}/hung-summary/summary.json")["ok"] is False
    # The other run's timeout was acted on while the conversion hung, not after it.
    ends = [line.split(": ", 1)[0].split()[-1] for line in pod.sh(f"cat {FRAMEWORKS_OUT}/.ops/supervisor.log").stdout
            .splitlines() if line.endswith(")") and ("[timeout]" in line or "[bad_output]" in line)]
    assert frameworks["meanwhile"]["state"] == "timeout"
    assert [name for name in ends if name in ("meanwhile", "hung-summary")] == ["meanwhile", "hung-summary"], ends


@needs_isolation
def test_report_compares_a_verifiers_run_and_an_lm_eval_run_on_their_shared_examples(pod, frameworks, tmp_path):
    from ops_tasks.operations.report import build_report

    # The two run directories as the pod has them (fetching is artifacts' tests' concern), reported in-process.
    pod.sh(f"cp -r {FRAMEWORKS_OUT}/vf {FRAMEWORKS_OUT}/lm {tmp_path}/")
    report = build_report(tmp_path, compare=["vf", "lm"])
    assert report["ok"] and not report["errors"], report["errors"]
    # By hand, from the tools' own files: vf-eval's rollouts averaged per task id, lm-eval's per document.
    by_hand = traces_by_example(FIXTURES / "verifiers" / "arith-10x2" / "traces.jsonl")
    vf = {key: sum(r) / len(r) for key, r in by_hand.items()}
    lm = {s["doc"]["id"]: s["exact_match"] for s in lm_eval_files()[1]}
    shared = [key for key in vf if key in lm]
    differences = [lm[key] - vf[key] for key in shared]
    comparison = report["comparison"]
    assert (comparison["run_a"], comparison["run_b"], comparison["n"]) == ("vf", "lm", len(shared)) and shared
    assert comparison["mean_a"] == pytest.approx(statistics.mean(vf[key] for key in shared))
    assert comparison["mean_b"] == pytest.approx(statistics.mean(lm[key] for key in shared))
    assert comparison["mean_diff"] == pytest.approx(statistics.mean(differences))
    if comparison["binary"]:  # McNemar's discordant pairs, counted by hand
        assert comparison["mcnemar"]["b"] == sum(vf[k] == 1 and lm[k] == 0 for k in shared)
        assert comparison["mcnemar"]["c"] == sum(vf[k] == 0 and lm[k] == 1 for k in shared)
    rows = {r["run_id"]: r for r in report["rows"]}
    assert rows["vf"]["avg_reward"] == pytest.approx(statistics.mean(vf.values()))
    assert rows["lm"]["avg_reward"] == pytest.approx(statistics.mean(lm.values()))


def test_a_nested_summary_value_sorts_filters_and_groups_like_any_column(tmp_path):
    from ops_tasks.operations.report import build_report

    for run_id, lr, val in (("a", 0.1, 3.0), ("b", 0.2, 2.0), ("c", 0.2, 2.5)):
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "summary.json").write_text(json.dumps(
            {"ok": True, "learning_rate": lr, **{f"m{i}": i for i in range(8)},  # last_eval.* beyond the columns
             "last_eval": {"val": val, "train": val - 0.1}}))
    ranked = build_report(tmp_path, sort="last_eval.val")
    assert [r["run_id"] for r in ranked["rows"]] == ["b", "c", "a"]
    assert [r["run_id"] for r in build_report(tmp_path, filters=["last_eval.val=2.5"])["rows"]] == ["c"]
    grouped = build_report(tmp_path, group_by="last_eval.val", metric="last_eval.train")
    assert sorted(g["last_eval.val"] for g in grouped["groups"]) == [2.0, 2.5, 3.0]


def test_one_runs_status_shows_its_nested_summary_values_and_nothing_the_pod_should_not_draw():
    from ops_tasks.runs import render_status, render_table

    run = {"run_id": "r", "state": "succeeded", "attempt": 1, "summary": {"ok": True, "iter": 5},
           "summary_metrics": {"iter": 5, "last_eval.val": 1.25, "\x1b[2Jevil": 1, "text": "not a number"}}
    shown = render_status({"host": "p", "run": run, "runs": [run]})
    assert "iter=5" in shown and "last_eval.val=1.25" in shown and "\x1b" not in shown
    table = render_table({"host": "p", "counts": {"succeeded": 1}, "runs": [run]})
    header = table.splitlines()[2].split()
    assert header[6:9] == ["iter", "last_eval.val", "evil"] and "\x1b" not in table  # escapes dropped
    assert "not a number" not in table  # a text where a number belongs is left blank
