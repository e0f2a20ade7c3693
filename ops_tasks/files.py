"""Local files written whole or not at all: a reader (or a crash) never sees half a file."""

import os
from pathlib import Path


def write_atomic(path, data, mode: int = 0o666, sync: bool = False) -> None:
    """Write data (bytes or text) to path through a temporary file beside it and os.replace.

    mode is passed to os.open (the umask applies, as for any new file); sync also flushes
    the data to disk before the rename, for files a crash must not lose (~/.ssh/config).
    A symlink at path is followed: the file it points at is replaced, the link stays.
    """
    target = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # os.urandom, not uuid: importing uuid (and platform with it) cost every start-up ~5 ms.
    tmp = target.parent / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8", errors="surrogateescape") if isinstance(data, str) else data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise

