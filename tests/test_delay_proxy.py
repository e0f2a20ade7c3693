"""The delaying proxy the benchmarks and fault tests put between the laptop and a pod."""

import socket
import threading
import time

import pytest

from ops_tasks.testing.delay_proxy import DelayProxy


@pytest.fixture
def echo_port():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(65536), b"")],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _round_trip(sock, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_bytes_pass_in_order_no_sooner_than_the_round_trip(echo_port):
    with DelayProxy(echo_port, delay_s=0.05) as proxy, socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        payload = bytes(range(256)) * 4096  # 1 MiB, many chunks
        started = time.monotonic()
        assert _round_trip(sock, payload) == payload
        # A lower bound only: a slow machine makes it later, never sooner.
        assert time.monotonic() - started >= 0.1
        assert proxy.connections == 1


def test_hold_passes_nothing_until_release_and_cut_closes(echo_port):
    with DelayProxy(echo_port, delay_s=0.0) as proxy, socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        assert _round_trip(sock, b"ping") == b"ping"
        proxy.hold()
        sock.sendall(b"held")
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(10)
        proxy.release()
        sock.settimeout(5)
        assert sock.recv(10) == b"held"
        proxy.cut()
        assert sock.recv(10) == b""
