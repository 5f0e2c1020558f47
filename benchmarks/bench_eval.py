"""Evaluation prompt generation: one 128K RULER sample for the heaviest tasks, and the prompts of a
15 x 10 NIAH grid (1K-128K). Each measurement runs in a fresh process (seconds and peak RSS);
medians over --repeats. Baselines, measured in the same run:
- RULER: RULER's own fitting, a binary search on the haystack size that re-tokenises the whole
  chat-rendered prompt with the Hugging Face tokenizer at every probe;
- NIAH: Kamradt's per-cell procedure, which encodes the haystack for every cell, cuts and decodes
  it, inserts the needle and encodes the prompt again (measured on one depth row of 15 cells and
  multiplied by 10 for the grid; it says so).

Usage: .venv/bin/python benchmarks/bench_eval.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

TASKS = ("niah_single_2", "niah_multikey_3", "vt", "fwe", "qa_2")
LENGTH = 131072


def _counter():
    from loongrl.data.tokens import default_tokenizer, get_counter

    return get_counter(default_tokenizer())


def part_ruler(task: str, baseline: bool) -> dict:
    import random

    from loongrl.eval import ruler

    counter = _counter()
    data = ruler.RulerData()
    t = ruler.tasks(data)[task]
    start = time.perf_counter()
    if not baseline:
        item = ruler.generate(t, LENGTH, 0, data, counter)
        return {"s": time.perf_counter() - start, "tokens": item.meta["prompt_tokens"], "probes": item.meta["probes"]}
    budget = LENGTH - data.templates["tasks"][t.kind]["tokens_to_generate"]
    gen = ruler.GENERATORS[t.kind]
    lo, hi, probes, best = 1, int(2 * ruler.UNIT_SIZES[t.kind](t.args) * LENGTH / 1024), 0, 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        sample = gen(data, t.args, random.Random(f"0/{task}/{LENGTH}/0"), mid)
        tokens = ruler.chat_tokens(counter.tokenizer, ruler._messages(sample, False))
        probes += 1
        if tokens <= budget:
            lo, best = mid, tokens
        else:
            hi = mid
    return {"s": time.perf_counter() - start, "tokens": best, "probes": probes}


def part_niah(baseline: bool) -> dict:
    from loongrl.eval import niah

    counter = _counter()
    lengths, depths = niah.grid()
    start = time.perf_counter()
    if not baseline:
        items = niah.build_grid(counter, lengths, depths)
        return {"s": time.perf_counter() - start, "prompts": len(items)}
    tok = counter.tokenizer
    hay = niah.Haystack(counter).text * 2
    spec = niah.NEEDLES["magic-number"]
    for length in lengths:  # one depth row (50%), Kamradt-style
        needle, question = spec.needle.format(city="Chicago", number="1234567"), spec.question.format(city="Chicago")
        ids = tok(hay, add_special_tokens=False)["input_ids"][:length - 100]
        nid = tok(needle, add_special_tokens=False)["input_ids"]
        at = len(ids) // 2
        period = tok(".", add_special_tokens=False)["input_ids"]
        while at > 0 and ids[at - 1] not in period:
            at -= 1
        context = tok.decode(ids[:at] + nid + ids[at:])
        msgs = [{"role": "system", "content": niah.SYSTEM},
                {"role": "user", "content": niah.USER.format(context=context, question=question)}]
        tok(counter.render(msgs), add_special_tokens=False)
    return {"s": (time.perf_counter() - start) * len(depths), "prompts": len(lengths) * len(depths),
            "extrapolated_from_cells": len(lengths)}


def _run(part: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--part", *part], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--part", nargs="+")
    args = ap.parse_args()
    if args.part:
        kind, *rest = args.part
        result = part_ruler(rest[0], rest[1] == "base") if kind == "ruler" else part_niah(rest[0] == "base")
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    print("| RULER task at 131,072 | ours (s) | probes | peak RSS (MiB) | baseline (s) | probes | peak RSS (MiB) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for task in TASKS:
        ours = [_run(["ruler", task, "fast"]) for _ in range(args.repeats)]
        base = [_run(["ruler", task, "base"])]
        print(f"| {task} ({ours[0]['tokens']:,} tokens) | {med(ours, 's'):.2f} | {ours[0]['probes']} | "
              f"{med(ours, 'peak_rss_mib'):.0f} | {base[0]['s']:.2f} | {base[0]['probes']} | "
              f"{base[0]['peak_rss_mib']:.0f} | {base[0]['s'] / med(ours, 's'):.1f}x |", flush=True)
    ours = [_run(["niah", "fast"]) for _ in range(args.repeats)]
    base = _run(["niah", "base"])
    print(f"\nNIAH 15 x 10 grid prompts (1K-128K): ours {med(ours, 's'):.2f} s, peak RSS "
          f"{med(ours, 'peak_rss_mib'):.0f} MiB; baseline {base['s']:.1f} s (x10 from {base['extrapolated_from_cells']} "
          f"cells), peak RSS {base['peak_rss_mib']:.0f} MiB; speed-up {base['s'] / med(ours, 's'):.1f}x")


if __name__ == "__main__":
    main()
