"""`Include` in ~/.ssh/config (issue 24): an alias defined in an included file is a known host,
and the connection takes its HostName, User, Port and IdentityFile, as ssh does."""

import subprocess
from pathlib import Path

import pytest

from conftest import one_line_error
from ops_tasks import ssh_config
from ops_tasks.errors import ConfigError
from ops_tasks.testing.pods import _keygen


def block(alias, pod, key, **extra) -> str:
    lines = [f"Host {alias}", "  HostName 127.0.0.1", f"  Port {pod.port}", f"  User {pod.user}",
             f"  IdentityFile {key}", "  IdentitiesOnly yes"] + [f"  {k} {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def own_key(client, pod):
    """A key the pod takes and the client's default key is not: only an IdentityFile read from
    the included file can log in."""
    key = client.ssh_dir / "sky-key"
    _keygen(key, "sky-key")
    pod.authorized_keys_path.write_text(key.with_suffix(".pub").read_text())
    return key


def test_an_alias_of_an_included_file_reaches_its_pod(client, pod, own_key, ops):
    ssh = client.ssh_dir
    config = client.config.read_text()
    # SkyPilot's way (a glob, relative to ~/.ssh), a `~` path, and a file including another.
    client.config.write_text("Include sky/generated/*\nInclude ~/extra/ssh.conf\n\n" + config)
    write(ssh / "sky" / "generated" / "a-first", block("sky-a", pod, own_key))
    write(ssh / "sky" / "generated" / "b-second", "Include ~/.ssh/nested.conf\n" + block("sky-b", pod, own_key))
    write(ssh / "nested.conf", block("sky-nested", pod, own_key))
    write(client.home / "extra" / "ssh.conf", block("tilde-box", pod, own_key))
    included = {p: p.read_bytes() for p in ssh.rglob("*") if p.is_file() and p != client.config}

    for alias in ("sky-a", "sky-b", "sky-nested", "tilde-box"):
        before = pod.sessions()
        result = ops("pod.status", "--host", alias, "--json")
        assert result.returncode in (0, 1) and result.json["reachable"] is True, (alias, result.stderr)
        assert result.json["host"] == alias
        assert pod.sessions() == before + 1  # this pod, logged in with the included IdentityFile

    assert client.known_hosts.read_text().splitlines() == [f"[127.0.0.1]:{pod.port} ssh-ed25519 {pod.host_public_key}"]
    assert {p: p.read_bytes() for p in included} == included  # nothing written into an included file


def test_an_include_inside_a_host_block_applies_only_under_it(client, pod, own_key, ops):
    write(client.ssh_dir / "gpu.conf", block("gpu-a", pod, own_key) + block("cpu-b", pod, own_key))
    with client.config.open("a") as handle:
        handle.write("Host gpu-*\n  Include gpu.conf\n")

    reached = ops("pod.status", "--host", "gpu-a", "--json")
    refused = ops("pod.status", "--host", "cpu-b")

    assert reached.json["reachable"] is True, reached.stderr
    one_line_error(refused, 2, "unknown host 'cpu-b'", "nor a Host in ~/.ssh/config")


def test_an_alias_of_a_missing_include_is_unknown(client, ops):
    client.config.write_text("Include missing/*\nInclude /nonexistent/ssh.conf\n" + client.config.read_text())

    one_line_error(ops("pod.status", "--host", "ghost"), 2, "unknown host 'ghost'")


def test_an_include_loop_is_refused_in_one_line_not_followed_forever(client, ops):
    write(client.ssh_dir / "a.conf", "Include b.conf\n")
    write(client.ssh_dir / "b.conf", "Include a.conf\nHost looped\n  Port 2\n")
    client.config.write_text("Include a.conf\n" + client.config.read_text())

    result = ops("pod.status", "--host", "looped", timeout=20)

    one_line_error(result, 2, "Include nested more than 16 deep", "ssh refuses this config as well")


def test_write_backs_stay_in_the_main_file(tmp_path):
    included = write(tmp_path / "sky.conf", "Host sky-a\n  HostName 10.0.0.1\n")
    main = write(tmp_path / "config", f"Include {included}\n")

    ssh_config.set_pod_host(main, "lium-1", [("HostName", "203.0.113.7"), ("Port", 2222)], "p1", "id-1")
    assert included.read_text() == "Host sky-a\n  HostName 10.0.0.1\n"
    assert ssh_config.pod_aliases(main, pod_id="id-1") == ["lium-1"]
    assert ssh_config.find_host(main, "sky-a") is None  # the main file's own blocks only

    assert ssh_config.forget_pod_hosts(main, ["lium-1", "sky-a"]) == (["lium-1"], ["sky-a"])
    assert included.read_text() == "Host sky-a\n  HostName 10.0.0.1\n"
    assert main.read_text() == f"Include {included}\n"


# ssh itself as the judge: `ssh -G -F` resolves each alias through the same files (absolute paths
# only: ssh expands `~` and relative Includes from the passwd home, not $HOME).
LAYOUT = {
    "config": ("Include {d}/conf.d/*\nUser top\nHost gpu-*\n  Include {d}/gpu.conf\n  Port 2201\n"
               "Match originalhost m-*\n  Include {d}/m.conf\nHost *\n  User nobody\n  IdentityFile {d}/k1\n"),
    "conf.d/b.conf": "Include {d}/nested.conf\nHost sky-b\n  HostName 10.0.0.2\n  Port 99\nInclude {d}/late.conf\n",
    "conf.d/a.conf": "Host sky-a\n  HostName 10.0.0.1\n  IdentityFile {d}/ka\n",
    "nested.conf": "Host nested-x\n  HostName 10.0.0.3\n  User nx\n",
    "late.conf": "Host late-y\n  HostName 10.0.0.4\n",  # inside `Host sky-b`: never late-y's
    "gpu.conf": "User gpuuser\nHost gpu-a\n  HostName 10.0.1.1\nHost cpu-b\n  HostName 10.0.1.2\n",
    "m.conf": "Host m-1\n  HostName 10.0.2.1\nHost x-1\n  HostName 10.0.2.2\n",
}
KNOWN = {"sky-a": True, "sky-b": True, "nested-x": True, "gpu-a": True, "gpu-z": True, "m-1": True,
         "late-y": False, "cpu-b": False, "x-1": False, "plain": False}


def _ssh_g(config: Path, alias: str) -> dict:
    out = subprocess.run(["ssh", "-G", "-F", str(config), alias], capture_output=True, text=True, check=True).stdout
    resolved = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        resolved.setdefault(key, []).append(value)
    return resolved


def test_aliases_resolve_as_ssh_resolves_them_and_are_known_where_a_host_line_applies(tmp_path):
    for name, text in LAYOUT.items():
        write(tmp_path / name, text.format(d=tmp_path))
    config = tmp_path / "config"
    ours = ssh_config.paramiko_config([(config, True)])

    for alias, known in KNOWN.items():
        theirs, mine = _ssh_g(config, alias), ours.lookup(alias)
        assert mine["hostname"] == theirs["hostname"][0], alias
        assert mine["user"] == theirs["user"][0], alias
        assert mine.get("port", "22") == theirs["port"][0], alias
        assert mine["identityfile"] == theirs["identityfile"], alias
        assert ssh_config.defines(alias, config) is known, alias


def test_a_loop_ssh_refuses_too(tmp_path):
    config = write(tmp_path / "config", f"Include {tmp_path}/config\nHost a\n")

    assert subprocess.run(["ssh", "-G", "-F", str(config), "a"], capture_output=True).returncode != 0
    with pytest.raises(ConfigError, match="Include nested more than 16 deep"):
        ssh_config.defines("a", config)
