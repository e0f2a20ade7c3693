"""The test pods themselves: several at once, each with its own volume and home."""

from conftest import needs_isolation


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
