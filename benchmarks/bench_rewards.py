"""Rewards throughput (issues 3, 11): rule scoring on 16K-token responses, before/after per task,
bounded math-verify, and judge concurrency.

Usage: .venv/bin/python benchmarks/bench_rewards.py [--responses 32] [--repeats 5] [--previous-ref 79d56a0]

Rule part: 16K-token (Qwen2.5 tokenizer) responses cut from the Paul Graham essays, followed by
``</think>`` and a boxed answer. The baseline, measured in the same run, is LongBench token F1 on the
whole response (one normalisation pass over all the text, i.e. scoring without answer extraction).

Before/after (issue 11): ``compute_score`` of the rewards package at ``--previous-ref`` (default: the
commit before issue 11; its four files are read with ``git show`` into a temporary package) against
the current one, timed alternately in this process, per task, on 16K-token responses with a
task-specific answer after ``</think>`` (half of them right). math_dapo uses distinct predictions
(new strings every repeat, equal to 1/2 in half the rows), each gold shared by a group of 8 samples
as in GRPO; the previous path runs math-verify in the calling process, the current one in a bounded
worker process. Then: time to a 0 score for the pathological answer of issue 11 called from a worker
thread (current: default budget and 1 s; previous: in a subprocess, killed after 60 s), and the start-up
of one math-verify worker.

Judge part: a local OpenAI-compatible server with a fixed per-request delay; the
throughput at concurrency N is compared with concurrency 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from loongrl.rewards import compute_score, scorers
from loongrl.rewards.judge import JudgeConfig, LLMJudge

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOONGRL_SHARED", REPO.parent / "shared"))
ESSAYS = SHARED / "data" / "pg_essays" / "ruler_PaulGrahamEssays.json"
TOKENIZER = SHARED / "data" / "tokenizers" / "qwen2.5"
GOLD = ["Chief of Protocol"]
PATHOLOGICAL = ("<think>x</think>\nAnswer: \\dfrac{7^{\\left(7^{\\left(7^{\\left(7^7\\right)}\\right)} - 3\\right)}"
                " - 7}{12}")
# data_source, right answer text, wrong answer text, gold (the answer follows "</think>\n")
TASKS = [
    ("keychain_hotpotqa", "The answer is \\boxed{Chief of Protocol}.", "The answer is \\boxed{Ambassador to Ghana}.", GOLD),
    ("custom_rulerniah_x", "The answer is \\boxed{Chief of Protocol}.", "The answer is \\boxed{Ambassador to Ghana}.", GOLD),
    ("mathqa_choice", "So the answer is \\boxed{(B)}.", "So the answer is \\boxed{(C)}.", "B"),
    ("multihoprag_x", "Therefore, the answer is Chief of Protocol.", "Therefore, the answer is Ambassador.", GOLD),
    ("docmath_x", "Therefore, the answer is 1,234.5.", "Therefore, the answer is 99.", "1234.5"),
    ("long_toc_choices_x", "The correct answer is (B).", "The correct answer is (C).", "B"),
]


def thinking(n: int, tokens: int) -> list[str]:
    """``n`` slices of ``tokens`` Qwen2.5 tokens of essay text."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER / "tokenizer.json"))
    ids = tok.encode(json.loads(ESSAYS.read_text())["text"]).ids
    stride = max(1, (len(ids) - tokens) // max(1, n))
    return [tok.decode(ids[i * stride:i * stride + tokens]) for i in range(n)]


def build_responses(n: int, tokens: int) -> list[str]:
    return [f"<think>{t}</think>\nThe answer is \\boxed{{{GOLD[0] if i % 2 == 0 else 'Ambassador to Ghana'}}}."
            for i, t in enumerate(thinking(n, tokens))]


def median_rate(fn, items, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def load_previous(ref: str):
    """The rewards router at ``ref`` as a temporary package ``previous_rewards``."""
    folder = Path(tempfile.mkdtemp(prefix="bench_rewards_"))
    (folder / "previous_rewards").mkdir()
    (folder / "previous_rewards" / "__init__.py").write_text("")
    for name in ("extract", "scorers", "router", "judge"):
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:src/loongrl/rewards/{name}.py"],
                              capture_output=True, text=True, check=True).stdout
        (folder / "previous_rewards" / f"{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    return importlib.import_module("previous_rewards.router"), folder


def math_rows(thoughts: list[str], repeat: int) -> list[tuple[str, str]]:
    """Distinct predictions; one gold per group of 8 samples; new strings for each repeat."""
    rows = []
    for i, t in enumerate(thoughts):
        k, group = 1000 * repeat + i + 1, 1000 * repeat + i // 8 + 1
        answer = f"\\frac{{{k}}}{{{2 * k}}}" if i % 2 == 0 else f"\\frac{{{k}}}{{{3 * k}}}"
        rows.append((f"<think>{t}</think>\nSo we are done.\nAnswer: {answer}", f"\\frac{{{group}}}{{{2 * group}}}"))
    return rows


def ab_rates(score_prev, score_now, rows_for, repeats: int, threads: int = 1) -> tuple[float, float]:
    """Median scores/s of both, alternating previous and current each repeat (fresh rows each time)."""
    rates: dict[str, list[float]] = {"prev": [], "now": []}
    for r in range(repeats):
        for name, fn in (("prev", score_prev), ("now", score_now)):
            rows = rows_for(2 * r + (name == "now") + 1)
            start = time.perf_counter()
            if threads == 1:
                scores = [fn(*row) for row in rows]
            else:
                with ThreadPoolExecutor(threads) as pool:
                    scores = list(pool.map(lambda row: fn(*row), rows))
            rates[name].append(len(rows) / (time.perf_counter() - start))
            assert scores == [1.0 if i % 2 == 0 else 0.0 for i in range(len(rows))], (name, scores)
    return statistics.median(rates["prev"]), statistics.median(rates["now"])


def time_to_zero(budget: float | None, repeats: int) -> float:
    kw = {} if budget is None else {"math_timeout_s": budget}
    times = []
    for _ in range(repeats):
        with ThreadPoolExecutor(1) as pool:  # a worker thread, as verl's reward loop calls it
            start = time.perf_counter()
            result = pool.submit(compute_score, "math_dapo", PATHOLOGICAL, "5", **kw).result()
            times.append(time.perf_counter() - start)
        assert result["score"] == 0.0
        compute_score("math_dapo", "</think>Answer: 1", "1")  # wait for the replacement worker
    return statistics.median(times)


def previous_time_to_zero(folder: Path, limit_s: float) -> str:
    code = (f"import sys, threading; sys.path.insert(0, {str(folder)!r})\n"
            "from previous_rewards.router import compute_score\n"
            f"t = threading.Thread(target=compute_score, args=('math_dapo', {PATHOLOGICAL!r}, '5')); t.start(); t.join()\n")
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-c", code], timeout=limit_s, capture_output=True)
    except subprocess.TimeoutExpired:
        return f"no score after {limit_s:.0f} s (killed)"
    return f"{time.perf_counter() - start:.2f} s"


def worker_start_up(repeats: int) -> float:
    """Seconds from a new pool to its first answer: start a process, import and warm math-verify."""
    times = []
    for _ in range(repeats):
        pool = scorers.new_math_pool()
        start = time.perf_counter()
        pool.call("1", ["1"], 2, timeout_s=5)
        times.append(time.perf_counter() - start)
        pool.close()
    return statistics.median(times)


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
    parser.add_argument("--previous-ref", default="79d56a0", help="git ref of the rewards code to compare with")
    parser.add_argument("--judge-requests", type=int, default=64)
    parser.add_argument("--judge-delay", type=float, default=0.05)
    args = parser.parse_args(argv)

    thoughts = thinking(args.responses, args.tokens)
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
    print("| scorer | scores/s | ratio vs baseline |\n|---|---:|---:|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {rate / baseline:.1f}x |")

    previous, folder = load_previous(args.previous_ref)
    print(f"\nbefore/after: compute_score at {args.previous_ref} vs now, alternating, median of {args.repeats}")
    print("| data_source | before scores/s | after scores/s | after / before |\n|---|---:|---:|---:|")
    for source, right, wrong, gold in TASKS:
        rows = [(f"<think>{t}</think>\n{right if i % 2 == 0 else wrong}", gold) for i, t in enumerate(thoughts)]
        before, after = ab_rates(lambda r, g: previous.compute_score(source, r, g)["score"],
                                 lambda r, g: compute_score(source, r, g)["score"],
                                 lambda _: rows * 100, args.repeats)
        print(f"| `{source}` | {before:,.0f} | {after:,.0f} | {after / before:.2f} |")
    prev_math = lambda r, g: float(previous.compute_score("math_dapo", r, g)["score"])  # noqa: E731
    now_math = lambda r, g: compute_score("math_dapo", r, g)["score"]  # noqa: E731
    for threads in (1, 2, 4):
        for fn in (prev_math, now_math):  # warm: imports, and one worker per thread
            ab_rates(fn, fn, lambda r: math_rows(thoughts[:2 * threads], 100 + r), 1, threads)
        before, after = ab_rates(prev_math, now_math, lambda r: math_rows(thoughts, r), args.repeats, threads)
        print(f"| `math_dapo`, {threads} thread{'s' if threads > 1 else ''} | {before:,.0f} | {after:,.0f} | "
              f"{after / before:.2f} |")

    print("\npathological answer from a worker thread: time to a 0 score (median of 3)")
    print(f"| path | time to 0 |\n|---|---:|\n| now, default budget {scorers.MATH_TIMEOUT_S:g} s | "
          f"{time_to_zero(None, 3):.2f} s |")
    print(f"| now, `math_timeout_s=1` | {time_to_zero(1.0, 3):.2f} s |")
    print(f"| before ({args.previous_ref}) | {previous_time_to_zero(folder, 60)} |")
    print(f"\nmath-verify worker start-up (not in the budget), median of 3: {worker_start_up(3):.2f} s")

    levels = [1, 2, 4, 8, 16]
    rates = bench_judge(args.judge_requests, args.judge_delay, levels, repeats=3)
    print(f"\njudge: {args.judge_requests} requests, server delay {args.judge_delay * 1000:.0f} ms, median of 3")
    print("| concurrency | verdicts/s | speed-up vs 1 | ideal |\n|---:|---:|---:|---:|")
    for level in levels:
        print(f"| {level} | {rates[level]:.1f} | {rates[level] / rates[1]:.2f}x | {level}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
