"""A local port forwarded over an open SSH connection (`ssh -L`), for vllm.tunnel.

Fabric's forward_local binds its port in a background thread (a busy port shows up only at
exit) and ends the whole tunnel when one forwarded connection is refused by the pod (say,
vLLM still starting). Here the port is bound before anything is announced, and a refused
connection closes only itself. Fabric's Tunnel still moves the bytes of each connection.
"""

import select
import socket
import threading

from .errors import ConfigError


class LocalForward:
    """Listen on 127.0.0.1:local_port; carry each connection to remote_host:remote_port."""

    def __init__(self, local_port: int, remote_port: int, remote_host: str = "127.0.0.1", on_refused=None):
        self.transport = None
        self.remote = (remote_host, remote_port)
        self.on_refused = on_refused
        self.finished = threading.Event()
        self.tunnels = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(("127.0.0.1", local_port))
        except OSError:
            self.listener.close()
            raise ConfigError(f"local port {local_port} is in use; pick another with --local-port") from None
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]

    def attach(self, transport) -> None:
        """The SSH transport to carry connections over (bind first, connect after)."""
        self.transport = transport

    def serve(self) -> None:
        """Forward connections until the SSH connection drops (or KeyboardInterrupt)."""
        try:
            while self.transport.is_active():
                ready, _, _ = select.select([self.listener], [], [], 0.5)
                if ready:
                    self._forward(*self.listener.accept())
        finally:
            self.close()

    def _forward(self, client: socket.socket, address) -> None:
        from fabric.tunnels import Tunnel  # here, not at start-up: fabric costs every task ~35 ms

        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            channel = self.transport.open_channel("direct-tcpip", self.remote, address)
        except Exception as exc:  # paramiko.ChannelException: the pod refused this one
            client.close()
            if self.on_refused is not None:
                self.on_refused(exc)
            return
        tunnel = Tunnel(channel=channel, sock=client, finished=self.finished)
        tunnel.daemon = True
        tunnel.start()
        self.tunnels = [t for t in self.tunnels if t.is_alive()] + [tunnel]

    def close(self) -> None:
        self.finished.set()
        for tunnel in self.tunnels:
            tunnel.join(timeout=2)
        self.listener.close()
