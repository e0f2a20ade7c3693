"""What every benchmark sets up: one real sshd pod on loopback, a client HOME pointing at it
(alias `benchpod`), this process's environment and working directory in a temp folder."""

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops_tasks.testing.pods import ClientHome, SshPod  # noqa: E402

ALIAS = "benchpod"


@contextlib.contextmanager
def bench_pod(gpus=None):
    """Yield (pod, client, folder); the pod is stopped afterwards, whatever happens."""
    with tempfile.TemporaryDirectory(prefix="ops-bench-") as tmp:
        client = ClientHome(Path(tmp) / "client")
        pod = SshPod(Path(tmp) / "pod", ALIAS, client.public_key, gpus=gpus).start()
        try:
            client.add_alias(ALIAS, pod)
            os.environ.update(client.env())
            os.chdir(tmp)
            yield pod, client, Path(tmp)
        finally:
            pod.stop()


def timed(action) -> float:
    """Seconds action() took."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started
