"""A fork server for the tests' `ops` calls: one process that has imported the whole tool once,
forking a fresh child for each call.

The suite starts `ops` about a thousand times, and each start spent ~0.45 s of CPU importing
Invoke, Fabric, paramiko and the package before doing its few milliseconds of work: on two cores
that was most of the suite's time. A child forked from a process that has imported everything
(and done nothing else) is the same program as the installed `ops` (`ops_tasks.cli.main`, its
argv, environment, working directory and standard streams those of the call), in a process of
its own, so no state crosses from one call to the next; only the imports are shared.

The server is single-threaded and only imports, so forking it is safe. A call connects over a
Unix socket and sends its request with its three pipe ends (SCM_RIGHTS); the server forks, answers
the child's pid, and once the child has exited its exit code, as `subprocess` reports it.

    server = OpsServer.start(socket_dir)   # in the test process
    proc = server.run(argv, cwd=..., env=..., input=..., timeout=...)   # a CompletedProcess
"""

import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

MESSAGE_LIMIT = 1 << 20  # one request: argv, cwd and environment


def preload() -> None:
    """Import what an `ops` task can import, so that no forked child pays for it."""
    import pkgutil

    import fabric  # noqa: F401
    import paramiko  # noqa: F401

    import ops_tasks

    for module in pkgutil.walk_packages(ops_tasks.__path__, "ops_tasks."):
        if not module.name.startswith(("ops_tasks.testing", "ops_tasks.remote_scripts", "ops_tasks.__main__")):
            __import__(module.name)


# ---------------------------------------------------------------- the server


def serve(socket_path: str) -> None:
    """Fork a child per request until the test process that started this one goes (stdin ends)."""
    sys.path[0] = str(Path(sys.executable).parent)  # as the console script's: not this directory
    preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(socket_path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd hears it
    waiting = {}  # pid -> the connection its exit code goes to
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "call")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    selector.register(sys.stdin, selectors.EVENT_READ, "parent")
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "parent":  # the test process is gone (its end of our stdin closed)
                listener.close()
                Path(socket_path).unlink(missing_ok=True)
                return
            if key.data == "call":
                connection, _ = listener.accept()
                pid = _fork_call(connection, [listener, wake_r, wake_w])
                if pid:
                    waiting[pid] = connection
            else:
                os.read(wake_r, 4096)
            _reap(waiting)


def _fork_call(connection, server_fds: list):
    message, fds, _, _ = socket.recv_fds(connection, MESSAGE_LIMIT, 3)
    if len(fds) != 3 or not message:
        connection.close()
        return None
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _child(json.loads(message), fds, [connection, *server_fds])
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    connection.send(json.dumps({"pid": pid}).encode())
    return pid


def _reap(waiting: dict) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = waiting.pop(pid, None)
        if connection is not None:
            try:
                connection.send(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())
            except OSError:
                pass  # the caller gave up (its timeout)
            connection.close()


def _child(request: dict, fds: list, server_side: list) -> int:
    """The call as the `ops` program: its streams, directory, environment and argv; its exit code."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for item in server_side:  # the server's sockets and pipe ends: not this call's
        if isinstance(item, int):
            os.close(item)
        else:
            item.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    sys.argv = request["argv"]
    code = _exit_code(_run_main)
    threading._shutdown()  # what the interpreter's exit does first: wait for non-daemon threads
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def _run_main() -> None:
    from ops_tasks.cli import main

    main()


def _exit_code(action) -> int:
    """The exit code of action as the interpreter would give it (SystemExit's, 1 on an exception)."""
    try:
        action()
    except SystemExit as stop:
        if stop.code is None:
            return 0
        if isinstance(stop.code, int):
            return stop.code & 0xFF
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - printed as the interpreter prints it, then exit 1
        import traceback

        traceback.print_exc()
        return 1
    return 0


# ---------------------------------------------------------------- the client


class OpsServer:
    """The test process's handle on a running server."""

    def __init__(self, process: subprocess.Popen, socket_path: str):
        self.process, self.socket_path = process, socket_path

    @classmethod
    def start(cls, directory) -> "OpsServer":
        socket_path = str(Path(directory) / f"ops-server-{os.getpid()}.sock")
        Path(socket_path).unlink(missing_ok=True)
        process = subprocess.Popen([sys.executable, "-c", f"from {__name__} import serve; serve({socket_path!r})"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if process.stdout.readline().strip() != "ready":
            process.kill()
            raise RuntimeError("the ops fork server did not start")
        return cls(process, socket_path)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def run(self, argv: list, *, cwd, env: dict, input=None, timeout=None) -> subprocess.CompletedProcess:
        """subprocess.run(argv, cwd=, env=, input=, capture_output=True, text=True, timeout=), the
        program being `ops` (argv[0] only names it)."""
        ends = [os.pipe() for _ in range(3)]
        child_ends = [ends[0][0], ends[1][1], ends[2][1]]
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            connection.connect(self.socket_path)
            request = {"argv": [str(a) for a in argv], "cwd": str(cwd), "env": dict(env)}
            socket.send_fds(connection, [json.dumps(request).encode()], child_ends)
        finally:
            for fd in child_ends:
                os.close(fd)
        try:
            pid = json.loads(connection.recv(4096))["pid"]
            stdout, stderr = _communicate(ends[0][1], ends[1][0], ends[2][0], input, timeout, pid, argv)
            connection.settimeout(timeout)
            returncode = json.loads(connection.recv(4096))["returncode"]
        finally:
            connection.close()
        return subprocess.CompletedProcess(list(argv), returncode, stdout, stderr)


def _communicate(stdin_fd: int, stdout_fd: int, stderr_fd: int, input, timeout, pid: int, argv) -> tuple:
    """Write input, read both streams to their end, as Popen.communicate; kill the child at timeout.
    The text as subprocess's text mode gives it: the locale's encoding, universal newlines."""
    deadline = None if timeout is None else time.monotonic() + timeout
    writer = threading.Thread(target=_feed, args=(stdin_fd, (input or "").encode()), daemon=True)
    writer.start()
    chunks = {stdout_fd: [], stderr_fd: []}
    selector = selectors.DefaultSelector()
    for fd in chunks:
        selector.register(fd, selectors.EVENT_READ)
    try:
        while selector.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                _kill(pid)
                raise subprocess.TimeoutExpired(argv, timeout)
            for key, _ in selector.select(left):
                block = os.read(key.fd, 65536)
                if block:
                    chunks[key.fd].append(block)
                else:
                    selector.unregister(key.fd)
    finally:
        selector.close()
        os.close(stdout_fd)
        os.close(stderr_fd)
    writer.join(timeout=5)
    encoding = locale.getpreferredencoding(False)
    return tuple(b"".join(chunks[fd]).decode(encoding).replace("\r\n", "\n").replace("\r", "\n")
                 for fd in (stdout_fd, stderr_fd))


def _feed(fd: int, data: bytes) -> None:
    """The child's stdin: data, then its end (a child that stops reading ends it early)."""
    with os.fdopen(fd, "wb", buffering=0) as feed:
        try:
            if data:
                feed.write(data)
        except OSError:
            pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
