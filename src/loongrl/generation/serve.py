"""`transformers serve` as a child process on 127.0.0.1: start it, wait for ``/health``, stop it.

For tests and benchmarks that need a real OpenAI-compatible server on one machine. Serving at scale
belongs to vLLM or SGLang; this only launches transformers' own server (``pip install
'transformers[serving]'``) and waits for it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def transformers_serve(model_dir: str, log_path: str, threads: int = 1, startup_s: float = 180.0):
    """Serve ``model_dir`` (the only model; requests name it by this path) with ``threads`` torch
    threads; yields the ``/v1`` base URL. The server's output goes to ``log_path``."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    cmd = [os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu", model_dir]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def tail() -> str:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-2000:]

    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited ({proc.returncode}): {tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"transformers serve not up after {startup_s:g} s: {tail()}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
