#!/usr/bin/env python3
"""A stand-in for vLLM's OpenAI-compatible server, for ops-tasks tests and demos. It is NOT vLLM.

vLLM needs a GPU and model weights; test pods have neither. This stub plays what ops tooling sees
of `vllm serve`: its command line, its startup log (vLLM V1 phase order and line format), the port
it binds early, an engine-core child process that can outlive a killed server, the tracebacks of
common startup failures, and the OpenAI HTTP API. Its "model" only works out simple arithmetic.

It is one stdlib-only file (Python 3.8+), so it also runs when copied to a pod:

    python3 vllm_stub.py serve MODEL [flags]        # installed: ops-vllm-stub serve MODEL [flags]
    python3 vllm_stub.py --model MODEL [flags]

Flags (unknown ones are logged as a WARNING and ignored; bad values exit 2): --host 0.0.0.0,
--port 8000, --served-model-name NAME... (default MODEL), -tp/--tensor-parallel-size 1,
-pp/--pipeline-parallel-size 1, --gpu-memory-utilization 0.9, --max-model-len 32768, --dtype auto,
-q/--quantization, --trust-remote-code, --api-key (default $VLLM_API_KEY).

Environment knobs:
  OPS_VLLM_STUB_STARTUP_S=0.4   startup time in seconds, split across loading, compiling,
                                profiling and cuda-graphs
  OPS_VLLM_STUB_FAIL=KIND       fail once loading starts, with a vLLM-like traceback, exit 1:
                                oom | gated | not-found | trust-remote-code | crash. A model id
                                containing "custom-code" without --trust-remote-code fails as
                                trust-remote-code without the knob.
  OPS_VLLM_STUB_HANG=PHASE      hang silently in loading | compiling | profiling | cuda-graphs
                                (1 = profiling); `requests`: start, but completions never answer
                                (/health and /v1/models still do)
  OPS_VLLM_STUB_LEAK_ENGINE=1   on shutdown, exit without stopping the engine child
  OPS_VLLM_STUB_STUBBORN=1      the engine child ignores SIGTERM (only SIGKILL stops it)
  OPS_VLLM_STUB_ACCURACY=0.x    the model's accuracy (see below)
  OPS_FAKE_GPU_DIR=DIR          the engine child registers its GPU memory for the fake nvidia-smi
                                in DIR: DIR/procs/<pid>.json = {"gpus": [0, ..], "fraction": F}

Processes: the server binds its port, then spawns `python3 vllm_stub.py --engine-child
VLLM::EngineCore --model MODEL ...` (kernel name `VLLM::EngineCor`) in the server's own process
group, and goes on once the engine reports in over a pipe. Like vLLM's engine core, the engine
ignores SIGINT and SIGHUP, dies on SIGTERM and keeps running (holding its "GPU memory") if the
server dies. The server stops on SIGINT, SIGTERM or SIGHUP: it logs `INFO:     Shutting down`,
stops HTTP, terminates the engine and waits for it, exits 0; a second signal meanwhile exits 1 at
once. Until startup completes every HTTP request gets 503, so a poller never hangs.

Answers: the last arithmetic expression of the question (numbers, + - * /, x, ×, ÷, "plus",
"minus", "times", "divided by", parentheses, unary minus) is evaluated exactly by a small parser
(never eval) and answered GSM8K-style: "12 + 7 = 19. The answer is 19.\\n#### 19". The answer is
right with probability accuracy(model), decided by sha256(model, question), so a question gets the
same answer in every run; a wrong answer is the right one plus a nonzero integer. Anything else
gets a short reply saying this is the ops-tasks stand-in.

accuracy(model), where model is the MODEL argument (not a served alias):
  OPS_VLLM_STUB_ACCURACY if set; else, if the name holds a parameter count (4B, 0.5B, 70b),
  clamp(0.5 + 0.1 * log2(billions), 0.2, 0.97): 0.5B -> 0.4, 4B -> 0.7, 8B -> 0.8, 32B+ -> 0.97;
  else sha256 of the name mapped into [0.35, 0.85].
"""

import argparse
import hashlib
import json
import math
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from fractions import Fraction
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

VERSION = "0.0.0+ops-stub"
ENGINE_CHILD_FLAG = "--engine-child"
ENGINE_TITLE = "VLLM::EngineCore"
FAIL_KINDS = ("oom", "gated", "not-found", "trust-remote-code", "crash")
PHASE_SHARES = {"loading": 0.4, "compiling": 0.25, "profiling": 0.15, "cuda-graphs": 0.2}
GIB = 2 ** 30
GPU_TOTAL_GIB = 79.15  # what an 80 GB A100/H100 reports to torch
KV_BYTES_PER_TOKEN = 144 * 1024  # an 8B-class model in bf16: 36 layers x 8 KV heads x 128 x 2 x 2
CUDA_GRAPH_SHAPES = 67
SITE = "/usr/local/lib/python3.12/dist-packages"

# ---------------------------------------------------------------------------------------------
# Log lines


# reentrant: a signal handler that logs may interrupt the main thread inside emit()
_output_lock = threading.RLock()


def emit(line, stream=None):
    """Write one line and flush: tmux panes and log files must show each phase as it happens."""
    stream = stream or sys.stdout
    with _output_lock:  # handler threads log too; whole lines only
        try:
            try:
                stream.write(line + "\n")
            except UnicodeEncodeError:  # an ASCII-only terminal still gets the line
                stream.write(line.encode("ascii", "replace").decode("ascii") + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not take the server down


def log(level, source, message, engine_pid=None):
    """vLLM's format, `INFO 11-28 12:00:01 [api_server.py:1077] message`, on every line.

    Engine-core lines carry vLLM's `(EngineCore_0 pid=N) ` prefix."""
    prefix = "(EngineCore_0 pid=%d) " % engine_pid if engine_pid else ""
    stamp = time.strftime("%m-%d %H:%M:%S")
    for part in message.split("\n"):
        emit("%s%s %s [%s] %s" % (prefix, level, stamp, source, part))


def uvicorn_log(message):
    emit("INFO:     " + message)


# ---------------------------------------------------------------------------------------------
# Command line and knobs


def _bounded(kind, low, high, what):
    def parse(text):
        value = kind(text)  # ValueError becomes argparse's "invalid ... value" message
        if not low <= value <= high:
            raise argparse.ArgumentTypeError("%s must be in [%s, %s], got %s" % (what, low, high, text))
        return value

    parse.__name__ = kind.__name__
    return parse


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ops-vllm-stub",
        description="A stand-in for `vllm serve` (ops-tasks tests and demos); not vLLM.",
        allow_abbrev=False,  # an unknown vLLM flag must not pass for an abbreviation of ours
    )
    parser.add_argument("words", nargs="*", metavar="serve MODEL", help="`serve MODEL`, as for vllm")
    parser.add_argument("--model", metavar="MODEL", help="the model id (instead of `serve MODEL`)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (0.0.0.0)")
    parser.add_argument("--port", type=_bounded(int, 0, 65535, "port"), default=8000, metavar="N",
                        help="port to bind (8000)")
    parser.add_argument("--served-model-name", nargs="+", metavar="NAME",
                        help="names the API answers to (MODEL)")
    parser.add_argument("--tensor-parallel-size", "-tp", type=_bounded(int, 1, 64, "size"), default=1, metavar="N",
                        help="GPUs per pipeline stage (1)")
    parser.add_argument("--pipeline-parallel-size", "-pp", type=_bounded(int, 1, 64, "size"), default=1,
                        metavar="N", help="pipeline stages (1)")
    parser.add_argument("--gpu-memory-utilization", type=_bounded(float, 0.01, 1.0, "fraction"), default=0.9,
                        metavar="F", help="share of each GPU's memory to hold (0.9)")
    parser.add_argument("--max-model-len", type=_bounded(int, 1, 2 ** 31, "length"), default=32768, metavar="N",
                        help="context length reported by /v1/models (32768)")
    parser.add_argument("--dtype", default="auto", help="weights dtype (auto)")
    parser.add_argument("--quantization", "-q", default=None, help="quantization method (none)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow models with custom code")
    parser.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"), metavar="KEY",
                        help="require `Authorization: Bearer KEY` on /v1 (default: $VLLM_API_KEY)")
    return parser


def parse_args(argv):
    """Returns (args, unknown): vllm's flags we play, and the rest to warn about."""
    parser = build_parser()
    # intermixed: `--port 1 serve MODEL` must find MODEL too (plain argparse would not)
    args, unknown = parser.parse_known_intermixed_args(argv)
    words = list(args.words)
    if words[:1] == ["serve"]:
        words.pop(0)
    if args.model is None and words:
        args.model = words.pop(0)
    if not args.model:
        parser.error("a model is required: `serve MODEL` or `--model MODEL`")
    args.served_model_name = args.served_model_name or [args.model]
    return args, words + unknown


def _truthy(value):
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class Knobs:
    """The OPS_VLLM_STUB_* environment knobs, read once; odd values become warnings, not crashes."""

    def __init__(self, env):
        self.warnings = []
        self.fail = self._choice(env, "OPS_VLLM_STUB_FAIL", FAIL_KINDS)
        hang_choices = tuple(PHASE_SHARES) + ("requests",)
        hang = env.get("OPS_VLLM_STUB_HANG", "")
        self.hang = "profiling" if _truthy(hang) else self._choice(env, "OPS_VLLM_STUB_HANG", hang_choices)
        self.leak_engine = _truthy(env.get("OPS_VLLM_STUB_LEAK_ENGINE"))
        self.stubborn = _truthy(env.get("OPS_VLLM_STUB_STUBBORN"))
        self.accuracy = self._number(env, "OPS_VLLM_STUB_ACCURACY", None, 0.0, 1.0)
        self.startup_s = self._number(env, "OPS_VLLM_STUB_STARTUP_S", 0.4, 0.0, 3600.0)

    def _choice(self, env, name, choices):
        value = env.get(name, "").strip().lower()
        if value in ("", "0", "false", "no", "off"):
            return None
        if value not in choices:
            self.warnings.append("%s=%s ignored: expected one of %s" % (name, value, ", ".join(choices)))
            return None
        return value

    def _number(self, env, name, default, low, high):
        value = env.get(name, "").strip()
        if not value:
            return default
        try:
            return min(max(float(value), low), high)
        except ValueError:
            self.warnings.append("%s=%s ignored: not a number" % (name, value))
            return default


# ---------------------------------------------------------------------------------------------
# The "model": accuracy and arithmetic answers


def unit_hash(*parts):
    """A number in [0, 1) from text, the same in every process (hash() is salted per process)."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


_PARAM_COUNT = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![A-Za-z0-9])")


def param_count_billions(model):
    """4 for "Qwen3-4B", 0.5 for "Qwen2.5-0.5B-Instruct", None if the name has no size."""
    match = _PARAM_COUNT.search(model)
    size = float(match.group(1)) if match else 0.0
    return size if size > 0 else None


def model_accuracy(model, override=None):
    """Bigger models score better, so evaluations through the stub tell models apart."""
    if override is not None:
        return override
    size = param_count_billions(model)
    if size:
        return min(max(0.5 + 0.1 * math.log2(size), 0.2), 0.97)
    return 0.35 + 0.5 * unit_hash("accuracy", model)


_WORD_OPERATORS = [
    (re.compile(r"\bdivided\s+by\b", re.I), " / "),
    (re.compile(r"\bmultiplied\s+by\b", re.I), " * "),
    (re.compile(r"\btimes\b", re.I), " * "),
    (re.compile(r"\bplus\b", re.I), " + "),
    (re.compile(r"\bminus\b", re.I), " - "),
    (re.compile(r"(?<=\d)\s+[xX]\s+(?=[\d(])"), " * "),
    (re.compile(r"(?<=\d),(?=\d{3}\b)"), ""),  # 12,000 is one number
]
_SYMBOLS = {"\u00d7": "*", "\u00f7": "/", "\u2212": "-", "\u2217": "*", "\u2215": "/"}
# a number glued to letters ("8B", "gpt4") is a word, not a number
_TOKEN = re.compile(r"[A-Za-z_]*\d+(?:\.\d+)?[A-Za-z_]*|[-+*/()]|[^\s\d()*/+-]+")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def _arithmetic_runs(text):
    """Maximal runs of numbers, operators and parentheses; any other word ends a run."""
    for word, symbol in _SYMBOLS.items():
        text = text.replace(word, symbol)
    for pattern, replacement in _WORD_OPERATORS:
        text = pattern.sub(replacement, text)
    runs, run = [], []
    for token in _TOKEN.findall(text):
        if token in "+-*/()" or re.fullmatch(r"\d+(?:\.\d+)?", token):
            run.append(token if token in "+-*/()" else Fraction(token))
        else:
            runs.append(run)
            run = []
    runs.append(run)
    return [r for r in runs if r]


class _Parser:
    """Recursive descent over one run: expr := term (+|- term)*, term := unary (*|/ unary)*,
    unary := -unary | +unary | number | ( expr ). It parses the longest valid prefix."""

    def __init__(self, tokens):
        self.tokens, self.pos = tokens, 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def binary(self, operators, operand):
        node = operand()
        while node is not None and self.peek() in operators:
            start = self.pos
            op = self.tokens[self.pos]
            self.pos += 1
            right = operand()
            if right is None:  # "12 + 7 -" ends at 7
                self.pos = start
                break
            node = ("bin", op, node, right)
        return node

    def expr(self):
        return self.binary(("+", "-"), self.term)

    def term(self):
        return self.binary(("*", "/"), self.unary)

    def unary(self):
        token, start = self.peek(), self.pos
        if token in ("-", "+"):
            self.pos += 1
            operand = self.unary()
            if operand is None:
                self.pos = start
                return None
            return ("neg", operand) if token == "-" else operand
        if isinstance(token, Fraction):
            self.pos += 1
            return ("num", token)
        if token == "(":
            self.pos += 1
            inner = self.expr()
            if inner is not None and self.peek() == ")":
                self.pos += 1
                return inner
            self.pos = start
        return None


def find_expression(text):
    """The last expression with at least one binary operator, so a few-shot prompt is answered
    for its final question, not its worked examples."""
    found = None
    for run in _arithmetic_runs(text):
        start = 0
        while start < len(run):
            parser = _Parser(run[start:])
            node = parser.expr()
            if node is not None and node[0] == "bin":
                found = node
                start += parser.pos
            else:
                start += 1
    return found


def evaluate(node):
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "neg":
        return -evaluate(node[1])
    op, left, right = node[1], evaluate(node[2]), evaluate(node[3])
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    return left / right  # ZeroDivisionError: the caller answers like for any other non-question


def render(node, parent_precedence=0, right_side=False):
    """The expression with only the parentheses it needs: "(2 + 3) * 4", "-5 + 3"."""
    kind = node[0]
    if kind == "num":
        return format_number(node[1])
    if kind == "neg":
        return "-" + render(node[1], 3)
    precedence = _PRECEDENCE[node[1]]
    text = "%s %s %s" % (render(node[2], precedence), node[1], render(node[3], precedence, True))
    if precedence < parent_precedence or (right_side and precedence == parent_precedence):
        return "(%s)" % text
    return text


def format_number(value):
    """19, not 19.0; 2.5; at most 6 decimals."""
    if value.denominator == 1:
        return str(value.numerator)
    text = ("%.6f" % float(value)).rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


STAND_IN_REPLY = (
    "I am the ops-tasks stand-in for vLLM, not a real model: I only work out simple arithmetic, "
    "such as \"What is 12 + 7?\"."
)


def answer(question, model, accuracy):
    """The reply to one question: right with probability `accuracy`, the same in every run."""
    node = find_expression(question)
    if node is None:
        return STAND_IN_REPLY
    try:
        value = evaluate(node)
    except ZeroDivisionError:
        return STAND_IN_REPLY
    key = question.strip()
    if unit_hash("correct", model, key) >= accuracy:
        offset = 1 + int(unit_hash("offset", model, key) * 10)
        value += offset if unit_hash("sign", model, key) < 0.5 else -offset
    shown = format_number(value)
    return "%s = %s. The answer is %s.\n#### %s" % (render(node), shown, shown, shown)


_PIECE = re.compile(r"\s*\S+")


def count_tokens(text):
    """The stand-in's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def generate(question, model, accuracy, max_tokens):
    """(pieces, finish_reason): the answer cut into "tokens", cut short by max_tokens."""
    pieces = _PIECE.findall(answer(question, model, accuracy))
    if max_tokens is not None and len(pieces) > max_tokens:
        return pieces[:max_tokens], "length"
    return pieces, "stop"


# ---------------------------------------------------------------------------------------------
# HTTP API


class RequestError(Exception):
    def __init__(self, status, message, error_type="BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type


def error_payload(message, error_type, status):
    return {"object": "error", "message": message, "type": error_type, "param": None, "code": status}


class App:
    """What the HTTP handlers need: names, limits, accuracy, and whether startup is complete."""

    def __init__(self, args, knobs):
        self.model = args.model
        self.served_names = list(args.served_model_name)
        self.max_model_len = args.max_model_len
        self.api_key = args.api_key
        self.accuracy = model_accuracy(args.model, knobs.accuracy)
        self.hang_requests = knobs.hang == "requests"
        self.created = int(time.time())
        self.ready = threading.Event()


class StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung request must not keep the process alive at exit
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind looks up our FQDN, a DNS query that can stall startup offline
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):  # clients that hang up are normal
            log("WARNING", "api_server.py:1170", "error answering %s: %r" % (client_address[0], error))


class StubHTTPServer6(StubHTTPServer):
    address_family = socket.AF_INET6


def bind_http_server(host, port):
    """Bind and listen now (vLLM binds before loading the model); raises OSError if taken."""
    server_class = StubHTTPServer6 if ":" in host else StubHTTPServer
    return server_class((host, port), Handler)


class Handler(BaseHTTPRequestHandler):
    server_version = "uvicorn"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: a stream simply ends at close
    routes = {
        ("GET", "/health"): "health",
        ("GET", "/version"): "version",
        ("GET", "/v1/models"): "models",
        ("POST", "/v1/completions"): "completions",
        ("POST", "/v1/chat/completions"): "chat",
    }

    @property
    def app(self):
        return self.server.app

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def dispatch(self, method):
        self.raw_body = self.read_body()  # read even when refusing: unread bytes make the close a reset
        if not self.app.ready.is_set():
            return self.send_json(503, error_payload("The server is starting up.", "ServiceUnavailableError", 503))
        path = urlsplit(self.path).path
        if path.startswith("/v1/") and not self.authorized():
            return self.send_json(401, {"error": "Unauthorized"})
        route = self.routes.get((method, path))
        if route is None:
            if any(p == path for _, p in self.routes):
                return self.send_json(405, {"detail": "Method Not Allowed"})
            return self.send_json(404, {"detail": "Not Found"})
        try:
            getattr(self, "route_" + route)()
        except RequestError as error:
            self.send_json(error.status, error_payload(error.message, error.error_type, error.status))

    def read_body(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def authorized(self):
        return not self.app.api_key or self.headers.get("Authorization") == "Bearer " + self.app.api_key

    # --- routes

    def route_health(self):
        self.send_body(200, b"", "application/json")

    def route_version(self):
        self.send_json(200, {"version": VERSION})

    def route_models(self):
        app = self.app
        data = [
            {"id": name, "object": "model", "created": app.created, "owned_by": "vllm", "root": app.model,
             "parent": None, "max_model_len": app.max_model_len, "permission": []}
            for name in app.served_names
        ]
        self.send_json(200, {"object": "list", "data": data})

    def route_completions(self):
        body = self.json_body()
        model = self.requested_model(body)
        prompts = body.get("prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise RequestError(400, "`prompt` must be a string or a non-empty list of strings.")
        n, max_tokens = int_field(body, "n", 1), int_field(body, "max_tokens", None)
        self.hang_if_asked()
        choices = [generate(p, self.app.model, self.app.accuracy, max_tokens) for p in prompts for _ in range(n)]
        prompt_tokens = sum(count_tokens(p) for p in prompts)
        response = Response("cmpl", "text_completion", model, prompt_tokens, choices)
        if body.get("stream"):
            return self.send_events(response.completion_chunks(include_usage(body)))
        self.send_json(200, response.completion())

    def route_chat(self):
        body = self.json_body()
        model = self.requested_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise RequestError(400, "`messages` must be a non-empty list of message objects.")
        texts = [message_text(m) for m in messages]
        user_texts = [t for m, t in zip(messages, texts) if m.get("role") == "user"]
        question = (user_texts or texts)[-1]
        n = int_field(body, "n", 1)
        max_tokens = int_field(body, "max_completion_tokens", None)
        max_tokens = int_field(body, "max_tokens", None) if max_tokens is None else max_tokens
        self.hang_if_asked()
        choices = [generate(question, self.app.model, self.app.accuracy, max_tokens) for _ in range(n)]
        prompt_tokens = sum(count_tokens(t) for t in texts)
        response = Response("chatcmpl", "chat.completion", model, prompt_tokens, choices)
        if body.get("stream"):
            return self.send_events(response.chat_chunks(include_usage(body)))
        self.send_json(200, response.chat())

    # --- request helpers

    def json_body(self):
        try:
            body = json.loads(self.raw_body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise RequestError(400, "Invalid JSON body: %s" % error)
        if not isinstance(body, dict):
            raise RequestError(400, "The request body must be a JSON object.")
        return body

    def requested_model(self, body):
        name = body.get("model") or self.app.served_names[0]  # vLLM lets `model` default
        if name not in self.app.served_names:
            raise RequestError(404, "The model `%s` does not exist." % name, "NotFoundError")
        return name

    def hang_if_asked(self):
        while self.app.hang_requests:  # OPS_VLLM_STUB_HANG=requests: a wedged engine
            time.sleep(3600)

    # --- responses

    def send_body(self, status, data, content_type, extra_headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status, payload):
        self.send_body(status, json.dumps(payload).encode("utf-8"), "application/json")

    def send_events(self, chunks):
        """Server-sent events, as OpenAI streams: `data: {...}` per chunk, then `data: [DONE]`."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(b"data: " + json.dumps(chunk).encode("utf-8") + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def log_request(self, code="-", size="-"):
        """uvicorn's access line: `INFO:     127.0.0.1:5678 - "GET /v1/models HTTP/1.1" 200 OK`."""
        if not self.app.ready.is_set():
            return  # "uvicorn" has not started yet
        try:
            status = int(code)
            phrase = HTTPStatus(status).phrase
        except ValueError:
            status, phrase = code, ""
        host, port = self.client_address[:2]
        uvicorn_log('%s:%s - "%s" %s %s' % (host, port, self.requestline, status, phrase))

    def log_message(self, format, *args):
        pass  # http.server's own stderr lines; access lines come from log_request


def int_field(body, name, default):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(400, "`%s` must be a positive integer, got %s." % (name, json.dumps(value)))
    return value


def include_usage(body):
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def message_text(message):
    """A chat message's text: `content` is a string or a list of {"type": "text", "text": ...}."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise RequestError(400, "`content` must be a string or a list of content parts.")


class Response:
    """One completion's choices, rendered as OpenAI objects or stream chunks."""

    def __init__(self, id_prefix, kind, model, prompt_tokens, choices):
        self.id = "%s-%s" % (id_prefix, uuid.uuid4().hex)
        self.kind, self.model, self.created = kind, model, int(time.time())
        self.choices = choices  # [(pieces, finish_reason)]
        completion_tokens = sum(len(pieces) for pieces, _ in choices)
        self.usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
                      "completion_tokens": completion_tokens, "prompt_tokens_details": None}

    def envelope(self, kind, choices, **extra):
        payload = {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}
        payload.update(extra)
        return payload

    def completion(self):
        choices = [
            {"index": i, "text": "".join(pieces), "logprobs": None, "finish_reason": reason, "stop_reason": None,
             "prompt_logprobs": None}
            for i, (pieces, reason) in enumerate(self.choices)
        ]
        return self.envelope(self.kind, choices, usage=self.usage)

    def chat(self):
        choices = [
            {"index": i, "message": {"role": "assistant", "reasoning_content": None, "content": "".join(pieces),
                                     "tool_calls": []},
             "logprobs": None, "finish_reason": reason, "stop_reason": None}
            for i, (pieces, reason) in enumerate(self.choices)
        ]
        return self.envelope(self.kind, choices, usage=self.usage, prompt_logprobs=None)

    def completion_chunks(self, with_usage):
        for i, (pieces, reason) in enumerate(self.choices):
            for k, piece in enumerate(pieces or [""]):
                finish = reason if k == max(len(pieces) - 1, 0) else None
                yield self.envelope(self.kind, [{"index": i, "text": piece, "logprobs": None,
                                                 "finish_reason": finish, "stop_reason": None}])
        if with_usage:
            yield self.envelope(self.kind, [], usage=self.usage)

    def chat_chunks(self, with_usage):
        kind = "chat.completion.chunk"
        for i, (pieces, reason) in enumerate(self.choices):
            yield self.envelope(kind, [{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}])
            for k, piece in enumerate(pieces or [""]):
                finish = reason if k == max(len(pieces) - 1, 0) else None
                yield self.envelope(kind, [{"index": i, "delta": {"content": piece}, "logprobs": None,
                                            "finish_reason": finish, "stop_reason": None}])
        if with_usage:
            yield self.envelope(kind, [], usage=self.usage)


# ---------------------------------------------------------------------------------------------
# Engine child: a process that "holds GPU memory" until SIGTERM (or SIGKILL)


def spawn_engine(args):
    """Start the engine child in our process group, as vLLM's V1 engine core is."""
    gpus = ",".join(str(i) for i in range(args.tensor_parallel_size * args.pipeline_parallel_size))
    argv = [sys.executable, os.path.abspath(__file__), ENGINE_CHILD_FLAG, ENGINE_TITLE, "--model", args.model,
            "--gpus", gpus, "--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    # stdout is the handshake pipe only (see engine_child_main); stderr shows a crashing engine
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)


def wait_for_engine_handshake(engine):
    """Block until the engine has set up its signals and GPU memory, so that "ready" implies both;
    an engine that died first is an engine crash."""
    line = engine.stdout.readline()
    engine.stdout.close()
    if line.strip() != b"ready":
        raise StartupFailure("crash")


def set_process_name(name):
    """`ps -e`, `top` and `pgrep` show the kernel name; vLLM's engine shows as VLLM::EngineCor."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)  # 15 = PR_SET_NAME
    except (ImportError, OSError, AttributeError):
        pass  # not Linux: the command line still says VLLM::EngineCore


def register_fake_gpu_memory(fake_gpu_dir, gpus, fraction):
    """Tell the fake nvidia-smi in fake_gpu_dir that this pid holds `fraction` of these GPUs."""
    if not fake_gpu_dir:
        return None
    procs = os.path.join(fake_gpu_dir, "procs")
    path = os.path.join(procs, "%d.json" % os.getpid())
    try:
        os.makedirs(procs, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"gpus": gpus, "fraction": fraction}, f)
        os.replace(path + ".tmp", path)  # nvidia-smi never reads half a file
    except OSError as error:
        emit("VLLM::EngineCore: cannot register fake GPU memory in %s: %s" % (procs, error), sys.stderr)
        return None
    return path


def engine_child_main(argv):
    parser = argparse.ArgumentParser(prog=ENGINE_TITLE)
    parser.add_argument("title")
    parser.add_argument("--model", default="")
    parser.add_argument("--gpus", default="0")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    options = parser.parse_args(argv)
    set_process_name(ENGINE_TITLE)
    # vLLM workers leave Ctrl-C and hangups to the API server, which stops them with SIGTERM
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    gpus = [int(i) for i in options.gpus.split(",") if i]
    registration = register_fake_gpu_memory(os.environ.get("OPS_FAKE_GPU_DIR"), gpus, options.gpu_memory_utilization)
    if _truthy(os.environ.get("OPS_VLLM_STUB_STUBBORN")):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda signum, frame: die_by_signal(signum, registration))
    handshake_done()
    while True:  # no watch on the parent: an orphaned engine keeps its GPU memory, as vLLM's can
        time.sleep(3600)


def handshake_done():
    """Tell the server we are set up, then let go of the pipe: an orphan must hold nobody's pipe open."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def die_by_signal(signum, registration):
    """Free the fake GPU memory, then die of the signal itself so the exit status tells."""
    if registration:
        try:
            os.unlink(registration)
        except OSError:
            pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


# ---------------------------------------------------------------------------------------------
# Server startup: vLLM V1's phases, in its order


class StartupFailure(Exception):
    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


class Shutdown(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM/SIGHUP; BaseException so nothing swallows it."""


def raise_shutdown(signum, frame):
    raise Shutdown(signum)


def exit_now(signum, frame):
    uvicorn_log("Exiting at once on a second signal (the engine may live on)")
    os._exit(1)


def handle_stop_signals(handler):
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def hang_forever():
    while True:  # a silent hang, as a wedged NCCL or compile looks; signals still stop the server
        time.sleep(3600)


def weights_gib_per_gpu(args):
    """bf16 weights of the size in the name (8B if none), split over the GPUs."""
    billions = param_count_billions(args.model) or 8.0
    bytes_per_param = 0.55 if args.quantization else (4 if args.dtype in ("float32", "float") else 2)
    return billions * 1e9 * bytes_per_param / GIB / (args.tensor_parallel_size * args.pipeline_parallel_size)


class Startup:
    """Phases 4-7 (loading, compiling, profiling, cuda-graphs), each spending its share of
    OPS_VLLM_STUB_STARTUP_S, or hanging there if OPS_VLLM_STUB_HANG names it."""

    def __init__(self, args, knobs, engine_pid):
        self.args, self.knobs, self.engine_pid = args, knobs, engine_pid
        self.started = time.monotonic()

    def log(self, source, message, level="INFO"):
        log(level, source, message, engine_pid=self.engine_pid)

    def spend(self, phase):
        if self.knobs.hang == phase:
            hang_forever()
        start = time.monotonic()
        time.sleep(self.knobs.startup_s * PHASE_SHARES[phase])
        return time.monotonic() - start

    def run(self):
        weights = self.load_weights()
        self.compile()
        self.profile(weights)
        self.capture_cuda_graphs()
        self.log("core.py:193", "init engine (profile, create kv cache, warmup model) took %.2f seconds"
                 % (time.monotonic() - self.started))

    def load_weights(self):
        args = self.args
        self.log("gpu_model_runner.py:1770", "Starting to load model %s..." % args.model)
        failure = self.knobs.fail
        if failure is None and "custom-code" in args.model.lower() and not args.trust_remote_code:
            failure = "trust-remote-code"
        if failure:
            raise StartupFailure(failure)
        took = self.spend("loading")
        weights = weights_gib_per_gpu(args)
        self.log("default_loader.py:262", "Loading weights took %.2f seconds" % took)
        self.log("gpu_model_runner.py:1792", "Model loading took %.4f GiB and %.6f seconds" % (weights, took + 0.01))
        return weights

    def compile(self):
        share = self.knobs.startup_s * PHASE_SHARES["compiling"]
        self.log("backends.py:508", "Dynamo bytecode transform time: %.2f s" % (share * 0.3))
        took = self.spend("compiling")
        self.log("backends.py:155", "Compiling a graph for dynamic shape takes %.2f s" % took)
        self.log("monitor.py:34", "torch.compile takes %.2f s in total" % (took + share * 0.3))

    def profile(self, weights):
        args = self.args
        took = self.spend("profiling")
        # never below 0.5 GiB: the stub plays a model that fits (no "No available memory" error)
        kv_gib = max(GPU_TOTAL_GIB * args.gpu_memory_utilization - weights - 1.6, 0.5)
        gpus = args.tensor_parallel_size * args.pipeline_parallel_size
        tokens = int(kv_gib * gpus * GIB / KV_BYTES_PER_TOKEN)
        self.log("gpu_worker.py:276", "Memory profiling takes %.2f seconds" % took)
        self.log("gpu_worker.py:227", "Available KV cache memory: %.2f GiB" % kv_gib)
        self.log("kv_cache_utils.py:716", "GPU KV cache size: {:,} tokens".format(tokens))
        self.log("kv_cache_utils.py:720", "Maximum concurrency for {:,} tokens per request: {:.2f}x".format(
            args.max_model_len, tokens / args.max_model_len))

    def capture_cuda_graphs(self):
        prefix = "(EngineCore_0 pid=%d) " % self.engine_pid
        emit(prefix + "Capturing CUDA graph shapes:   0%%|          | 0/%d [00:00<?, ?it/s]" % CUDA_GRAPH_SHAPES)
        took = self.spend("cuda-graphs")
        rate = CUDA_GRAPH_SHAPES / max(took, 1e-3)
        emit(prefix + "Capturing CUDA graph shapes: 100%%|%s| %d/%d [00:%02d<00:00, %.2fit/s]"
             % ("\u2588" * 10, CUDA_GRAPH_SHAPES, CUDA_GRAPH_SHAPES, int(took), rate))
        self.log("gpu_model_runner.py:2567", "Graph capturing finished in %.0f secs, took 0.5 GiB" % took)


def url_host(host):
    return "[%s]" % host if ":" in host else host


def announce(args, unknown, knobs):
    """Phase 1: version, arguments, and that this is not vLLM."""
    shown = dict(vars(args))
    shown.pop("words", None)
    if shown.get("api_key"):
        shown["api_key"] = "***"
    log("INFO", "api_server.py:1805", "vLLM API server version %s" % VERSION)
    log("INFO", "utils.py:326", "args: %s" % shown)
    log("INFO", "api_server.py:1806", "This is the ops-tasks stand-in for vLLM (vllm_stub.py), not vLLM: "
        "no GPU, no weights; it answers simple arithmetic questions.")
    if unknown:
        log("WARNING", "arg_utils.py:1785", "Found unknown args, ignored by the ops-tasks stand-in: %s" % unknown)
    for warning in knobs.warnings:
        log("WARNING", "api_server.py:1807", warning)


def announce_ready(args, app):
    """Phase 8; the API answers only after `Application startup complete.` is out."""
    log("INFO", "api_server.py:1818", "Starting vLLM API server 0 on http://%s:%d" % (url_host(args.host), args.port))
    for (method, path) in Handler.routes:
        log("INFO", "launcher.py:29", "Route: %s, Methods: %s" % (path, method))
    uvicorn_log("Started server process [%d]" % os.getpid())
    uvicorn_log("Waiting for application startup.")
    uvicorn_log("Application startup complete.")
    app.ready.set()


# ---------------------------------------------------------------------------------------------
# Failure tracebacks (what vLLM prints), by OPS_VLLM_STUB_FAIL kind


def _frames(*frames):
    return "".join('  File "%s", line %d, in %s\n    %s\n' % frame for frame in frames)


_CLI_FRAMES = _frames(
    ("/usr/local/bin/vllm", 10, "<module>", "sys.exit(main())"),
    (SITE + "/vllm/entrypoints/cli/main.py", 54, "main", "args.dispatch_function(args)"),
    (SITE + "/vllm/entrypoints/cli/serve.py", 57, "cmd", "uvloop.run(run_server(args))"),
    (SITE + "/vllm/entrypoints/openai/api_server.py", 1878, "run_server_worker",
     "async with build_async_engine_client(args, client_config) as engine_client:"),
)


def _hf_error(model, exception_line):
    return ("Traceback (most recent call last):\n" + _CLI_FRAMES + _frames(
        (SITE + "/vllm/engine/arg_utils.py", 1018, "create_model_config", "return ModelConfig("),
        (SITE + "/vllm/transformers_utils/config.py", 329, "get_config",
         "config_dict, _ = PretrainedConfig.get_config_dict("),
        (SITE + "/transformers/utils/hub.py", 470, "cached_files", "hf_hub_download("),
        (SITE + "/huggingface_hub/utils/_http.py", 426, "hf_raise_for_status",
         "raise _format(error_class, message, response) from e"),
    ) + exception_line.replace("MODEL", model))


def _request_id():
    return "Root=1-%s-%s;%s" % (uuid.uuid4().hex[:8], uuid.uuid4().hex[:24], uuid.uuid4())


OOM_MESSAGE = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
    "79.15 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.08 GiB memory in "
    "use. Of the allocated memory 76.52 GiB is allocated by PyTorch, and 1.03 GiB is reserved by PyTorch but "
    "unallocated. If reserved but unallocated memory is large try setting "
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory "
    "Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)


def engine_failed_traceback(exit_code):
    return ("Traceback (most recent call last):\n" + _CLI_FRAMES + _frames(
        (SITE + "/vllm/v1/engine/core_client.py", 1086, "__init__", "super().__init__("),
        (SITE + "/vllm/v1/engine/utils.py", 729, "wait_for_engine_startup",
         'raise RuntimeError("Engine core initialization failed. "'),
    ) + "RuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {'EngineCore_0': %d}" % exit_code)


def report_failure(kind, model, engine_pid):
    """Print what vLLM prints for this failure: an engine-core traceback (oom) or a front-end one
    (Hugging Face and config errors), and the front end's RuntimeError when the engine died."""
    if kind == "oom":
        engine_trace = "EngineCore failed to start.\nTraceback (most recent call last):\n" + _frames(
            (SITE + "/vllm/v1/engine/core.py", 699, "run_engine_core", "engine_core = EngineCoreProc(*args, **kwargs)"),
            (SITE + "/vllm/v1/engine/core.py", 83, "__init__", "self.model_executor = executor_class(vllm_config)"),
            (SITE + "/vllm/v1/worker/gpu_model_runner.py", 1773, "load_model", "self.model = model_loader.load_model("),
            (SITE + "/torch/nn/modules/module.py", 1355, "convert", "return t.to("),
        ) + OOM_MESSAGE
        log("ERROR", "core.py:708", engine_trace, engine_pid=engine_pid)
        emit(engine_failed_traceback(1), sys.stderr)
    elif kind == "crash":
        emit(engine_failed_traceback(-9), sys.stderr)
    elif kind == "gated":
        emit(_hf_error(model, (
            "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: %s)\n\n"
            "Cannot access gated repo for url https://huggingface.co/MODEL/resolve/main/config.json.\n"
            "Access to model MODEL is restricted. You must have access to it and be authenticated to access it. "
            "Please log in.") % _request_id()), sys.stderr)
    elif kind == "not-found":
        emit(_hf_error(model, (
            "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. (Request ID: %s)\n\n"
            "Repository Not Found for url: https://huggingface.co/api/models/MODEL/revision/main.\n"
            "Please make sure you specified the correct `repo_id` and `repo_type`.\n"
            "If you are trying to access a private or gated repo, make sure you are authenticated.") % _request_id()),
            sys.stderr)
    else:  # trust-remote-code
        emit(_hf_error(model, (
            "ValueError: The repository for MODEL contains custom code which must be executed to correctly load "
            "the model. You can inspect the repository content at https://hf.co/MODEL.\n"
            "Please pass the argument `trust_remote_code=True` to allow custom code to be run.")), sys.stderr)


# ---------------------------------------------------------------------------------------------
# The server process


def stop_engine(engine):
    """SIGTERM the engine and wait; a stubborn one keeps us here until a second signal."""
    engine.terminate()
    try:
        engine.wait(timeout=2)
    except subprocess.TimeoutExpired:
        log("WARNING", "core_client.py:421", "Engine core process %d did not exit on SIGTERM; still waiting "
            "(a second signal exits without it)" % engine.pid)
        engine.wait()


def shut_down(httpd, engine, knobs):
    uvicorn_log("Shutting down")
    httpd.shutdown()
    httpd.server_close()
    uvicorn_log("Waiting for application shutdown.")
    if engine is not None and not knobs.leak_engine:  # LEAK_ENGINE: the orphaned-engine bug
        stop_engine(engine)
    uvicorn_log("Application shutdown complete.")
    uvicorn_log("Finished server process [%d]" % os.getpid())
    return 0


def fail_startup(kind, args, httpd, engine):
    handle_stop_signals(exit_now)  # already on the way out
    engine.kill()  # a failed engine core is gone before the front end reports (even a stubborn one)
    engine.wait()
    report_failure(kind, args.model, engine.pid)
    httpd.shutdown()
    httpd.server_close()
    return 1


def serve(args, unknown, knobs):
    announce(args, unknown, knobs)
    try:
        httpd = bind_http_server(args.host, args.port)
    except OSError as error:  # uvicorn's words
        reason = (error.strerror or str(error)).lower()
        log("ERROR", "api_server.py:1850", "[Errno %s] error while attempting to bind on address %r: %s"
            % (error.errno, (args.host, args.port), reason))
        return 1
    app = App(args, knobs)
    httpd.app = app
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    handle_stop_signals(raise_shutdown)
    engine = None
    try:
        engine = spawn_engine(args)
        log("INFO", "core.py:694", "Waiting for init message from front-end.", engine_pid=engine.pid)
        wait_for_engine_handshake(engine)
        log("INFO", "core.py:75", "Initializing a V1 LLM engine (v%s) with config: model=%r, max_seq_len=%d, "
            "tensor_parallel_size=%d, pipeline_parallel_size=%d, dtype=%s, quantization=%s" % (
                VERSION, args.model, args.max_model_len, args.tensor_parallel_size,
                args.pipeline_parallel_size, args.dtype, args.quantization), engine_pid=engine.pid)
        Startup(args, knobs, engine.pid).run()
        announce_ready(args, app)
        hang_forever()  # serving happens in the HTTP thread; this thread waits for a signal
    except StartupFailure as failure:
        return fail_startup(failure.kind, args, httpd, engine)
    except Shutdown:
        handle_stop_signals(exit_now)
        return shut_down(httpd, engine, knobs)


def main(argv=None):
    """`ops-vllm-stub serve MODEL [flags]`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [ENGINE_CHILD_FLAG]:
        return engine_child_main(argv[1:])
    args, unknown = parse_args(argv)
    return serve(args, unknown, Knobs(os.environ))


if __name__ == "__main__":
    sys.exit(main())
