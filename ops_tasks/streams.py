"""Chunks of a stream (a remote script's stdout or stderr) turned into whole lines."""


class LineBuffer:
    """feed(chunk) returns the lines the chunk completed; a partial line waits for its end."""

    def __init__(self):
        self._pending = b""

    def feed(self, chunk: bytes) -> list:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        return [line.decode(errors="replace") for line in lines]
