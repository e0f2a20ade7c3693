"""Real sshd pods on 127.0.0.1 for tests and benchmarks (docs/ARCHITECTURE.md, "Testing").

A pod is a real OpenSSH server on a free loopback port with its own host key. As root
(where `unshare` works) each pod's sshd runs in its own mount namespace with

- a tmpfs mounted at /mnt: the pod's persistent volume, a real mount point;
- a temp folder bind-mounted over the login user's home, so the pod has its own
  ~/.ssh, ~/.netrc and tmux sockets (TMUX_TMPDIR points into that home);

so no test can touch the real ones. Elsewhere the pod's volume is a temp folder, and
`pod.isolated` is False: tests that need a real mount or a private home skip.

The client side (the "laptop") is a `ClientHome`: a HOME folder with its own key,
~/.ssh/config aliases and known_hosts. The user's own files are never read or written.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Optional

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# Variables of the developer's own environment that must not leak into a test's client.
CLIENT_ENV_DROP = ("SSH_AUTH_SOCK", "OPS_", "VLLM_BASE_URL", "OPENAI_API_BASE", "LIUM_", "WANDB_", "HF_TOKEN")


def can_isolate() -> bool:
    """True when pods can have their own mount namespace (root, and unshare works)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


_HANDED_OUT: set = set()


def free_port() -> int:
    """A loopback port free now, never one this process handed out before: the kernel may give
    a just-closed port again, and two servers a test starts side by side (a replica per pod:
    loopback pods share ports) then collide on it (seen: fa0 and fa1 both on 40047)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


class SshPod:
    """One sshd pod. `start()` it, `stop()` it; it only ever kills what it started."""

    def __init__(self, root: Path, name: str, client_public_key: str, *, volume: bool = True,
                 gpus=None, hide_tools=(), isolate: Optional[bool] = None, volume_size: str = "256m"):
        self.root = Path(root)
        self.name = name
        self.client_public_key = client_public_key
        self.want_volume = volume
        self.volume_size = volume_size  # of the tmpfs at /mnt: small, to play a full volume
        self.gpus = gpus
        self.hide_tools = tuple(hide_tools)
        self.isolated = can_isolate() if isolate is None else isolate
        self.port = None
        self.proc = None
        self.namespace = None
        self.home = self.root / "home"  # bind-mounted over the login user's home
        self.bin = self.root / "bin"  # first on the pod's PATH (fake nvidia-smi lives here)
        self.log = self.root / "sshd.log"
        self.user = "root" if self.isolated else _current_user()
        # Inside the pod: /mnt when isolated, else a plain folder standing in for it.
        self.volume = "/mnt" if self.isolated else str(self.root / "volume")

    # -- lifecycle

    def start(self, attempts: int = 3, port: Optional[int] = None) -> "SshPod":
        self._lay_out()
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        for _ in range(attempts):
            self.port = port or free_port()
            self._write_sshd_config()
            # The log is kept across restarts: only what this start writes may count.
            log_offset = self.log.stat().st_size if self.log.exists() else 0
            self.proc = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         start_new_session=True)
            if self._wait_listening(log_offset):
                if self.isolated:
                    self.namespace = self._own_namespace()
                return self
            self._kill(self.proc.pid)
        raise RuntimeError(f"sshd pod {self.name} did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def _lay_out(self) -> None:
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        os.chmod(ssh_dir, 0o700)
        keys = self.authorized_keys_path
        keys.write_text(self.client_public_key)
        os.chmod(keys, 0o600)
        (self.home / ".tmux").mkdir(mode=0o700, exist_ok=True)
        self.bin.mkdir(exist_ok=True)
        host_key = self.root / "ssh_host_ed25519_key"
        if not host_key.exists():
            _keygen(host_key, f"{self.name}-host")
        if not self.isolated:
            Path(self.volume).mkdir(exist_ok=True)
        if self.gpus is not None:
            self.set_gpus(self.gpus)
        if self.hide_tools:
            self._link_system_tools()

    def _link_system_tools(self) -> None:
        """A PATH folder linking every system program except hide_tools: a pod lacking them."""
        sysbin = self.root / "sysbin"
        sysbin.mkdir(exist_ok=True)
        for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
            for program in Path(folder).iterdir():
                link = sysbin / program.name
                if program.name not in self.hide_tools and not link.exists():
                    link.symlink_to(program)

    @property
    def path(self) -> str:
        """The PATH of the pod's sessions: its own bin first (fake nvidia-smi), then the system."""
        system = str(self.root / "sysbin") if self.hide_tools else "/usr/local/bin:/usr/bin:/bin"
        return f"{self.bin}:{system}"

    @property
    def authorized_keys_path(self) -> Path:
        return self.home / ".ssh" / "authorized_keys"

    @property
    def host_public_key(self) -> str:
        return (self.root / "ssh_host_ed25519_key.pub").read_text().split()[1]

    def regenerate_host_key(self) -> None:
        """Give the pod a new host key (as a re-created pod has); takes effect on restart."""
        for suffix in ("", ".pub"):
            (self.root / f"ssh_host_ed25519_key{suffix}").unlink()
        _keygen(self.root / "ssh_host_ed25519_key", f"{self.name}-host-2")

    def _write_sshd_config(self) -> None:
        home = "/root" if self.isolated else str(Path.home())
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.root / 'ssh_host_ed25519_key'}",
            f"PidFile {self.root / 'sshd.pid'}",
            "LogLevel VERBOSE",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes yes",
            "MaxStartups 100:30:200",
            "MaxSessions 50",
            "AllowTcpForwarding yes",
            "Subsystem sftp internal-sftp",
            # The pod's tools first on PATH; tmux sockets inside the pod's own home.
            # OPS_FAKE_GPU_DIR: where the vLLM stand-in registers its fake GPU memory.
            f"SetEnv PATH={self.path} TMUX_TMPDIR={home}/.tmux OPS_FAKE_GPU_DIR={self.bin}",
        ]
        if self.isolated:
            lines.append("AuthorizedKeysFile .ssh/authorized_keys")
        else:
            lines.append(f"AuthorizedKeysFile {self.authorized_keys_path}")
        (self.root / "sshd_config").write_text("\n".join(lines) + "\n")

    def _command(self) -> list:
        sshd = [SSHD, "-D", "-E", str(self.log), "-f", str(self.root / "sshd_config")]
        if not self.isolated:
            return sshd
        mounts = []
        if self.want_volume:
            mounts.append(f"mount -t tmpfs -o size={self.volume_size},mode=0755 ops-test-volume /mnt")
        mounts.append(f"mount --bind {self.home} /root")
        script = " && ".join(mounts) + ' && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "pod", *sshd]

    def _wait_listening(self, log_offset: int, timeout: float = 10.0) -> bool:
        # Exactly sshd's line: "Bind to port N ... failed" must not count as started.
        ready = f"Server listening on 127.0.0.1 port {self.port}.".encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.log.exists():
                with self.log.open("rb") as log:
                    log.seek(log_offset)
                    if ready in log.read():
                        return True
            time.sleep(0.02)
        return False

    def restart(self) -> "SshPod":
        """Stop and start again on the same port (after regenerate_host_key, say)."""
        port = self.port
        self.stop()
        return self.start(port=port)

    def stop(self) -> None:
        """Kill this pod's sshd and everything running in its namespace (tmux servers too)."""
        if self.proc is None:
            return
        victims = [p for p in self.namespace_pids() if p != self.proc.pid] if self.isolated else []
        for pid in [self.proc.pid, *victims]:
            self._kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(_alive(p) for p in victims):
            time.sleep(0.02)
        for pid in victims:
            self._kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self._kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def _own_namespace(self) -> str:
        """The pod's mount namespace; refuses to return ours (stop() kills all inside it)."""
        namespace = os.readlink(f"/proc/{self.proc.pid}/ns/mnt")
        if namespace == os.readlink("/proc/self/ns/mnt"):
            self._kill(self.proc.pid)
            raise RuntimeError(f"sshd pod {self.name} runs in the test's own mount namespace")
        return namespace

    def namespace_pids(self) -> list:
        """Pids of the processes inside this pod's mount namespace (its sessions' children)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "mnt") == self.namespace:
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    @staticmethod
    def _kill(pid: int, sig=signal.SIGKILL) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # -- looking at it

    @property
    def destination(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def _log_count(self, needle: str) -> int:
        if not self.log.exists():
            return 0
        return sum(needle in line for line in self.log.read_text(errors="replace").splitlines())

    def accepted_connections(self) -> int:
        """SSH connections this pod authenticated (from the sshd log)."""
        return self._log_count("Accepted publickey for")

    def sessions(self) -> int:
        """SSH sessions (exec/shell channels) this pod started: the round trips."""
        return self._log_count("Starting session:")

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell script inside the pod, not over SSH (for setting up and looking)."""
        home = "/root" if self.isolated else str(Path.home())
        env = {"PATH": self.path, "HOME": home, "TMUX_TMPDIR": f"{home}/.tmux"}
        if self.isolated:
            argv = ["nsenter", "--target", str(self.proc.pid), "--mount", "bash", "-c", script]
        else:
            argv = ["bash", "-c", script]
        return subprocess.run(argv, capture_output=True, text=True, check=check, env=env)

    def install_vllm_stub(self) -> str:
        """Put the vLLM stand-in on the pod's PATH as `ops-vllm-stub` (a copy: stdlib only)."""
        from . import vllm_stub

        program = self.bin / "ops-vllm-stub"
        program.write_text("#!/usr/bin/env python3\n" + Path(vllm_stub.__file__).read_text())
        os.chmod(program, 0o755)
        return program.name

    def set_gpus(self, gpus: list) -> None:
        """Put a fake nvidia-smi on the pod's PATH answering for these GPUs (see fake_gpu)."""
        from .fake_gpu import install_fake_nvidia_smi

        install_fake_nvidia_smi(self.bin, gpus)


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _alive(pid: int) -> bool:
    """True while pid runs (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class ClientHome:
    """The laptop side of a test: a HOME with its own SSH key, ~/.ssh/config and known_hosts."""

    def __init__(self, root: Path):
        self.home = Path(root)
        self.ssh_dir = self.home / ".ssh"
        self.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key = self.ssh_dir / "id_ed25519"
        if not self.key.exists():
            _keygen(self.key, "ops-tasks-test-client")
        self.config = self.ssh_dir / "config"
        self.known_hosts = self.ssh_dir / "known_hosts"
        self.config.touch(mode=0o600)
        # Short, under /tmp: tmux's socket (TMUX_TMPDIR/tmux-UID/NAME) must fit a Unix socket's
        # 107 bytes, and pytest's own folders (pytest-NNNN/popen-gwN/<test name>) grow past it.
        self.tmux_dir = Path(tempfile.mkdtemp(prefix="ops-tmux-"))
        weakref.finalize(self, shutil.rmtree, str(self.tmux_dir), True)

    @property
    def state_home(self) -> Path:
        """This laptop's XDG_STATE_HOME: its store of rented pods is state_home/ops-tasks/state.db
        (set OPS_STATE_DIR to state_home / "ops-tasks" to read it from the test's own process)."""
        return self.home / ".local" / "state"

    @property
    def public_key(self) -> str:
        return self.key.with_suffix(".pub").read_text()

    def add_alias(self, alias: str, pod: SshPod, **options) -> None:
        """Append a `Host alias` block reaching the pod, as pod.up (or a user) writes one."""
        lines = [f"Host {alias}", "  HostName 127.0.0.1", f"  Port {pod.port}", f"  User {pod.user}",
                 f"  IdentityFile {self.key}", "  IdentitiesOnly yes"]
        lines += [f"  {key} {value}" for key, value in options.items()]
        with self.config.open("a") as handle:
            handle.write("\n".join(lines) + "\n\n")

    def env(self, **extra) -> dict:
        """An environment for the CLI: this HOME, none of the developer's ops settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(CLIENT_ENV_DROP)}
        env["HOME"] = str(self.home)
        env["XDG_STATE_HOME"] = str(self.state_home)  # the store of rented pods (ops_tasks/state.py)
        # The `local` profile's tmux server lives here, never beside the developer's own.
        env["TMUX_TMPDIR"] = str(self.tmux_dir)
        env.update(extra)
        return env

    def ssh_argv(self, alias: str) -> list:
        """The system OpenSSH client pointed at this home's config and known_hosts."""
        return ["ssh", "-F", str(self.config), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", alias]
