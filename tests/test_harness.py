"""The test harness itself: pods (several at once, each with its own volume and home) and the `ops` runner."""

import subprocess

from conftest import needs_isolation, ops_argv, run_ops


@needs_isolation
def test_three_pods_have_their_own_volume_home_and_tmux(pod_factory, ops):
    pods = [pod_factory() for _ in range(3)]
    for index, pod in enumerate(pods):
        pod.sh(f"echo {index} > /mnt/which && echo {index} > ~/which && tmux new-session -d -s s{index} 'sleep 600'")

    for index, pod in enumerate(pods):
        assert pod.sh("cat /mnt/which ~/which").stdout.split() == [str(index), str(index)]
        result = ops("pod.status", "--host", pod.alias, "--json")
        assert result.json["tmux_sessions"] == [f"s{index}"]
        assert pod.accepted_connections() == 1
    assert len({pod.port for pod in pods}) == 3


@needs_isolation
def test_stopping_a_pod_ends_what_ran_inside_it(pod_factory):
    pod = pod_factory()
    pod.sh("tmux new-session -d -s long 'sleep 600'")
    inside = pod.namespace_pids()
    assert len(inside) >= 2  # sshd and the tmux server

    pod.stop()

    from ops_tasks.testing.pods import _alive

    assert not any(_alive(pid) for pid in inside)


def test_run_ops_gives_what_the_installed_ops_program_gives(project, client):
    """The tests' `ops` calls are forked from a process that imported the tool once: each must be
    the console script's run, exit code, stdout and stderr, whatever the call."""
    (project / "invoke.yaml").write_text("ops:\n  profiles:\n    p1:\n      destination: root@127.0.0.1:9\n"
                                         "      price_per_hour: -1\n")
    calls = [(["--list"], None), (["pod.stauts"], None), (["report", "--json"], None),
             (["pod.status", "--host", "p1"], None), (["runs.submit", "--help"], None),
             (["pod.status", "--host", "local", "--dry-run"], "y\n")]
    for args, stdin in calls:
        env = client.env(OPS_TESTS_MARK=" ".join(args))
        forked = run_ops(args, cwd=project, env=env, input=stdin)
        real = subprocess.run([*ops_argv(), *args], cwd=project, env=env, input=stdin, capture_output=True, text=True,
                              timeout=120)
        assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr), args
    assert run_ops(["pod.stauts"], cwd=project, env=client.env()).returncode == 2  # not the harness's own 0 or 1
