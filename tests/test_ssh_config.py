"""~/.ssh/config blocks: one alias written, replaced, removed; every other byte kept as it was."""

import os
import stat

import pytest

from ops_tasks import ssh_config
from ops_tasks.errors import ConfigError

USER_CONFIG = (
    "# my laptop's ssh config\n"
    "Include ~/.ssh/conf.d/*\n"
    "\n"
    "Host github.com\n"
    "    IdentityFile ~/.ssh/github   # work key\n"
    "\tUser git\n"
    "\n"
    "# the lab box\n"
    "Host lab lab.example.org\n"
    "  HostName=10.0.0.5\n"
    "  Port 2200\n"
    "\n"
    "Match host *.corp exec \"true\"\n"
    "  ProxyJump bastion\n"
    "\n"
    "Host *\n"
    "  ServerAliveInterval 30\n"
    "  User nobody"  # no newline at the end
)
OPTIONS = [("HostName", "203.0.113.7"), ("Port", 2222), ("User", "root"), ("IdentityFile", "~/.ssh/id_ed25519")]


def test_a_new_block_lands_before_the_first_block_that_would_shadow_it(tmp_path):
    path = tmp_path / "config"
    path.write_text(USER_CONFIG)
    os.chmod(path, 0o644)

    assert ssh_config.set_host(path, "lium", OPTIONS, comment="ops pod.up: Lium pod p1 (id-1)") is True

    after = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # ssh takes the first value: the Match block (may match anything) comes after ours.
    assert after.index("Host lium\n") < after.index("Match host")
    assert "Host lium\n  # ops pod.up: Lium pod p1 (id-1)\n  HostName 203.0.113.7\n  Port 2222\n" in after
    # every other byte: taking our block out gives the file back exactly
    assert ssh_config.without_host(after, "lium") == USER_CONFIG
    assert ssh_config.find_host(path, "lium")["options"]["port"] == "2222"
    assert [p.name for p in tmp_path.iterdir()] == ["config"]  # no temp file left


def test_written_twice_the_file_is_the_same_and_a_changed_block_is_replaced_in_place(tmp_path):
    path = tmp_path / "config"
    path.write_text("Host a\n  Port 1\n")
    ssh_config.set_host(path, "lium", OPTIONS)
    first = path.read_bytes()

    assert ssh_config.set_host(path, "lium", OPTIONS) is False
    assert path.read_bytes() == first

    path.write_text(path.read_text() + "\n# trailing note\nHost z\n  Port 9\n")
    with_note = path.read_text()
    ssh_config.set_host(path, "lium", [("HostName", "198.51.100.1"), ("Port", 22)])
    replaced = path.read_text()
    assert replaced == with_note.replace("  HostName 203.0.113.7\n  Port 2222\n  User root\n"
                                         "  IdentityFile ~/.ssh/id_ed25519\n", "  HostName 198.51.100.1\n  Port 22\n")
    assert replaced.count("Host lium") == 1


def test_appended_then_removed_gives_the_file_back(tmp_path):
    path = tmp_path / "config"
    original = "Host a\n  Port 1\n"
    path.write_text(original)

    ssh_config.set_host(path, "lium", OPTIONS)
    assert path.read_text().startswith(original + "\nHost lium\n")
    assert ssh_config.remove_host(path, "lium") is True
    assert path.read_text() == original
    assert ssh_config.remove_host(path, "lium") is False  # idempotent
    assert path.read_text() == original


def test_a_missing_config_and_ssh_folder_are_created_private(tmp_path):
    path = tmp_path / "home" / ".ssh" / "config"

    ssh_config.set_host(path, "lium", OPTIONS)

    assert path.read_text().startswith("Host lium\n")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_symlinked_config_stays_a_symlink(tmp_path):
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "ssh_config"
    real.write_text("Host a\n  Port 1\n")
    link = tmp_path / "config"
    link.symlink_to(real)

    ssh_config.set_host(link, "lium", OPTIONS)

    assert link.is_symlink()
    assert "Host lium" in real.read_text()


def test_crlf_files_keep_their_line_endings(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"Host a\r\n  Port 1\r\n")

    ssh_config.set_host(path, "lium", OPTIONS)

    data = path.read_bytes()
    assert data.startswith(b"Host a\r\n  Port 1\r\n\r\nHost lium\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_blocks_naming_the_alias_among_others_are_not_ours(tmp_path):
    path = tmp_path / "config"
    path.write_text("Host lium other\n  User someone\n")

    ssh_config.set_host(path, "lium", OPTIONS)
    ssh_config.remove_host(path, "lium")

    assert path.read_text() == "Host lium other\n  User someone\n"


@pytest.mark.parametrize("alias", ["", "-oProxyCommand=x", "a b", "lium*", "!lium", "a\nb"])
def test_unsafe_aliases_are_refused(alias, tmp_path):
    with pytest.raises(ConfigError):
        ssh_config.set_host(tmp_path / "config", alias, OPTIONS)
    assert not (tmp_path / "config").exists()


@pytest.mark.parametrize("value", ["10.0.0.1\n  ProxyCommand touch /tmp/x", 'a"b', "", " padded"])
def test_values_that_could_add_options_are_refused(value, tmp_path):
    with pytest.raises(ConfigError):
        ssh_config.set_host(tmp_path / "config", "lium", [("HostName", value)])


def test_values_with_spaces_are_quoted(tmp_path):
    path = tmp_path / "config"
    ssh_config.set_host(path, "lium", [("IdentityFile", "/keys/my key")])
    assert '  IdentityFile "/keys/my key"\n' in path.read_text()
    assert ssh_config.find_host(path, "lium")["options"]["identityfile"] == "/keys/my key"
