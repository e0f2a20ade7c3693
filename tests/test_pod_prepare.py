"""pod.bootstrap, pod.sync and pod.wandb on real sshd pods: idempotent, never locking anyone out,
never showing a key."""

import os
import subprocess

import pytest

from conftest import needs_isolation

pytestmark = needs_isolation

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}


def git(*args, cwd=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_copies_keys_in_and_leaves_authorized_keys_alone(pod, ops):
    pod.sh("mkdir -p /mnt/.ssh && cd /mnt/.ssh && printf 'PRIVATE' > id_ed25519 && printf 'ssh-ed25519 AAA x' > "
           "id_ed25519.pub && printf 'Host gh\\n  HostName github.com\\n' > config && "
           "printf 'gitlab.com ssh-ed25519 AAAAGITLAB\\n' > known_hosts && printf 'ATTACKER' > authorized_keys && "
           "printf 'touch /root/bootstrapped\\nsleep 600 &\\n' > /mnt/bootstrap-pod.sh")
    before = pod.authorized_keys_path.read_bytes()

    first = ops("pod.bootstrap", "--host", pod.alias, "--json")
    second = ops("pod.bootstrap", "--host", pod.alias, "--json")

    assert first.returncode == 0, first.stdout
    assert pod.authorized_keys_path.read_bytes() == before  # byte for byte
    assert ops("pod.status", "--host", pod.alias).returncode == 0  # still reachable
    assert not (pod.home / ".ssh").is_symlink()
    assert oct((pod.home / ".ssh").stat().st_mode & 0o777) == "0o700"
    assert oct((pod.home / ".ssh" / "id_ed25519").stat().st_mode & 0o777) == "0o600"
    assert oct((pod.home / ".ssh" / "id_ed25519.pub").stat().st_mode & 0o777) == "0o644"
    known = (pod.home / ".ssh" / "known_hosts").read_text()
    assert "gitlab.com ssh-ed25519 AAAAGITLAB" in known and known.count("github.com ") == 3
    assert (pod.home / "bootstrapped").exists()
    steps = {s["step"]: s for s in second.json["steps"]}
    assert "0 copied, 3 unchanged" in steps["ssh-keys"]["detail"] and "authorized_keys" in steps["ssh-keys"]["detail"]
    assert "0 GitHub host key(s) added" in steps["github-known-hosts"]["detail"]  # idempotent
    assert (pod.home / ".ssh" / "known_hosts").read_text() == known


def test_bootstrap_and_wandb_refuse_the_local_machine(ops):
    for task in ("pod.bootstrap", "pod.wandb"):
        result = ops(task, "--host", "local")
        assert result.returncode == 2 and "not this machine" in result.stderr


# ---------------------------------------------------------------- sync


@pytest.fixture
def origin(tmp_path):
    """A bare repo with main (two commits apart), a feature branch and a pull request ref."""
    bare, work = tmp_path / "origin.git", tmp_path / "work"
    git("init", "--bare", "-b", "main", str(bare))
    git("clone", str(bare), str(work))
    (work / "f").write_text("1")
    git("add", "f", cwd=work)
    git("commit", "-m", "one", cwd=work)
    git("push", "origin", "main", cwd=work)
    git("checkout", "-b", "feature", cwd=work)
    (work / "f").write_text("feature")
    git("commit", "-am", "feature", cwd=work)
    git("push", "origin", "feature", cwd=work)
    git("checkout", "-b", "pr", "main", cwd=work)
    (work / "f").write_text("pr")
    git("commit", "-am", "pr", cwd=work)
    git("push", "origin", "pr:refs/pull/7/head", cwd=work)
    git("checkout", "main", cwd=work)
    return bare, work


def test_sync_clones_then_follows_branches_prs_and_refs(pod, ops, origin):
    bare, work = origin
    sync = ["pod.sync", "--host", pod.alias, "--remote-repo", "/root/repo", "--json"]

    cloned = ops(*sync, "--repo-url", f"file://{bare}")
    assert cloned.returncode == 0, cloned.stdout
    assert cloned.json["commit"] == git("rev-parse", "main", cwd=work) and cloned.json["branch"] == "main"

    (work / "f").write_text("2")
    git("commit", "-am", "two", cwd=work)
    git("push", "origin", "main", cwd=work)
    pulled = ops(*sync)
    assert pulled.json["commit"] == git("rev-parse", "main", cwd=work)
    assert ops(*sync).json["commit"] == pulled.json["commit"]  # again: nothing changes

    assert ops(*sync, "--branch", "feature").json["commit"] == git("rev-parse", "feature", cwd=work)
    assert ops(*sync, "--pr", "7").json["commit"] == git("rev-parse", "pr", cwd=work)
    assert ops(*sync, "--pr", "7").json["commit"] == git("rev-parse", "pr", cwd=work)  # again, on that branch
    pod.sh("echo 'local edit' > /root/repo/f")
    not_a_branch = ops(*sync, "--branch", "f")
    assert not_a_branch.returncode == 1  # a file of that name is not checked out over the edit
    assert pod.sh("cat /root/repo/f").stdout == "local edit\n"
    pod.sh("git -C /root/repo checkout -- f")
    first = git("rev-list", "--max-parents=0", "main", cwd=work)
    detached = ops(*sync, "--ref", first)
    assert detached.json["commit"] == first and detached.json["branch"] == "HEAD"


def test_sync_install_runs_in_the_repo_with_caches_off_the_volume(pod, ops, origin):
    bare, _ = origin
    result = ops("pod.sync", "--host", pod.alias, "--remote-repo", "/root/repo", "--repo-url", f"file://{bare}",
                 "--install", "read -r x; echo \"$PWD $PIP_CACHE_DIR $HF_HOME\" > /root/install-env", "--json")

    assert result.returncode == 0, result.stdout
    assert pod.sh("cat /root/install-env").stdout.split() == ["/root/repo", "/root/.cache/pip", "/mnt/hf"]


def test_sync_without_a_repo_or_url_says_how(pod, ops):
    result = ops("pod.sync", "--host", pod.alias, "--remote-repo", "/root/none", "--json")

    assert result.returncode == 1
    assert "pass --repo-url" in result.json["error"]


# ---------------------------------------------------------------- wandb


def test_wandb_writes_netrc_and_the_key_goes_nowhere_else(pod, ops, client):
    canary = "wandb-canary-0123456789abcdef0123456789abcdef"
    (pod.home / ".netrc").write_text("machine example.com login me password other\n")

    first = ops("pod.wandb", "--host", pod.alias, "--json", env={"WANDB_API_KEY": canary})
    netrc = (pod.home / ".netrc").read_text()
    second = ops("pod.wandb", "--host", pod.alias, env={"WANDB_API_KEY": canary})

    assert first.returncode == 0, first.stdout + first.stderr
    assert first.json["result"] == "WANDB_NETRC_OK" and first.json["netrc_mode"] == "600"
    assert "WANDB_NETRC_OK" in second.stdout
    assert (pod.home / ".netrc").read_text() == netrc  # idempotent
    assert "machine example.com login me password other" in netrc and canary in netrc
    for output in (first, second):
        assert canary not in output.stdout + output.stderr
    holders = pod.sh(f"grep -rl {canary} /root /mnt 2>/dev/null", check=False).stdout.split()
    assert holders == ["/root/.netrc"]


def test_wandb_upgrades_a_script_that_only_exports_the_key(pod, ops):
    pod.sh("printf 'export WANDB_ENTITY=team\\nWANDB_API_KEY=fromscript0123456789\\n' > /mnt/set-wandb-api-key.sh")

    result = ops("pod.wandb", "--host", pod.alias, "--json")

    assert result.returncode == 0, result.stdout
    assert result.json["source"] == "/mnt/set-wandb-api-key.sh" and result.json["upgraded"] is True
    original = "export WANDB_ENTITY=team\nWANDB_API_KEY=fromscript0123456789\n"
    assert pod.sh(f"cat {result.json['backup']}").stdout == original
    assert pod.sh("cat /mnt/set-wandb-api-key.sh").stdout.startswith(original)  # every line kept
    pod.sh("rm /root/.netrc && bash /mnt/set-wandb-api-key.sh")  # the upgraded script works on its own
    assert "password fromscript0123456789" in (pod.home / ".netrc").read_text()
    again = ops("pod.wandb", "--host", pod.alias, "--json")
    assert again.json["upgraded"] is False  # already writes ~/.netrc


def test_wandb_without_any_key_says_where_to_put_one(pod, ops):
    result = ops("pod.wandb", "--host", pod.alias, "--json")

    assert result.returncode == 1
    assert "WANDB_API_KEY" in result.json["error"]
    assert not (pod.home / ".netrc").exists()
