"""known_hosts as people have them: hashed names, patterns, markers, corrupt lines, several files.

The lines are made by OpenSSH's own ssh-keygen (keys, and `-H` for hashed names)."""

import subprocess

from ops_tasks import known_hosts


def _key(tmp_path, name):
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return (path.with_suffix(".pub")).read_text().split()[:2]


def _blob(entry_key):
    return entry_key.get_base64()


def test_plain_port_and_pattern_lines(tmp_path):
    a, b, c = (_key(tmp_path, n) for n in "abc")
    file = tmp_path / "known_hosts"
    file.write_text(
        f"pod.example.com,10.0.0.5 {a[0]} {a[1]}\n"
        f"[127.0.0.1]:2222 {b[0]} {b[1]} a comment\n"
        f"*.lium.io,!bad.lium.io {c[0]} {c[1]}\n"
        "# a comment line\n\n"
    )
    known = known_hosts.load([file])
    assert known.warnings == []
    assert [_blob(k) for k in known.keys_for("10.0.0.5")] == [a[1]]
    assert [_blob(k) for k in known.keys_for("POD.example.com")] == [a[1]]
    assert [_blob(k) for k in known.keys_for("[127.0.0.1]:2222")] == [b[1]]
    assert known.keys_for("127.0.0.1") == []  # port 22 is another host
    assert [_blob(k) for k in known.keys_for("x.lium.io")] == [c[1]]
    assert known.keys_for("bad.lium.io") == []


def test_hashed_names_from_ssh_keygen(tmp_path):
    a = _key(tmp_path, "a")
    file = tmp_path / "known_hosts"
    file.write_text(f"[127.0.0.1]:2240 {a[0]} {a[1]}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(file)], check=True, capture_output=True)
    assert file.read_text().startswith("|1|")
    known = known_hosts.load([file])
    assert [_blob(k) for k in known.keys_for("[127.0.0.1]:2240")] == [a[1]]
    assert known.keys_for("[127.0.0.1]:2241") == []


def test_markers_and_corrupt_lines_are_skipped_with_the_line_named(tmp_path):
    a, ca, old = (_key(tmp_path, n) for n in ("a", "ca", "old"))
    file = tmp_path / "known_hosts"
    file.write_text(
        f"@cert-authority *.example.com {ca[0]} {ca[1]}\n"
        f"host.example.com {a[0]} this-is-not-base64!!\n"
        f"host.example.com {a[0]} {a[1]}\n"
        f"@revoked * {old[0]} {old[1]}\n"
        "only-two fields\n"
        f"@bogus host {a[0]} {a[1]}\n"
    )
    known = known_hosts.load([file])
    assert [w.split(": ")[0] for w in known.warnings] == [f"{file}:2", f"{file}:5", f"{file}:6"]
    assert [_blob(k) for k in known.keys_for("host.example.com")] == [a[1]]  # not the CA
    revoked_key = known.revoked[0].key
    assert known.revoked_entry(revoked_key).where == f"{file}:4"
    assert known.revoked_entry(known.keys_for("host.example.com")[0]) is None


def test_several_files_missing_ones_ignored(tmp_path):
    a, b = _key(tmp_path, "a"), _key(tmp_path, "b")
    first, second = tmp_path / "one", tmp_path / "two"
    first.write_text(f"h {a[0]} {a[1]}\n")
    second.write_text(f"h {b[0]} {b[1]}\n")
    known = known_hosts.load([first, tmp_path / "missing", second])
    assert known.files == [first, second]
    assert [_blob(k) for k in known.keys_for("h")] == [a[1], b[1]]
