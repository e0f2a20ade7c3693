"""Values rendered the way real command lines want them (issue "Real workloads, natively",
/work/shared/cases/real-workloads.md, "Rendering values for real command lines"): a nanoGPT-style
configurator (key=value arguments read with ast.literal_eval, falling back to the text) on a real
sshd pod reads what the config meant, and the seed's postmortem (`wandb_log=false` read as the
string 'false', so W&B stayed on) is warned about at submit time. One pod for the module, one
submission of every run."""

import json
import shlex

import pytest

from conftest import needs_isolation, run_ops
from ops_tasks.testing.pods import ClientHome, SshPod

pytestmark = needs_isolation

REPO = "/mnt/wr/repo"
OUT = "/mnt/wr/out"
# What nanoGPT's configurator.py does with `key=value` (and `--key=value`) arguments, then what
# it read (with each value's Python type) into read.json of its run_dir, and a summary.
CONFIGURATOR = r'''
import ast, json, os, sys
read = {}
for arg in sys.argv[1:]:
    key, _, text = arg.lstrip("-").partition("=")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    read[key] = {"type": type(value).__name__, "value": value}
run_dir = read["run_dir"]["value"]
with open(os.path.join(run_dir, "read.json"), "w") as out:
    json.dump(read, out)
with open(os.path.join(run_dir, "summary.json"), "w") as out:
    json.dump({"ok": True}, out)
'''


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    client = ClientHome(tmp_path_factory.mktemp("render") / "client-home")
    pod = SshPod(tmp_path_factory.mktemp("render") / "pod", "rpod", client.public_key).start()
    client.add_alias("rpod", pod)
    pod.alias, pod.client = "rpod", client
    pod.sh(f"mkdir -p {REPO} && cat > {REPO}/configurator_train.py <<'EOF'\n{CONFIGURATOR}\nEOF")
    yield pod
    pod.stop()


@pytest.fixture(scope="module")
def submitted(pod, tmp_path_factory):
    """One submission: the entrypoint form in key=value + python style, and a command whose
    `wandb_log={wandb_log}` renders JSON's false (warned) beside a forced `{wandb_log!python}`."""
    project = tmp_path_factory.mktemp("render-project")
    config = project / "runs.json"
    config.write_text(json.dumps({"remote_repo": REPO, "remote_outputs_dir": OUT, "runs": [
        {"run_id": "python-style", "gpus": 0, "entrypoint": "python3 configurator_train.py",
         "flag_style": "key=value", "value_style": "python", "wandb_log": False, "learning_rate": 0.1,
         "meta": {"purpose": "render-check"}},
        {"run_id": "json-style", "gpus": 0, "wandb_log": False,
         "command": "python3 configurator_train.py run_dir={run_dir} wandb_log={wandb_log} "
                    "forced={wandb_log!python} purpose={purpose}",
         "meta": {"purpose": "placeholder"}},
    ]}))

    def ops(*args):
        proc = run_ops(args, cwd=project, env=pod.client.env())
        proc.json = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
        return proc

    submit = ops("runs.submit", "--host", pod.alias, "--config", str(config), "--slots", "2", "--json")
    assert submit.json is not None and submit.json["ok"], submit.stderr
    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json")
    assert waited.json is not None, waited.stderr
    return {"submit": submit, "states": {r["run_id"]: r["state"] for r in waited.json["runs"]}}


def pod_json(pod, path):
    return json.loads(pod.sh(f"cat {shlex.quote(path)}").stdout)


def test_python_style_key_value_flags_reach_a_configurator_as_the_values_the_config_meant(pod, submitted):
    assert submitted["states"]["python-style"] == "succeeded"
    read = pod_json(pod, f"{OUT}/python-style/read.json")
    assert read["wandb_log"] == {"type": "bool", "value": False}  # not the string 'false': W&B stays off
    assert read["learning_rate"] == {"type": "float", "value": 0.1}
    assert read["run_dir"]["value"] == f"{OUT}/python-style"
    # meta is the run's metadata: kept with the run, never an argument of its command.
    assert "purpose" not in read and "meta" not in read
    metadata = pod_json(pod, f"{OUT}/python-style/run_metadata.json")
    assert metadata["meta"] == {"purpose": "render-check"}
    assert not any("python-style" in line for line in submitted["submit"].json["warnings"])


def test_a_false_written_json_style_for_a_configurator_is_warned_at_submit_naming_run_key_and_fix(pod, submitted):
    read = pod_json(pod, f"{OUT}/json-style/read.json")
    assert read["wandb_log"] == {"type": "str", "value": "false"}  # the postmortem's trap, as warned
    assert read["forced"] == {"type": "bool", "value": False}  # {wandb_log!python}
    assert read["purpose"] == {"type": "str", "value": "placeholder"}  # a meta key as a placeholder

    warnings = [line for line in submitted["submit"].stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, submitted["submit"].stderr
    for fragment in ("'json-style'", "wandb_log", "'false'", '"value_style": "python"'):
        assert fragment in warnings[0]
    assert submitted["submit"].json["warnings"] == [warnings[0].removeprefix("warning: ")]
    assert "Traceback" not in submitted["submit"].stderr
