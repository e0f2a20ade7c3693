"""A TCP proxy on loopback that puts a pod far away, or cuts it off.

The kernel's netem is not available on these machines, so latency is made here: every chunk
is held for the one-way delay before it is passed on (in order, without limiting bandwidth), so
a 50 ms delay is a 100 ms round trip. `hold()` stops passing data on, as a dead link does
(the TCP connections stay open, nothing arrives); `cut()` drops every connection.

    with DelayProxy(pod.port, delay_s=0.05) as proxy:
        ...  # connect to 127.0.0.1:proxy.port
"""

import asyncio
import threading
import time
from typing import Optional


class DelayProxy:
    def __init__(self, target_port: int, *, delay_s: float = 0.05, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.port: Optional[int] = None
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-proxy", daemon=True)
        self._server = None
        self._flowing = None  # asyncio.Event, set while data may pass
        self._writers: set = set()

    # -- control, from any thread

    def start(self) -> "DelayProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def hold(self) -> None:
        """Pass nothing on until release(): a link that went dead without closing."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def cut(self) -> None:
        """Close every proxied connection at once (new ones are still accepted)."""
        def close_all():
            for writer in list(self._writers):
                writer.transport.abort()
        self._loop.call_soon_threadsafe(close_all)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        async def shut():
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for pending in others:
                pending.cancel()
            await asyncio.gather(*others, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- the loop's side

    async def _listen(self):
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, client_reader, client_writer):
        self.connections += 1
        try:
            pod_reader, pod_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, pod_writer))
        try:
            await asyncio.gather(self._pipe(client_reader, pod_writer), self._pipe(pod_reader, client_writer),
                                 return_exceptions=True)
        except asyncio.CancelledError:  # stop() with connections open: end quietly
            pass
        finally:
            self._writers.difference_update((client_writer, pod_writer))

    async def _pipe(self, reader, writer):
        """Read chunks as they come; a second task writes each one delay_s after it was read."""
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while True:
                due, chunk = await queue.get()
                if chunk is None:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                await queue.put((time.monotonic() + self.delay_s, chunk or None))
                if not chunk:
                    break
            await delivering
        except (ConnectionError, OSError, asyncio.CancelledError):
            delivering.cancel()
            writer.transport.abort()
