"""The vLLM stand-in (ops_tasks/testing/vllm_stub.py), run as a copied script: its log, API, knobs and processes.

Every stub runs in its own session (process group); teardown SIGKILLs each member by pid, including
engines orphaned on purpose.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ops_tasks.testing import vllm_stub
from ops_tasks.testing.fake_gpu import gpu, install_fake_nvidia_smi, register_gpu_process
from ops_tasks.testing.pods import free_port

WAIT_S = 10.0  # an upper bound for waits, never an assertion
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------------------------
# helpers


def alive(pid: int) -> bool:
    """Running: a zombie (exited, not yet reaped) counts as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_until(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def http(url, body=None, headers=None, timeout=5.0, method=None):
    """(status, body bytes); body: a dict (sent as JSON) or raw bytes."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}), method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def events(raw: bytes) -> list:
    """The `data:` payloads of a server-sent event stream, [DONE] included as a string."""
    blocks = [b for b in raw.decode().split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") for b in blocks), raw
    return [b[len("data: "):] if b.endswith("[DONE]") else json.loads(b[len("data: "):]) for b in blocks]


class Stub:
    """One `python -I -S vllm_stub.py serve ...` (stdlib only: proves the copy is self-contained)."""

    def __init__(self, script, log_path, model, flags, env, port):
        self.port, self.log_path = port, log_path
        argv = [sys.executable, "-I", "-S", str(script), "serve", model, "--host", "127.0.0.1", "--port", str(port),
                *flags]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=log_path.parent, start_new_session=True)
        self.engines = set()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self):
        try:
            return http(self.url + "/health", timeout=0.5)[0]
        except OSError:
            return None  # not listening yet, or gone

    def wait_ready(self):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"the stub exited {self.proc.returncode}:\n{self.log()}")
            return self.health() == 200

        wait_until(ready, "the stub to be ready")
        return self

    def engine_pid(self) -> int:
        match = wait_until(lambda: re.search(r"\(EngineCore_0 pid=(\d+)\) .*Waiting for init message", self.log()),
                           "the engine child's pid in the log")
        pid = int(match.group(1))
        self.engines.add(pid)
        return pid

    def wait_exit(self) -> int:
        return self.proc.wait(timeout=WAIT_S)

    def group_pids(self):
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == self.proc.pid:
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids

    def kill(self):
        """SIGKILL the stub and every process of its group (its engine, orphaned or not), by pid."""
        for pid in {self.proc.pid, *self.engines, *self.group_pids()}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=WAIT_S)


def base_env(**knobs):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPS_VLLM_STUB_", "OPS_FAKE_GPU")) and k != "VLLM_API_KEY"}
    env["OPS_VLLM_STUB_STARTUP_S"] = "0.1"
    env.update({k: str(v) for k, v in knobs.items()})
    return env


@pytest.fixture(scope="module")
def stub_script(tmp_path_factory):
    """A copy of vllm_stub.py away from the package, as when copied to a pod."""
    path = tmp_path_factory.mktemp("elsewhere") / "vllm_stub.py"
    shutil.copy(vllm_stub.__file__, path)
    return path


class Stubs:
    def __init__(self, script, directory):
        self.script, self.directory, self.started = script, directory, []

    def start(self, model="acme/Arith-7B", *flags, port=None, **knobs) -> Stub:
        log_path = self.directory / f"stub-{len(self.started)}.log"
        stub = Stub(self.script, log_path, model, flags, base_env(**knobs), port or free_port())
        self.started.append(stub)
        return stub

    def kill_all(self):
        for stub in self.started:
            stub.kill()


@pytest.fixture
def stubs(stub_script, tmp_path):
    started = Stubs(stub_script, tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


# ---------------------------------------------------------------------------------------------
# startup log and command line

PHASE_MARKERS = [
    "vLLM API server version 0.0.0+ops-stub",
    "args: {",
    "ops-tasks stand-in",
    "Waiting for init message from front-end.",
    "Starting to load model Qwen/Qwen3-4B...",
    "Loading weights took",
    "Model loading took",
    "Compiling a graph for dynamic shape takes",
    "torch.compile takes",
    "Memory profiling takes",
    "Available KV cache memory:",
    "GPU KV cache size:",
    "Maximum concurrency for 32,768 tokens per request:",
    "Capturing CUDA graph shapes: 100%",
    "Graph capturing finished in",
    "Starting vLLM API server 0 on http://127.0.0.1:",
    "INFO:     Started server process [",
    "INFO:     Waiting for application startup.",
    "INFO:     Application startup complete.",
]


def test_startup_logs_vllm_phases_in_order_and_serves_only_after_startup_complete(stubs):
    stub = stubs.start("Qwen/Qwen3-4B", "--enable-prefix-caching", OPS_VLLM_STUB_STARTUP_S="0.4")
    early_statuses = []

    def models_answer():
        try:
            status, body = http(stub.url + "/v1/models", timeout=0.5)
        except OSError:
            status = None
        if status == 200:
            return stub.log(), json.loads(body)  # the log as it was when the API answered
        early_statuses.append(status)
        return None

    log_when_served, models = wait_until(models_answer, "/v1/models to answer")

    assert "INFO:     Application startup complete." in log_when_served
    assert set(early_statuses) <= {None, 503}
    assert models["data"][0]["id"] == "Qwen/Qwen3-4B"
    log = stub.log()
    positions = [log.find(marker) for marker in PHASE_MARKERS]
    assert -1 not in positions, [m for m, p in zip(PHASE_MARKERS, positions) if p == -1]
    assert positions == sorted(positions)
    assert re.search(r"^INFO \d\d-\d\d \d\d:\d\d:\d\d \[api_server\.py:\d+\] vLLM API server version", log, re.M)
    assert re.search(r"^WARNING .*unknown args.*--enable-prefix-caching", log, re.M)


def test_a_taken_port_fails_at_once_with_errno_98(stubs):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        stub = stubs.start(port=port)

        assert stub.wait_exit() == 1
    log = stub.log()
    assert re.search(rf"^ERROR .*\[Errno 98\] error while attempting to bind on address \('127.0.0.1', {port}\): "
                     r"address already in use$", log, re.M)
    assert "Starting to load model" not in log  # bound before loading, as vLLM does


@pytest.mark.parametrize("argv", [
    ["serve", "m", "--port", "abc"],
    ["serve", "m", "--tensor-parallel-size", "0"],
    ["serve", "m", "--gpu-memory-utilization", "1.5"],
    ["serve"],
])
def test_bad_command_lines_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        vllm_stub.main(argv)

    assert exited.value.code == 2
    assert "usage: ops-vllm-stub" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the HTTP API (one shared server: API key, two served names, accuracy 1)

KEY = {"Authorization": "Bearer sekrit"}


@pytest.fixture(scope="module")
def api(stub_script, tmp_path_factory):
    started = Stubs(stub_script, tmp_path_factory.mktemp("api"))
    try:
        stub = started.start("acme/Arith-7B", "--served-model-name", "stub-a", "stub-b", "--max-model-len", "4096",
                             "--api-key", "sekrit", OPS_VLLM_STUB_ACCURACY="1.0")
        yield stub.wait_ready()
    finally:
        started.kill_all()


def post(api, path, body, headers=KEY):
    status, raw = http(api.url + path, body, headers)
    return status, json.loads(raw)


def test_health_and_version_answer_without_a_key(api):
    assert http(api.url + "/health") == (200, b"")
    status, raw = http(api.url + "/version")
    assert (status, json.loads(raw)) == (200, {"version": "0.0.0+ops-stub"})


def test_models_lists_each_served_name_with_its_root_and_max_model_len(api):
    status, raw = http(api.url + "/v1/models", headers=KEY)

    assert status == 200
    models = json.loads(raw)
    assert models["object"] == "list"
    assert [(m["id"], m["root"], m["max_model_len"], m["owned_by"], m["object"]) for m in models["data"]] == [
        ("stub-a", "acme/Arith-7B", 4096, "vllm", "model"),
        ("stub-b", "acme/Arith-7B", 4096, "vllm", "model"),
    ]
    assert re.search(r'^INFO:     127\.0\.0\.1:\d+ - "GET /v1/models HTTP/1\.1" 200 OK$', api.log(), re.M)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_v1_needs_the_api_key(api, headers):
    assert http(api.url + "/v1/models", headers=headers) == (401, b'{"error": "Unauthorized"}')
    assert post(api, "/v1/completions", {"model": "stub-a", "prompt": "What is 1 + 1?"}, headers)[0] == 401


def test_completions_answer_each_prompt_with_usage(api):
    status, body = post(api, "/v1/completions", {"model": "stub-b", "prompt": ["What is 12 + 7?", "Compute 3*4-2"],
                                                 "max_tokens": 50, "temperature": 0})

    assert status == 200
    assert body["object"] == "text_completion" and body["model"] == "stub-b"
    assert [c["text"] for c in body["choices"]] == ["12 + 7 = 19. The answer is 19.\n#### 19",
                                                    "3 * 4 - 2 = 10. The answer is 10.\n#### 10"]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "stop"]
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 24, "total_tokens": 31,
                             "prompt_tokens_details": None}


def test_max_tokens_cuts_the_answer_short(api):
    status, body = post(api, "/v1/completions", {"model": "stub-a", "prompt": "What is 12 + 7?", "max_tokens": 3})

    assert status == 200
    assert body["choices"][0]["text"] == "12 + 7"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_chat_answers_the_last_user_message(api):
    messages = [
        {"role": "system", "content": "You are careful. 2 + 2 = 4."},
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": [{"type": "text", "text": "And what is 15 divided by 3?"}]},
    ]
    status, body = post(api, "/v1/chat/completions", {"model": "stub-a", "messages": messages})

    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"] == "15 / 3 = 5. The answer is 5.\n#### 5"
    assert body["usage"]["completion_tokens"] == 11


@pytest.mark.parametrize("path, request_body, text_of", [
    ("/v1/completions", {"prompt": "What is 6 × 7?"}, lambda choice: choice.get("text", "")),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "What is 6 × 7?"}]},
     lambda choice: choice["delta"].get("content", "")),
])
def test_streaming_sends_the_same_answer_in_chunks_then_done(api, path, request_body, text_of):
    _, whole = post(api, path, {"model": "stub-a", **request_body})
    status, raw = http(api.url + path, {"model": "stub-a", "stream": True, **request_body}, KEY)

    assert status == 200
    chunks = events(raw)
    assert chunks[-1] == "[DONE]"
    pieces = [text_of(c["choices"][0]) for c in chunks[:-1]]
    assert len([p for p in pieces if p]) > 1
    expected = whole["choices"][0].get("text") or whole["choices"][0]["message"]["content"]
    assert "".join(pieces) == expected == "6 * 7 = 42. The answer is 42.\n#### 42"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_an_unknown_model_is_404_and_bad_json_400(api):
    assert post(api, "/v1/completions", {"model": "gpt-4", "prompt": "hi"}) == (404, {
        "object": "error", "message": "The model `gpt-4` does not exist.", "type": "NotFoundError", "param": None,
        "code": 404})
    status, body = post(api, "/v1/chat/completions", b"{not json", {**KEY})
    assert status == 400
    assert body["object"] == "error" and body["code"] == 400 and body["param"] is None


@pytest.mark.parametrize("question, answer", [
    ("What is 12 + 7?", "19"),
    ("Compute 3*4-2", "10"),
    ("What is 15 divided by 3?", "5"),
    ("7 times 8", "56"),
    ("What is 6 × 7?", "42"),
    ("What is 84 ÷ 4?", "21"),
    ("What is (2 + 3) * 4?", "20"),
    ("What is -5 + 3?", "-2"),
    ("What is 1.5 + 2.25?", "3.75"),
    ("What is 10 / 4?", "2.5"),
    ("Question: What is 2 + 3?\nAnswer: 2 + 3 = 5.\n#### 5\n\nQuestion: What is 9 minus 4?\nAnswer:", "5"),
    ("Llama-3-8B asks: what is 20 - 8?", "12"),
])
def test_arithmetic_is_right_at_accuracy_one(api, question, answer):
    _, body = post(api, "/v1/completions", {"model": "stub-a", "prompt": question})

    assert body["choices"][0]["text"].splitlines()[-1] == f"#### {answer}"


def test_other_prompts_get_a_reply_saying_it_is_the_stand_in(api):
    _, body = post(api, "/v1/chat/completions", {"model": "stub-a", "messages": [{"role": "user", "content": "Hi!"}]})

    assert "ops-tasks stand-in" in body["choices"][0]["message"]["content"]


# ---------------------------------------------------------------------------------------------
# accuracy


def arithmetic_questions():
    questions = []
    for i in range(200):
        a, b, op = 10 + i, 1 + (i * 7) % 13, "+-*"[i % 3]
        questions.append((f"What is {a} {op} {b}?", {"+": a + b, "-": a - b, "*": a * b}[op]))
    return questions


def test_accuracy_grows_with_model_size_and_answers_repeat_across_processes(stubs):
    small = stubs.start("Qwen/Qwen3-0.5B", PYTHONHASHSEED="1")
    small_again = stubs.start("Qwen/Qwen3-0.5B", PYTHONHASHSEED="2")
    big = stubs.start("Qwen/Qwen3-32B")
    questions = arithmetic_questions()

    def answers(stub, model):
        _, raw = http(stub.wait_ready().url + "/v1/completions", {"model": model, "prompt": [q for q, _ in questions]})
        return [c["text"] for c in json.loads(raw)["choices"]]

    def correct(texts):
        return sum(t.endswith(f"#### {right}") for t, (_, right) in zip(texts, questions))

    small_texts, big_texts = answers(small, "Qwen/Qwen3-0.5B"), answers(big, "Qwen/Qwen3-32B")

    assert answers(small_again, "Qwen/Qwen3-0.5B") == small_texts == answers(small, "Qwen/Qwen3-0.5B")
    assert all(re.search(r"#### -?\d+$", t) for t in small_texts)
    assert 50 <= correct(small_texts) <= 120  # accuracy 0.4
    assert correct(big_texts) >= 180  # accuracy 0.97


# ---------------------------------------------------------------------------------------------
# startup failures and hangs

FAILURES = [
    ("oom", "acme/Arith-7B", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                             "total capacity of 79.15 GiB of which 1.06 GiB is free."),
    ("gated", "acme/Arith-7B", "huggingface_hub.errors.GatedRepoError: 401 Client Error."),
    ("gated", "acme/Arith-7B", "Access to model acme/Arith-7B is restricted. You must have access to it and be "
                               "authenticated to access it. Please log in."),
    ("not-found", "acme/Arith-7B", "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error."),
    ("not-found", "acme/Arith-7B", "Repository Not Found for url: https://huggingface.co/api/models/acme/Arith-7B"),
    ("trust-remote-code", "acme/Arith-7B", "ValueError: The repository for acme/Arith-7B contains custom code"),
    ("crash", "acme/Arith-7B", "RuntimeError: Engine core initialization failed. See root cause above."),
    ("", "acme/custom-code-7B", "Please pass the argument `trust_remote_code=True` to allow custom code to be run."),
]


@pytest.mark.parametrize("kind, model, message", FAILURES)
def test_startup_failures_print_vllms_error_and_exit_1_without_an_engine(stubs, kind, model, message):
    stub = stubs.start(model, OPS_VLLM_STUB_FAIL=kind)
    engine = stub.engine_pid()

    assert stub.wait_exit() == 1
    log = stub.log()
    assert message in log
    assert log.index("Starting to load model") < log.index(message)
    assert "Application startup complete" not in log
    assert not alive(engine)


def test_a_custom_code_model_starts_with_trust_remote_code(stubs):
    stub = stubs.start("acme/custom-code-7B", "--trust-remote-code").wait_ready()

    assert "contains custom code" not in stub.log()


@pytest.mark.parametrize("hang, last_line, missing_line", [
    ("loading", "Starting to load model", "Loading weights took"),
    ("compiling", "Dynamo bytecode transform time", "Compiling a graph"),
    ("1", "torch.compile takes", "Memory profiling takes"),
    ("cuda-graphs", "Capturing CUDA graph shapes:   0%", "Graph capturing finished"),
])
def test_a_hung_phase_never_gets_ready_and_ctrl_c_still_stops_it(stubs, hang, last_line, missing_line):
    stub = stubs.start(OPS_VLLM_STUB_HANG=hang)
    engine = stub.engine_pid()
    wait_until(lambda: last_line in stub.log(), last_line)

    assert [stub.health() for _ in range(3)] == [503, 503, 503]
    assert http(stub.url + "/v1/models")[0] == 503
    assert missing_line not in stub.log()
    os.killpg(stub.proc.pid, signal.SIGINT)
    assert stub.wait_exit() == 0
    assert not alive(engine)


def test_hung_requests_never_answer_while_health_and_models_do(stubs):
    stub = stubs.start(OPS_VLLM_STUB_HANG="requests").wait_ready()

    assert stub.health() == 200
    assert http(stub.url + "/v1/models")[0] == 200
    with pytest.raises(OSError):  # the client's timeout
        http(stub.url + "/v1/completions", {"prompt": "What is 1 + 1?"}, timeout=0.3)
    os.kill(stub.proc.pid, signal.SIGTERM)
    assert stub.wait_exit() == 0


# ---------------------------------------------------------------------------------------------
# processes: the engine child and signals


def test_the_engine_child_is_recognisable_and_ctrl_c_stops_both(stubs):
    stub = stubs.start().wait_ready()
    engine = stub.engine_pid()

    assert "VLLM::EngineCore" in Path(f"/proc/{engine}/cmdline").read_bytes().decode().split("\0")
    assert Path(f"/proc/{engine}/comm").read_text().strip() == "VLLM::EngineCor"
    assert parent_pid(engine) == stub.proc.pid
    assert os.getpgid(engine) == os.getpgid(stub.proc.pid)  # one group: Ctrl-C reaches both
    os.killpg(stub.proc.pid, signal.SIGINT)
    assert stub.wait_exit() == 0
    assert "INFO:     Shutting down" in stub.log()
    assert not alive(engine)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_server_and_its_engine(stubs, signum):
    stub = stubs.start().wait_ready()
    engine = stub.engine_pid()

    os.kill(stub.proc.pid, signum)

    assert stub.wait_exit() == 0
    assert not alive(engine)


@pytest.mark.parametrize("signum, knobs, server_status", [
    (signal.SIGINT, {"OPS_VLLM_STUB_LEAK_ENGINE": "1"}, 0),
    (signal.SIGKILL, {}, -signal.SIGKILL),
])
def test_an_orphaned_engine_outlives_its_server_and_keeps_its_gpu_memory(stubs, tmp_path, signum, knobs, server_status):
    smi = install_fake_nvidia_smi(tmp_path / "bin", [gpu(0)])
    stub = stubs.start("acme/Arith-7B", "--gpu-memory-utilization", "0.5", OPS_FAKE_GPU_DIR=smi.parent, **knobs)
    stub.wait_ready()
    engine = stub.engine_pid()

    os.kill(stub.proc.pid, signum)

    assert stub.wait_exit() == server_status
    assert alive(engine)
    assert parent_pid(engine) != stub.proc.pid
    assert memory_used(smi) == [1 + 40960]


@pytest.mark.parametrize("stubborn", [False, True])
def test_the_engine_ignores_sigint_and_sighup_and_dies_on_sigterm_unless_stubborn(stubs, stubborn):
    stub = stubs.start(**({"OPS_VLLM_STUB_STUBBORN": "1"} if stubborn else {})).wait_ready()
    engine = stub.engine_pid()

    os.kill(engine, signal.SIGINT)
    os.kill(engine, signal.SIGHUP)
    time.sleep(0.2)  # time to die, were it going to
    assert alive(engine)
    os.kill(engine, signal.SIGTERM)
    if stubborn:
        time.sleep(0.2)
        assert alive(engine)
        os.kill(engine, signal.SIGKILL)
    wait_until(lambda: not alive(engine), "the engine to die")


def test_a_second_signal_exits_without_waiting_for_a_stubborn_engine(stubs):
    stub = stubs.start(OPS_VLLM_STUB_STUBBORN="1").wait_ready()
    engine = stub.engine_pid()

    os.kill(stub.proc.pid, signal.SIGTERM)
    wait_until(lambda: "INFO:     Shutting down" in stub.log(), "the shutdown to start")
    assert stub.proc.poll() is None  # waiting for an engine that ignores SIGTERM
    os.kill(stub.proc.pid, signal.SIGTERM)

    assert stub.wait_exit() == 1
    assert alive(engine)


# ---------------------------------------------------------------------------------------------
# the fake nvidia-smi


def nvidia_smi(smi, *args) -> str:
    result = subprocess.run([sys.executable, str(smi), *args], capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 0, result.stderr
    return result.stdout


def memory_used(smi) -> list:
    out = nvidia_smi(smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits")
    return [int(line) for line in out.split()]


def compute_apps(smi) -> list:
    out = nvidia_smi(smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
    return [tuple(int(cell) for cell in line.split(", ")) for line in out.splitlines()]


def test_fake_nvidia_smi_counts_only_live_registered_processes(tmp_path):
    smi = install_fake_nvidia_smi(tmp_path, [gpu(0), gpu(1, used_mib=100)])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        register_gpu_process(tmp_path, os.getpid(), [1], 0.5)
        register_gpu_process(tmp_path, dead.pid, [0, 1], 0.9)
        register_gpu_process(tmp_path, zombie.pid, [0], 0.9)

        assert memory_used(smi) == [1, 100 + 40960]
        assert compute_apps(smi) == [(os.getpid(), 40960)]
    finally:
        zombie.wait()


def test_the_stub_engine_holds_fake_gpu_memory_until_it_stops(stubs, tmp_path):
    smi = install_fake_nvidia_smi(tmp_path / "bin", 2)
    stub = stubs.start("acme/Arith-7B", "-tp", "2", "--gpu-memory-utilization", "0.5", OPS_FAKE_GPU_DIR=smi.parent)
    stub.wait_ready()
    engine = stub.engine_pid()

    assert memory_used(smi) == [1 + 40960, 1 + 40960]
    assert compute_apps(smi) == [(engine, 40960), (engine, 40960)]
    os.kill(stub.proc.pid, signal.SIGINT)
    assert stub.wait_exit() == 0
    assert memory_used(smi) == [1, 1]
    assert compute_apps(smi) == []
