"""A local fake of the Lium HTTP API, for tests and demos: the real SDK (`lium.io`) talks to it.

stdlib only: an http.server in a thread on 127.0.0.1, serving under /api the calls that pod.ls,
pod.up, pod.ps and pod.down make through the SDK, with the JSON shapes the SDK parses
(lium/sdk/client.py of lium.io 0.32):

    GET  /api/executors          (view, machine_names, gpu_count_gte/lte)   Lium.ls
    GET  /api/machines                                                       Lium.ls(gpu_type=...)
    GET  /api/executors/default-docker-image, /api/templates[/<id>]          Lium.up: the template
    GET  /api/ssh-keys, POST /api/ssh-keys                                   Lium.up: the key
    POST /api/executors/<id>/rent    -> {"success": true, "pod_id": ...}     Lium.up
    GET  /api/pods, /api/pods/<id>, /api/pods/<id>/events                    Lium.ps, wait_ready
    POST /api/pods/<id>/schedule-removal                                     Lium.schedule_termination
    DELETE /api/pods/<id>                                                    Lium.down
    GET  /api/volumes, POST /api/volumes                                     Lium.volumes
    GET  /api/version                                                        Lium.features

Point the SDK at it with `fake.env()`: LIUM_API_KEY (checked on every request, as X-API-KEY)
and LIUM_BASE_URL. A rented pod answers SSH where `ssh=` says: a real sshd test pod.
"""

import json
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlparse

DEFAULT_IMAGE = {"docker_image": "daturaai/pytorch", "docker_image_tag": "2.4.0-py3.11-cuda12.2.0-devel-ubuntu22.04"}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _gpu_short(machine_name: str) -> str:
    """A100 for "NVIDIA A100-SXM4-80GB": enough of the SDK's extract_gpu_type for filtering."""
    for word in machine_name.replace("-", " ").split():
        if any(ch.isdigit() for ch in word) and word[0].isalpha():
            return word.upper()
    return machine_name


class FakeLium:
    """The fake API and its state (executors, volumes, pods, registered keys), in one object."""

    def __init__(self, api_key: str = "lium-fake-key-5f0c2a9e71d44b", *, pending_polls: int = 0,
                 ssh: Optional[dict] = None):
        self.api_key = api_key
        # How many pod listings after a rent still show the pod PENDING (no SSH yet).
        self.pending_polls = pending_polls
        # Where rented pods answer SSH: {"user", "host", "port"}.
        self.ssh = dict(ssh or {"user": "root", "host": "127.0.0.1", "port": 22})
        # Where the next rents answer SSH, one each in the order rented (a fleet's pods); then `ssh`.
        self.ssh_queue: list = []
        # Pod names whose rent never starts (status FAILED at once; no SSH endpoint taken).
        self.failing_names: set = set()
        self.executors: dict = {}
        self.volumes: dict = {}
        self.pods: dict = {}
        self.ssh_keys: list = []
        self.template = {"id": str(uuid.uuid4()), "name": "PyTorch (CUDA)", "category": "PYTORCH",
                         "status": "VERIFY_SUCCESS", "supports_volume_encryption": False, **DEFAULT_IMAGE}
        self.requests: list = []  # (method, path, query, json body): what the SDK sent
        self.lock = threading.Lock()
        self.server = None
        self.thread = None

    # -- setting it up

    def add_executor(self, machine_name: str = "NVIDIA A100-SXM4-80GB", gpu_count: int = 8,
                     price_per_gpu: float = 1.25, country_code: str = "US", country: str = "United States",
                     city: str = "Dallas") -> dict:
        executor_id = str(uuid.uuid4())
        self.executors[executor_id] = {
            "id": executor_id,
            "machine_name": machine_name,
            "gpu_count": gpu_count,
            "available_gpu_count": gpu_count,
            "price_per_gpu": price_per_gpu,
            "location": {"country": country, "country_code": country_code, "city": city},
            "specs": {"gpu": {"count": gpu_count, "driver": "550.54.15",
                              "details": [{"name": machine_name, "capacity": 81920}] * gpu_count},
                      "cpu": {"count": 64}},
            "status": "available",
            "executor_ip_address": "203.0.113.7",
            "max_cuda_version": 12.4,
            "min_gpu_count_for_rental": None,
        }
        return self.executors[executor_id]

    def add_volume(self, name: str, description: str = "") -> dict:
        volume_id = str(uuid.uuid4())
        self.volumes[volume_id] = {"id": volume_id, "name": name, "description": description,
                                   "created_at": _now(), "updated_at": None, "current_size_bytes": 0,
                                   "current_file_count": 0, "current_size_gb": 0.0, "current_size_mb": 0.0}
        return self.volumes[volume_id]

    def rents(self) -> list:
        """The bodies of the rent requests the SDK sent."""
        return [body for method, path, _, body in self.requests if method == "POST" and path.endswith("/rent")]

    # -- running it

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def env(self) -> dict:
        return {"LIUM_API_KEY": self.api_key, "LIUM_BASE_URL": self.base_url}

    def start(self) -> "FakeLium":
        fake = self

        class Handler(_Handler):
            api = fake

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="fake-lium", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- the API

    def _rented_executors(self) -> set:
        return {pod["executor_id"] for pod in self.pods.values()}

    def _pod_json(self, pod: dict) -> dict:
        executor = self.executors[pod["executor_id"]]
        running = pod["status"] == "RUNNING"
        ssh = pod["ssh"]
        return {
            "id": pod["id"], "pod_name": pod["pod_name"], "status": pod["status"],
            "ssh_connect_cmd": f"ssh {ssh['user']}@{ssh['host']} -p {ssh['port']}" if running else None,
            "ports_mapping": {"22": ssh["port"]} if running else {},
            "created_at": pod["created_at"], "updated_at": pod["updated_at"],
            # /pods carries the executor without its price; the pod's own `price` is the $/h.
            "executor": {**executor, "price_per_gpu": None},
            "template": {**self.template, "volumes": ["/mnt"]},
            "removal_scheduled_at": pod["removal_scheduled_at"],
            "jupyter_installation_status": None, "jupyter_url": None,
            "price": executor["price_per_gpu"] * executor["gpu_count"], "gpu_count": executor["gpu_count"],
            "volume_id": pod["volume_id"],
            "phase": None if running else "pulling image",
            "estimated_ready_seconds": None if running else 5,
        }

    def handle(self, method: str, path: str, query: dict, body) -> tuple:
        """(status, JSON answer) for one request; runs under the lock."""
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] != "api":
            return 404, {"detail": "Not Found"}
        parts = parts[1:]
        if method == "GET" and parts == ["version"]:
            return 200, {"version": "fake-lium", "features": []}
        if method == "GET" and parts == ["executors"]:
            return 200, self._list_executors(query)
        if method == "GET" and parts == ["machines"]:
            names = sorted({e["machine_name"] for e in self.executors.values()})
            return 200, [{"name": n} for n in names]
        if method == "GET" and parts == ["executors", "default-docker-image"]:
            return 200, [DEFAULT_IMAGE]
        if method == "GET" and parts == ["templates"]:
            return 200, [self.template]
        if method == "GET" and len(parts) == 2 and parts[0] == "templates":
            return (200, self.template) if parts[1] == self.template["id"] else (404, {"detail": "Template not found"})
        if parts == ["ssh-keys"]:
            if method == "GET":
                return 200, self.ssh_keys
            if method == "POST":
                key = {"id": str(uuid.uuid4()), "name": body.get("name"), "public_key": body.get("public_key"),
                       "created_at": _now()}
                self.ssh_keys.append(key)
                return 200, key
        if method == "POST" and len(parts) == 3 and parts[0] == "executors" and parts[2] == "rent":
            return self._rent(parts[1], body or {})
        if parts == ["pods"] and method == "GET":
            return 200, [self._pod_json(p) for p in self._poll_pods()]
        if len(parts) >= 2 and parts[0] == "pods":
            pod = self.pods.get(parts[1])
            if pod is None:
                return 404, {"detail": "Pod not found"}
            if method == "GET" and len(parts) == 2:
                return 200, self._pod_json(pod)
            if method == "GET" and parts[2:] == ["events"]:
                return 200, []
            if method == "POST" and parts[2:] == ["schedule-removal"]:
                pod["removal_scheduled_at"] = (body or {}).get("removal_scheduled_at")
                return 200, {"success": True, "removal_scheduled_at": pod["removal_scheduled_at"]}
            if method == "DELETE" and len(parts) == 2:
                del self.pods[pod["id"]]
                return 200, {"success": True, "message": "Pod removed"}
        if parts == ["volumes"]:
            if method == "GET":
                return 200, list(self.volumes.values())
            if method == "POST":
                return 200, self.add_volume((body or {}).get("name", ""), (body or {}).get("description", ""))
        return 404, {"detail": "Not Found"}

    def _list_executors(self, query: dict) -> list:
        rented = self._rented_executors()
        rows = [e for e in self.executors.values() if e["id"] not in rented]
        machine_names = query.get("machine_names", [""])[0]
        if machine_names:
            wanted = {n.strip() for n in machine_names.split(",")}
            rows = [e for e in rows if e["machine_name"] in wanted or _gpu_short(e["machine_name"]) in wanted]
        if "gpu_count_gte" in query:
            rows = [e for e in rows if e["gpu_count"] >= int(query["gpu_count_gte"][0])]
        if "gpu_count_lte" in query:
            rows = [e for e in rows if e["gpu_count"] <= int(query["gpu_count_lte"][0])]
        return rows

    def _rent(self, executor_id: str, body: dict) -> tuple:
        if executor_id not in self.executors:
            return 404, {"detail": "Executor not found"}
        if executor_id in self._rented_executors():
            return 409, {"detail": "Executor is already rented"}
        if not body.get("user_public_key"):
            return 422, {"detail": "user_public_key is required"}
        volume_id = body.get("volume_id")
        if volume_id and volume_id not in self.volumes:
            return 404, {"detail": "Volume not found"}
        pod_id = str(uuid.uuid4())
        failing = body.get("pod_name") in self.failing_names
        self.pods[pod_id] = {
            "id": pod_id, "pod_name": body.get("pod_name") or "Your Pod", "executor_id": executor_id,
            "status": "FAILED" if failing else "PENDING" if self.pending_polls else "RUNNING",
            "polls_left": self.pending_polls,
            "ssh": dict(self.ssh_queue.pop(0) if self.ssh_queue and not failing else self.ssh), "created_at": _now(), "updated_at": _now(), "removal_scheduled_at": None,
            "volume_id": volume_id, "public_keys": list(body["user_public_key"]),
        }
        return 200, {"success": True, "pod_id": pod_id}

    def _poll_pods(self) -> list:
        for pod in self.pods.values():
            if pod["status"] == "PENDING":
                if pod["polls_left"] <= 0:
                    pod["status"], pod["updated_at"] = "RUNNING", _now()
                pod["polls_left"] -= 1
        return sorted(self.pods.values(), key=lambda p: p["created_at"])


class _Handler(BaseHTTPRequestHandler):
    api: FakeLium = None
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: tests read api.requests instead
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        url = urlparse(self.path)
        query = parse_qs(url.query)
        with self.api.lock:
            self.api.requests.append((method, url.path, query, body))
            if self.headers.get("X-API-KEY") != self.api.api_key:
                status, answer = 401, {"detail": "Invalid API key"}
            else:
                status, answer = self.api.handle(method, url.path, query, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_DELETE(self):
        self._serve("DELETE")

    def do_PUT(self):
        self._serve("PUT")
