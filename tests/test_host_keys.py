"""Host keys the user has spoken about: StrictHostKeyChecking yes refuses a host it does not
know (and writes nothing), and a key marked @revoked in known_hosts is refused under every
mode that checks keys, also where trust on first use would take a new key."""

import pytest

from conftest import needs_isolation

pytestmark = needs_isolation


def test_strict_host_key_checking_refuses_an_unknown_host_and_remembers_nothing(pod, ops, client):
    client.add_alias("strict", pod, StrictHostKeyChecking="yes")

    result = ops("pod.status", "--host", "strict", "--json")

    assert result.returncode == 1 and result.json["reachable"] is False, result.stdout
    assert "StrictHostKeyChecking is yes: refused" in result.json["problems"][0]
    assert not client.known_hosts.exists() or client.known_hosts.read_text() == ""
    assert pod.sessions() == 0  # nothing ran on the unchecked host

    ops("pod.status", "--host", pod.alias)  # trusted on first use by the ordinary alias
    assert ops("pod.status", "--host", "strict", "--json").json["reachable"] is True  # now known


@pytest.mark.parametrize("mode", ["accept-new", "yes"])
def test_a_revoked_host_key_is_refused(pod, ops, client, mode):
    client.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    client.known_hosts.write_text(f"@revoked [127.0.0.1]:{pod.port} ssh-ed25519 {pod.host_public_key}\n")
    client.add_alias("marked", pod, StrictHostKeyChecking=mode)

    result = ops("pod.status", "--host", "marked", "--json")

    assert result.returncode == 1 and result.json["reachable"] is False, result.stdout
    assert "REVOKED" in result.json["problems"][0]
    assert client.known_hosts.read_text().count(pod.host_public_key) == 1  # not trusted anew
    assert pod.sessions() == 0
