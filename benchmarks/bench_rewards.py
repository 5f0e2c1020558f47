"""Rewards throughput (issue 3): rule scoring on 16K-token responses, judge concurrency.

Usage: .venv/bin/python benchmarks/bench_rewards.py [--responses 32] [--repeats 5]

Rule part: 16K-token (Qwen2.5 tokenizer) responses cut from the Paul Graham essays,
followed by ``</think>`` and a boxed answer. The baseline, measured in the same run, is
LongBench token F1 on the whole response (one normalisation pass over all the text,
i.e. scoring without answer extraction).

Judge part: a local OpenAI-compatible server with a fixed per-request delay; the
throughput at concurrency N is compared with concurrency 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from loongrl.rewards import compute_score, scorers
from loongrl.rewards.judge import JudgeConfig, LLMJudge

SHARED = Path(os.environ.get("LOONGRL_SHARED", Path(__file__).resolve().parents[2] / "shared"))
ESSAYS = SHARED / "data" / "pg_essays" / "ruler_PaulGrahamEssays.json"
TOKENIZER = SHARED / "data" / "tokenizers" / "qwen2.5" / "tokenizer.json"
GOLD = ["Chief of Protocol"]


def build_responses(n: int, tokens: int) -> list[str]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    ids = tok.encode(json.loads(ESSAYS.read_text())["text"]).ids
    stride = max(1, (len(ids) - tokens) // max(1, n))
    out = []
    for i in range(n):
        thinking = tok.decode(ids[i * stride:i * stride + tokens])
        answer = GOLD[0] if i % 2 == 0 else "Ambassador to Ghana"
        out.append(f"<think>{thinking}</think>\nThe answer is \\boxed{{{answer}}}.")
    return out


def median_rate(fn, items, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


class _DelayHandler(BaseHTTPRequestHandler):
    delay_s = 0.05

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.delay_s)
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "[[NO]]"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default listen backlog (5) resets connections at concurrency 16


def bench_judge(requests: int, delay_s: float, levels: list[int], repeats: int) -> dict[int, float]:
    _DelayHandler.delay_s = delay_s
    server = _Server(("127.0.0.1", 0), _DelayHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    rates = {}
    try:
        for level in levels:
            judge = LLMJudge(JudgeConfig(base_url=url, model="bench", max_concurrency=level, max_retries=0))
            runs = []
            for r in range(repeats):  # distinct answers: no cache involved (cache_path=None anyway)
                items = [("q", f"answer {r}-{i}", ["gold"]) for i in range(requests)]
                start = time.perf_counter()
                results = judge.judge_many(items)
                runs.append(requests / (time.perf_counter() - start))
                assert all(res.status == "no" for res in results), results[:3]
            rates[level] = statistics.median(runs)
    finally:
        server.shutdown()
        server.server_close()
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--judge-requests", type=int, default=64)
    parser.add_argument("--judge-delay", type=float, default=0.05)
    args = parser.parse_args(argv)

    responses = build_responses(args.responses, args.tokens)
    chars = statistics.mean(len(r) for r in responses)
    print(f"{len(responses)} responses, {args.tokens} tokens (~{chars:,.0f} chars) each; median of {args.repeats}")
    baseline = median_rate(lambda r: scorers.token_f1(r, GOLD), responses, args.repeats)
    results = {
        "token_f1 on whole response (baseline)": baseline,
        "compute_score keychain_* (LoongRL sub-EM)": median_rate(
            lambda r: compute_score("keychain_hotpotqa", r, GOLD), responses, args.repeats),
        "compute_score keychain_* word_boundary": median_rate(
            lambda r: compute_score("keychain_hotpotqa", r, GOLD, word_boundary=True), responses, args.repeats),
        "compute_score custom_rulerniah_* (all-of)": median_rate(
            lambda r: compute_score("custom_rulerniah_x", r, GOLD), responses, args.repeats),
    }
    math_responses = [r.replace(r"</think>", "\nAnswer: \\frac{1}{2}") for r in responses]
    compute_score("math_dapo", math_responses[0], "0.5")  # first call pays math-verify's import
    results["compute_score math_dapo (math-verify)"] = median_rate(
        lambda r: compute_score("math_dapo", r, "0.5"), math_responses, args.repeats)
    print("| scorer | scores/s | ratio vs baseline |\n|---|---:|---:|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {rate / baseline:.1f}x |")

    levels = [1, 2, 4, 8, 16]
    rates = bench_judge(args.judge_requests, args.judge_delay, levels, repeats=3)
    print(f"\njudge: {args.judge_requests} requests, server delay {args.judge_delay * 1000:.0f} ms, median of 3")
    print("| concurrency | verdicts/s | speed-up vs 1 | ideal |\n|---:|---:|---:|---:|")
    for level in levels:
        print(f"| {level} | {rates[level]:.1f} | {rates[level] / rates[1]:.2f}x | {level}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
