"""Reading past the window: SmolLM2-135M-Instruct (8K window) on NIAH and KeyChain prompts of 3-4x its window,
as a memory agent (``loongrl.generation.memory_agent``: MemAgent's protocol) against the same model with each
prompt middle-truncated to its window (LongBench's ``middle_truncate``). One table: score, seconds per item,
prompt tokens the model was given, document tokens it read and turns per item.

- NIAH: ``loongrl.eval.niah`` cells at --niah-lengths (SmolLM2 tokens, chat template included) x --niah-depths,
  magic-number needle, RULER's string_match_all.
- KeyChain: rows of the data pipeline (``loongrl data keychain`` from HotpotQA, SmolLM2's tokenizer,
  --keychain-tokens per prompt, the LoongRL system prompt), scored by the shared row scorer (think not required).
- Truncation: the user message cut to the window less the template's tokens and --answer-tokens, keeping its
  first and last halves (the question at its end survives); --answer-tokens new tokens.
- Memory agent: chunks of --chunk-tokens, memory updates of --memory-tokens, answers of --answer-tokens.
Both modes go through the same backend: by default a vLLM CPU server started here (``vllm_serve``, --max-model-len
= the window; all items of a turn in flight at once), or --backend SPEC. Greedy; each mode's items run in one
``run_eval`` (the memory agent in lockstep). Seconds per item = the mode's wall time / items.

Usage (hold the vLLM lock while its server runs):
    flock /tmp/vllm.lock nice -n 5 .venv/bin/python benchmarks/bench_memory_agent.py --out /tmp/bench-memory
    [--niah-lengths 24576,32768] [--niah-depths 0,50,100] [--keychain-rows 4] [--keychain-tokens 28672]
    [--chunk-tokens 5000] [--memory-tokens 1024] [--answer-tokens 1024] [--backend hf:DIR | openai:URL#MODEL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import ExitStack

WINDOW = 8192


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def truncated(items, tokenizer, new_tokens: int, window: int):
    """Each item with its user message middle-truncated so that prompt + new tokens fit the window."""
    from dataclasses import replace

    from loongrl.eval.longbench import middle_truncate
    from loongrl.generation.backends import render_chat

    def count(messages):
        return len(tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"])

    out = []
    for it in items:
        user = next(i for i, m in enumerate(it.messages) if m["role"] == "user")
        overhead = count([{**m, "content": ""} if i == user else m for i, m in enumerate(it.messages)])
        budget = window - new_tokens - overhead - 8  # 8: tokens that merge differently where the halves meet
        text, _ = middle_truncate(it.messages[user]["content"], tokenizer, budget)
        messages = [{**m, "content": text} if i == user else m for i, m in enumerate(it.messages)]
        tokens = count(messages)
        assert tokens + new_tokens <= window, (it.id, tokens)
        out.append(replace(it, messages=messages, meta={**it.meta, "given_tokens": tokens}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=os.path.expanduser("~/.cache/loongrl/models/smollm2-135m-instruct"))
    ap.add_argument("--backend", default=None, help="default: a vLLM CPU server on --model started here")
    ap.add_argument("--niah-lengths", type=_ints, default=[24576, 32768])
    ap.add_argument("--niah-depths", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 50.0, 100.0])
    ap.add_argument("--keychain-rows", type=int, default=4)
    ap.add_argument("--keychain-tokens", type=int, default=28672)
    ap.add_argument("--chunk-tokens", type=int, default=5000)
    ap.add_argument("--memory-tokens", type=int, default=1024)
    ap.add_argument("--answer-tokens", type=int, default=1024)
    ap.add_argument("--modes", default="truncate,memory")
    ap.add_argument("--threads", type=int, default=2, help="vLLM server: OpenMP threads")
    ap.add_argument("--kv-cache-gib", type=int, default=2, help="vLLM server: KV cache")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from loongrl.cli import main as cli
    from loongrl.data.tokens import get_counter
    from loongrl.eval import niah, rows as rows_eval
    from loongrl.eval.cli import memory_templates
    from loongrl.eval.run import run_eval
    from loongrl.generation.backends import SamplingConfig, make_backend
    from loongrl.generation.memory_agent import MemoryAgentBackend, MemoryAgentConfig

    os.makedirs(args.out, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    counter = get_counter(args.model)
    start = time.time()
    niah_items = niah.build_grid(counter, args.niah_lengths, args.niah_depths, window=max(args.niah_lengths) + 64,
                                 max_new_tokens=64)
    kc_path = os.path.join(args.out, "keychain.jsonl")
    if not os.path.exists(kc_path):
        shared = os.environ.get("LOONGRL_SHARED", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
            __file__))), "..", "shared"))
        assert cli(["data", "keychain", "--source", "hotpotqa", "--input",
                    os.path.join(shared, "data", "hotpotqa", "hotpotqa_distractor_subset.json.gz"), "--out", kc_path,
                    "--tokenizer", args.model, "--max-prompt-tokens", str(args.keychain_tokens),
                    "--num", str(args.keychain_rows), "--quiet"]) == 0
    kc_items, kc_rows = rows_eval.load_items(kc_path)
    for it in kc_items:
        it.meta["prompt_tokens"] = counter.count_chat(it.messages)
    tasks = {"NIAH": (niah_items, niah.make_scorer(False, False)),
             "KeyChain": (kc_items, rows_eval.make_scorer(kc_rows, {"require_think": False}, judge=False))}
    print(f"built {len(niah_items)} NIAH and {len(kc_items)} KeyChain items in {time.time() - start:.0f} s",
          file=sys.stderr)

    config = MemoryAgentConfig(chunk_tokens=args.chunk_tokens, memory_tokens=args.memory_tokens,
                               answer_tokens=args.answer_tokens)
    results = []
    with ExitStack() as stack:
        spec = args.backend
        if spec is None:
            from loongrl.generation.serve import vllm_serve

            url = stack.enter_context(vllm_serve(args.model, os.path.join(args.out, "vllm.log"), max_model_len=WINDOW,
                                                 kv_cache_gib=args.kv_cache_gib, threads=args.threads))
            spec = f"openai:{url}#{args.model}"
        n_items = max(len(niah_items), len(kc_items))
        inner = make_backend(spec, concurrency=n_items, batch_size=n_items, dtype="bfloat16", timeout_s=3600)
        for mode in args.modes.split(","):
            for task, (items, scorer) in tasks.items():
                sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=args.answer_tokens)
                if mode == "truncate":
                    backend, run_items = inner, truncated(items, tokenizer, args.answer_tokens, WINDOW)
                else:
                    backend, run_items = MemoryAgentBackend(inner, tokenizer, config, memory_templates(), WINDOW), items
                path = os.path.join(args.out, f"samples_{task}_{mode}.jsonl")
                if os.path.exists(path):
                    os.remove(path)  # a timed run: never resumed
                t0 = time.perf_counter()
                records = run_eval(run_items, backend, sampling, scorer, path, {"bench": "memory-agent", "task": task},
                                   chunk_size=len(run_items), progress=False)
                seconds = time.perf_counter() - t0
                traces = [r["samples"][0].get("memory_agent") for r in records]
                row = {"task": task, "mode": mode, "items": len(records),
                       "prompt_tokens": statistics.mean(it.meta["prompt_tokens"] for it in items),
                       "score": 100 * statistics.mean(r["score"] for r in records),
                       "s_per_item": seconds / len(records),
                       "given_tokens": statistics.mean(it.meta.get("given_tokens") or 0 for it in run_items)
                       if mode == "truncate" else None,
                       "tokens_read": statistics.mean(t["tokens_read"] for t in traces) if mode == "memory" else None,
                       "turns": statistics.mean(t["chunks"] + 1 for t in traces) if mode == "memory" else 1,
                       "max_turn_prompt": max(t["max_prompt_tokens"] for t in traces) if mode == "memory" else None}
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)

    header = ("| task | mode | items | prompt tokens (mean) | score | s / item | tokens read / item | turns / item |\n"
              "|---|---|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in results:
        mode = "truncated to the window" if r["mode"] == "truncate" else \
            f"memory agent ({config.chunk_tokens}/{config.memory_tokens}/{config.answer_tokens})"
        read = r["given_tokens"] if r["mode"] == "truncate" else r["tokens_read"]
        lines.append(f"| {r['task']} | {mode} | {r['items']} | {r['prompt_tokens']:,.0f} | {r['score']:.1f} | "
                     f"{r['s_per_item']:.1f} | {read:,.0f} | {r['turns']:.1f} |")
    table = header + "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "memory_agent.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    with open(os.path.join(args.out, "memory_agent.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
