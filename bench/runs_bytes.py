"""A pod far away whose traffic is counted: ops_tasks/testing/delay_proxy.py's DelayProxy, plus a
tally of the bytes it reads each way, run in a child process of its own.

`sent` is what the laptop sends to the pod (client -> server at the proxy), `received` what comes
back. Bytes are counted as the proxy reads them, so they are the TCP payload: SSH's key exchange,
authentication, channel set-up, the scripts and the pod's answers, all encrypted.

The proxy runs in a child process, not a thread of the benchmark: a call measured in-process
(`program.run`) would otherwise share one interpreter lock with the proxy, and each chunk's
delay would wait on the call's own Python code (a real link does not). Nothing of
delay_proxy.py is changed: the counting wraps the reader each of its pipes reads from.

    with ProxyProcess(pod.port, delay_s=0.05) as proxy:    # a 100 ms round trip
        before = proxy.settle()                            # no connection open, counts so far
        ...                                                # connect to 127.0.0.1:proxy.port
        after = proxy.settle()
        after.sent - before.sent
"""

import multiprocessing
import time
from typing import NamedTuple

from ops_tasks.testing.delay_proxy import DelayProxy

# What the counting relies on; a DelayProxy refactored past these fails here, not with zeros.
for _name in ("_accept", "_pipe"):
    if not callable(getattr(DelayProxy, _name, None)):
        raise ImportError(f"DelayProxy has no {_name}(): bench/runs_bytes.py's CountingProxy needs updating")


class Counts(NamedTuple):
    sent: int         # laptop -> pod
    received: int     # pod -> laptop
    open: int         # connections not finished yet (both ways closed)
    connections: int  # accepted so far


class _Tally:
    """A StreamReader that adds the length of every chunk read to one of the proxy's counters."""

    def __init__(self, reader, proxy, counter: str):
        self._reader, self._proxy, self._counter = reader, proxy, counter

    async def read(self, n: int = -1) -> bytes:
        chunk = await self._reader.read(n)
        setattr(self._proxy, self._counter, getattr(self._proxy, self._counter) + len(chunk))
        return chunk

    def __getattr__(self, name):
        return getattr(self._reader, name)


class CountingProxy(DelayProxy):
    """A DelayProxy that counts the bytes passed each way and the connections still open."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = self.received = self.open = 0

    async def _accept(self, client_reader, client_writer):
        self.open += 1
        try:
            await super()._accept(client_reader, client_writer)
        finally:
            self.open -= 1

    async def _pipe(self, reader, writer):
        # The writer towards the laptop is the socket accepted on the proxy's own port; the one
        # towards the pod was opened from an ephemeral port.
        to_pod = writer.get_extra_info("sockname")[1] != self.port
        return await super()._pipe(_Tally(reader, self, "sent" if to_pod else "received"), writer)

    def counts(self) -> Counts:
        return Counts(self.sent, self.received, self.open, self.connections)


def _serve(conn, target_port: int, delay_s: float) -> None:
    proxy = CountingProxy(target_port, delay_s=delay_s).start()
    conn.send(proxy.port)
    try:
        while conn.recv() != "stop":
            conn.send(proxy.counts())
    except EOFError:  # the benchmark went away
        pass
    finally:
        proxy.stop()
    conn.send("stopped")


class ProxyProcess:
    """A CountingProxy in a child process; `port` to connect to, `settle()` for its counts."""

    def __init__(self, target_port: int, *, delay_s: float):
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, target_port, delay_s), daemon=True,
                                        name="counting-delay-proxy")
        self.port = None

    def __enter__(self) -> "ProxyProcess":
        self._process.start()
        if not self._conn.poll(10):
            self._process.kill()
            raise RuntimeError("the counting proxy did not start within 10 s")
        self.port = self._conn.recv()
        return self

    def counts(self) -> Counts:
        self._conn.send("counts")
        return self._conn.recv()

    def settle(self, timeout: float = 10.0) -> Counts:
        """The counts once every connection through the proxy has ended (its last bytes, the
        SSH disconnect and both EOFs, counted), so a call's figures hold all it sent."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            if not counts.open:
                return counts
            if time.monotonic() > deadline:
                raise RuntimeError(f"{counts.open} connection(s) through the proxy still open after {timeout:g} s")
            time.sleep(0.01)

    def __exit__(self, *exc):
        try:
            self._conn.send("stop")
            if self._conn.poll(15):
                self._conn.recv()
        except (OSError, EOFError):
            pass
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()  # this object's own child, by its pid
            self._process.join()
