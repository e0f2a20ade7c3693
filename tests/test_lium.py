"""pod.ls, pod.up, pod.ps, pod.down: the real Lium SDK against a local fake of the Lium API
(ops_tasks.testing.fake_lium), and pods that are real sshd test pods."""

import json
import subprocess

import pytest

from ops_tasks import ssh_config
from ops_tasks.testing.fake_lium import FakeLium
from conftest import needs_isolation, one_line_error, run_ops

pytest.importorskip("lium.sdk", reason="the Lium SDK (ops-tasks[lium]) is not installed")

OUT = "/mnt/pod_artifacts/outputs"
# The API key the tests use: it must never show up in any output or file.
CANARY_KEY = "lium-canary-7f3e9b1d2c4a"
USER_ENTRIES = (
    "# my own entries\n"
    "Host github.com\n"
    "    IdentityFile ~/.ssh/github\n"
    "\n"
    "Host *\n"
    "  ServerAliveInterval 30\n"
    "  User nobody"  # no newline at the end: kept so
)


@pytest.fixture
def fake():
    api = FakeLium(CANARY_KEY).start()
    yield api
    api.stop()


@pytest.fixture
def lium_ops(client, project, fake):
    """Run `ops` as a user would: a subprocess in `project`, HOME=client,
    the SDK pointed at the fake; stdin is not a terminal."""

    def run(*args, env=None, timeout=120):
        environment = client.env(**{**fake.env(), "XDG_CACHE_HOME": str(client.home / ".cache"), **(env or {})})
        proc = run_ops(args, cwd=project, env=environment, timeout=timeout)
        assert "canary" not in proc.stdout + proc.stderr, "the API key was printed"
        assert "Traceback" not in proc.stderr, proc.stderr
        try:
            proc.json = json.loads(proc.stdout)
        except ValueError:
            proc.json = None
        return proc

    return run


def lium_fleet(fake, volumes=("my_volume",)):
    fake.add_executor("NVIDIA A100-SXM4-80GB", 8, 1.25, "US", "United States", "Dallas")
    fake.add_executor("NVIDIA A100-SXM4-80GB", 1, 1.10, "DE", "Germany", "Berlin")
    fake.add_executor("NVIDIA H100 80GB HBM3", 8, 2.50, "US", "United States", "Austin")
    return {name: fake.add_volume(name)["id"] for name in volumes}


def point_at(fake, pod):
    """Rented pods answer SSH where this sshd test pod listens."""
    fake.ssh = {"user": pod.user, "host": "127.0.0.1", "port": pod.port}


# ---------------------------------------------------------------- no SDK, bad input


@pytest.mark.parametrize("task", ["pod.ls", "pod.up", "pod.ps", "pod.down"])
def test_without_the_sdk_each_task_says_how_to_install_it(task, lium_ops, tmp_path):
    shim = tmp_path / "no-sdk" / "lium"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'lium'\", name='lium')\n")

    result = lium_ops(task, env={"PYTHONPATH": str(shim.parent)})

    assert one_line_error(result, 2) == f"error: {task} needs the Lium SDK: pip install 'ops-tasks[lium]'"


@pytest.mark.parametrize("args, fragment", [
    ((), "needs --config EXECUTOR"),
    (("--gpu", "A100", "--ttl", "12"), "--ttl '12' needs a unit"),
    (("--gpu", "A100", "--ttl", "soon"), "--ttl must be"),
    (("--gpu", "A100", "--no-volume", "--volume", "x"), "--no-volume contradicts"),
    (("--gpu", "A100", "--name", "a b"), "--name 'a b'"),
    (("--gpu", "A100", "--alias", "-oProxyCommand=x"), "--alias"),
    (("--config", "3"), "run pod.ls first"),
    (("--gpu", "A100", "--count", "many"), "--count must be a whole number"),
    (("--gpu", "A100"), "pass --yes to confirm"),  # stdin is not a terminal
])
def test_bad_input_is_refused_before_any_contact(args, fragment, lium_ops, fake, client):
    before = client.config.read_bytes()

    result = lium_ops("pod.up", *args)

    assert fragment in one_line_error(result, 2)
    assert fake.requests == []
    assert client.config.read_bytes() == before


def test_a_refused_api_key_is_one_line_without_the_key(lium_ops, fake):
    result = lium_ops("pod.ls", env={"LIUM_API_KEY": "lium-canary-wrong-key-123"})

    line = one_line_error(result, 2)
    assert "refused the API key from env:LIUM_API_KEY" in line and "lium init" in line
    assert "***" not in line  # not even masked: the key never reached the message


def test_without_an_api_key_it_says_how_to_get_one(lium_ops, fake):
    result = lium_ops("pod.ps", env={"LIUM_API_KEY": ""})

    assert "No API key found" in one_line_error(result, 2) and "lium init" in result.stderr
    assert fake.requests == []


# ---------------------------------------------------------------- pod.ls


def test_ls_lists_executors_as_a_table_and_as_json(lium_ops, fake):
    lium_fleet(fake)

    table = lium_ops("pod.ls")
    a100 = lium_ops("pod.ls", "--gpu", "A100", "--json")
    eights = lium_ops("pod.ls", "--gpu", "A100", "--count", "8", "--json")

    assert table.returncode == 0, table.stderr
    assert "1x A100" in table.stdout and "8x H100" in table.stdout and "$20.00/h" in table.stdout
    assert "Berlin, DE" in table.stdout
    rows = a100.json["executors"]
    assert [(r["index"], r["gpu_type"], r["gpu_count"], r["price_per_hour"], r["country_code"]) for r in rows] == [
        (1, "A100", 1, 1.1, "DE"), (2, "A100", 8, 10.0, "US")]
    assert all(r["id"] and r["huid"] for r in rows)
    assert [(r["gpu_count"]) for r in eights.json["executors"]] == [8]


def test_up_dry_run_contacts_nothing(lium_ops, fake, client):
    lium_fleet(fake)
    lium_ops("pod.ls", "--gpu", "A100")
    fake.requests.clear()
    before = client.config.read_bytes()

    result = lium_ops("pod.up", "--config", "2", "--gpu", "H100", "--ttl", "12h", "--dry-run", "--json")

    assert result.returncode == 0, result.stderr
    would = result.json["would_rent"]
    assert would["listed_as"]["gpu_count"] == 8 and would["volume"] == "my_volume" and would["name"] == "ops-lium"
    assert would["ttl_s"] == 12 * 3600 and would["ssh_key"] == str(client.key)
    assert "are ignored" in result.stderr  # --config wins over the filters
    assert fake.requests == [] and fake.pods == {}
    assert client.config.read_bytes() == before


def test_up_with_a_missing_volume_exits_1_and_rents_nothing(lium_ops, fake, client):
    lium_fleet(fake, volumes=("datasets",))
    before = client.config.read_bytes()

    result = lium_ops("pod.up", "--gpu", "A100", "--yes")

    line = one_line_error(result, 1)
    assert "volume 'my_volume' not found (volumes: datasets)" in line and "lium volumes new my_volume" in line
    assert fake.rents() == [] and fake.pods == {}
    assert client.config.read_bytes() == before


# ---------------------------------------------------------------- pod.up on a real sshd pod


@needs_isolation
def test_up_rents_attaches_the_default_volume_and_leaves_an_alias_that_reaches_the_pod(
        lium_ops, fake, pod_factory, client):
    volumes = lium_fleet(fake)
    fake.pending_polls = 3  # PENDING for a few polls: progress on stderr
    pod = pod_factory()
    point_at(fake, pod)
    with client.config.open("a") as handle:
        handle.write(USER_ENTRIES)
    before = client.config.read_text()

    result = lium_ops("pod.up", "--gpu", "A100", "--count", "8", "--ttl", "12h", "--yes", "--json")

    assert result.returncode == 0, (result.stdout, result.stderr)
    report = result.json
    assert report["rented"] is True and report["pod"]["name"] == "ops-lium"
    (rent,) = fake.rents()
    assert rent["volume_id"] == volumes["my_volume"] and report["volume"]["name"] == "my_volume"
    assert rent["user_public_key"] == [client.public_key.strip()]
    assert report["pod"]["termination_at"] and report["pod"]["destination"] == f"{pod.user}@127.0.0.1:{pod.port}"
    assert "PENDING" in result.stderr
    # the pod.status check, through the alias
    assert report["status"]["ok"] and report["status"]["reachable"] and report["status"]["volume"]["mounted"]
    # ~/.ssh/config: the new block, every other entry byte for byte, mode 0600
    after = client.config.read_text()
    assert ssh_config.without_host(after, "lium") == before
    block = ssh_config.find_host(client.config, "lium")["options"]
    assert (block["hostname"], block["port"], block["user"]) == ("127.0.0.1", str(pod.port), pod.user)
    assert client.config.stat().st_mode & 0o777 == 0o600
    # the system ssh reaches the pod through the alias
    ssh = subprocess.run(client.ssh_argv("lium") + ["echo", "via-alias"], env=client.env(), capture_output=True,
                         text=True, timeout=30)
    assert ssh.stdout.strip() == "via-alias", ssh.stderr

    again = lium_ops("pod.up", "--gpu", "A100", "--count", "8", "--ttl", "12h", "--yes", "--json")

    assert again.returncode == 0, again.stderr
    assert again.json["rented"] is False and again.json["pod"]["id"] == report["pod"]["id"]
    assert len(fake.rents()) == 1 and len(fake.pods) == 1
    assert client.config.read_text() == after and again.json["ssh_config_changed"] is False

    ps = lium_ops("pod.ps", "--json")
    (listed,) = ps.json["pods"]
    assert (listed["name"], listed["status"], listed["gpu_count"], listed["aliases"]) == (
        "ops-lium", "RUNNING", 8, ["lium"])
    assert listed["destination"] == report["pod"]["destination"] and listed["termination_at"]
    assert listed["price_per_hour"] == 10.0 and listed["cost_usd"] is not None
    assert "ops-lium" in lium_ops("pod.ps").stdout


@needs_isolation
def test_up_takes_volume_by_env_by_flag_by_id_or_none(lium_ops, fake, pod_factory, client):
    from lium.sdk.utils import generate_huid

    executors = [fake.add_executor("NVIDIA A100-SXM4-80GB", 8, 1.25)["id"] for _ in range(4)]
    volumes = {name: fake.add_volume(name)["id"] for name in ("my_volume", "data", "other", "by-id")}
    point_at(fake, pod_factory())

    by_env = lium_ops("pod.up", "--gpu", "A100", "--alias", "a", "--yes", "--json", env={"LIUM_DEFAULT_VOLUME": "data"})
    chosen = max(set(executors) - {fake.pods[p]["executor_id"] for p in fake.pods})
    by_flag = lium_ops("pod.up", "--config", generate_huid(chosen), "--alias", "b", "--volume", "other", "--yes",
                       "--json", env={"LIUM_DEFAULT_VOLUME": "data"})
    by_id = lium_ops("pod.up", "--gpu", "A100", "--alias", "c", "--volume-id", volumes["by-id"], "--yes", "--json")
    no_volume = lium_ops("pod.up", "--gpu", "A100", "--alias", "d", "--no-volume", "--yes", "--json")

    for result in (by_env, by_flag, by_id, no_volume):
        assert result.returncode == 0, (result.stdout, result.stderr)
    assert [r["volume_id"] for r in fake.rents()] == [volumes["data"], volumes["other"], volumes["by-id"], None]
    assert [r["pod_name"] for r in fake.rents()] == ["ops-a", "ops-b", "ops-c", "ops-d"]
    assert by_flag.json["executor"]["id"] == chosen
    assert no_volume.json["volume"] is None and no_volume.json["status"]["ok"]
    assert [b["alias"] for b in ssh_config.host_blocks(client.config.read_text())] == ["pod0", "a", "b", "c", "d"]


# ---------------------------------------------------------------- pod.down


def submit(ops_run, host, project, runs):
    config = project / "runs.json"
    config.write_text(json.dumps({"remote_repo": "/root", "runs": runs}))
    return ops_run("runs.submit", "--host", host, "--config", str(config), "--json")


@needs_isolation
def test_down_refuses_while_runs_run_or_are_unfetched_and_force_overrides(
        lium_ops, fake, pod_factory, client, project):
    lium_fleet(fake)
    pod = pod_factory()
    point_at(fake, pod)
    before = client.config.read_text()
    assert lium_ops("pod.up", "--gpu", "A100", "--count", "8", "--name", "p1", "--yes").returncode == 0
    assert lium_ops("pod.up", "--gpu", "A100", "--count", "1", "--name", "p2", "--alias", "lium2",
                    "--yes").returncode == 0
    assert submit(lium_ops, "lium", project, [{"run_id": "busy", "command": "sleep 60"}]).returncode == 0

    running = lium_ops("pod.down", "--name", "p1", "--yes", "--json")
    forced = lium_ops("pod.down", "--name", "p2", "--force", "--forget", "--yes", "--json")

    assert running.returncode == 1
    assert [(r["run_id"], r["state"] in ("queued", "running")) for r in running.json["check"]["active"]] == [
        ("busy", True)]
    assert "busy" in running.json["error"] and "--force" in running.json["error"]
    assert forced.returncode == 0 and forced.json["removed"] and forced.json["forgot"] == ["lium2"]
    assert [p["pod_name"] for p in fake.pods.values()] == ["p1"]

    assert lium_ops("runs.cancel", "--host", "lium", "--run-id", "busy").returncode == 0
    unfetched = lium_ops("pod.down", "--name", "p1", "--yes", "--json")
    assert unfetched.returncode == 1
    assert [(r["run_id"], r["reason"]) for r in unfetched.json["check"]["unfetched"]] == [("busy", "never fetched")]

    assert lium_ops("artifacts.fetch", "--host", "lium", "--run-id", "busy").returncode == 0
    # the run finishes again on the pod after the fetch: what the laptop has is stale
    fetched_at = json.loads((project / "artifacts" / "fetched" / "busy.json").read_text())["fetched_at"]
    pod.sh(f"python3 -c \"import json; p='{OUT}/busy/status.json'; s=json.load(open(p)); "
           f"s['finished']={fetched_at + 0.01!r}; json.dump(s, open(p,'w'))\"")
    stale = lium_ops("pod.down", "--name", "p1", "--yes", "--json")
    assert stale.returncode == 1
    assert stale.json["check"]["unfetched"][0]["reason"] == "finished again after it was fetched"

    assert lium_ops("artifacts.fetch", "--host", "lium", "--run-id", "busy").returncode == 0
    pod.sh(f"echo late > {OUT}/busy/eval_late.jsonl")  # say, an artifacts.archive after the fetch
    changed = lium_ops("pod.down", "--name", "p1", "--yes", "--json")
    assert changed.returncode == 1
    assert changed.json["check"]["unfetched"][0]["reason"].startswith("changed after it was fetched")

    assert lium_ops("artifacts.fetch", "--host", "lium", "--run-id", "busy").returncode == 0
    removed = lium_ops("pod.down", "--name", "p1", "--forget", "--yes", "--json")

    assert removed.returncode == 0, removed.stderr
    assert removed.json["removed"] and removed.json["check"]["runs"] == 1 and removed.json["forgot"] == ["lium"]
    assert fake.pods == {}
    assert client.config.read_text() == before  # both blocks gone, the rest as it was

    again = lium_ops("pod.down", "--name", "p1", "--forget", "--yes", "--json")
    assert again.returncode == 0 and again.json["found"] is False and again.json["forgot"] == []


@needs_isolation
def test_down_refuses_when_the_pod_cannot_be_checked_unless_forced(lium_ops, fake, pod_factory):
    lium_fleet(fake)
    pod = pod_factory()
    point_at(fake, pod)
    assert lium_ops("pod.up", "--gpu", "H100", "--yes").returncode == 0
    pod.stop()

    refused = lium_ops("pod.down", "--name", "ops-lium", "--yes")
    forced = lium_ops("pod.down", "--name", "ops-lium", "--yes", "--force")

    assert "cannot check the runs of pod ops-lium" in one_line_error(refused, 1)
    assert "refused" in refused.stderr and "--force" in refused.stderr
    assert forced.returncode == 0 and fake.pods == {}


def test_a_host_block_of_the_users_own_is_never_replaced_nor_removed(lium_ops, fake, client):
    client.config.write_text("Host lium\n  HostName my-own-box\n")
    before = client.config.read_bytes()
    lium_fleet(fake)

    up = lium_ops("pod.up", "--gpu", "A100", "--yes")

    assert "already has a Host lium block that pod.up did not write" in one_line_error(up, 2)
    assert fake.requests == []  # refused before anything was rented
    lium_ops("pod.down", "--name", "ops-lium", "--forget", "--alias", "lium", "--force", "--yes")
    assert client.config.read_bytes() == before  # --forget leaves the user's own block alone


def test_a_fetch_record_of_another_host_does_not_count(tmp_path):
    from ops_tasks.operations.teardown import unfetched_reason

    (tmp_path / "status.json").write_text(json.dumps({"run_id": "r", "state": "succeeded", "attempt": 1,
                                                      "finished": 10.0}))
    run = {"run_id": "r", "run_dir": f"{OUT}/r", "finished": 10.0, "attempt": 1}
    record = {"destination": "lium-b", "remote_dir": f"{OUT}/r", "fetched_at": 20.0, "local_dir": str(tmp_path)}
    assert unfetched_reason(run, record, "lium-a").startswith("the fetched copy came from another host")
    assert unfetched_reason(run, record, "lium-b") is None
    assert unfetched_reason(dict(run, finished=30.0), record, "lium-b") == "finished again after it was fetched"
    assert unfetched_reason(dict(run, attempt=2), record, "lium-b") == "finished again after it was fetched"
    assert unfetched_reason(run, None, "lium-b") == "never fetched"


def test_a_pod_whose_clock_is_an_hour_off_keeps_its_fetched_runs_fetched(tmp_path):
    from ops_tasks.operations.teardown import unfetched_reason

    ahead = 1_800_000_000.0 + 3600  # the pod's clock; the laptop fetched at its own 1_800_000_000
    (tmp_path / "status.json").write_text(json.dumps({"run_id": "r", "state": "succeeded", "attempt": 1,
                                                      "finished": ahead}))
    record = {"destination": "lium-b", "remote_dir": f"{OUT}/r", "fetched_at": 1_800_000_000.0,
              "local_dir": str(tmp_path)}
    run = {"run_id": "r", "run_dir": f"{OUT}/r", "finished": ahead, "attempt": 1}
    assert unfetched_reason(run, record, "lium-b") is None  # not "finished again": the pod would be kept, billed
