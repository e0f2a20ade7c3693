"""What a vLLM server is started with: flags and profile defaults checked into a ServerSpec,
and the argv and env file made from it. Pure functions, no I/O (the launcher script is
remote_scripts/vllm_launcher.sh, rendered by operations/vllm.py).
"""

import re
import shlex
from dataclasses import dataclass, fields
from pathlib import PurePosixPath
from typing import Optional

from .. import defaults
from ..errors import ConfigError
from ..names import CONTROL_CHARS, ENV_NAME, TMUX_SESSION
from ..secrets import MASK, is_secret_name
from ..settings import env_value

# ServerSpec field -> the vLLM flag it becomes (when set).
VLLM_FLAGS = {
    "tensor_parallel_size": "--tensor-parallel-size",
    "pipeline_parallel_size": "--pipeline-parallel-size",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_model_len": "--max-model-len",
    "dtype": "--dtype",
    "quantization": "--quantization",
    "served_model_name": "--served-model-name",
}
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# Flags that ServerSpec owns: passing them again in --extra-args would make the port check lie.
OWNED_FLAGS = {"--model": "--model-id", "--port": "--port", "--host": "--bind-host",
               "--served-model-name": "--served-model-name"}
_BIND_HOST = re.compile(r"^[A-Za-z0-9.:_-]+$")
_QUANTIZATION = re.compile(r"^[A-Za-z0-9_-]+$")
_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?$")
# --vllm-bin ops-vllm-stub: the stand-in for vLLM (ops_tasks/testing/vllm_stub.py, stdlib only) is
# shipped with the start and run from the pod's ~/.ops/vllm/bin: a pod has no ops-tasks installed,
# and a path into this laptop's venv names the laptop's python in its first line.
STUB_BIN = "ops-vllm-stub"


@dataclass(frozen=True)
class ServerSpec:
    """Everything vllm.start passes to vLLM."""

    model_id: str
    vllm_bin: str = "vllm"
    port: int = defaults.VLLM_PORT
    bind_host: str = "127.0.0.1"
    session: str = defaults.VLLM_SESSION
    tensor_parallel_size: Optional[int] = None
    pipeline_parallel_size: Optional[int] = None
    gpu_memory_utilization: Optional[float] = None
    max_model_len: Optional[int] = None
    dtype: Optional[str] = None
    quantization: Optional[str] = None
    served_model_name: Optional[str] = None
    trust_remote_code: bool = False
    extra_args: tuple = ()
    env: tuple = ()  # ((NAME, value), ...)

    @property
    def ships_stub(self) -> bool:
        """The stand-in is sent to the pod with the start (STUB_BIN)."""
        return self.vllm_bin == STUB_BIN

    @property
    def served_name(self) -> str:
        """The name /v1/models lists the model under."""
        return self.served_model_name or self.model_id

    def env_shown(self) -> dict:
        """The env as it may be shown: secret values masked."""
        return {name: MASK if is_secret_name(name) else value for name, value in self.env}


SPEC_FIELDS = tuple(f.name for f in fields(ServerSpec))


def build_spec(options: dict, defaults: Optional[dict] = None) -> ServerSpec:
    """A checked ServerSpec from flags (None = not given) over profile defaults.

    Raises ConfigError naming the flag for anything vLLM or the shell would choke on.
    """
    defaults = dict(defaults or {})
    merged = {name: options.get(name) if options.get(name) is not None else defaults.get(name)
              for name in SPEC_FIELDS if name not in ("env", "extra_args")}
    values = {name: value for name, value in merged.items() if value is not None}
    if not values.get("model_id"):
        raise ConfigError("--model-id is required (or set vllm.model_id in the host's profile)")
    values["model_id"] = _text("--model-id", values["model_id"])
    for name in ("tensor_parallel_size", "pipeline_parallel_size", "max_model_len"):
        if name in values:
            values[name] = _positive_int(_flag(name), values[name])
    if "port" in values:
        values["port"] = check_port(values["port"])
    if "session" in values:
        values["session"] = check_session(values["session"])
    if "gpu_memory_utilization" in values:
        values["gpu_memory_utilization"] = _fraction("--gpu-memory-utilization", values["gpu_memory_utilization"])
    if "trust_remote_code" in values:
        values["trust_remote_code"] = bool(values["trust_remote_code"])
    for name in ("vllm_bin", "served_model_name"):
        if name in values:
            values[name] = _text(_flag(name), values[name])
    _match("--bind-host", values.get("bind_host"), _BIND_HOST, "a host name or IP address")
    _match("--quantization", values.get("quantization"), _QUANTIZATION, "a method name such as awq or fp8")
    if values.get("dtype") not in (None, *DTYPES):
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {values['dtype']!r}")
    extra = options.get("extra_args") if options.get("extra_args") is not None else defaults.get("extra_args")
    values["extra_args"] = parse_extra_args(extra or "")
    values["env"] = parse_env({**_env_mapping(defaults.get("env")), **_env_mapping(options.get("env"))})
    return ServerSpec(**values)


def check_port(value, flag: str = "--port") -> int:
    number = _positive_int(flag, value)
    if number > 65535:
        raise ConfigError(f"{flag} must be at most 65535, got {number}")
    return number


def check_session(name) -> str:
    """A tmux session name that needs no quoting in tmux targets ('.' and ':' are syntax there)."""
    if not TMUX_SESSION.match(str(name)):
        raise ConfigError(f"--session must be 1-64 letters, digits, '_' or '-', got {name!r}")
    return str(name)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _text(flag: str, value) -> str:
    text = str(value)
    if not text or CONTROL_CHARS.search(text) or text.startswith("-"):
        raise ConfigError(f"{flag}: {text!r} is not usable (empty, control characters, or a leading '-')")
    return text


def _positive_int(flag: str, value) -> int:
    try:
        number = int(str(value), 10)
    except ValueError:
        raise ConfigError(f"{flag} must be a whole number, got {value!r}") from None
    if number < 1:
        raise ConfigError(f"{flag} must be at least 1, got {number}")
    return number


def _fraction(flag: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} must be a number, got {value!r}") from None
    if not 0 < number <= 1:
        raise ConfigError(f"{flag} must be in (0, 1], got {number}")
    return number


def _match(flag: str, value, pattern, what: str) -> None:
    if value is not None and not pattern.match(str(value)):
        raise ConfigError(f"{flag} must be {what}, got {value!r}")


def parse_extra_args(text: str) -> tuple:
    """--extra-args split as a shell would; flags we own or that carry secrets are refused."""
    try:
        args = tuple(shlex.split(text))
    except ValueError as exc:
        raise ConfigError(f"--extra-args: {exc} in {text!r}") from None
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in OWNED_FLAGS:
            raise ConfigError(f"--extra-args: use {OWNED_FLAGS[name]} instead of {name}")
        if name.startswith("--") and is_secret_name(name.lstrip("-").replace("-", "_")):
            raise ConfigError(
                f"--extra-args: {name} would put a secret in the pod's process list; "
                f"pass it with --env instead (vLLM reads VLLM_API_KEY, HF_TOKEN)"
            )
    return args


def _env_mapping(value) -> dict:
    """--env KEY=VALUE items (a list) or a profile's env mapping, as a dict."""
    if not value:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    pairs = {}
    for item in value:
        name, sep, text = str(item).partition("=")
        if not sep:
            # `--env HF_TOKEN`: the value comes from here (or OPS_PROJECT_ENV), never the command line.
            text = env_value(name)
            if text is None:
                raise ConfigError(f"--env {name}: not set here; pass KEY=VALUE or export {name}")
        pairs[name] = text
    return pairs


def parse_env(pairs: dict) -> tuple:
    for name in pairs:
        if not ENV_NAME.match(name):
            raise ConfigError(f"--env: {name!r} is not a valid environment variable name")
    return tuple(sorted(pairs.items()))


def normalize_base_url(url: str, flag: str = "--api-base-url") -> str:
    """An OpenAI base URL ending in /v1 (what vLLM serves under)."""
    text = (url or "").strip().rstrip("/")
    if not re.match(r"^https?://[^\s/'\"]+(/[^\s'\"]*)?$", text):
        raise ConfigError(f"{flag}: {url!r} is not an http(s) URL")
    return text if text.endswith("/v1") else text + "/v1"


def server_argv(spec: ServerSpec) -> list:
    """The server's argv: `<bin> serve MODEL ...`, or `<python> -m vllm.entrypoints... --model MODEL`."""
    if _PYTHON.match(PurePosixPath(spec.vllm_bin).name):
        argv = [spec.vllm_bin, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model_id]
    else:
        argv = [spec.vllm_bin, "serve", spec.model_id]
    argv += ["--host", spec.bind_host, "--port", str(spec.port)]
    for name, flag in VLLM_FLAGS.items():
        value = getattr(spec, name)
        if value is not None:
            argv += [flag, str(value)]
    if spec.trust_remote_code:
        argv.append("--trust-remote-code")
    return argv + list(spec.extra_args)


def env_file_text(env: tuple) -> bytes:
    """The env file the launcher sources: one shell-quoted NAME=value per line."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in env).encode()

