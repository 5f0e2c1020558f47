"""Bounded execution: run a scorer in a worker process that is killed when a call overruns.

Why a process: math-verify's own timeouts use ``signal.alarm``, which works only in the main thread
(verl 0.9.1 calls ``compute_score`` from worker threads), and even there a signal cannot interrupt
one long C-level operation: big-integer arithmetic such as ``7^(7^(7^7))`` holds the GIL until it
finishes, which is never. A thread cannot be stopped; a process can.

Protocol: each worker is ``python -c <boot> module:function [warm-up args]`` with JSON lines on stdin/stdout
(``[args, cpu_budget_s]`` in, ``{"ok": result}`` or ``{"error": text}`` out). One caller uses one
worker at a time; workers start on demand, up to ``max_workers`` (default: the size of Python's
default thread pool, which is what verl's reward loop calls from, so no call queues). A call that
is not answered within ``timeout_s`` raises ``ScoringTimeout``; its worker is killed (SIGKILL),
reaped, and a replacement is started at once so the next call finds it warm. Start-up of a worker
(importing its module) is not part of the deadline; it has its own ``startup_timeout_s``. Workers
exit when the pool closes (at interpreter exit, via ``atexit``) or when their stdin closes; a
worker orphaned by a crashed parent is stopped by its own CPU-time limit (``RLIMIT_CPU``), which
each request sets to the call's budget. Linux and macOS (``poll`` and ``resource``).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

_BOOT = "from loongrl.rewards.bounded import serve; serve()"
_SRC = str(Path(__file__).resolve().parents[2])  # the folder holding the loongrl package


class ScoringTimeout(Exception):
    """The call did not finish within its budget; its worker was killed."""


class WorkerError(RuntimeError):
    """The function raised in the worker, or the worker died during a call."""


class WorkerStartError(WorkerError):
    """A worker could not start (its module failed to import, or start-up timed out)."""


class _Gone(WorkerError):
    """The worker died while idle (the request was never delivered)."""


class _Worker:
    def __init__(self, target: str, warmup: list | None):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, target, json.dumps(warmup)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        self.ready = False
        self._buf = b""
        self._poll = select.poll()  # poll, not select: fds above 1024 are common in Ray workers
        self._poll.register(self.proc.stdout.fileno(), select.POLLIN)

    def _line(self, deadline: float) -> dict | None:
        """The next reply, or None at the deadline; WorkerError if the worker exited."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self._poll.poll(math.ceil(left * 1000)):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise WorkerError(f"scoring worker exited with code {self.proc.wait()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def start(self, startup_timeout_s: float) -> None:
        if self.ready:
            return
        try:
            reply = self._line(time.monotonic() + startup_timeout_s)
        except WorkerError as err:
            raise WorkerStartError(str(err)) from None
        if reply is None:
            raise WorkerStartError(f"scoring worker not ready after {startup_timeout_s:g} s")
        if "error" in reply:
            raise WorkerStartError(f"scoring worker failed to start: {reply['error']}")
        self.ready = True

    def call(self, args: list, timeout_s: float) -> object:
        try:
            os.write(self.proc.stdin.fileno(), json.dumps([args, timeout_s]).encode() + b"\n")
        except OSError as err:  # BrokenPipeError: killed from outside while idle
            raise _Gone(f"scoring worker gone: {err}") from None
        reply = self._line(time.monotonic() + timeout_s)
        if reply is None:
            raise ScoringTimeout(f"no answer within {timeout_s:g} s")
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply["ok"]

    def stop(self, grace_s: float = 0.0) -> None:
        """Close stdin (the worker exits), wait ``grace_s``, then SIGKILL; always reaped."""
        try:
            self.proc.stdin.close()
            self.proc.wait(grace_s)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class WorkerPool:
    """Workers running ``module:function``; ``call(*args, timeout_s=...)`` from any thread.

    ``warmup``: arguments of one call each worker makes before it reports ready, so lazy imports
    and first-call set-up land in the start-up, not in a scored call's budget.
    """

    def __init__(self, target: str, max_workers: int | None = None, startup_timeout_s: float = 120.0,
                 warmup: list | None = None):
        self.target = target
        self.warmup = warmup
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self.startup_timeout_s = startup_timeout_s
        self.timeouts = 0
        """Calls stopped at their deadline (each one killed and replaced a worker)."""
        self._reset()
        atexit.register(self.close)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Condition()
        self._idle: list[_Worker] = []
        self._live: set[_Worker] = set()
        self._closed = False

    def pids(self) -> list[int]:
        """Process ids of the live workers, idle and busy."""
        with self._lock:
            return sorted(w.proc.pid for w in self._live)

    def _spawn(self) -> _Worker:  # called with the lock held
        worker = _Worker(self.target, self.warmup)
        self._live.add(worker)
        return worker

    def _acquire(self) -> _Worker:
        if os.getpid() != self._pid:  # a forked child: the parent's workers are not ours to talk to
            self._reset()
        with self._lock:
            while True:
                if self._closed:
                    raise WorkerError("worker pool is closed")
                if self._idle:
                    return self._idle.pop()
                if len(self._live) < self.max_workers:
                    return self._spawn()
                self._lock.wait()

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                self._lock.notify()
                return
            self._live.discard(worker)
        worker.stop(0.5)

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` and start its successor at once, so the next caller finds it warm."""
        worker.stop()
        with self._lock:
            self._live.discard(worker)
            if not self._closed:
                try:
                    self._idle.append(self._spawn())
                except OSError:
                    pass
            self._lock.notify()

    def call(self, *args, timeout_s: float) -> object:
        """``function(*args)`` in a worker; ``ScoringTimeout`` after ``timeout_s`` seconds of scoring."""
        worker = self._acquire()
        try:
            worker.start(self.startup_timeout_s)
            try:
                result = worker.call(list(args), timeout_s)
            except _Gone:  # not this input's doing: once more on a fresh worker
                self._replace(worker)
                worker = self._acquire()
                worker.start(self.startup_timeout_s)
                result = worker.call(list(args), timeout_s)
        except ScoringTimeout:
            with self._lock:
                self.timeouts += 1
            self._replace(worker)
            raise
        except WorkerError:
            if worker.ready and worker.proc.poll() is None:  # the function raised; the worker is fine
                self._release(worker)
            else:
                self._replace(worker)
            raise
        except BaseException:  # e.g. KeyboardInterrupt mid-call: a late reply would be misread
            self._replace(worker)
            raise
        self._release(worker)
        return result

    def close(self) -> None:
        """Stop every worker (at interpreter exit too); calls still in flight get ``WorkerError``."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live.difference_update(idle)
            busy = list(self._live)
            self._lock.notify_all()
        for worker in idle:
            worker.stop(0.5)
        for worker in busy:  # its caller sees EOF and reaps it; only signal here
            worker.proc.kill()


def serve() -> None:  # pragma: no mutate block (runs in worker processes only)
    """Worker main loop (``python -c _BOOT module:function warmup-json``)."""
    import importlib
    import resource

    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol

    def reply(obj) -> None:
        out.write(json.dumps(obj).encode() + b"\n")

    try:
        module, _, name = sys.argv[1].partition(":")
        fn = getattr(importlib.import_module(module), name)
        warmup = json.loads(sys.argv[2])
        if warmup is not None:
            fn(*warmup)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which raises it
        reply({"error": f"{type(err).__name__}: {err}"})
        return
    reply({"ready": True})
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    for line in sys.stdin.buffer:
        args, budget_s = json.loads(line)
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime + budget_s) + 2  # SIGXCPU ends a runaway orphan
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
        try:
            reply({"ok": fn(*args)})
        except Exception as err:  # noqa: BLE001
            reply({"error": f"{type(err).__name__}: {err}"})
