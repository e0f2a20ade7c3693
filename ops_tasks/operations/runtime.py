"""Shipping the pod runtime (ops_tasks/runtime) and calling one of its commands.

The runtime travels as a gzipped tar of the package, made the same byte for byte from the same
sources, named by its hash (`runtime_id`). The pod unpacks it once per id under
~/.ops/runtime/<id>/ (runtime/boot.py), so an upgrade never touches a supervisor running an older
one. The project remembers which hosts hold which ids (records.remember_runtime:
artifacts/runtimes.json, by host identity) and the archive is sent only to a host not seen to
hold it: then a call is the request alone, still one round trip. A host that lost it (a new pod
at an old address) answers `need_runtime`, and the same call is made again with the archive. A
target without the project's config (a library caller) always sends it.
"""

import ast
import gzip
import hashlib
import io
import json
import tarfile
from functools import lru_cache
from pathlib import Path

from ..runtime.contract import CONTRACT_VERSION
from ..scripts import parse_document, render_script, shell_value
from ..records import remember_runtime, runtimes_held
from ..settings import host_identity, project_dir_of

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "runtime"
POD_PACKAGE = "ops_runtime"  # runtime/boot.py's PACKAGE: the name it has on the pod


@lru_cache(maxsize=1)
def runtime_archive() -> tuple:
    """(runtime id, archive bytes): the package's .py files, in name order, with fixed metadata."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=9) as packed:
        with tarfile.open(fileobj=packed, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for path in sorted(PACKAGE_DIR.glob("*.py")):
                data = path.read_bytes()
                info = tarfile.TarInfo(f"{POD_PACKAGE}/{path.name}")
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
    archive = buffer.getvalue()
    return hashlib.sha256(archive).hexdigest()[:16], archive


@lru_cache(maxsize=1)
def boot_source() -> str:
    """runtime/boot.py as sent in every runs script: its code without docstrings or comments."""
    tree = ast.parse((PACKAGE_DIR / "boot.py").read_text())
    for node in [tree, *ast.walk(tree)]:
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def boot_as_shown() -> dict:
    """{text in a rendered runs script: what a dry run shows instead} for the loader."""
    return {shell_value(boot_source()): "# (boot: ops_tasks/runtime/boot.py, the runtime's loader; --verbose shows it)"}


def run_command(target, command: str, request: dict, *, label: str, on_stderr=None, on_stdout=None,
                hold_stdin: bool = False, parse: bool = True):
    """One command of the pod runtime, in one round trip: its JSON answer (None when not parsed)."""
    runtime_id, archive = runtime_archive()
    config = getattr(target, "invoke_config", None)
    project = project_dir_of(config) if config is not None else None
    identity = host_identity(target.profile)
    request = dict(request, contract=CONTRACT_VERSION)
    line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
    # A followed log is not parsed: its need_runtime would be shown, not read. It always ships.
    send = not parse or project is None or runtime_id not in runtimes_held(project, identity)
    for attempt in (1, 2):
        shipped = archive if send else b""
        script = render_script("runs.sh", runtime_id=runtime_id, runtime_bytes=len(shipped), command=command,
                               boot=boot_source())
        result = target.run_script(script, stdin_payload=shipped + line, on_stderr=on_stderr, on_stdout=on_stdout,
                                   hold_stdin=hold_stdin)
        if not parse:
            return None
        answer = parse_document(result, label, f"runs {command}")
        if answer.get("need_runtime") == runtime_id and not send:
            send = True  # the host lost it (a new pod at an old address): once more, with it
            continue
        if send and project is not None and "could not unpack" not in str(answer.get("error", "")):
            remember_runtime(project, identity, runtime_id)
        return answer
    return answer
