"""ops_tasks/known_hosts.py's promises that mutmut (bench/mutmut_fast.py) showed no fast test held:
how a host is named, hashed names of another version, `?`, the file a changed key was saved in (the
`ssh-keygen -f FILE -R` hint), damaged lines named with their reason, odd bytes and comment lines."""

import subprocess

from ops_tasks import known_hosts


def _key(tmp_path, name):
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().split()[:2]


def _hashed(tmp_path, name, key):
    file = tmp_path / "hashed"
    file.write_text(f"{name} {key[0]} {key[1]}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(file)], check=True, capture_output=True)
    return file.read_text().split()[0]


def test_a_host_on_port_22_is_named_bare_and_any_other_port_in_brackets():
    # Promise: the name looked up is the one OpenSSH writes, `[host]:port` for a port other than 22.
    assert known_hosts.host_name("10.0.0.5", 22) == "10.0.0.5"
    assert known_hosts.host_name("10.0.0.5", 2222) == "[10.0.0.5]:2222"


def test_a_hashed_name_of_another_format_version_or_damaged_matches_no_host(tmp_path):
    # Promise: only `|1|salt|hash` names a host; a `|2|` line or broken base64 vouches for none.
    hashed = _hashed(tmp_path, "pod.example.com", _key(tmp_path, "a"))
    assert known_hosts.patterns_match(hashed, "pod.example.com")
    assert not known_hosts.patterns_match(hashed.replace("|1|", "|2|", 1), "pod.example.com")
    assert not known_hosts.patterns_match("|1|abc|abc", "pod.example.com")
    assert not known_hosts.patterns_match("|1|abc", "pod.example.com")


def test_a_question_mark_matches_exactly_one_character():
    # Promise: OpenSSH's `?` wildcard, one character, no more, no fewer.
    assert known_hosts.patterns_match("pod?.lium.io", "pod1.lium.io")
    assert not known_hosts.patterns_match("pod?.lium.io", "pod12.lium.io")
    assert not known_hosts.patterns_match("pod?.lium.io", "pod.lium.io")


def test_a_changed_key_names_the_file_that_holds_the_old_one(tmp_path):
    # Promise: the "forget the old key with ssh-keygen -f FILE -R" hint names the right file, even
    # when its path holds a colon; an unknown key names the first file, no file at all ~/.ssh/known_hosts.
    a, b = _key(tmp_path, "a"), _key(tmp_path, "b")
    folder = tmp_path / "odd:name"
    folder.mkdir()
    first, second = folder / "first", folder / "second"
    first.write_text(f"other.host {a[0]} {a[1]}\n")
    second.write_text(f"# team hosts\n\npod.example.com {b[0]} {b[1]}\n")
    known = known_hosts.load([first, second])
    [saved] = known.keys_for("pod.example.com")
    assert known.where_saved("pod.example.com", saved) == str(second)
    [other] = known.keys_for("other.host")
    assert known.where_saved("pod.example.com", other) == str(first)
    assert known.where_saved("pod.example.com", None) == str(first)
    assert known_hosts.KnownHosts().where_saved("pod.example.com", saved) == "~/.ssh/known_hosts"


def test_a_damaged_line_is_skipped_with_its_reason(tmp_path):
    # Promise: the warning says why a line was skipped: the marker, too few fields, which key and what failed.
    a = _key(tmp_path, "a")
    file = tmp_path / "known_hosts"
    file.write_text(f"@weird h {a[0]} {a[1]}\nh {a[0]}\nh ssh-foo AAAA\n")
    reasons = [w.split(": ", 1)[1] for w in known_hosts.load([file]).warnings]
    assert reasons == ["skipped a known_hosts line (unknown marker @weird)",
                       "skipped a known_hosts line (too few fields)",
                       "skipped a known_hosts line (unreadable ssh-foo key (UnknownKeyType))"]


def test_a_key_with_a_stray_character_in_its_base64_is_refused_not_read_around(tmp_path):
    # Promise: a damaged key is a warning, never silently read as some other key.
    a = _key(tmp_path, "a")
    file = tmp_path / "known_hosts"
    file.write_text(f"pod.example.com {a[0]} {a[1][:20]}*{a[1][20:]}\n")
    known = known_hosts.load([file])
    assert known.keys_for("pod.example.com") == []
    assert len(known.warnings) == 1


def test_bytes_that_are_not_utf8_and_comment_lines_do_not_hide_the_keys_after_them(tmp_path):
    # Promise: a comment (or a line of stray bytes) is skipped and reading goes on to the next line.
    a = _key(tmp_path, "a")
    file = tmp_path / "known_hosts"
    file.write_bytes(b"# caf\xe9 hosts\n\n" + f"pod.example.com {a[0]} {a[1]}\n".encode())
    known = known_hosts.load([file])
    assert [k.get_base64() for k in known.keys_for("pod.example.com")] == [a[1]]
