"""Inference through a real server vs in process, and the evaluation harness's own overhead per request.

1. Throughput (real model): the same NIAH prompts (--items at --length tokens, SmolLM2's tokenizer), greedy,
   --new-tokens each, through `hf:` in process (bf16 and fp32) and through `transformers serve` (the OpenAI
   backend, concurrency 1 and 2), in the same run, round-robin over --repeats. Every process gets one
   torch thread (the machine has 2 cores). Outputs are compared across paths.
2. Overhead: the harness (`run_eval` + `OpenAIBackend` + the HTTP client) against the scripted server of
   the tests, which waits --delay seconds per request, at concurrency 1-64. Ideal wall time =
   ceil(requests / c) x delay; added latency per request = (wall - ideal) / (requests / c), i.e. what each
   request in flight waits beyond the server's delay (harness, server and machine together); harness CPU
   per request = the harness process's CPU time / requests (the harness alone; the server has its own process).

Usage: .venv/bin/python benchmarks/bench_serving.py [--items 6] [--length 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the scripted server of the fault tests


def _items(model: str, n: int, length: int):
    from loongrl.data.tokens import get_counter
    from loongrl.eval import niah

    depths = [round(100 * i / max(1, n - 1), 2) for i in range(n)]
    return niah.build_grid(get_counter(model), [length], depths)


def throughput(model: str, items, new_tokens: int, repeats: int) -> None:
    import torch

    from loongrl.generation.backends import SamplingConfig, TransformersBackend, make_backend
    from loongrl.generation.serve import transformers_serve

    torch.set_num_threads(1)
    sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=new_tokens)
    prompts = [it.messages for it in items]
    tokens = sum(it.meta["prompt_tokens"] for it in items)
    with tempfile.TemporaryDirectory() as tmp, transformers_serve(model, os.path.join(tmp, "serve.log")) as url:
        paths = {"in process, bf16": TransformersBackend(model, batch_size=1, dtype="bfloat16"),
                 "in process, fp32": TransformersBackend(model, batch_size=1, dtype="float32"),
                 "transformers serve, concurrency 1": make_backend(f"openai:{url}#{model}", concurrency=1),
                 "transformers serve, concurrency 2": make_backend(f"openai:{url}#{model}", concurrency=2)}
        times: dict[str, list[float]] = {name: [] for name in paths}
        outputs: dict[str, list] = {}
        paths["transformers serve, concurrency 1"].generate(prompts[:1], sampling)  # load the model in the server
        for _ in range(repeats):
            for name, backend in paths.items():
                start = time.perf_counter()
                outputs[name] = backend.generate(prompts, sampling)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["in process, bf16"])
    reference = outputs["in process, bf16"]
    print(f"{len(items)} prompts of {tokens / len(items):,.0f} tokens, {new_tokens} new tokens, median of {repeats}")
    print("| path | s | items/s | prompt tok/s | vs in process bf16 | outputs equal to bf16 in process |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ts in times.items():
        s = statistics.median(ts)
        same = sum(a == b for a, b in zip(outputs[name], reference))
        print(f"| {name} | {s:.1f} | {len(items) / s:.3f} | {tokens / s:,.0f} | {base / s:.2f}x | {same}/{len(items)} |")


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


def overhead(delay: float, repeats: int) -> None:
    import subprocess

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
        for c in (1, 2, 4, 8, 16, 32, 64):
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=6)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--only", choices=["throughput", "overhead"], default=None)
    args = ap.parse_args()
    if args.only != "overhead":
        from loongrl.generation.models import fetch

        model = fetch("smollm2-135m-instruct")
        throughput(model, _items(model, args.items, args.length), args.new_tokens, args.repeats)
    if args.only != "throughput":
        overhead(args.delay, args.repeats)


if __name__ == "__main__":
    main()
