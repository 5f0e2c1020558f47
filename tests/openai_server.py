"""A scripted OpenAI-compatible server on 127.0.0.1 for fault tests (stdlib only): real HTTP,
scripted replies. Real-model tests use ``transformers serve`` instead (conftest ``smollm2_server``).

Routes: ``/v1/chat/completions`` and ``/v1/completions`` (reply in ``choices[0].text``). Each request
gets a key, ``server.key_of(body)`` (default: the model answer after "Answer 1: " in the last message,
which is how the judge tests address it). ``script[key]`` is a list of actions used one per request:
("status", code[, headers[, detail]]) (a JSON error body ``{"detail": ...}``, default "scripted"),
("raw", body bytes), ("delay", seconds), ("trickle", seconds, interval) (status 200 at once, then a
keep-alive newline every ``interval`` for ``seconds``, then the reply); then the reply text is
``server.respond(body)`` when set (a scripted model), else ``verdicts[key]`` (default a "[[NO]]"
reply). Fields named in ``reject_fields`` get HTTP 422 with transformers serve's detail. Every
request is recorded in ``server.requests`` with its path, key, headers and JSON body.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ANSWER_1 = re.compile(r"Answer 1: (.*)\n")


def last_text(body: dict) -> str:
    """The last message's content, or a /completions prompt."""
    return body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")


def judge_answer_key(body: dict) -> str:
    match = _ANSWER_1.search(last_text(body))
    return match.group(1) if match else ""


class OpenAIServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default backlog (5) can reset concurrent connections

    def __init__(self, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.requests: list[dict] = []
        self.script: dict[str, list[tuple]] = {}
        self.verdicts: dict[str, str] = {}
        self.fixed_delay_s = 0.0
        self.key_of: Callable[[dict], str] = judge_answer_key
        self.respond: Callable[[dict], str] | None = None
        self.reject_fields: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reset(self, drain_s: float = 30.0):
        # A request an earlier test left behind (a client that timed out on a slow or trickling answer) can
        # still be in its handler; let it finish so it does not count in this test's `max_in_flight`.
        deadline = time.monotonic() + drain_s
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.in_flight:
            raise RuntimeError(f"{self.in_flight} request(s) from an earlier test still in the server after {drain_s} s")
        with self.lock:
            self.requests.clear()
            self.script.clear()
            self.verdicts.clear()
            self.fixed_delay_s = 0.0
            self.key_of = judge_answer_key
            self.respond = None
            self.reject_fields = set()
            self.max_in_flight = 0

    def requests_for(self, key: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["answer"] == key]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: bytes, headers: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def _trickle(self, seconds: float, interval: float) -> bool:
        """Status 200 now, then a newline every `interval` (no Content-Length: the body ends at close)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                self.wfile.write(b"\n")
                self.wfile.flush()
                time.sleep(interval)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def do_POST(self):
        server: OpenAIServer = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = server.key_of(body)
        with server.lock:
            server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body, "answer": key})
            actions = server.script.get(key)
            action = actions.pop(0) if actions else None
            delay = server.fixed_delay_s
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            self._answer(server, body, key, action, delay)
        finally:
            with server.lock:
                server.in_flight -= 1

    def _answer(self, server: OpenAIServer, body: dict, key: str, action: tuple | None, delay: float):
        if delay:
            time.sleep(delay)
        rejected = server.reject_fields & set(body)
        if rejected:  # transformers serve's answer to vLLM/SGLang extensions
            detail = f"Unexpected fields in the request: {rejected}"
            self._send(422, json.dumps({"detail": detail}).encode())
            return
        if action and action[0] == "status":
            detail = action[3] if len(action) > 3 else "scripted"
            self._send(action[1], json.dumps({"detail": detail}).encode(), action[2] if len(action) > 2 else None)
            return
        if action and action[0] == "raw":
            self._send(200, action[1])
            return
        if action and action[0] == "delay":
            time.sleep(action[1])
        if server.respond is not None:
            reply = server.respond(body)
        else:
            reply = server.verdicts.get(key, "The answers differ. [[NO]]")
        if self.path.endswith("/completions") and not self.path.endswith("/chat/completions"):
            choice = {"index": 0, "text": reply, "finish_reason": "stop"}
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        payload = json.dumps({"id": "x", "model": body["model"], "choices": [choice]}).encode()
        if action and action[0] == "trickle":
            if self._trickle(action[1], action[2]):
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            return
        self._send(200, payload)


def start_server(port: int = 0) -> OpenAIServer:
    """A server on ``port`` (0: a free one), serving from a daemon thread."""
    server = OpenAIServer(port)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server
