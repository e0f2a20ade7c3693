"""The two front doors and the output contract: bad input is one line, exit 2, no contact."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHECKOUT, one_line_error


def test_invalid_yaml_names_file_line_and_column(ops, project, pod):
    (project / "invoke.yaml").write_text("ops:\n  profiles:\n    a100: [unclosed\n")

    result = ops("pod.status", "--host", pod.alias)

    one_line_error(result, 2, "invoke.yaml:4:1", "invalid YAML")
    assert pod.accepted_connections() == 0


def test_a_wrongly_typed_key_is_named(ops, project, pod):
    (project / "invoke.yaml").write_text(
        f"ops:\n  profiles:\n    a100:\n      destination: {pod.alias}\n      connect_timeout: ten\n"
    )

    result = ops("pod.status", "--host", "a100")

    one_line_error(result, 2, "ops.profiles.a100.connect_timeout must be a number, got 'ten'")
    assert pod.accepted_connections() == 0


def test_a_misspelled_profile_key_is_refused(ops, project):
    (project / "invoke.yaml").write_text("ops:\n  profiles:\n    a100:\n      volumne: /mnt\n")

    one_line_error(ops("pod.status", "--host", "a100"), 2, "unknown key ops.profiles.a100.volumne")


def test_a_missing_project_env_file_is_named(ops, project, pod):
    result = ops("pod.status", "--host", pod.alias, env={"OPS_PROJECT_ENV": str(project / "nope.env")})

    one_line_error(result, 2, f"OPS_PROJECT_ENV={project / 'nope.env'}: no such file")
    assert pod.accepted_connections() == 0


@pytest.mark.parametrize("host", ["root@", "root@host:99999", "-oProxyCommand=touch", "a b", "root@h:x"])
def test_malformed_destinations_are_refused(ops, host):
    one_line_error(ops("pod.status", "--host", host), 2, "malformed host")


def test_the_project_env_file_fills_in_but_never_overrides(ops, project, pod):
    env_file = project / "project.env"
    env_file.write_text("OPS_DEFAULT_HOST=no-such-alias\n")

    result = ops("pod.status", "--json", env={"OPS_PROJECT_ENV": str(env_file), "OPS_DEFAULT_HOST": pod.alias})

    assert result.json["host"] == pod.alias


def test_local_lives_in_the_project_directory_and_a_read_creates_nothing(ops, project):
    (project / "invoke.yaml").write_text("ops: {}\n")
    below = project / "notebooks"
    below.mkdir()

    status = ops("pod.status", "--host", "local", "--json", cwd=below)
    listing = ops("runs.list", "--host", "local", cwd=below)

    assert status.returncode == 0, status.stderr
    assert status.json["volume"]["path"] == str(project / ".local-pod" / "mnt")
    assert status.json["volume"]["must_be_mount"] is False
    assert listing.returncode == 0, listing.stderr
    assert sorted(p.name for p in project.iterdir()) == ["invoke.yaml", "notebooks"]
    assert list(below.iterdir()) == []


def test_local_runs_in_the_project_directory_by_default(ops, project):
    (project / "invoke.yaml").write_text("ops: {}\n")
    (project / "c.json").write_text('{"runs": [{"run_id": "here", "command": "pwd > \\"$OPS_RUN_DIR/pwd.txt\\""}]}')

    result = ops("runs.submit", "--host", "local", "--config", "c.json", "--no-tmux", "--json")

    run_dir = project / ".local-pod" / "mnt" / "pod_artifacts" / "outputs" / "here"
    assert (run_dir / "pwd.txt").read_text().strip() == str(project), result.stderr


def test_refused_flags_on_the_local_profile_leave_no_volume_folder(ops, project):
    one_line_error(ops("runs.status", "--host", "local", "--run-id", "no good"), 2, "--run-id 'no good'")

    assert not (project / ".local-pod").exists()


def test_pretty_json_is_the_same_document_indented(ops):
    compact = ops("pod.status", "--host", "local", "--json")
    pretty = ops("pod.status", "--host", "local", "--pretty")

    assert pretty.stdout.startswith('{\n  "ok": true')
    assert set(pretty.json) == set(compact.json)


def test_inv_front_door_reads_its_own_invoke_yaml(tmp_path, client, pod):
    # A checkout-like folder: tasks.py plus an invoke.yaml whose default host is the pod.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(CHECKOUT / "tasks.py", checkout)
    (checkout / "invoke.yaml").write_text(f"ops:\n  default_host: {pod.alias}\n")
    inv = Path(sys.executable).parent / "inv"

    result = subprocess.run([str(inv), "pod.status", "--json"], cwd=checkout, env=client.env(),
                            capture_output=True, text=True, timeout=60)

    assert result.returncode in (0, 1), result.stderr
    assert '"host":"%s"' % pod.alias in result.stdout
    assert pod.sessions() == 1


def test_inv_front_door_refuses_broken_yaml_in_one_line(tmp_path, client):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(CHECKOUT / "tasks.py", checkout)
    (checkout / "invoke.yaml").write_text("ops: {profiles: [\n")
    inv = Path(sys.executable).parent / "inv"

    result = subprocess.run([str(inv), "pod.status"], cwd=checkout, env=client.env(),
                            capture_output=True, text=True, timeout=60)

    one_line_error(result, 2, "invalid YAML")


def test_every_task_documents_every_flag(ops):
    listing = ops("--list")
    assert "pod.status" in listing.stdout
    help_text = ops("pod.status", "--help").stdout
    for flag in ("--host", "--json", "--pretty", "--dry-run"):
        assert flag in help_text
    assert "Options:" in help_text and "None" not in help_text


# ---------------------------------------------------------------- bad input on the command line


def test_an_unknown_task_is_exit_2_with_the_nearest_name(ops):
    one_line_error(ops("pod.stauts"), 2, "pod.stauts: no such task; did you mean pod.status?")


def test_an_unknown_flag_is_exit_2_with_the_tasks_nearest_flag(ops, pod):
    one_line_error(ops("pod.status", "--hots", pod.alias), 2, "--hots: no such flag of pod.status",
                   "did you mean --host?")
    assert pod.accepted_connections() == 0


def test_a_missing_required_flag_says_which_and_what_it_takes(ops):
    one_line_error(ops("runs.submit", "--host", "local"), 2, "missing required flag --config", "run config")
    one_line_error(ops("runs.logs", "--host", "local"), 2, "missing required flag --run-id")
    one_line_error(ops("runs.submit", "--config"), 2, "--config needs a value")


def test_every_task_has_its_own_help(capsys):
    # In process (Program.run), to keep 24 start-ups out of the suite's time.
    from ops_tasks.cli import program
    from ops_tasks.collection import ns

    for name in ns.task_names:
        program.run(["ops", name, "--help"], exit=False)
        out = capsys.readouterr().out
        assert "Options:" in out and f"ops [--core-opts] {name}" in out, name


def test_core_help_shows_only_the_core_flags_that_mean_something(ops):
    text = ops("--help").stdout
    for meaningful in ("--hosts", "--list", "--dry", "--print-completion-script", "--version"):
        assert meaningful in text
    for meaningless in ("--pty", "--echo", "--warn-only", "--hide", "--write-pyc", "--command-timeout",
                        "--prompt-for-sudo-password"):
        assert meaningless not in text


def test_a_run_config_given_as_inv_s_own_config_is_refused_saying_so(ops, project, pod):
    (project / "demo.json").write_text('{"remote_repo": "/root", "runs": [{"run_id": "a", "command": "true"}]}')

    one_line_error(ops("--config", "demo.json", "runs.submit", "--host", pod.alias), 2,
                   "is Invoke's runtime config file", "runs.submit --config demo.json")
    assert pod.accepted_connections() == 0


def test_a_missing_runtime_config_file_is_an_error(ops):
    one_line_error(ops("-f", "missing.yaml", "--list"), 2, "missing.yaml: no such file")


# ---------------------------------------------------------------- run configs through the front door


def test_a_secret_named_run_key_never_reaches_any_output(ops, project, pod):
    (project / "c.json").write_text('{"remote_repo": "/root", "runs": [{"run_id": "a", "entrypoint": "python e.py",'
                                    ' "hf_token": "hf_canaryABC"}]}')

    for extra in ((), ("--dry-run",), ("--json",)):
        result = ops("runs.submit", "--host", pod.alias, "--config", "c.json", *extra)
        one_line_error(result, 2, "key 'hf_token' names a secret", "env")
        assert "hf_canaryABC" not in result.stdout + result.stderr
    assert pod.accepted_connections() == 0
    assert not (project / "artifacts").exists()


def test_a_config_nested_600_deep_is_one_line(ops, project):
    (project / "deep.json").write_text('{"runs": [{"run_id": "a", "command": "x", "note": '
                                       + "[" * 600 + "]" * 600 + "}]}")

    one_line_error(ops("runs.submit", "--host", "local", "--config", "deep.json"), 2, "nested deeper than")


def test_an_absolute_run_dir_is_refused_before_contact(ops, project, pod):
    (project / "c.json").write_text('{"remote_repo": "/root", "runs": [{"run_id": "typo", "run_dir": "/root/.ssh",'
                                    ' "command": "true"}]}')

    one_line_error(ops("runs.submit", "--host", pod.alias, "--config", "c.json", "--force"), 2,
                   "run_dir must be relative to the outputs root")
    assert pod.accepted_connections() == 0


# ---------------------------------------------------------------- start-up and completion


def test_listing_and_task_help_load_no_connection_fan_out_or_operation_code(project, client):
    # One process, in this order: what `--list` and every `TASK --help` leave loaded, then what a
    # dry run (which does run its task) adds: never paramiko nor fabric, only a connection needs them.
    probe = """if True:
        import sys
        from ops_tasks.cli import program
        from ops_tasks.collection import ns

        def loaded():
            return sorted(m for m in sys.modules if m.split(".")[0] in ("paramiko", "fabric")
                          or m.startswith(("ops_tasks.operations", "ops_tasks.targets", "ops_tasks.fleet")))

        program.run(["ops", "--list"], exit=False)
        print("list", loaded(), file=sys.stderr)
        for name in ns.task_names:
            program.run(["ops", name, "--help"], exit=False)
        print("help", loaded(), file=sys.stderr)
        program.run(["ops", "pod.status", "--host", "local", "--dry-run"], exit=False)
        print("dry-run", [m for m in loaded() if m.split(".")[0] in ("paramiko", "fabric")], file=sys.stderr)
    """
    result = subprocess.run([sys.executable, "-c", probe], cwd=project, env=client.env(), capture_output=True,
                            text=True, timeout=60)

    assert result.stderr.splitlines()[-3:] == ["list []", "help []", "dry-run []"], result.stderr


@pytest.mark.parametrize("argv, fragments", [
    (["pod.status", "--host", "local", "runs.stauts"], ["runs.stauts: no such task; did you mean runs.status?"]),
    (["pod.status", "--host", "local", "runs.status", "--hots", "local"],
     ["--hots: no such flag of runs.status; did you mean --host?", "(see ops runs.status --help)"]),
    (["--help", "vllm.stat"], ["vllm.stat: no such task; did you mean vllm.start?"]),
    (["--hots", "local", "pod.status"], ["--hots: no such flag of ops; did you mean --hosts?"]),
])
def test_typos_anywhere_in_a_chain_are_exit_2_with_the_nearest_name(project, monkeypatch, capsys, argv, fragments):
    # The parser holds only the tasks argv names: the suggestions still come from every task.
    from ops_tasks.cli import program

    monkeypatch.chdir(project)
    with pytest.raises(SystemExit) as stop:
        program.run(["ops", *argv])
    captured = capsys.readouterr()

    assert stop.value.code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for fragment in fragments:
        assert fragment in lines[0]


def _complete(*words):
    """What `ops --complete -- ops WORDS` prints, in process (the shell's hook is that call)."""
    from ops_tasks.cli import program

    program.run(["ops", "--complete", "--", "ops", *words], exit=False)


def test_host_flags_complete_with_profiles_fleets_and_the_pods_pod_up_wrote(ops, project, client, monkeypatch,
                                                                             capsys):
    from ops_tasks import ssh_config

    (project / "invoke.yaml").write_text("ops:\n  profiles:\n    a100:\n      destination: root@10.0.0.1\n"
                                         "  fleets:\n    trio: [a100, lium-1]\n")
    ssh_config.set_pod_host(client.config, "lium-1", [("HostName", "10.0.0.2")], name="eval-1", pod_id="p-1")
    ssh_config.set_host(client.config, "my-own-box", [("HostName", "10.0.0.3")])
    # A fleet pod.up named from another folder (the user's store, not this project's).
    subprocess.run([sys.executable, "-c", "from ops_tasks import records; records.save_fleet(None, 'rented', ['lium-1'])"],
                   env=client.env(), check=True)

    # The shell's own call, through the real program: `ops pod.status --host <TAB>`.
    shell = ops("--complete", "--", "ops", "pod.status", "--host")
    assert shell.returncode == 0
    assert shell.stdout.split() == ["a100", "lium-1", "local", "rented", "trio"]
    monkeypatch.setenv("OPS_STATE_DIR", str(client.state_home / "ops-tasks"))  # the same user, in process

    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(client.home))
    for words, expected in ((["-H"], ["a100", "lium-1", "local", "rented", "trio"]),
                            (["--hosts", "a1"], ["a100", "lium-1", "local", "rented", "trio"]),  # the shell keeps a1*
                            (["-H", "a100,l"], ["a100,lium-1", "a100,local", "a100,rented", "a100,trio"]),
                            (["runs.wait", "--host", "lium-1", "--run-id", "x", "runs.status", "--host"],
                             ["a100", "lium-1", "local", "rented", "trio"])):
        _complete(*words)
        assert capsys.readouterr().out.split() == expected, words
    # A whole name is a value already typed: what comes next is Invoke's (task names), as before.
    _complete("pod.status", "--host", "a100")
    assert "runs.submit" in capsys.readouterr().out.split()
    _complete("pod.status", "--ho")
    assert "--host" in capsys.readouterr().out.split()
