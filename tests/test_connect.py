"""Connecting: host keys checked on first use, and one clear line for each way it fails."""

from conftest import needs_isolation
from ops_tasks.settings import resolve_profile
from ops_tasks.targets import DryRunTarget, LocalTarget, SshTarget, Target, target_for


def test_first_contact_saves_the_host_key_and_later_ones_check_it(pod, ops, client):
    first = ops("pod.status", "--host", pod.alias, "--json")
    second = ops("pod.status", "--host", pod.alias, "--json")

    assert first.returncode == second.returncode
    assert first.json["reachable"] and second.json["reachable"]
    saved = client.known_hosts.read_text().splitlines()
    assert saved == [f"[127.0.0.1]:{pod.port} ssh-ed25519 {pod.host_public_key}"]
    assert oct(client.known_hosts.stat().st_mode & 0o777) == "0o600"


def test_a_changed_host_key_is_refused_with_how_to_forget_it(pod, ops, client):
    ops("pod.status", "--host", pod.alias)
    pod.regenerate_host_key()
    pod.restart()

    result = ops("pod.status", "--host", pod.alias, "--json")

    assert result.returncode == 1
    problem = result.json["problems"][0]
    assert "CHANGED" in problem and f"127.0.0.1:{pod.port}" in problem
    assert f"ssh-keygen -f {client.known_hosts} -R '[127.0.0.1]:{pod.port}'" in problem
    assert pod.sessions() == 1  # only the first check ran anything


def test_a_profile_without_strict_host_keys_accepts_a_new_key(pod, ops, client, project):
    (project / "invoke.yaml").write_text(
        f"ops:\n  profiles:\n    throwaway:\n      destination: {pod.alias}\n      strict_host_keys: false\n"
    )
    ops("pod.status", "--host", pod.alias)
    pod.regenerate_host_key()
    pod.restart()

    result = ops("pod.status", "--host", "throwaway", "--json")

    assert result.json["reachable"] is True
    assert len(client.known_hosts.read_text().splitlines()) == 1  # nothing remembered for it


def test_an_unauthorized_key_fails_authentication_in_one_line(pod, ops, client):
    pod.authorized_keys_path.write_text("")

    result = ops("pod.status", "--host", pod.alias)

    assert result.returncode == 1
    assert f"authentication failed for {pod.user}@127.0.0.1:{pod.port}" in result.stdout
    assert "Traceback" not in result.stderr


def test_an_unknown_alias_exits_2_before_any_contact(ops):
    result = ops("pod.status", "--host", "no-such-pod")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown host 'no-such-pod': not a profile in invoke.yaml (profiles: local) nor a fleet, nor a Host "
        "in ~/.ssh/config; use user@host:port for a raw address"
    ]


def test_the_default_host_lium_without_an_alias_says_how_to_get_one(ops):
    result = ops("pod.status", "--json")

    assert result.returncode == 2
    assert result.json == {"ok": False, "error": result.json["error"], "exit_code": 2}
    assert "'lium'" in result.json["error"]


def test_every_kind_of_target_is_a_target(tmp_path):
    local = resolve_profile({}, "local", tmp_path)
    remote = resolve_profile({}, "root@127.0.0.1:2222", tmp_path)

    assert isinstance(target_for(local), LocalTarget)
    assert isinstance(target_for(remote), SshTarget)
    assert isinstance(target_for(remote, dry_run=True), DryRunTarget)
    assert all(isinstance(t, Target) for t in (target_for(local), target_for(remote), target_for(local, dry_run=True)))


@needs_isolation
def test_a_dry_run_builds_the_ssh_command_of_a_real_connection_without_connecting(pod, client, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(client.home))
    profile = resolve_profile({}, pod.alias, tmp_path)

    planned = target_for(profile, dry_run=True).openssh_command()
    assert pod.accepted_connections() == 0
    real = SshTarget(profile)
    real.open()
    try:
        assert planned == real.openssh_command()
    finally:
        real.close()
