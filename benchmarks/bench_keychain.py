"""KeyChain synthesis speed and memory (issue 2).

Synthesises HotpotQA KeyChain rows at 16K with the Qwen2.5 tokenizer and reports, from one run:
  - rows/s and peak RSS with 1 and 2 workers (median of --repeats runs, each in a fresh process);
  - the baseline: rows/s of merely tokenising each finished prompt once with the HF tokenizer;
  - peak RSS for 4x the rows, to show memory does not grow with the row count.

    python benchmarks/bench_keychain.py [--rows 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SHARED = os.environ.get("LOONGRL_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
INPUT = os.path.join(SHARED, "data", "hotpotqa", "hotpotqa_distractor_subset.json.gz")
TOKENIZER = os.path.join(SHARED, "data", "tokenizers", "qwen2.5")


def child_synth(rows: int, workers: int, out: str) -> dict:
    from loongrl.data import SynthConfig, synthesize

    cfg = SynthConfig(source="hotpotqa", input=INPUT, tokenizer=TOKENIZER, max_prompt_tokens=16384, seed=1, num=rows)
    t = time.perf_counter()
    s = synthesize(cfg, out, workers=workers, progress=False)
    wall = time.perf_counter() - t
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return {
        "written": s.written, "setup_s": s.setup_seconds, "rows_s": s.rows_seconds, "wall_s": wall,
        "rss_parent_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "sha256": digest,
    }


def child_tokenize(path: str) -> dict:
    """Baseline: one HF tokenisation of each finished, chat-rendered prompt (rendering not timed)."""
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    rows = pq.read_table(path, columns=["prompt"]).to_pylist()
    texts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    times, n_tokens = [], 0
    for text in texts:
        t = time.perf_counter()
        n_tokens += len(tok(text, add_special_tokens=False)["input_ids"])
        times.append(time.perf_counter() - t)
    return {"rows": len(texts), "total_s": sum(times), "median_ms": 1000 * statistics.median(times),
            "mean_tokens": n_tokens / len(texts)}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs="*")
    args = ap.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        res = child_synth(int(rest[0]), int(rest[1]), rest[2]) if kind == "synth" else child_tokenize(rest[0])
        print(json.dumps(res))
        return
    tmp = tempfile.mkdtemp(prefix="bench_keychain_")
    runs = {1: [], 2: []}
    for r in range(args.repeats):
        for w in (1, 2):
            runs[w].append(run_child("synth", str(args.rows), str(w), os.path.join(tmp, f"w{w}_{r}.parquet")))
    big = run_child("synth", str(4 * args.rows), "1", os.path.join(tmp, "big.parquet"))
    base = run_child("tokenize", os.path.join(tmp, "w1_0.parquet"))

    def med(w, key):
        return statistics.median(x[key] for x in runs[w])

    base_rps = base["rows"] / base["total_s"]
    rps = {w: args.rows / med(w, "rows_s") for w in (1, 2)}
    e2e = {w: args.rows / med(w, "wall_s") for w in (1, 2)}
    same = len({x["sha256"] for w in (1, 2) for x in runs[w]}) == 1
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.rows} HotpotQA KeyChain rows at 16,384 tokens (Qwen2.5 tokenizer), median of {args.repeats} runs")
    print(f"baseline, HF tokenise each finished prompt once: {base_rps:.1f} rows/s "
          f"(median {base['median_ms']:.1f} ms per prompt of {base['mean_tokens']:.0f} tokens)")
    for w in (1, 2):
        print(f"{w} worker(s): {rps[w]:.1f} rows/s building rows ({rps[w] / base_rps:.2f}x baseline), "
              f"setup {med(w, 'setup_s'):.1f} s, end to end {e2e[w]:.1f} rows/s ({e2e[w] / base_rps:.2f}x); "
              f"peak RSS parent {med(w, 'rss_parent_mib'):.0f} MiB, worker {med(w, 'rss_worker_mib'):.0f} MiB")
    print(f"2 workers vs 1: {rps[2] / rps[1]:.2f}x building rows, {e2e[2] / e2e[1]:.2f}x end to end")
    print(f"peak RSS {4 * args.rows} rows vs {args.rows} rows (1 worker): {big['rss_parent_mib']:.0f} / "
          f"{med(1, 'rss_parent_mib'):.0f} MiB = {big['rss_parent_mib'] / med(1, 'rss_parent_mib'):.2f}x")
    print(f"output identical across runs and worker counts: {same}")


if __name__ == "__main__":
    main()
