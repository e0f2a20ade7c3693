"""The pod's loader of the runtime: sent as the source of `python3 -c` by runs.sh.

argv: the runtimes folder (~/.ops/runtime), the runtime's id (its archive's hash), the archive's
size on stdin (0: the laptop believes the pod has it) and the command. stdin: the archive, then
the request line. The archive is unpacked once per id (so Python keeps its bytecode there): an
unknown id with no archive answers {"need_runtime": id} and the laptop sends it. Standalone:
it runs before the package exists on the pod.
"""

import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile


PACKAGE = "ops_runtime"


def unpack(archive, home, runtime_id):
    """The archive into home, whole or not at all: unpacked beside it, then renamed."""
    if hashlib.sha256(archive).hexdigest()[:len(runtime_id)] != runtime_id:
        raise ValueError("the runtime archive does not match its id %s (cut short on the way?)" % runtime_id)
    folder = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(home))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if not (member.isfile() or member.isdir()) or parts[0] != PACKAGE or ".." in parts:
                    raise ValueError("the runtime archive holds %r" % member.name)
            tar.extractall(folder)
        os.rename(folder, home)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        if not os.path.isdir(os.path.join(home, PACKAGE)):  # not another call's unpacking first
            raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def boot(argv):
    root, runtime_id, size, command = argv[0], argv[1], int(argv[2]), argv[3]
    home = os.path.join(root, runtime_id)
    archive = sys.stdin.buffer.read(size) if size else b""
    if not os.path.isdir(os.path.join(home, PACKAGE)):
        if not archive:
            print(json.dumps({"need_runtime": runtime_id}), flush=True)
            return 0
        try:
            unpack(archive, home, runtime_id)
        except (OSError, ValueError, tarfile.TarError) as exc:
            print(json.dumps({"error": "the pod could not unpack the ops runtime in %s: %s" % (root, exc)}))
            return 0
    sys.path.insert(0, home)
    from ops_runtime.commands import main  # noqa: E402 (the package is where it was just put)

    return main([command])


if __name__ == "__main__":  # python3 -c: the laptop imports this file only to read it
    sys.exit(boot(sys.argv[1:]))
